"""apply_transfer on repo and COCO configs, its errors, schedules, and compare_transfer."""

from __future__ import annotations

import csv
import importlib.util
import json
from pathlib import Path

import pytest
import torch

from nasdet.errors import NasdetError
from nasdet.train import load_config
from nasdet.train.transfer import (
    STRATEGIES,
    TRANSFER_CONFIG_DIR,
    apply_transfer,
    compare_transfer,
    format_table,
    list_strategies,
    load_fragment,
    parse_strategy_spec,
    set_schedule_length,
)
from tests.conftest import CONFIGS, REPO, shrink_config

COCO = sorted((CONFIGS / "coco").glob("*.py"))


@pytest.fixture(scope="module")
def tiny_ckpt(tmp_path_factory) -> Path:
    """The tiny detectors' backbone, freshly initialised, saved as a backbone checkpoint."""
    from mmdet.registry import MODELS
    from mmdet.utils import register_all_modules

    import nasdet.models  # noqa: F401

    register_all_modules(init_default_scope=True)
    torch.manual_seed(0)
    net = MODELS.build(load_config(CONFIGS / "tiny_faster_rcnn_synth.py").model.backbone)
    net.init_weights()
    path = tmp_path_factory.mktemp("ckpt") / "tiny_backbone.pth"
    torch.save({"state_dict": net.state_dict(), "meta": {}}, path)
    return path


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


# ---------------------------------------------------------------------------- errors
def test_missing_checkpoint_is_reported_before_training(monkeypatch, tiny_det_root, tmp_path):
    import nasdet.train.transfer as transfer

    def no_training(cfg):
        raise AssertionError("training must not start")

    monkeypatch.setattr(transfer, "train", no_training)
    base = load_config(CONFIGS / "tiny_faster_rcnn_synth.py")
    for name in ("finetune", "freeze", "feature_transfer", "l2sp", "reinit_top"):
        with pytest.raises(NasdetError, match=rf"checkpoint: strategy '{name}' needs"):
            apply_transfer(base, name)
    with pytest.raises(NasdetError, match="torchvision://resnet50"):  # the base's own, as hint
        apply_transfer(load_config(CONFIGS / "coco/retinanet_r50_fpn_1x_coco.py"), "l2sp")
    with pytest.raises(NasdetError, match=r"--checkpoint.*strategy 'finetune' needs"):
        compare_transfer(CONFIGS / "tiny_faster_rcnn_synth.py", ["scratch", "finetune"],
                         work_dir=tmp_path / "cmp")
    missing = tmp_path / "nope.pth"
    with pytest.raises(NasdetError, match=rf"{missing}: checkpoint: checkpoint file not found"):
        compare_transfer(CONFIGS / "tiny_faster_rcnn_synth.py", ["freeze"],
                         checkpoint=missing, work_dir=tmp_path / "cmp")
    assert not (tmp_path / "cmp" / "results.json").exists()


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


