"""Training, resuming and testing through mmengine's Runner on the synthetic data."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from nasdet.errors import NasdetError
from nasdet.train import build_runner, evaluate, load_config, train
from nasdet.utils.checkpoint import load_checkpoint_file
from tests.conftest import CONFIGS, REPO


@pytest.fixture(scope="module")
def trained(tiny_det_root, tmp_path_factory):
    """One 2-epoch run of the tiny Faster R-CNN shared by the tests below."""
    from tests.conftest import shrink_config

    # score_thr=0 keeps detections after 8 iterations, so CocoMetric has numbers to give.
    cfg = shrink_config("tiny_faster_rcnn_synth.py", tiny_det_root,
                        tmp_path_factory.mktemp("trained"), epochs=2,
                        **{"model.test_cfg.rcnn.score_thr": 0.0})
    metrics = train(cfg)
    return cfg, metrics


def test_train_writes_metrics_and_checkpoints(trained):
    cfg, metrics = trained
    assert set(metrics) >= {"coco/bbox_mAP", "coco/bbox_mAP_50"}
    assert all(0.0 <= v <= 1.0 or v == -1.0 for v in metrics.values())
    saved = json.loads((Path(cfg.work_dir) / "metrics.json").read_text())
    assert saved["val"] == metrics and saved["epoch"] == 2
    ckpt = load_checkpoint_file(Path(cfg.work_dir) / "epoch_2.pth")  # weights_only=True
    assert ckpt["meta"]["epoch"] == 2 and "optimizer" in ckpt and "message_hub" in ckpt


def test_resume_continues_iterations_and_optimizer_state(trained, tiny_cfg):
    work = Path(trained[0].work_dir)
    first = load_checkpoint_file(work / "epoch_1.pth")
    iters_per_epoch = first["meta"]["iter"]
    assert iters_per_epoch > 0

    runner = build_runner(tiny_cfg(epochs=2), resume=str(work / "epoch_1.pth"))
    # What Runner.train does before its loop, so the resumed state can be inspected.
    runner._train_loop = runner.build_train_loop(runner._train_loop)
    runner.optim_wrapper = runner.build_optim_wrapper(runner.optim_wrapper)
    runner.load_or_resume()
    assert runner.iter == iters_per_epoch and runner.epoch == 1
    restored = runner.optim_wrapper.optimizer.state_dict()["state"]
    saved = first["optimizer"]["state"]
    assert restored.keys() == saved.keys() and len(saved) > 0
    for idx, state in saved.items():
        torch.testing.assert_close(restored[idx]["momentum_buffer"], state["momentum_buffer"])

    runner.train()
    assert runner.iter == 2 * iters_per_epoch and runner.epoch == 2


def test_resume_after_an_unvalidated_epoch_validates_it_first(trained, tiny_cfg):
    """Killed after epoch 2's checkpoint but before its validation: the resumed run
    validates epoch 2 (the same weights: the same metrics) before it trains epoch 3."""
    import shutil

    src = Path(trained[0].work_dir)
    options = {"model.test_cfg.rcnn.score_thr": 0.0, "train_cfg.val_interval": 1}
    cfg = tiny_cfg(epochs=3, **options)
    work = Path(cfg.work_dir)
    work.mkdir(parents=True)
    for name in ("epoch_2.pth", "metrics.json"):
        shutil.copy2(src / name, work / name)
    record = json.loads((work / "metrics.json").read_text())
    validated = {h["epoch"]: h["metrics"] for h in record["history"]}
    assert 2 in validated
    record["history"] = [h for h in record["history"] if h["epoch"] != 2]
    (work / "metrics.json").write_text(json.dumps(record))
    (work / "last_checkpoint").write_text(str(work / "epoch_2.pth"))
    train(cfg, resume="auto")
    history = json.loads((work / "metrics.json").read_text())["history"]
    assert [h["epoch"] for h in history][-2:] == [2, 3]
    assert history[-2]["metrics"] == pytest.approx(validated[2])
    # A complete history is not validated again.
    train(tiny_cfg(epochs=4, **options), resume="auto")
    again = json.loads((work / "metrics.json").read_text())["history"]
    assert [h["epoch"] for h in again] == [h["epoch"] for h in history] + [4]


def test_auto_resume_without_checkpoint_starts_fresh(tiny_cfg):
    runner = build_runner(tiny_cfg(epochs=1), resume="auto")
    assert not runner._resume and runner._load_from is None


def test_evaluate_checkpoint(trained, tiny_cfg):
    metrics = evaluate(tiny_cfg(**{"model.test_cfg.rcnn.score_thr": 0.0}),
                       Path(trained[0].work_dir) / "epoch_2.pth")
    assert metrics["coco/bbox_mAP_50"] == pytest.approx(trained[1]["coco/bbox_mAP_50"])


def test_load_from_checkpoint_of_another_architecture_is_refused(trained, tiny_cfg, tmp_path):
    narrow = tiny_cfg(**{"model.backbone.widths": [16, 32, 64, 128],
                         "model.backbone.stem_channels": 16,
                         "model.neck.in_channels": [16, 32, 64, 128]})
    narrow.load_from = str(Path(trained[0].work_dir) / "epoch_2.pth")
    with pytest.raises(NasdetError, match=r"epoch_2\.pth: backbone\.conv1\.weight: .*shape"):
        build_runner(narrow)


def test_resume_from_another_detector_is_refused(trained, tiny_cfg):
    retina = tiny_cfg("tiny_retinanet_synth.py")
    with pytest.raises(NasdetError, match="entries are missing"):
        build_runner(retina, resume=str(Path(trained[0].work_dir) / "epoch_2.pth"))


def test_fine_tuning_with_another_class_count_loads_the_rest(trained, tiny_cfg):
    cfg = tiny_cfg(**{"model.roi_head.bbox_head.num_classes": 3})
    cfg.load_from = str(Path(trained[0].work_dir) / "epoch_2.pth")
    runner = build_runner(cfg)  # classifier shapes differ; everything else fits: no error
    saved = load_checkpoint_file(cfg.load_from)["state_dict"]
    model = runner.model.state_dict()
    before = {k: v.clone() for k, v in model.items()}
    runner.load_or_resume()  # what Runner.train/test do first: loads `load_from`
    model = runner.model.state_dict()
    assert runner._has_loaded
    mismatched = sorted(k for k in saved if k in model and saved[k].shape != model[k].shape)
    # 4 -> 3 classes: the classifier (num_classes + 1 outputs) and the class-specific
    # box regressor (4 per class) have other shapes.
    assert mismatched == [f"roi_head.bbox_head.{layer}.{p}"
                          for layer in ("fc_cls", "fc_reg") for p in ("bias", "weight")]
    loaded = [k for k in saved if k in model and k not in mismatched]
    assert len(loaded) == len(model) - len(mismatched)  # every other entry is in the file
    changed = 0
    for key in loaded:
        assert torch.equal(model[key], saved[key]), key
        changed += not torch.equal(before[key], saved[key])
    assert changed > len(loaded) // 2  # weights were really replaced, not equal by chance
    for key in mismatched:  # skipped: the new head keeps its own initialisation
        assert torch.equal(model[key], before[key]), key


def test_missing_dataset_path(tiny_cfg, tmp_path):
    cfg = tiny_cfg()
    cfg.train_dataloader.dataset.data_root = str(tmp_path / "nowhere")
    with pytest.raises(NasdetError, match="train_dataloader.dataset.data_root"):
        build_runner(cfg)


def test_unknown_module_type_names_the_key(tiny_cfg):
    cfg = tiny_cfg()
    cfg.model.neck.type = "FPNThatDoesNotExist"
    with pytest.raises(NasdetError, match=r"model\.neck\.type.*FPNThatDoesNotExist"):
        build_runner(cfg)


def test_unwritable_work_dir(tiny_cfg, tmp_path):
    blocker = tmp_path / "a_file"
    blocker.write_text("not a directory")
    cfg = tiny_cfg()
    cfg.work_dir = str(blocker / "work")
    with pytest.raises(NasdetError, match="--work-dir"):
        build_runner(cfg)


def test_missing_config_file():
    with pytest.raises(NasdetError, match="config file not found"):
        load_config(CONFIGS / "no_such_config.py")


def test_train_tool_prints_one_error_line(tmp_path):
    proc = subprocess.run(
        [sys.executable, str(REPO / "tools/train.py"), str(tmp_path / "missing.py")],
        capture_output=True, text=True, cwd=REPO)
    assert proc.returncode == 2
    assert proc.stderr.strip().splitlines() == [
        f"error: {tmp_path / 'missing.py'}: config file not found"]
