"""Retrying trials whose process died: which RUNNING trials a resumed driver takes over.

A trial records its ``worker`` (machine: host, boot id and PID namespace; pid; process
start time). A resumed driver fails and retries at once the trials of workers on this
machine whose process is gone (no such pid, a zombie, or the pid reused by a later
process); a live worker's trials are never touched. Trials of other machines are left
to the heartbeat of RDB storages, whose stale-trial callback (:class:`RetryInterrupted`)
retries them. A retry keeps the params, the reports so far and the trial directory
(``retried_from``), so training continues from its last epoch checkpoint.
"""

from __future__ import annotations

import contextlib
import copy
import os
import socket
import warnings
from collections.abc import Callable, Iterable
from typing import Any

import optuna
from optuna.trial import TrialState

from nasdet.search.trials import (
    RETRIED_FROM_ATTR,
    RETRY_CARRIES,
    WORKER_ATTR,
    interrupted,
    mark_interrupted,
)


# ------------------------------------------------------------------------------ retries
def _machine() -> str:
    """This machine and PID namespace: host name, boot id, PID namespace.

    Two processes with the same machine string see the same process ids, so one can
    tell whether the other is alive.
    """
    parts = [socket.gethostname()]
    with contextlib.suppress(OSError), open("/proc/sys/kernel/random/boot_id") as f:
        parts.append(f.read().strip())
    with contextlib.suppress(OSError):
        parts.append(os.readlink("/proc/self/ns/pid"))
    return "|".join(parts)


def _started(pid: int) -> int | None:
    """When process ``pid`` started (clock ticks since boot); None: no such live process."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            fields = f.read().rsplit(")", 1)[1].split()
    except OSError:
        return None
    return None if fields[0] in ("Z", "X") else int(fields[19])  # state; field 22: starttime


def worker_record(work_dir: str | os.PathLike[str]) -> dict[str, Any]:
    """What a driver records of itself on each trial it runs (:data:`WORKER_ATTR`).

    ``machine`` (:func:`_machine`), ``pid``, ``started`` (the process's start time, so a
    reused pid is not taken for it), ``host`` and ``work_dir``.
    """
    pid = os.getpid()
    return {"machine": _machine(), "host": socket.gethostname(), "pid": pid,
            "started": _started(pid), "work_dir": str(work_dir)}


def worker_gone(trial: optuna.trial.FrozenTrial) -> bool:
    """Whether the process that ran ``trial`` is known to be gone.

    Only a worker of this machine (same host, boot and PID namespace) can be checked:
    gone when its pid runs no process, or a process started at another time. A trial of
    another machine, or without a record, is never said to be gone (its heartbeat is
    what tells, on RDB storages).
    """
    record = trial.user_attrs.get(WORKER_ATTR)
    if not isinstance(record, dict) or record.get("machine") != _machine():
        return False
    pid = int(record.get("pid", -1))
    if pid == os.getpid():
        return False  # this very process: alive
    started = _started(pid)
    if started is not None:  # a live process: the same one unless it started at another time
        return record.get("started") is not None and started != record["started"]
    if os.path.isdir("/proc/self"):
        return True  # no such process (or a zombie)
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    except PermissionError:
        return False
    return False


def retried_numbers(trials: Iterable[optuna.trial.FrozenTrial]) -> set[int]:
    """Numbers of the trials a later trial retries (Optuna's ``retry_history``)."""
    return {n for t in trials for n in t.system_attrs.get("retry_history", [])}


class RetryInterrupted:
    """Retry a trial cut off by a lost process: same params, its directory, its epochs.

    Optuna's :class:`~optuna.storages.RetryHeartbeatStaleTrialCallback` (RDB storages
    call it for each trial whose heartbeat stopped; a resumed driver calls it for its
    own dead trials at once): a WAITING trial with the same params and distributions,
    the intermediate values so far, Optuna's ``failed_trial``/``retry_history``, and
    of the user attributes only :data:`RETRY_CARRIES` plus ``retried_from`` (the
    trial it continues). The driver runs it in the old trial's directory, where the
    evaluator skips the finished stages and training continues from its last epoch
    checkpoint. After ``max_retry`` retries of one trial it is not retried again (it
    stays interrupted, does not count, and its checkpoints are removed).

    Args:
        max_retry: Retries of one original trial (the config's ``max_failures``).
        remove_checkpoints: Called with the trial directory of a trial not retried.
    """

    def __init__(self, max_retry: int,
                 remove_checkpoints: Callable[[str], None] | None = None):
        self.max_retry = max_retry
        self.remove_checkpoints = remove_checkpoints
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
            self._optuna = optuna.storages.RetryHeartbeatStaleTrialCallback(
                max_retry=max_retry, inherit_intermediate_values=True)

    def __call__(self, study: optuna.Study, trial: optuna.trial.FrozenTrial) -> bool:
        """Enqueue the retry of ``trial`` (FAIL by now); whether one was enqueued."""
        history = [*trial.system_attrs.get("retry_history", []), trial.number]
        if len(history) > self.max_retry:
            if self.remove_checkpoints is not None and trial.user_attrs.get("trial_dir"):
                self.remove_checkpoints(trial.user_attrs["trial_dir"])
            return False
        carried = copy.copy(trial)
        carried.user_attrs = {**{k: trial.user_attrs[k] for k in RETRY_CARRIES
                                 if k in trial.user_attrs}, RETRIED_FROM_ATTR: trial.number}
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
            self._optuna(study, carried)
        return True


def take_over_interrupted(study: optuna.Study, retry: RetryInterrupted, *,
                          heartbeat: bool) -> list[int]:
    """Fail and retry the trials whose process is gone; the numbers retried.

    The rule: a RUNNING trial is failed at once when its worker is of this machine and
    its process is gone (:func:`worker_gone`), e.g. the driver this one resumes, killed
    seconds ago; a live worker's trials (here or elsewhere) are never touched. So is an
    interrupted FAIL trial of such a worker that no trial retries yet (a driver stopped
    by Ctrl-C). Trials of other machines are left to the heartbeat (RDB storages:
    ``fail_stale_trials``, whose callback is ``retry``); a storage without heartbeat
    (journal) fails RUNNING trials without a worker record (runs of older versions), as
    a resumed driver always did.

    Args:
        study: The study.
        retry: The retry callback (also the storage's heartbeat callback).
        heartbeat: Whether the storage beats a heartbeat.
    """
    trials = study.get_trials(deepcopy=False)
    taken = retried_numbers(trials)
    retried = []
    for t in trials:
        if t.state == TrialState.RUNNING:
            legacy = not heartbeat and WORKER_ATTR not in t.user_attrs
            if not (legacy or worker_gone(t)):
                continue
            try:
                mark_interrupted(study, t)
            except optuna.exceptions.UpdateFinishedTrialError:
                continue  # another worker finished or failed it meanwhile
        elif not (interrupted(t) and t.number not in taken and worker_gone(t)):
            continue
        if retry(study, study._storage.get_trial(t._trial_id)):
            retried.append(t.number)
    if heartbeat:
        from optuna.storages._heartbeat import fail_stale_trials

        fail_stale_trials(study)  # other workers' trials past the grace period
    return retried
