"""apply_transfer on the shipped and COCO configs, its errors, schedules and specs."""

from __future__ import annotations

import pytest
import torch

from nasdet.errors import NasdetError
from nasdet.train import load_config
from nasdet.transfer import (
    STRATEGIES,
    TRANSFER_CONFIG_DIR,
    apply_transfer,
    list_strategies,
    load_fragment,
    parse_strategy_spec,
)
from nasdet.utils.schedule import set_schedule_length
from tests.conftest import CONFIGS, REPO, shrink_config

COCO = sorted((CONFIGS / "coco").glob("*.py"))



# ---------------------------------------------------------------------------- fragments
def test_every_strategy_has_a_fragment_stating_its_defaults():
    files = {p.stem for p in TRANSFER_CONFIG_DIR.glob("*.py")}
    assert set(list_strategies()) == files == {
        "scratch", "finetune", "freeze", "feature_transfer", "l2sp", "reinit_top"}
    for name in list_strategies():
        _, transfer, rest = load_fragment(name)
        assert transfer.pop("type") == name and rest == {}  # a full config: nothing merged
        transfer.pop("checkpoint")  # the example run's, not a default
        assert transfer == STRATEGIES[name].defaults(), name


def _drop_scope(tree):
    """``_scope_`` keys that mmdet:: bases add to their dicts (default_scope is mmdet)."""
    if isinstance(tree, dict):
        return {k: _drop_scope(v) for k, v in tree.items() if k != "_scope_"}
    if isinstance(tree, (list, tuple)):
        return [_drop_scope(v) for v in tree]
    return tree


SHIPPED = sorted([*TRANSFER_CONFIG_DIR.rglob("*.py"), *(CONFIGS / "study").glob("*.py")])


@pytest.mark.parametrize("path", SHIPPED, ids=lambda p: p.relative_to(CONFIGS).as_posix())
def test_shipped_strategy_configs_are_what_apply_transfer_writes(path, tmp_path, monkeypatch,
                                                                 tiny_ckpt):
    """configs/transfer/* and configs/study/* as mmengine reads them (what MMDetection
    trains) equal apply_transfer of their record on their base: the same config, key for
    key, whichever tool trains it."""
    import ast
    import shutil

    from mmengine.config import Config

    monkeypatch.chdir(tmp_path)  # the relative checkpoints the configs name, made here
    for d in ("work_dirs/pretrain", "work_dirs/source_backbone"):
        (tmp_path / d).mkdir(parents=True)
        shutil.copy(tiny_ckpt, tmp_path / d / "backbone.pth")
    shipped = Config.fromfile(str(path)).to_dict()
    record = dict(shipped["transfer"])
    assert record.pop("fragment") in {p.relative_to(REPO).as_posix() for p in SHIPPED}
    line = next(x for x in path.read_text().splitlines() if x.startswith("_base_"))
    base_file = (path.parent / ast.literal_eval(line.split("=", 1)[1].strip())).resolve()
    if path.parent == TRANSFER_CONFIG_DIR or path.parent.parent == TRANSFER_CONFIG_DIR:
        applied = apply_transfer(Config.fromfile(str(CONFIGS / "tiny_faster_rcnn_synth.py")),
                                 path)  # the file as a strategy: its record's parameters
    else:
        name, checkpoint = record.pop("type"), record.pop("checkpoint")
        applied = apply_transfer(Config.fromfile(str(base_file)), name,
                                 checkpoint=checkpoint, **record)
    assert _drop_scope(shipped) == _drop_scope(applied.to_dict())


