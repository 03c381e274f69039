"""load_config applies a transfer strategy a config declares, once, with clear errors."""

from __future__ import annotations

import pytest

from nasdet.errors import NasdetError
from nasdet.train import load_config
from tests.conftest import CONFIGS


def _write(tmp_path, body: str):
    path = tmp_path / "declared.py"
    path.write_text(f"_base_ = '{CONFIGS / 'tiny_faster_rcnn_synth.py'}'\n{body}\n")
    return path


def test_declared_scratch_is_applied_once(tmp_path):
    cfg = load_config(_write(tmp_path, "transfer = dict(type='scratch', gn_head=False, "
                                       "schedule_factor=2.0)"))
    assert cfg.transfer.type == "scratch" and "fragment" in cfg.transfer
    assert cfg.model.backbone.norm_cfg.type == "FlexGN"
    assert cfg.train_cfg.max_epochs == 32  # 2 x the base's 16
    # The dumped, applied config loads unchanged: the recorded strategy is not re-applied.
    again = tmp_path / "applied.py"
    again.write_text(cfg.dump())
    assert load_config(again).train_cfg.max_epochs == 32


def test_cfg_options_reach_the_declared_strategy(tmp_path):
    path = _write(tmp_path, "transfer = dict(type='scratch', gn_head=False)")
    cfg = load_config(path, cfg_options={"transfer.schedule_factor": 0.5})
    assert cfg.train_cfg.max_epochs == 8


def test_study_configs_load():
    i_cfg = load_config(CONFIGS / "study/tiny_faster_rcnn_S.py")
    assert i_cfg.transfer.type == "scratch" and i_cfg.transfer.schedule_factor == 2.0
    coco = load_config(CONFIGS / "study/faster_rcnn_r50_fpn_I.py")
    assert coco.model.backbone.init_cfg.checkpoint == "torchvision://resnet50"
    assert coco.model.backbone.frozen_stages == 1 and coco.model.backbone.norm_eval


@pytest.mark.parametrize("body,key,match", [
    ("transfer = dict(type='finetune')", "transfer.checkpoint", "needs a pretrained"),
    ("transfer = dict(type='distill')", "transfer.type", "unknown transfer strategy"),
    ("transfer = dict(type='scratch', warmup=3)", "transfer.warmup", "no parameter"),
])
def test_declared_strategy_errors_name_the_file_and_key(tmp_path, body, key, match):
    path = _write(tmp_path, body)
    with pytest.raises(NasdetError, match=match) as err:
        load_config(path)
    assert err.value.key == key
    assert err.value.file == str(path)
