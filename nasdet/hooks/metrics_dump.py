"""Write each evaluation's metrics to a JSON file in the work dir."""

from __future__ import annotations

import time
from pathlib import Path

from mmengine.hooks import Hook
from mmengine.registry import HOOKS

from nasdet.utils.io import atomic_write_json


@HOOKS.register_module()
class MetricsDumpHook(Hook):
    """Keep the latest validation/test metrics as ``<work_dir>/<filename>``.

    mmengine logs metrics as text and scalars; searches and reports want them as one
    small file per run that survives a killed process (the write is atomic).

    Args:
        filename: Name of the JSON file inside the work dir.

    The file holds ``{"val": {...}, "test": {...}, "epoch", "iter", "time"}``; COCO
    metrics keep mmdet's names (``coco/bbox_mAP``, ``coco/bbox_mAP_50``: average
    precision as a fraction in [0, 1], pycocotools' 101-point interpolation).
    """

    priority = "LOW"

    def __init__(self, filename: str = "metrics.json"):
        self.filename = filename
        self.last: dict[str, dict[str, float]] = {}

    def _dump(self, runner, split: str, metrics: dict | None) -> None:
        if not metrics:
            return
        self.last[split] = {k: float(v) for k, v in metrics.items()}
        atomic_write_json(Path(runner.work_dir) / self.filename, {
            **self.last,
            "epoch": runner.epoch,
            "iter": runner.iter,
            "time": time.strftime("%Y-%m-%dT%H:%M:%S"),
            "units": "COCO AP/AR as fractions in [0, 1] (pycocotools)",
        })

    def after_val_epoch(self, runner, metrics: dict | None = None) -> None:
        self._dump(runner, "val", metrics)

    def after_test_epoch(self, runner, metrics: dict | None = None) -> None:
        self._dump(runner, "test", metrics)
