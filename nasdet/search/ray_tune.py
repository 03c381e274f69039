"""The Ray Tune pieces of the Ray driver: searcher, scheduler, callback and result rows.

:class:`~nasdet.search.ray_driver.RaySearch` puts them together: Tune runs
:func:`~nasdet.search.ray_trial.make_trainable`'s trainable (one candidate per trial, one ``tune.report`` per
stage, see :func:`~nasdet.search.ray_trial.run_trial`), samples it through :class:`StageAwareOptunaSearch` (Ray
Tune's ``OptunaSearch`` with the space's define-by-run :class:`SpaceSampler`), stops
it early with :class:`EpochASHAScheduler`, prints one line per finished (or retried)
trial with :class:`ProgressLines` and removes a trial's checkpoints once it ended with
:class:`RemoveCheckpoints`. :func:`result_row` turns a trial's last result into the row
both drivers report (:func:`nasdet.search.trials.trial_row`).
"""

from __future__ import annotations

import contextlib
import math
import shutil
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import optuna
from ray.tune import Callback
from ray.tune.schedulers import ASHAScheduler
from ray.tune.search.optuna import OptunaSearch as TuneOptunaSearch

from nasdet.search.config import SearchConfig
from nasdet.search.evaluator import (
    read_id_proposal,
)
from nasdet.search.ray_trial import BOOKKEEPING_KEYS, TUNE_KEYS, say, tune_trial_folder
from nasdet.search.trials import (
    ENDED_AT_ATTR,
    ENQUEUED_ATTR,
    ID_GUIDED_ATTR,
    RAY_TRIAL_ATTR,
    TRIAL_LOG,
    best_text,
    enqueue_id_proposal,
    error_text,
    objective_values,
    outcome_text,
    trial_line,
    trial_row,
)


# ------------------------------------------------------------------------------ search
class SpaceSampler:
    """The define-by-run function given to Ray Tune's ``OptunaSearch``.

    Calls ``space.suggest(trial)`` (only ``trial.suggest_*``); the captured
    parameters become the Tune trial's config. Pickles as the space's path, so Tune
    can snapshot and restore the searcher.

    Args:
        space_path: The search space YAML.
    """

    def __init__(self, space_path: str | Path):
        self.space_path = Path(space_path)
        self._space = None

    def __call__(self, trial: Any) -> None:
        if self._space is None:
            from nasdet.space import SearchSpace

            self._space = SearchSpace.from_yaml(self.space_path)
        self._space.suggest(trial)

    def __getstate__(self) -> dict[str, Any]:
        return {"space_path": self.space_path, "_space": None}


class StageAwareOptunaSearch(TuneOptunaSearch):
    """Ray Tune's ``OptunaSearch``, told objective values only by trials that ran every stage.

    A trial stopped early by the scheduler, or rejected by the space's budget, is told
    as pruned (no values); one that raised as failed. Intermediate results reach Optuna
    only once the (single) objective metric exists.

    With ``id_guided``, a finished trial's ID-guided proposal (``id_widths.json`` in
    its result's ``trial_dir``) is enqueued in the study, so a later ``suggest``
    returns it, with ``id_guided_from`` (the source's Tune trial id) added to its config.

    Args:
        n_stages: Stages of a complete trial.
        id_guided: Enqueue the trials' ID-guided proposals.
        **kwargs: ``OptunaSearch``'s arguments (``space``, ``metric``, ``mode``, ``sampler``).
    """

    def __init__(self, n_stages: int, id_guided: bool = False, **kwargs: Any):
        self.n_stages = n_stages
        self.id_guided = id_guided
        super().__init__(**kwargs)

    def suggest(self, trial_id: str) -> dict[str, Any] | None:
        new = trial_id not in self._ot_trials
        params = super().suggest(trial_id)
        ot_trial = self._ot_trials.get(trial_id)
        if new and ot_trial is not None:
            ot_trial.set_user_attr(RAY_TRIAL_ATTR, trial_id)
        source = ot_trial.user_attrs.get(ID_GUIDED_ATTR) if ot_trial is not None else None
        if params is not None and source is not None:
            params = {**params, ID_GUIDED_ATTR: source}
        label = ot_trial.user_attrs.get(ENQUEUED_ATTR) if ot_trial is not None else None
        if params is not None and label is not None:
            params = {**params, ENQUEUED_ATTR: label}
        return params

    def on_trial_result(self, trial_id: str, result: dict[str, Any]) -> None:
        if isinstance(self.metric, list):
            return
        value = result.get(self.metric)
        if not isinstance(value, (int, float)) or not math.isfinite(value):
            return
        if result.get("stage_name") and not math.isfinite(result.get("score", math.nan)):
            return  # not a train stage's (or epoch's) report: not a step of the AP curve
        # The step of an intermediate value is the epoch, as in the Optuna driver.
        step = result.get("epoch", result.get("training_iteration", 0))
        super().on_trial_result(trial_id, {**result, "training_iteration": int(step)})

    def on_trial_complete(self, trial_id: str, result: dict[str, Any] | None = None,
                          error: bool = False) -> None:
        trial_dir = (result or {}).get("trial_dir")
        ot_trial = self._ot_trials.get(trial_id)
        if ot_trial is not None:
            # A trial told before the driver was killed is finished in the storage.
            with contextlib.suppress(optuna.exceptions.UpdateFinishedTrialError):
                for key, value in _trial_attrs(result, error, self.n_stages).items():
                    ot_trial.set_user_attr(key, value)
        if result is not None and (error or result.get("rejected")
                                   or result.get("stages_done") != self.n_stages):
            result = None  # no values: Optuna records PRUNED, or FAIL with ``error``
        super().on_trial_complete(trial_id, result, error)
        # The model was trained and measured whatever became of the trial afterwards.
        # getattr: a searcher restored from an experiment of an older version lacks it.
        params = read_id_proposal(trial_dir) if getattr(self, "id_guided", False) else None
        if params is not None and enqueue_id_proposal(self._ot_study, params, trial_id):
            say(f"[search] trial {trial_id} proposes ID-guided widths: enqueued (the next "
                "trial runs it, if any is left)")