# ---------------------------------------------------------------------------- compare
def _load_tool(name: str):
    spec = importlib.util.spec_from_file_location(f"tool_{name}", REPO / "tools" / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_compare_trains_writes_the_table_and_resumes(tiny_det_root, tmp_path, tiny_ckpt,
                                                     monkeypatch, capsys):
    import nasdet.train.transfer as transfer

    base = shrink_config("tiny_faster_rcnn_synth.py", tiny_det_root, tmp_path / "unused",
                         **{"model.test_cfg.rcnn.score_thr": 0.0})
    base_file = tmp_path / "base.py"
    base.dump(str(base_file))
    work = tmp_path / "cmp"
    specs = ["scratch:schedule_factor=1", "feature_transfer:levels=[3]"]
    rows = compare_transfer(base_file, specs, checkpoint=tiny_ckpt, epochs=1, work_dir=work)
    assert [r["strategy"] for r in rows] == ["scratch_schedule_factor=1",
                                             "feature_transfer_levels=_3"]
    saved = json.loads((work / "results.json").read_text())
    assert saved["rows"] == rows and "bbox_mAP" in saved["units"]
    with open(work / "results.csv", newline="") as f:
        table = list(csv.DictReader(f))
    assert [r["strategy"] for r in table] == [r["strategy"] for r in rows]
    for row, line in zip(rows, table, strict=True):
        assert row["epochs"] == 1 and row["seed"] == 0 and row["train_seconds"] > 0
        assert row["bbox_mAP_50"] is not None and 0.0 <= row["bbox_mAP_50"] <= 1.0
        assert float(line["bbox_mAP_50"]) == pytest.approx(row["bbox_mAP_50"])
        assert int(line["params_total"]) == row["params_total"]
        assert (Path(row["work_dir"]) / "config.py").is_file()
        assert (Path(row["work_dir"]) / "epoch_1.pth").is_file()
    scratch, ft = rows
    assert scratch["params_trainable"] == scratch["params_total"]  # nothing frozen
    # Feature transfer: the base detector (student from scratch, same architecture) plus
    # one 1x1 adapter 256 -> 256 channels with bias; the teacher is not counted.
    plain = transfer.count_model_parameters(base)[1]
    assert ft["params_total"] == ft["params_trainable"] == plain + 256 * 256 + 256
    assert (work / "ap_per_strategy.png").stat().st_size > 1000

    # --resume through the tool: finished strategies are skipped, a new one trains.
    trained = []

    def fake_train(cfg):
        trained.append(cfg.transfer.type)
        return {"coco/bbox_mAP": 0.25, "coco/bbox_mAP_50": 0.5}

    monkeypatch.setattr(transfer, "train", fake_train)
    tool = _load_tool("compare_transfer")
    assert tool.main(["--base", str(base_file), *specs, "freeze:k=2", "--checkpoint",
                      str(tiny_ckpt), "--work-dir", str(work), "--resume"]) == 0
    assert trained == ["freeze"]
    out = capsys.readouterr().out
    assert "freeze_k=2" in out and "0.2500" in out
    rows2 = json.loads((work / "results.json").read_text())["rows"]
    assert rows2[:2] == rows and rows2[2]["bbox_mAP"] == 0.25
    # stem + layer1 + layer2 frozen
    assert rows2[2]["params_trainable"] < rows2[2]["params_total"] == plain


def test_a_killed_comparison_keeps_finished_rows(tiny_det_root, tmp_path, tiny_ckpt,
                                                 monkeypatch):
    import nasdet.train.transfer as transfer

    calls = []

    def dies_on_second(cfg):
        calls.append(cfg.transfer.type)
        if len(calls) == 2:
            raise KeyboardInterrupt
        return {"coco/bbox_mAP": 0.1, "coco/bbox_mAP_50": -1.0}

    monkeypatch.setattr(transfer, "train", dies_on_second)
    base = shrink_config("tiny_retinanet_synth.py", tiny_det_root, tmp_path / "unused")
    work = tmp_path / "cmp"
    with pytest.raises(KeyboardInterrupt):
        compare_transfer("tiny_retinanet_synth.py", ["finetune", "l2sp"], checkpoint=tiny_ckpt,
                         work_dir=work, base_cfg=base)
    rows = json.loads((work / "results.json").read_text())["rows"]
    assert [r["strategy"] for r in rows] == ["finetune"]
    assert rows[0]["bbox_mAP"] == 0.1 and rows[0]["bbox_mAP_50"] is None  # -1: not measured
    assert not list(work.glob(".*.tmp"))
    calls.clear()
    monkeypatch.setattr(transfer, "train", lambda cfg: calls.append(cfg.transfer.type) or {})
    rows = compare_transfer("tiny_retinanet_synth.py", ["finetune", "l2sp"],
                            checkpoint=tiny_ckpt, work_dir=work, base_cfg=base, resume=True)
    assert calls == ["l2sp"] and [r["strategy"] for r in rows] == ["finetune", "l2sp"]


def test_pretrain_if_missing_makes_one_checkpoint_and_reuses_it(tiny_det_root, tmp_path,
                                                                monkeypatch):
    import nasdet.train.pretrain as pretrain_mod
    import nasdet.train.transfer as transfer
    from nasdet.data import ensure_dataset

    cls = ensure_dataset("classification", tmp_path / "cls", num_classes=3, image_size=32,
                         num_train_per_class=4, num_val_per_class=2, scale_range=(10, 20),
                         progress=False)
    monkeypatch.setattr(transfer, "train", lambda cfg: {"coco/bbox_mAP": 0.0})
    base = shrink_config("tiny_faster_rcnn_synth.py", tiny_det_root, tmp_path / "unused")
    work = tmp_path / "cmp"
    opts = dict(data=cls, epochs=1, batch_size=6, progress=False)
    rows = compare_transfer("tiny", ["finetune"], work_dir=work, base_cfg=base,
                            pretrain_if_missing=True, pretrain_options=opts)
    ckpt = work / "pretrain" / "backbone.pth"
    assert rows[0]["checkpoint"] == str(ckpt)
    meta = torch.load(ckpt, weights_only=True)["meta"]
    assert meta["classes"] == ["circle", "square", "triangle"] and meta["epochs"] == 1

    def must_not_run(*args, **kwargs):
        raise AssertionError("the existing pre-trained checkpoint should be reused")

    monkeypatch.setattr(pretrain_mod, "pretrain", must_not_run)
    rows = compare_transfer("tiny", ["l2sp"], work_dir=work, base_cfg=base,
                            pretrain_if_missing=True, pretrain_options=opts)
    assert rows[0]["checkpoint"] == str(ckpt)


def test_pretrained_strategies_pass_the_runner_preflight(tiny_det_root, tmp_path, tiny_ckpt):
    from nasdet.train import build_runner

    base = shrink_config("tiny_faster_rcnn_synth.py", tiny_det_root, tmp_path / "work")
    runner = build_runner(apply_transfer(base, "finetune", checkpoint=tiny_ckpt))
    assert runner.cfg.model.backbone.init_cfg.type == "Pretrained"


def test_table_says_why_a_strategy_has_no_ap():
    rows = [{"strategy": s, "bbox_mAP": ap, "bbox_mAP_50": ap, "train_seconds": 1.0,
             "params_trainable": 10, "params_total": 10, "work_dir": f"/w/{s}"}
            for s, ap in (("finetune", 0.5), ("feature_transfer", None))]
    lines = format_table(rows).splitlines()
    assert len(lines) == 4 and "0.5000" in lines[1] and "n/a" in lines[2]
    assert lines[3].startswith("n/a (feature_transfer): no box metric") and "/w/feature_transfer" in lines[3]