@pytest.mark.parametrize("path", COCO, ids=lambda p: p.stem)
@pytest.mark.parametrize("strategy", list(STRATEGIES))
def test_strategies_apply_to_coco_configs(path, strategy):
    base = load_config(path)
    cfg = apply_transfer(base, strategy, checkpoint="torchvision://resnet50")
    assert base.model.backbone.init_cfg.checkpoint == "torchvision://resnet50"
    assert "transfer" not in base and cfg.transfer.type == strategy
    model = cfg.model
    det = model.detector if strategy in ("feature_transfer", "l2sp", "reinit_top") else model
    bb = det.backbone
    if strategy == "scratch":
        assert bb.init_cfg is None and bb.norm_cfg == dict(
            type="FlexGN", num_groups=32, requires_grad=True)
        assert det.neck.norm_cfg.type == "FlexGN"
        assert cfg.train_cfg.max_epochs == 72  # 12 x 6
        assert cfg.param_scheduler[1].milestones == [48, 66]  # [8, 11] x 6
        assert cfg.param_scheduler[0].end == 500  # iteration warm-up unchanged
        if "roi_head" in det:
            assert det.roi_head.bbox_head.type == "Shared4Conv1FCBBoxHead"
            assert det.roi_head.bbox_head.conv_out_channels == 256
        if "mask_head" in det.get("roi_head", {}):
            assert det.roi_head.mask_head.norm_cfg.type == "FlexGN"
        if "bbox_head" in det:
            assert det.bbox_head.norm_cfg.type == "FlexGN"
    elif strategy == "feature_transfer":
        assert bb.init_cfg is None and bb.frozen_stages == -1 and bb.norm_eval is False
        assert model.teacher.type == "ResNet" and model.teacher.depth == 50
        assert model.teacher_checkpoint == "torchvision://resnet50"
        assert model.data_preprocessor == det.data_preprocessor
    else:
        assert bb.init_cfg == dict(type="Pretrained", checkpoint="torchvision://resnet50")
        assert bb.frozen_stages == {"freeze": 4}.get(strategy, 1) and bb.norm_eval is True
    if strategy == "l2sp":
        assert cfg.optim_wrapper.paramwise_cfg.custom_keys["backbone."] == dict(decay_mult=0.0)
    assert "nasdet.models" in cfg.custom_imports.imports


def test_scratch_on_coco_faster_rcnn_builds_with_group_norm():
    from mmdet.registry import MODELS
    from torch.nn import GroupNorm
    from torch.nn.modules.batchnorm import _BatchNorm

    cfg = apply_transfer(load_config(CONFIGS / "coco/faster_rcnn_r50_fpn_1x_coco.py"), "scratch")
    model = MODELS.build(cfg.model)
    assert not any(isinstance(m, _BatchNorm) for m in model.modules())
    assert isinstance(model.backbone.gn1, GroupNorm) and model.backbone.gn1.num_groups == 32



def test_bad_strategy_parameters_and_checkpoints(tiny_ckpt, tmp_path):
    base = load_config(CONFIGS / "tiny_retinanet_synth.py")
    with pytest.raises(NasdetError, match="unknown transfer strategy 'distill'"):
        apply_transfer(base, "distill")
    with pytest.raises(NasdetError, match=r"finetune.py: frozen: strategy 'finetune' has no"):
        apply_transfer(base, "finetune", checkpoint=tiny_ckpt, frozen=2)
    with pytest.raises(NasdetError, match=r"frozen_stages: must be an integer in \[-1, 4\]"):
        apply_transfer(base, "freeze", checkpoint=tiny_ckpt, k=5)
    with pytest.raises(NasdetError, match="norm"):
        apply_transfer(base, "scratch", norm="LN")
    with pytest.raises(NasdetError, match="no key starts with prefix 'backbone.'"):
        apply_transfer(base, "finetune", checkpoint=tiny_ckpt, prefix="backbone.")
    narrow = load_config(CONFIGS / "tiny_retinanet_synth.py", cfg_options={
        "model.backbone.widths": [16, 32, 64, 128], "model.backbone.stem_channels": 16})
    wide = apply_transfer(narrow, "finetune", checkpoint=tiny_ckpt)  # sliced: fine
    assert wide.model.backbone.init_cfg.checkpoint == str(tiny_ckpt)
    wider = load_config(CONFIGS / "tiny_retinanet_synth.py", cfg_options={
        "model.backbone.widths": [64, 128, 256, 512], "model.backbone.stem_channels": 64})
    with pytest.raises(NasdetError, match=r"tiny_backbone.pth: conv1.weight: cannot slice"):
        apply_transfer(wider, "finetune", checkpoint=tiny_ckpt)
    other = tmp_path / "other.pth"
    torch.save({"state_dict": {"fc.weight": torch.zeros(2, 2)}}, other)
    with pytest.raises(NasdetError, match="none of the backbone's weights"):
        apply_transfer(base, "l2sp", checkpoint=other)


