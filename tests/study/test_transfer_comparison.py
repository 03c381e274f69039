"""compare_transfer: the table, resuming, a killed comparison, pre-training if missing."""

from __future__ import annotations

import csv
import importlib.util
import json
from pathlib import Path

import pytest
import torch

from nasdet.errors import NasdetError
from nasdet.report.transfer_comparison import format_table
from nasdet.study.transfer_comparison import compare_transfer
from nasdet.train import load_config
from nasdet.transfer import (
    apply_transfer,
)
from tests.conftest import CONFIGS, REPO, shrink_config

COCO = sorted((CONFIGS / "coco").glob("*.py"))



def test_missing_checkpoint_is_reported_before_training(monkeypatch, tiny_det_root, tmp_path):
    import nasdet.study.transfer_comparison as transfer

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




def _load_tool(name: str):
    spec = importlib.util.spec_from_file_location(f"tool_{name}", REPO / "tools" / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_compare_trains_writes_the_table_and_resumes(tiny_det_root, tmp_path, tiny_ckpt,
                                                     monkeypatch, capsys):
    import nasdet.study.transfer_comparison as transfer

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
    import nasdet.study.transfer_comparison as transfer

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
    import nasdet.study.transfer_comparison as transfer
    import nasdet.train.pretrain as pretrain_mod
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



def test_table_says_why_a_strategy_has_no_ap():
    rows = [{"strategy": s, "bbox_mAP": ap, "bbox_mAP_50": ap, "train_seconds": 1.0,
             "params_trainable": 10, "params_total": 10, "work_dir": f"/w/{s}"}
            for s, ap in (("finetune", 0.5), ("feature_transfer", None))]
    lines = format_table(rows).splitlines()
    assert len(lines) == 4 and "0.5000" in lines[1] and "n/a" in lines[2]
    assert lines[3].startswith("n/a (feature_transfer): no box metric") and "/w/feature_transfer" in lines[3]