def _trial_attrs(result: dict[str, Any] | None, error: bool,
                 n_stages: int) -> dict[str, Any]:
    """The user attributes an Optuna trial of this driver gets, as the Optuna driver's.

    ``metrics`` (the evaluator's finite metrics), ``trial_dir``, ``candidate_key``,
    ``node_id``, ``ended_at`` and, where they apply, ``rejected``, ``pruned_after`` and
    ``fail_reason`` (a failed trial's reason is in its ``trial.log``).
    """
    result = result or {}
    attrs: dict[str, Any] = {
        "metrics": {k: float(v) for k, v in result.items()
                    if k not in TUNE_KEYS and k not in BOOKKEEPING_KEYS
                    and not k.startswith("config/") and isinstance(v, (int, float))
                    and not isinstance(v, bool) and math.isfinite(v)}}
    for key in ("trial_dir", "candidate_key", "node_id"):
        if result.get(key):
            attrs[key] = result[key]
    # Proxy scores as metrics of their own (the Optuna driver's user attributes).
    attrs.update({k: v for k, v in attrs["metrics"].items() if k.startswith("proxy/")})
    if result.get("stage_name"):
        attrs[ENDED_AT_ATTR] = result["stage_name"]
    if error:  # Tune tells a searcher that a trial failed, not why: point to its log
        where = Path(result["trial_dir"]) / TRIAL_LOG if result.get("trial_dir") else "Tune's log"
        attrs["fail_reason"] = f"the trial raised (see {where})"
    elif result.get("rejected"):
        attrs["rejected"] = result["rejected"]
    elif result.get("stages_done") != n_stages:
        attrs["pruned_after"] = result.get("stage_name") or "-"
    return attrs


class EpochASHAScheduler(ASHAScheduler):
    """ASHA over epochs (``time_attr='epoch'``), plus one rung of its own for proxy scores.

    Train stages report the first objective as ``score`` at ``epoch`` (epochs trained
    so far), so ASHA's rungs are epochs. A proxy stage's result carries its ``report``
    proxy as ``proxy_score`` (``score`` NaN, ``epoch`` 0: no rung of the epoch axis);
    this scheduler stops it by ASHA's rule on a rung of its own: below the top
    ``1 / reduction_factor`` of the proxy scores recorded before it (once the stage's
    ``n_startup_trials`` are, default 1). A trial's last stage is its end, not a rung.

    Args:
        n_stages: Stages of a complete trial.
        reduction_factor: ASHA's reduction factor.
        mode: ``max`` or ``min`` (the first objective's).
        startup: Proxy stage name -> scores recorded before its rung stops a trial.
        **kwargs: ``ASHAScheduler``'s other arguments.
    """

    def __init__(self, *, n_stages: int, reduction_factor: float, mode: str,
                 startup: dict[str, int] | None = None, **kwargs: Any):
        super().__init__(reduction_factor=reduction_factor, mode=mode, **kwargs)
        self._n_stages = n_stages
        self._startup = dict(startup or {})
        self._proxy_rf = float(reduction_factor)
        self._proxy_sign = 1.0 if mode == "max" else -1.0
        self._proxy_rung: dict[tuple[str, str], float] = {}

    def on_trial_result(self, tune_controller: Any, trial: Any, result: dict) -> str:
        proxy = result.get("proxy_score")
        if isinstance(proxy, (int, float)) and math.isfinite(proxy):
            if result.get("stages_done", 0) >= self._n_stages:
                return self.CONTINUE
            key = (str(result.get("stage_name")), trial.trial_id)
            if key in self._proxy_rung:
                return self.CONTINUE
            recorded = [v for (stage, _), v in self._proxy_rung.items() if stage == key[0]]
            value = self._proxy_sign * float(proxy)
            self._proxy_rung[key] = value
            if recorded and len(recorded) >= self._startup.get(key[0], 1):
                import numpy as np

                cutoff = float(np.nanpercentile(recorded, (1 - 1 / self._proxy_rf) * 100))
                if value < cutoff:
                    return self.STOP
            return self.CONTINUE
        return super().on_trial_result(tune_controller, trial, result)


