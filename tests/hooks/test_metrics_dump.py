"""MetricsDumpHook's record: one history entry per validation, whatever it found."""

from __future__ import annotations

import json
from types import SimpleNamespace

from nasdet.hooks.metrics_dump import MetricsDumpHook


def test_a_validation_without_detections_is_an_epoch_of_the_history(tmp_path):
    hook = MetricsDumpHook()
    runner = SimpleNamespace(work_dir=str(tmp_path), epoch=1, iter=8)
    hook.after_val_epoch(runner, {"coco/bbox_mAP": 0.25, "coco/bbox_mAP_50": 0.5})
    runner.epoch, runner.iter = 2, 16
    hook.after_val_epoch(runner, {})  # mmdet's CocoMetric: no detection at all
    record = json.loads((tmp_path / "metrics.json").read_text())
    assert [(h["epoch"], h["metrics"]) for h in record["history"]] == [
        (1, {"coco/bbox_mAP": 0.25, "coco/bbox_mAP_50": 0.5}), (2, {})]
    assert record["val"] == {} and record["epoch"] == 2  # the last validation's, not epoch 1's
    hook.after_val_epoch(runner, None)  # no evaluation: nothing to record
    assert json.loads((tmp_path / "metrics.json").read_text()) == record
