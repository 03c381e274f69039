"""load_config reads what MMDetection reads; bare transfer declarations are converted, not applied."""

from __future__ import annotations

import pytest
from mmengine.config import Config

from nasdet.errors import NasdetError
from nasdet.train import load_config
from nasdet.train.config import apply_declared_transfer
from tests.conftest import CONFIGS

BASE = CONFIGS / "tiny_faster_rcnn_synth.py"


def _write(tmp_path, body: str):
    path = tmp_path / "declared.py"
    path.write_text(f"_base_ = '{BASE}'\n{body}\n")
    return path


def _plain(cfg: Config) -> dict:
    """The config as a dict, without the work dir load_config settles."""
    out = cfg.to_dict()
    out.pop("work_dir", None)
    return out


def test_scratch_study_config_is_what_mmengine_reads(tmp_path):
    path = CONFIGS / "study/tiny_faster_rcnn_S.py"
    cfg = load_config(path)
    # Nothing is applied on load: load_config's config is Config.fromfile's.
    assert _plain(cfg) == _plain(Config.fromfile(str(path)))
    base = Config.fromfile(str(BASE))
    assert base.train_cfg.max_epochs == 16
    assert cfg.train_cfg.max_epochs == 32  # the record's schedule_factor 2.0 x the base's 16
    assert cfg.transfer.type == "scratch" and cfg.transfer.schedule_factor == 2.0
    assert "fragment" in cfg.transfer
    assert cfg.model.backbone.norm_cfg.type == "FlexGN" and cfg.model.backbone.init_cfg is None
    assert cfg.model.backbone.frozen_stages == -1 and not cfg.model.backbone.norm_eval
    # Dumped and read again, the record is still not re-applied (32, not 64 epochs).
    again = tmp_path / "S.py"
    again.write_text(cfg.dump())
    assert load_config(again).train_cfg.max_epochs == 32


def test_transfer_options_are_refused_with_file_and_key():
    path = CONFIGS / "study/tiny_faster_rcnn_S.py"
    with pytest.raises(NasdetError, match="not applied") as err:
        load_config(path, cfg_options={"transfer.schedule_factor": 0.5})
    assert err.value.key == "transfer.schedule_factor"
    assert err.value.file == str(path)


def test_study_configs_load():
    s_cfg = load_config(CONFIGS / "study/tiny_faster_rcnn_S.py")
    assert s_cfg.transfer.type == "scratch" and s_cfg.transfer.schedule_factor == 2.0
    coco = load_config(CONFIGS / "study/faster_rcnn_r50_fpn_I.py")
    assert coco.model.backbone.init_cfg.checkpoint == "torchvision://resnet50"
    assert coco.model.backbone.frozen_stages == 1 and coco.model.backbone.norm_eval


def test_bare_declaration_is_refused_in_one_line(tmp_path):
    path = _write(tmp_path, "transfer = dict(type='scratch', gn_head=False)")
    with pytest.raises(NasdetError) as err:
        load_config(path)
    assert err.value.file == str(path) and err.value.key == "transfer"
    text = str(err.value)
    assert "\n" not in text and text.startswith(f"{path}: transfer: ")
    assert "'scratch'" in text and "apply_declared_transfer" in text


def test_converted_declaration_loads_and_trains_the_strategy(tmp_path):
    path = _write(tmp_path, "transfer = dict(type='scratch', gn_head=False, schedule_factor=2.0)")
    full = apply_declared_transfer(Config.fromfile(str(path)))
    assert full.transfer.type == "scratch" and "fragment" in full.transfer
    assert full.model.backbone.norm_cfg.type == "FlexGN"
    assert full.train_cfg.max_epochs == 32  # 2 x the base's 16
    dumped = tmp_path / "full.py"
    dumped.write_text(full.dump())
    cfg = load_config(dumped)
    assert cfg.train_cfg.max_epochs == 32 and cfg.model.backbone.norm_cfg.type == "FlexGN"
    # A config without a declaration is returned as it is.
    plain = Config.fromfile(str(BASE))
    assert apply_declared_transfer(plain) is plain


@pytest.mark.parametrize("body,key,match", [
    ("transfer = dict(type='finetune')", "transfer.checkpoint", "needs a pretrained"),
    ("transfer = dict(type='distill')", "transfer.type", "unknown transfer strategy"),
    ("transfer = dict(type='scratch', warmup=3)", "transfer.warmup", "no parameter"),
])
def test_declared_strategy_errors_name_the_file_and_key(tmp_path, body, key, match):
    path = _write(tmp_path, body)
    with pytest.raises(NasdetError, match=match) as err:
        apply_declared_transfer(Config.fromfile(str(path)))
    assert err.value.key == key
    assert err.value.file == str(path)
