"""tools/train.py (with --resume) and tools/test.py run in-process on a 1-epoch tiny run."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

from nasdet.utils.checkpoint import load_checkpoint_file
from tests.conftest import load_tool, shrink_config

TRAIN = load_tool("train")
TEST = load_tool("test")


@pytest.fixture(scope="module")
def config_file(tiny_det_root: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The tiny Faster R-CNN shrunk to 1 epoch on 16 64-px images, as a config file."""
    tmp = tmp_path_factory.mktemp("tools")
    # score_thr=0 keeps detections after 4 iterations, so CocoMetric has numbers to give.
    cfg = shrink_config("tiny_faster_rcnn_synth.py", tiny_det_root, tmp / "unused", epochs=1,
                        **{"model.test_cfg.rcnn.score_thr": 0.0})
    path = tmp / "tiny_1epoch.py"
    cfg.dump(str(path))
    return path


@pytest.fixture(scope="module")
def one_epoch(config_file: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Work dir of ``tools/train.py CONFIG --work-dir W`` (1 epoch)."""
    work = tmp_path_factory.mktemp("run") / "work"
    assert TRAIN.main([str(config_file), "--work-dir", str(work)]) == 0
    return work


def _printed_metrics(text: str) -> dict[str, float]:
    return {m[1]: float(m[2]) for m in re.finditer(r"^\s+(coco/\S+)\s+(-?\d+\.\d+)$", text, re.M)}


def _logs(work: Path) -> list[Path]:
    """The run logs of ``work`` (one timestamped folder per run), oldest first."""
    return sorted(work.glob("2*/2*.log"))


def test_test_tool_evaluates_the_trained_checkpoint(config_file, one_epoch, capsys):
    capsys.readouterr()
    ckpt = one_epoch / "epoch_1.pth"
    assert TEST.main([str(config_file), str(ckpt), "--work-dir", str(one_epoch / "test")]) == 0
    printed = _printed_metrics(capsys.readouterr().out)
    assert {"coco/bbox_mAP", "coco/bbox_mAP_50"} <= set(printed)
    # The test split of this config is the validation split: the same checkpoint on the
    # same images gives the metrics the training's last validation recorded.
    val = json.loads((one_epoch / "metrics.json").read_text())["val"]
    for key, value in printed.items():
        assert value == pytest.approx(val[key], abs=5e-5), key  # printed with 4 decimals
    assert 0.0 <= printed["coco/bbox_mAP_50"] <= 1.0


def test_test_tool_without_checkpoint_is_one_error_line(config_file, tmp_path, capsys):
    from nasdet.cli import run_tool

    missing = tmp_path / "none.pth"
    assert run_tool(TEST.main, [str(config_file), str(missing)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith(f"error: {missing}: CHECKPOINT: ")
    assert "not found" in err[0]


def test_train_resume_continues_from_the_last_epoch(config_file, one_epoch, tmp_path):
    work = tmp_path / "work"
    # A copy of the 1-epoch run, so the other tests keep theirs.
    work.mkdir()
    first = one_epoch / "epoch_1.pth"
    (work / "epoch_1.pth").write_bytes(first.read_bytes())
    (work / "last_checkpoint").write_text(str(work / "epoch_1.pth"))
    saved = load_checkpoint_file(first)
    iters_per_epoch = saved["meta"]["iter"]
    assert saved["meta"]["epoch"] == 1 and iters_per_epoch == 4  # 16 images, batch 4

    args = [str(config_file), "--work-dir", str(work), "--resume",
            "--cfg-options", "train_cfg.max_epochs=2"]
    assert TRAIN.main(args) == 0
    second = load_checkpoint_file(work / "epoch_2.pth")
    assert second["meta"]["epoch"] == 2 and second["meta"]["iter"] == 2 * iters_per_epoch
    # It went on from epoch 1: the run trained epoch 2 only, from iteration 5 on.
    log = _logs(work)[-1].read_text()
    assert "resumed epoch: 1, iter: 4" in log
    assert re.search(r"Epoch\(train\)\s+\[2\]\[\s*1/4\]", log)
    assert not re.search(r"Epoch\(train\)\s+\[1\]\[", log)
    # The epoch-1 checkpoint it started from is untouched, and epoch 2 changed weights.
    assert (work / "epoch_1.pth").read_bytes() == first.read_bytes()
    key = "backbone.conv1.weight"
    assert not (second["state_dict"][key] == saved["state_dict"][key]).all()
    metrics = json.loads((work / "metrics.json").read_text())
    assert metrics["epoch"] == 2 and "coco/bbox_mAP_50" in metrics["val"]
