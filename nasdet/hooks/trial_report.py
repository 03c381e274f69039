"""Hand each epoch's metrics, and each epoch checkpoint, to the trial in flight."""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

from mmengine.hooks import Hook
from mmengine.registry import HOOKS

#: ``reporter(epoch, metrics)``: epoch = epochs trained so far, metrics as mmdet names them.
EpochReporter = Callable[[int, dict[str, float]], None]
#: ``saved(epoch, path)``: the checkpoint mmengine's CheckpointHook wrote after ``epoch``.
CheckpointReporter = Callable[[int, Path], None]
_reporters: list[tuple[EpochReporter | None, CheckpointReporter | None]] = []


@contextlib.contextmanager
def trial_reporter(fn: EpochReporter | None = None, *,
                   saved: CheckpointReporter | None = None) -> Iterator[EpochReporter | None]:
    """Install ``fn`` (and ``saved``) as this process's trial reporter while the block runs.

    A config can only name a hook, not carry a callable: the search installs the
    reporter around the Runner's training and :class:`TrialReportHook` looks it up.
    Whatever ``fn`` raises (e.g. a pruning signal) leaves the Runner as is.

    Args:
        fn: Called after every validation epoch with (epoch, metrics).
        saved: Called after every training epoch whose checkpoint was written, with
            (epoch, checkpoint file): a search keeps it where a retried trial finds it.

    Example:
        >>> with trial_reporter(lambda epoch, metrics: print(epoch)):  # doctest: +SKIP
        ...     runner.train()
    """
    entry = (fn, saved)
    _reporters.append(entry)
    try:
        yield fn
    finally:
        _reporters.remove(entry)


def current_reporter() -> EpochReporter | None:
    """The innermost installed trial reporter, or None."""
    return _reporters[-1][0] if _reporters else None


def current_checkpoint_reporter() -> CheckpointReporter | None:
    """The innermost installed checkpoint reporter, or None."""
    return _reporters[-1][1] if _reporters else None


@HOOKS.register_module()
class TrialReportHook(Hook):
    """After every validation epoch (and every saved checkpoint), call the trial reporter.

    Runs after :class:`~nasdet.hooks.MetricsDumpHook` and mmengine's ``CheckpointHook``
    (priority ``LOWEST``), so a trial stopped by its reporter has the epoch's metrics in
    ``metrics.json``, and the checkpoint handed on is the epoch's. Without an installed
    reporter (e.g. ``tools/train.py`` on a dumped config) it does nothing. A validation
    without metrics (no detections at all) is reported with ``{}``.
    """

    priority = "LOWEST"

    def after_train_epoch(self, runner: Any) -> None:
        fn = current_checkpoint_reporter()
        if fn is None:
            return
        epoch = int(runner.epoch) + 1  # the loop counts the epoch after its hooks
        last = runner.message_hub.get_info("last_ckpt")
        if last and Path(last).name == f"epoch_{epoch}.pth" and Path(last).is_file():
            fn(epoch, Path(last))

    def after_val_epoch(self, runner: Any, metrics: dict | None = None) -> None:
        fn = current_reporter()
        if fn is None:
            return
        # Empty metrics (a model without detections yet) are reported too: the reporter
        # decides what they mean (the search: AP 0).
        fn(int(runner.epoch), {k: float(v) for k, v in (metrics or {}).items()
                               if isinstance(v, (int, float))})