def trial_dirname(trial: Any) -> str:
    """Tune's own directory of a trial (:func:`~nasdet.search.ray_trial.tune_trial_folder`)."""
    return tune_trial_folder(trial.trial_id)


class ProgressLines(Callback):
    """Prints one line per finished trial (:func:`trial_line`), like the Optuna driver.

    Args:
        config: The search config.
        work_dir: The search's work dir (a failed trial's line names its log).
    """

    def __init__(self, config: SearchConfig, work_dir: str | Path | None = None):
        self.config = config
        self.work_dir = Path(work_dir) if work_dir is not None else None
        self.start = time.perf_counter()
        self.done = 0
        self.finished: set[str] = set()
        self.complete: dict[Any, list[float]] = {}  # trial number -> objective values
        self.started: dict[str, float] = {}  # trial id -> when this run started it

    def setup(self, **info: Any) -> None:
        self.start = time.perf_counter()  # a restored experiment: this run's clock
        self.done = 0

    def on_trial_start(self, iteration: int, trials: list, trial: Any, **info: Any) -> None:
        self.started[trial.trial_id] = time.perf_counter()

    def _line(self, trials: list, trial: Any, state: str, what: str, stage: str | None,
              note: str = "") -> None:
        self.done += 1
        self.finished.add(trial.trial_id)
        self.finished |= {t.trial_id for t in trials if t.status in ("TERMINATED", "ERROR")}
        number = trial_number(trial.experiment_tag, trial.trial_id)
        seconds = (trial.last_result or {}).get("time_total_s")
        if seconds is None and trial.trial_id in self.started:  # failed before a result
            seconds = time.perf_counter() - self.started[trial.trial_id]
        say(trial_line(
            f"{number} ({trial.trial_id})", state, what, stage=stage, seconds=seconds,
            done=len(self.finished), n_trials=self.config.n_trials,
            best=best_text(self.config, self.complete), elapsed_s=time.perf_counter() - self.start, finished_here=self.done, note=note))

    def on_trial_complete(self, iteration: int, trials: list, trial: Any, **info: Any) -> None:
        result = trial.last_result or {}
        row = result_row(trial.trial_id, trial.config, result, None, self.config,
                         tag=trial.experiment_tag)
        state = row["state"].lower()
        values = [float(row.get(o.metric, math.nan)) for o in self.config.objectives] \
            if state == "complete" else []
        if state == "complete":
            self.complete[row["trial"]] = values
        # Not the Optuna driver's pruned text: Tune does not say at which rung ASHA stopped it.
        what = outcome_text(state, self.config.objectives, values, rejected=row.get("rejected"),
                            pruned="stopped by ASHA", fail_reason=row.get("fail_reason", ""))
        self._line(trials, trial, state, what, result.get("stage_name"))

    def on_trial_recover(self, iteration: int, trials: list, trial: Any, **info: Any) -> None:
        number = trial_number(trial.experiment_tag, trial.trial_id)
        epochs = (trial.last_result or {}).get("epochs")
        where = f"epoch {int(epochs)}" if isinstance(epochs, (int, float)) and \
            math.isfinite(epochs) else "its last checkpoint"
        reason = (_live_error_reason(trial) or "its worker was lost").splitlines()[0][:120]
        say(f"[search] trial {number} ({trial.trial_id}) interrupted: {reason}; "
            f"retried from {where} "
            f"(failure {trial.run_metadata.num_failures})")

    def on_trial_error(self, iteration: int, trials: list, trial: Any, **info: Any) -> None:
        done = int((trial.last_result or {}).get("stages_done", 0) or 0)
        stages = self.config.stages
        stage = stages[done].name if done < len(stages) else None
        note = ""
        if self.work_dir is not None:
            note = f" | log {self.work_dir / 'trials' / trial.trial_id / TRIAL_LOG}"
        self._line(trials, trial, "fail", _live_error_reason(trial), stage, note)