def test_user_fragment_file_with_parameters(tiny_ckpt, tmp_path):
    frag = tmp_path / "freeze_two.py"
    frag.write_text(
        "transfer = dict(type='freeze', k=2)\n"
        "optim_wrapper = dict(optimizer=dict(lr=0.005))\n")
    cfg = apply_transfer(load_config(CONFIGS / "tiny_faster_rcnn_synth.py"), frag,
                         checkpoint=tiny_ckpt)
    assert cfg.model.backbone.frozen_stages == 2 and cfg.optim_wrapper.optimizer.lr == 0.005
    assert cfg.optim_wrapper.optimizer.momentum == 0.9  # merged, not replaced
    assert cfg.transfer.fragment == str(frag) and cfg.transfer.k == 2
    bad = tmp_path / "bad.py"
    bad.write_text("transfer = dict(type='melt')\n")
    with pytest.raises(NasdetError, match=r"bad.py: transfer.type: .*'melt'"):
        apply_transfer(load_config(CONFIGS / "tiny_faster_rcnn_synth.py"), bad)


def test_shipped_variant_feature_transfer_on_a_pretrained_student(tiny_ckpt):
    from mmdet.registry import MODELS

    cfg = apply_transfer(load_config(CONFIGS / "tiny_faster_rcnn_synth.py"),
                         CONFIGS / "transfer/variants/feature_transfer_pretrained.py",
                         checkpoint=tiny_ckpt)
    assert cfg.model.type == "FeatureTransferDetector" and cfg.transfer.student_init == "pretrained"
    assert cfg.optim_wrapper.optimizer.lr == 0.02  # the base's from-scratch 0.06 replaced
    student = cfg.model.detector.backbone
    assert student.frozen_stages == 1 and student.norm_eval is True
    model = MODELS.build(cfg.model)
    model.init_weights()
    want = torch.load(tiny_ckpt, weights_only=True)["state_dict"]["layer2.0.conv1.weight"]
    torch.testing.assert_close(model.detector.backbone.layer2[0].conv1.weight, want)


def test_dumped_config_is_standalone_and_loads_the_pretrained_backbone(tiny_ckpt, tmp_path):
    from mmdet.registry import MODELS

    cfg = apply_transfer(load_config(CONFIGS / "tiny_faster_rcnn_synth.py"), "reinit_top",
                         checkpoint=tiny_ckpt, k=1)
    cfg.dump(str(tmp_path / "combined.py"))
    again = load_config(tmp_path / "combined.py")
    assert "_base_" not in (tmp_path / "combined.py").read_text()
    assert again.transfer.to_dict() == cfg.transfer.to_dict()
    model = MODELS.build(again.model)
    model.init_weights()
    want = torch.load(tiny_ckpt, weights_only=True)["state_dict"]
    torch.testing.assert_close(model.backbone.layer3[0].conv1.weight,
                               want["layer3.0.conv1.weight"])


# ---------------------------------------------------------------------------- schedules, specs
def test_schedule_length_scales_epoch_based_bounds_only():
    cfg = load_config(CONFIGS / "tiny_faster_rcnn_synth.py")
    assert cfg.train_cfg.max_epochs == 16 and cfg.param_scheduler[1].milestones == [12, 15]
    set_schedule_length(cfg, 32)
    assert cfg.train_cfg.max_epochs == 32 and cfg.train_cfg.val_interval == 32
    warmup, step = cfg.param_scheduler
    assert (warmup.begin, warmup.end) == (0, 100)  # by_epoch=False: iterations, unchanged
    assert (step.begin, step.end, step.milestones) == (0, 32, [24, 30])
    set_schedule_length(cfg, 2)  # 24/16 and 30/16 both round to 2
    assert (step.end, step.milestones) == (2, [2, 2]) and cfg.train_cfg.val_interval == 2


def test_parse_strategy_spec():
    assert parse_strategy_spec("l2sp") == ("l2sp", "l2sp", {})
    assert parse_strategy_spec("feature_transfer:levels=[2, 3],loss_type=mse") == (
        "feature_transfer_levels=_2_3_loss_type=mse", "feature_transfer",
        {"levels": [2, 3], "loss_type": "mse"})
    label, name, params = parse_strategy_spec("configs/transfer/freeze.py:k=1")
    assert (label, name, params) == ("freeze_k=1", "configs/transfer/freeze.py", {"k": 1})
    with pytest.raises(NasdetError, match="key=value"):
        parse_strategy_spec("freeze:2")



def test_pretrained_strategies_pass_the_runner_preflight(tiny_det_root, tmp_path, tiny_ckpt):
    from nasdet.train import build_runner

    base = shrink_config("tiny_faster_rcnn_synth.py", tiny_det_root, tmp_path / "work")
    runner = build_runner(apply_transfer(base, "finetune", checkpoint=tiny_ckpt))
    assert runner.cfg.model.backbone.init_cfg.type == "Pretrained"
