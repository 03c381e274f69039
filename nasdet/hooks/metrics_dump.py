"""Write each evaluation's metrics, and their history, to a JSON file in the work dir."""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

from mmengine.dist import get_world_size, is_main_process
from mmengine.hooks import Hook
from mmengine.registry import HOOKS

from nasdet.utils.io import atomic_write_json


@HOOKS.register_module()
class MetricsDumpHook(Hook):
    """Keep the latest validation/test metrics and every epoch's as ``<work_dir>/<filename>``.

    mmengine logs metrics as text and scalars; searches, benchmarks and reports want
    them as one small file per run that survives a killed process (the write is atomic)
    and a resume (the history is reloaded and cut at the resumed epoch).

    Args:
        filename: Name of the JSON file inside the work dir.

    The file holds ``{"val": {...}, "test": {...}, "epoch", "iter", "time", "history",
    "train_time"}``: ``history`` has one entry per validation (``epoch``, ``iter``,
    ``metrics``); ``train_time`` one per training epoch (``epoch``, ``seconds``: wall
    clock of its iterations, ``cpu_seconds``: CPU time of this process in them, all
    threads). COCO metrics keep mmdet's names (``coco/bbox_mAP``, ``coco/bbox_mAP_50``:
    average precision as a fraction in [0, 1], pycocotools' 101-point interpolation).
    ``world_size`` is the number of training processes (DDP); only rank 0 writes, and its
    ``train_time`` is its own (every process runs the same number of iterations).
    """

    priority = "LOW"

    def __init__(self, filename: str = "metrics.json"):
        self.filename = filename
        self.last: dict[str, dict[str, float]] = {}
        self.history: list[dict[str, Any]] = []
        self.train_time: list[dict[str, Any]] = []
        self._epoch_wall = self._epoch_cpu = 0.0
        self._iter_start: tuple[float, float] | None = None
        self._validate_first = False

    def _path(self, runner) -> Path:
        return Path(runner.work_dir) / self.filename

    def before_train(self, runner) -> None:
        """Reload the history of the run this one resumes (cut at its epoch).

        Checkpoints are written before the epoch's validation, so a run killed in
        between resumes after an epoch that was never validated: it is validated first,
        at the start of the next epoch (every hook's ``before_train`` has run by then).
        """
        self.history, self.train_time = [], []
        self._validate_first = False
        if runner.iter == 0:
            return
        epoch, path = runner.epoch, self._path(runner)
        try:
            old = json.loads(path.read_text(encoding="utf-8")) if path.is_file() else {}
        except (OSError, ValueError):
            old = {}  # a damaged file: the resumed run starts a new history
        self.history = [h for h in old.get("history", []) if int(h["epoch"]) <= epoch]
        self.train_time = [t for t in old.get("train_time", []) if int(t["epoch"]) <= epoch]
        if self.history:
            self.last["val"] = dict(self.history[-1]["metrics"])
        self._validate_first = _validation_due(runner, epoch) and \
            epoch not in {int(h["epoch"]) for h in self.history}

    def before_train_epoch(self, runner) -> None:
        if self._validate_first:
            self._validate_first = False
            runner.val_loop.run()  # the train loop then puts the model back in train mode
        self._epoch_wall = self._epoch_cpu = 0.0

    def before_train_iter(self, runner, batch_idx: int, data_batch: Any = None) -> None:
        self._iter_start = (time.perf_counter(), time.process_time())

    def after_train_iter(self, runner, batch_idx: int, data_batch: Any = None,
                         outputs: Any = None) -> None:
        if self._iter_start is not None:
            wall, cpu = self._iter_start
            self._epoch_wall += time.perf_counter() - wall
            self._epoch_cpu += time.process_time() - cpu
            self._iter_start = None

    def after_train_epoch(self, runner) -> None:
        self.train_time.append({"epoch": runner.epoch + 1, "seconds": self._epoch_wall,
                                "cpu_seconds": self._epoch_cpu})
        self._write(runner)

    def _write(self, runner) -> None:
        if not is_main_process():
            return  # one file per run: rank 0's (metrics are broadcast to every rank)
        atomic_write_json(self._path(runner), {
            **self.last,
            "epoch": runner.epoch,
            "iter": runner.iter,
            "world_size": get_world_size(),
            "time": time.strftime("%Y-%m-%dT%H:%M:%S"),
            "history": self.history,
            "train_time": self.train_time,
            "units": "COCO AP/AR as fractions in [0, 1] (pycocotools); train_time: "
                     "seconds of one training epoch's iterations (wall clock, and CPU "
                     "time of this process over all its threads)",
        })

    def _dump(self, runner, split: str, metrics: dict | None) -> None:
        if metrics is None:
            return
        # An evaluation without a single detection gives {} (mmdet's CocoMetric): it is
        # recorded as it is, so the epoch is in the history and the last metrics are its.
        self.last[split] = {k: float(v) for k, v in metrics.items()}
        if split == "val":
            entry = {"epoch": runner.epoch, "iter": runner.iter, "metrics": self.last[split]}
            self.history = [h for h in self.history if h["epoch"] != runner.epoch] + [entry]
        self._write(runner)

    def after_val_epoch(self, runner, metrics: dict | None = None) -> None:
        self._dump(runner, "val", metrics)

    def after_test_epoch(self, runner, metrics: dict | None = None) -> None:
        self._dump(runner, "test", metrics)


def _validation_due(runner, epoch: int) -> bool:
    """Whether an epoch-based run validates after ``epoch`` (mmengine's own rule)."""
    loop = runner.train_loop
    if not hasattr(loop, "max_epochs") or not hasattr(loop, "val_interval") or epoch < 1:
        return False
    if getattr(runner, "_val_loop", None) is None:
        return False
    return epoch >= loop.val_begin and (epoch % loop.val_interval == 0
                                        or epoch == loop.max_epochs)