class RemoveCheckpoints(Callback):
    """Remove a trial's checkpoints once it ended (complete, stopped, failed for good).

    Its epoch checkpoints in ``<work_dir>/trials/<id>/train`` and Tune's copies in the
    experiment's storage (``checkpoint_*`` in the trial's folder, local storage). Tune
    calls neither hook for a trial it retries, so a trial that can still be retried
    keeps them.

    Args:
        work_dir: The search's work dir.
    """

    def __init__(self, work_dir: str | Path):
        self.work_dir = Path(work_dir)

    def _remove(self, trial: Any) -> None:
        train = self.work_dir / "trials" / trial.trial_id / "train"
        for ckpt in train.glob("*.pth"):
            ckpt.unlink(missing_ok=True)
        (train / "last_checkpoint").unlink(missing_ok=True)
        with contextlib.suppress(Exception):
            folder = Path(trial.path)
            for old in folder.glob("checkpoint_*"):
                shutil.rmtree(old, ignore_errors=True)

    def on_trial_complete(self, iteration: int, trials: list, trial: Any, **info: Any) -> None:
        self._remove(trial)

    def on_trial_error(self, iteration: int, trials: list, trial: Any, **info: Any) -> None:
        self._remove(trial)


def _live_error_reason(trial: Any) -> str:
    """:func:`error_reason` of a trial that just failed (its error files are local yet)."""
    exc = None
    with contextlib.suppress(Exception):
        import cloudpickle

        with open(trial.pickled_error_file, "rb") as f:
            exc = cloudpickle.load(f)
    return _reason(exc, lambda: Path(trial.error_file).read_text()) or error_reason(trial)


def error_reason(trial: Any) -> str:
    """``Type: message`` of the exception a trial raised (its last line if unpicklable)."""
    exc = None
    with contextlib.suppress(Exception):
        exc = trial.get_pickled_error()
    return (_reason(exc, lambda: str(trial.get_error() or exc or ""))
            or "the trial raised (no error text stored)")


def _reason(exc: Any, text: Callable[[], str]) -> str:
    """:func:`~nasdet.search.trials.error_text` of what ``exc`` wraps, else the last line
    of ``text()`` ('': neither)."""
    cause = getattr(exc, "cause", None) or exc
    if cause is not None and not type(cause).__name__.startswith(("RayTaskError", "TuneError")):
        return error_text(cause)
    body = ""
    with contextlib.suppress(Exception):
        body = text()
    lines = [ln.strip() for ln in body.strip().splitlines() if ln.strip()]
    return lines[-1] if lines else ""


def result_row(trial_id: str, params: dict[str, Any] | None, result: dict[str, Any] | None,
               error: str | None, config: SearchConfig, *, status: str = "TERMINATED",
               tag: str = "") -> dict[str, Any]:
    """A Tune trial's row: :func:`~nasdet.search.trials.trial_row`, as the Optuna driver's.

    Args:
        trial_id: Tune's trial id.
        params: The trial's Tune config: its params (and ``id_guided_from``/``enqueued_as``).
        result: Its last result (None: none yet).
        error: Why it failed (None: it did not).
        config: The search config.
        status: Tune's status of the trial.
        tag: Tune's experiment tag (it starts with the trial's number).
    """
    result = dict(result or {})
    params = dict(params or {})
    attrs = {k: params.pop(k) for k in (ID_GUIDED_ATTR, ENQUEUED_ATTR) if k in params}
    metrics = {k: v for k, v in result.items()
               if k not in TUNE_KEYS and not k.startswith("config/")
               and k not in BOOKKEEPING_KEYS and not (isinstance(v, float) and math.isnan(v))}
    if result.get("trial_dir"):
        attrs["trial_dir"] = result["trial_dir"]
    state = "COMPLETE"
    if error is not None:
        state, attrs["fail_reason"] = "FAIL", error
    elif status in ("PENDING", "RUNNING", "PAUSED"):
        state = "RUNNING" if status == "RUNNING" else "WAITING"
    elif result.get("rejected"):
        state, attrs["rejected"] = "PRUNED", result["rejected"]
    elif result.get("stages_done", 0) != len(config.stages):
        state, attrs["pruned_after"] = "PRUNED", result.get("stage_name") or "-"
    else:
        try:
            objective_values(config, metrics)
        except (KeyError, TypeError, ValueError):
            state, attrs["fail_reason"] = "FAIL", "finished without every objective metric"
    return trial_row(trial_number(tag, trial_id), state, result.get("time_total_s"), params,
                     metrics, attrs, trial_id=trial_id,
                     node={k: result.get(k) for k in ("node_id", "node_ip")})


def trial_number(tag: str | None, trial_id: str) -> int | str:
    """0-based creation order of a trial (Tune's experiment tag starts with it, from 1)."""
    counter = (tag or "").split("_", 1)[0]
    return int(counter) - 1 if counter.isdigit() else trial_id
