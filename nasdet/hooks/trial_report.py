"""Hand each validation epoch's metrics to the reporter of the trial in flight."""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator
from typing import Any

from mmengine.hooks import Hook
from mmengine.registry import HOOKS

#: ``reporter(epoch, metrics)``: epoch = epochs trained so far, metrics as mmdet names them.
EpochReporter = Callable[[int, dict[str, float]], None]
_reporters: list[EpochReporter] = []


@contextlib.contextmanager
def trial_reporter(fn: EpochReporter) -> Iterator[EpochReporter]:
    """Install ``fn`` as this process's trial reporter while the block runs.

    A config can only name a hook, not carry a callable: the search installs the
    reporter around the Runner's training and :class:`TrialReportHook` looks it up.
    Whatever ``fn`` raises (e.g. a pruning signal) leaves the Runner as is.

    Args:
        fn: Called after every validation epoch with (epoch, metrics).

    Example:
        >>> with trial_reporter(lambda epoch, metrics: print(epoch)):  # doctest: +SKIP
        ...     runner.train()
    """
    _reporters.append(fn)
    try:
        yield fn
    finally:
        _reporters.remove(fn)


def current_reporter() -> EpochReporter | None:
    """The innermost installed trial reporter, or None."""
    return _reporters[-1] if _reporters else None


@HOOKS.register_module()
class TrialReportHook(Hook):
    """After every validation epoch, call the installed trial reporter.

    Runs after :class:`~nasdet.hooks.MetricsDumpHook` (priority ``VERY_LOW``), so a
    trial stopped by its reporter has the epoch's metrics in ``metrics.json``. Without
    an installed reporter (e.g. ``tools/train.py`` on a dumped config) it does nothing.
    A validation without metrics (no detections at all) is reported with ``{}``.
    """

    priority = "VERY_LOW"

    def after_val_epoch(self, runner: Any, metrics: dict | None = None) -> None:
        fn = current_reporter()
        if fn is None:
            return
        # Empty metrics (a model without detections yet) are reported too: the reporter
        # decides what they mean (the search: AP 0).
        fn(int(runner.epoch), {k: float(v) for k, v in (metrics or {}).items()
                               if isinstance(v, (int, float))})
