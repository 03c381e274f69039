"""The Ray Tune driver: the same trials as the Optuna driver, spread over a Ray cluster.

One Tune trial is one candidate. Ray Tune's ``OptunaSearch`` samples it from the
space's define-by-run ``suggest`` with the sampler :func:`make_sampler` builds (TPE for
one objective, NSGA-II for several); the trial runs the config's fidelity stages
through :class:`TrialEvaluator` and calls ``tune.report`` after each stage.

Early stopping uses Tune's asynchronous successive halving over epochs
(:class:`EpochASHAScheduler`: ``time_attr='epoch'``, ``grace_period=1``, ``max_t`` = the
last train stage's epochs, rungs at 1, rf, rf^2, ... epochs). Train stages report the
first objective as ``score`` at ``epoch`` = epochs trained so far, counted across train
stages; with ``report_every_epoch`` after every epoch, else at the stage's end. A proxy
stage with a ``report`` proxy is a rung of its own (``proxy_score``, ASHA's cutoff among
the proxy scores recorded before it), never a step of the epoch axis; stages without a
score (``complexity``) report ``score = NaN`` and never stop a trial. ``fidelity`` (the
``j``-th scored stage's ``reduction_factor ** j``, see :func:`fidelities`) is kept as
bookkeeping. With several objectives, with ``pruner: {type: none}``, or with fewer than
two rungs, trials run every stage (first in, first out). ``pruner: {reduction_factor:
3}`` changes the factor.

Optuna is told a trial's objective values only when it finished every stage; a trial
stopped early or rejected by the space's budget is told as pruned, one that raised as
failed, so proxy scores never stand in for an objective.

The Optuna study lives in the same storage the Optuna driver uses (``storage``,
default ``sqlite:///<work_dir>/study.db``) under the experiment's name, each trial
with its params, values, intermediate values (the objective per epoch) and the
user attributes the Optuna
driver sets (``metrics``, ``trial_dir``, ``ended_at``, ``rejected``,
``pruned_after``, ``fail_reason``, ``proxy/<name>``) plus ``ray_trial_id`` and ``node_id``: the report's
importances, ``optuna.load_study`` and optuna-dashboard read it as they read the
Optuna backend's. A study of that name existing without ``resume`` (or missing with
it) is the Optuna driver's error.

With ``id_guided`` (see :mod:`nasdet.search.config`) the searcher reads a finished
trial's ``id_widths.json`` (in its ``trial_dir``, so on a cluster the work dir must be
shared) and enqueues the proposal in its Optuna study unless a trial with the same
params exists; the next trial Tune asks for runs it, counting towards ``n_trials``.
Its Tune config carries ``id_guided_from`` (the source's Tune trial id; its row shows
the source's trial number).

Every result carries the evaluator's metrics so far, ``seconds/evaluator`` (wall-clock
seconds the trial spent inside the evaluator so far, waiting on Tune while reporting
excluded), and ``score``, ``fidelity``,
``stage`` (index), ``stage_name``, ``stages_done``, ``node_id`` (the Ray node that ran
the trial), ``trial_dir`` and, for a rejected candidate, ``rejected`` (the reason).
Objective metrics not produced yet are NaN, as Tune wants every metric in every result.

Layout under ``work_dir`` (all paths absolute; trials never depend on their working
directory)::

    <work_dir>/study.db                    the Optuna study (default storage)
    <work_dir>/ray_results/<study name>/   Tune's experiment (restore from here)
    <work_dir>/trials/<Tune trial id>/     the evaluator's files of one trial, and
                                           trial.log: all it printed (mmengine, ...)
    <work_dir>/search.log                  what the driver process printed (Ray, Tune)

The terminal gets the driver's header, one line per finished trial
(:func:`nasdet.search.optuna_driver.trial_line`) and errors; Ray's own worker logs
stay in Ray's session directory.

A killed driver loses at most the trials in flight: ``resume=True`` restores the Tune
experiment, keeps finished trials, and a trial that had finished every stage after
Tune's last snapshot is taken back from its own ``metrics.json`` rather than re-run.
(Tune snapshots every 2 s here, so only a trial both started and finished within the
last 2 s before the kill is unknown to the restored experiment; its directory stays.)
"""

from __future__ import annotations

import contextlib
import math
import os
import sys
import time
import traceback
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TextIO

import optuna
import ray
from optuna.trial import TrialState
from ray import tune
from ray.tune import Callback, ExperimentAnalysis
from ray.tune.schedulers import ASHAScheduler, FIFOScheduler
from ray.tune.search.optuna import OptunaSearch as TuneOptunaSearch

from nasdet.errors import NasdetError
from nasdet.search.config import SearchConfig, Stage
from nasdet.search.evaluator import (
    CandidateRejected,
    TrialEvaluator,
    clear_trial_dir,
    read_id_proposal,
)
from nasdet.search.optuna_driver import (
    ENDED_AT_ATTR,
    ENQUEUED_ATTR,
    ID_GUIDED_ATTR,
    SEARCH_LOG,
    TRIAL_LOG,
    check_study,
    enqueue_id_proposal,
    enqueue_listed,
    make_sampler,
    objective_values,
    proxy_score,
    stage_score,
    trial_line,
)
from nasdet.search.storage import default_storage_url, open_storage
from nasdet.utils.output import output_to
from nasdet.utils.ray_cluster import RAY_ADDRESS_ENV, connect_ray, ray_target

#: Keys every result of a trial carries besides the evaluator's metrics.
BOOKKEEPING_KEYS = ("score", "fidelity", "epoch", "proxy_score", "stage", "stage_name",
                    "stages_done", "node_id", "trial_dir", "candidate_key", "rejected")
# Tune's own result keys (not the trial's metrics).
_TUNE_KEYS = {"training_iteration", "time_total_s", "time_this_iter_s", "timestamp", "date",
              "time_since_restore", "iterations_since_restore", "timesteps_since_restore",
              "timesteps_total", "episodes_total", "checkpoint_dir_name", "done", "trial_id",
              "experiment_tag", "should_checkpoint", "pid", "hostname", "node_ip", "config"}
# Ray Tune snapshots its experiment state at most this often (seconds) unless the user
# sets TUNE_GLOBAL_CHECKPOINT_S; Tune's own default ("auto") waits at least 10 s.
SNAPSHOT_SECONDS = "2"
#: User attribute of each Optuna trial: the Tune trial id that ran it.
RAY_TRIAL_ATTR = "ray_trial_id"
# Where the driver's own lines go while a search runs (None: sys.stdout).
_terminal: list[TextIO] = []


def _say(line: str) -> None:
    """One of the driver's own lines, to the terminal (not into search.log)."""
    print(line, file=_terminal[-1] if _terminal else sys.stdout, flush=True)


# ------------------------------------------------------------------------------ trials
@dataclass(frozen=True)
class TrialSpec:
    """Everything a trial needs on whatever node it runs (sent with the trainable).

    Args:
        config: The validated search config.
        work_dir: Absolute work dir (must be the same path on every node).
        data_root: Absolute dataset root, resolved by the driver.
        cfg_options: Overrides applied to every candidate's config.
        keep_checkpoints: Keep trials' training checkpoints.
        fidelities: Per stage, the fidelity its result reports (0: not scored).
    """

    config: SearchConfig
    work_dir: Path
    data_root: Path | None
    cfg_options: dict[str, Any] = field(default_factory=dict)
    keep_checkpoints: bool = False
    fidelities: tuple[float, ...] = ()


def run_trial(spec: TrialSpec, params: dict[str, Any]) -> None:
    """The body of one Tune trial: rebuild the candidate, run its stages, report each.

    Args:
        spec: The search's trial spec.
        params: The trial's config as Tune passes it (the sampled parameters).
    """
    config = spec.config
    trial_id = tune.get_context().get_trial_id()
    trial_dir = spec.work_dir / "trials" / trial_id
    evaluator = TrialEvaluator(config, keep_checkpoints=spec.keep_checkpoints,
                               data_root=spec.data_root, cfg_options=spec.cfg_options)
    params = {k: v for k, v in params.items()
              if k not in (ID_GUIDED_ATTR, ENQUEUED_ATTR)}  # not space params
    candidate = evaluator.space.candidate(params)
    base = {"node_id": ray.get_runtime_context().get_node_id(), "trial_dir": str(trial_dir),
            "candidate_key": candidate.key}
    pending = {o.metric: math.nan for o in config.objectives}
    n_stages = len(config.stages)

    def result(stage: Stage | None, index: int, metrics: dict[str, float],
               done: bool = True) -> dict[str, Any]:
        score = stage_score(config, stage, metrics) if stage is not None else None
        proxy = proxy_score(stage, metrics) if stage is not None else None
        scored = score is not None and math.isfinite(score)
        rung = scored or (proxy is not None and math.isfinite(proxy))
        return {**pending, **metrics, **base, "stage": index,
                "stage_name": stage.name if stage is not None else "",
                "stages_done": index + int(done) if stage is not None else 0,
                "score": float(score) if scored else math.nan,
                "proxy_score": float(proxy) if proxy is not None else math.nan,
                # Only a scored report is on the epoch axis (0: below every rung).
                "epoch": int(metrics.get("epochs", 0)) if scored else 0,
                "fidelity": spec.fidelities[index] if rung and stage is not None else 0.0}

    recorded = _finished_record(trial_dir, dict(candidate.params), n_stages)
    if recorded is not None:  # finished before the driver was killed: no second run
        last = n_stages - 1
        tune.report(result(config.stages[last], last, recorded))
        return
    clear_trial_dir(trial_dir)

    clock = {"start": time.perf_counter(), "reporting": 0.0}
    reached = {"done": 0}

    def report(stage: Stage, index: int, metrics: dict[str, float]) -> None:
        reached["done"] = index + 1
        now = time.perf_counter()
        inside = now - clock["start"] - clock["reporting"]
        tune.report(result(stage, index, {**metrics, "seconds/evaluator": inside}))
        clock["reporting"] += time.perf_counter() - now

    def report_epoch(stage: Stage, index: int, epoch: int, metrics: dict[str, float]) -> None:
        now = time.perf_counter()
        inside = now - clock["start"] - clock["reporting"]
        tune.report(result(stage, index, {**metrics, "epochs": float(epoch),
                                          "seconds/evaluator": inside}, done=False))
        clock["reporting"] += time.perf_counter() - now

    with output_to(trial_dir / TRIAL_LOG):
        try:
            evaluator.run(candidate, trial_dir, report, epoch_report=report_epoch)
        except CandidateRejected as exc:
            inside = time.perf_counter() - clock["start"] - clock["reporting"]
            stage = config.stages[min(reached["done"], n_stages - 1)].name
            tune.report({**result(None, -1, {"seconds/evaluator": inside}),
                         "rejected": str(exc) or "over budget", "stage_name": stage})
        except Exception:
            traceback.print_exc()  # into the trial's log; Tune records the error
            raise


def _finished_record(trial_dir: Path, params: dict[str, Any],
                     n_stages: int) -> dict[str, float] | None:
    """The metrics of a trial directory whose stages all finished for these params."""
    import json

    try:
        stored = json.loads((trial_dir / "params.json").read_text())
        record = json.loads((trial_dir / "metrics.json").read_text())
    except (OSError, ValueError):
        return None
    if stored != json.loads(json.dumps(params)) or record.get("stages_done") != n_stages:
        return None
    return {k: float(v) for k, v in record.get("metrics", {}).items()}


def make_trainable(spec: TrialSpec):
    """A Tune function trainable running :func:`run_trial` with ``spec``."""

    def nasdet_trial(params: dict[str, Any]) -> None:
        run_trial(spec, params)

    return nasdet_trial


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
            _say(f"[search] trial {trial_id} proposes ID-guided widths: enqueued (the next "
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
                    if k not in _TUNE_KEYS and k not in BOOKKEEPING_KEYS
                    and not k.startswith("config/") and isinstance(v, (int, float))
                    and not isinstance(v, bool) and math.isfinite(v)}}
    for key in ("trial_dir", "candidate_key", "node_id"):
        if result.get(key):
            attrs[key] = result[key]
    # Proxy scores as metrics of their own (the Optuna driver's user attributes).
    attrs.update({k: v for k, v in attrs["metrics"].items() if k.startswith("proxy/")})
    if result.get("stage_name"):
        attrs[ENDED_AT_ATTR] = result["stage_name"]
    if error:
        where = Path(result["trial_dir"]) / TRIAL_LOG if result.get("trial_dir") else "Tune's log"
        attrs["fail_reason"] = f"the trial raised (see {where})"
    elif result.get("rejected"):
        attrs["rejected"] = result["rejected"]
    elif result.get("stages_done") != n_stages:
        attrs["pruned_after"] = result.get("stage_name") or "-"
    return attrs


def fidelities(config: SearchConfig, reduction_factor: float) -> tuple[float, ...]:
    """Per stage, the fidelity its result reports: ``rf ** j`` for the j-th scored stage.

    Args:
        config: The search config.
        reduction_factor: ASHA's reduction factor.
    """
    out, j = [], 0
    for stage in config.stages:
        if _is_scored(stage, config):
            out.append(float(reduction_factor ** j))
            j += 1
        else:
            out.append(0.0)
    return tuple(out)


def _is_scored(stage: Stage, config: SearchConfig) -> bool:
    if stage.type == "proxy":  # report: null records the proxies, scores none
        return stage.options.get("report") is not None
    return stage.type == "train" and not config.multi_objective


def _mode(direction: str) -> str:
    return "max" if direction == "maximize" else "min"


class RaySearch:
    """Run a search config with Ray Tune, locally or on a cluster.

    Args:
        config: The validated search config.
        work_dir: Trials, Tune's results and reports go here; on a cluster it must be
            the same absolute path on every node (shared storage).
        address: Join an existing cluster (``HOST:PORT`` of its head, ``auto`` or
            ``ray://HOST:PORT``); default: the cluster ``RAY_ADDRESS`` names, if set,
            else a private Ray in this process, listening on 127.0.0.1 only, without a
            dashboard. When Ray is already initialised in this process, that
            connection is used (and left open); otherwise ``run`` disconnects (or stops
            the local Ray) when it ends.
        storage: Optuna storage URL of the study Tune's searcher samples from and
            records every trial in (default: ``sqlite:///<work_dir>/study.db``, as the
            Optuna driver's); the study has the experiment's name.
        cpus_per_trial: CPUs Ray reserves for each trial.
        gpus_per_trial: GPUs Ray reserves for each trial (fractions share a GPU).
        max_concurrent: At most this many trials at once (default: as resources allow).
        resume: Restore the interrupted experiment of this study name and finish it.
        keep_checkpoints: Keep trials' training checkpoints.
        study_name: Tune experiment name (default: the search config's file stem).
        data_root: Dataset root for every candidate (default: the base config's,
            resolved here, so it must be the same path on every node).
        cfg_options: Overrides applied to every candidate's config.
        verbose: Ray Tune's console verbosity. 0: the terminal gets only this driver's
            lines, what Ray and Tune print goes to ``<work_dir>/search.log``; above 0
            Tune's progress reporter (and the workers' forwarded logs) stay on the
            terminal. What a trial prints is always in its ``trial.log``.
        out: Where the driver's own lines go (default ``sys.stdout``).

    Example:
        >>> from nasdet.search import load_search_config
        >>> cfg = load_search_config('configs/search/tiny_synth.yaml')  # doctest: +SKIP
        >>> search = RaySearch(cfg, 'work_dirs/search_ray')  # doctest: +SKIP
        >>> grid = search.run()  # doctest: +SKIP
        >>> rows = search.rows()  # doctest: +SKIP
    """

    def __init__(self, config: SearchConfig, work_dir: str | Path, *,
                 address: str | None = None, storage: str | None = None,
                 cpus_per_trial: float = 1,
                 gpus_per_trial: float = 0, max_concurrent: int | None = None,
                 resume: bool = False, keep_checkpoints: bool = False,
                 study_name: str | None = None, data_root: str | Path | None = None,
                 cfg_options: dict[str, Any] | None = None, verbose: int = 0,
                 out: TextIO | None = None):
        if cpus_per_trial < 0 or gpus_per_trial < 0 or cpus_per_trial + gpus_per_trial <= 0:
            raise NasdetError("each trial needs some CPUs or GPUs", key="--cpus-per-trial")
        if max_concurrent is not None and max_concurrent < 1:
            raise NasdetError("must be at least 1", key="max_concurrent")
        self.config = config
        self.work_dir = Path(work_dir).absolute()
        self.address = address
        self.storage_url = storage or default_storage_url(self.work_dir)
        self.cpus_per_trial = cpus_per_trial
        self.gpus_per_trial = gpus_per_trial
        self.max_concurrent = max_concurrent
        self.resume = resume
        self.keep_checkpoints = keep_checkpoints
        self.study_name = study_name or config.path.stem
        self.verbose = verbose
        self.out = out
        self.storage_path = self.work_dir / "ray_results"
        self.experiment_path = self.storage_path / self.study_name
        # Parses the space here, so a bad space fails before Ray starts.
        evaluator = TrialEvaluator(config, keep_checkpoints=keep_checkpoints,
                                   data_root=data_root, cfg_options=cfg_options)
        root = evaluator.candidate_config(evaluator.space.default_candidate()).get("data_root")
        self.data_root = Path(str(root)).absolute() if root else None
        self.cfg_options = dict(cfg_options or {})
        self.reduction_factor = float(config.pruner.get("reduction_factor", 2))
        if self.reduction_factor <= 1:
            raise NasdetError("must be greater than 1", file=config.path,
                              key="pruner.reduction_factor")
        #: Whether this driver started (or connected) Ray, and how long ``ray.init`` took.
        self.started_ray = False
        self.ray_init_seconds: float | None = None
        #: Wall-clock seconds of the last ``Tuner.fit``.
        self.fit_seconds = 0.0

    # -- public ------------------------------------------------------------------------
    @property
    def early_stopping(self) -> bool:
        """Whether ASHA stops trials between stages (see the module docstring)."""
        scored = sum(_is_scored(s, self.config) for s in self.config.stages)
        scored += sum(s.options["epochs"] - 1 for s in self.config.stages
                      if s.type == "train" and s.options.get("report_every_epoch"))
        return (not self.config.multi_objective and self.config.pruner.get("type") != "none"
                and scored >= 2)

    def run(self):
        """Run (or with ``resume``, finish) the search; return Tune's ``ResultGrid``.

        Raises:
            NasdetError: ``--address`` unreachable, the storage cannot be opened, a
                study or experiment of this name exists without ``resume``, or none
                exists with it.
        """
        # The Optuna driver's errors first: the same study names clash in one storage.
        check_study(open_storage(self.storage_url, heartbeat=False), self.storage_url,
                    self.study_name, self.resume)
        exists = tune.Tuner.can_restore(str(self.experiment_path))
        if exists and not self.resume:
            raise NasdetError(
                f"a Ray Tune experiment '{self.study_name}' already exists in "
                f"{self.storage_path}; pass --resume to continue it or --study-name for a "
                "new one", key="--study-name")
        if self.resume and not exists:
            raise NasdetError(
                f"no Ray Tune experiment '{self.study_name}' to resume in "
                f"{self.storage_path} (study '{self.study_name}' in {self.storage_url} was "
                "not run by the ray backend from this work dir: continue it with --backend "
                "optuna --resume)", key="--resume")
        self.work_dir.mkdir(parents=True, exist_ok=True)
        quiet = output_to(self.work_dir / SEARCH_LOG) if self.verbose <= 0 else \
            contextlib.nullcontext(sys.stdout)
        with quiet as terminal:
            _terminal.append(self.out or terminal)
            try:
                return self._run()
            finally:
                _terminal.pop()

    def _run(self):
        self._connect()
        try:
            trainable = self._trainable()
            if self.resume:
                tuner = tune.Tuner.restore(str(self.experiment_path), trainable=trainable,
                                           resume_unfinished=True, resume_errored=False,
                                           restart_errored=False)
            else:
                tuner = self._tuner(trainable)
            _say(f"[search] study '{self.study_name}' | storage {self.storage_url} | "
                 f"n_trials {self.config.n_trials} ({'resumed' if self.resume else 'new'}, "
                 f"{'ASHA' if self.early_stopping else 'no early stopping'}) | work dir "
                 f"{self.work_dir}")
            _say(f"[search] Ray Tune experiment: {self.experiment_path}")
            _say(self._ray_line())
            _say(f"[search] library output: {self.work_dir / SEARCH_LOG} and each trial's "
                 f"trials/<id>/{TRIAL_LOG}")
            start = time.perf_counter()
            with _env(RAY_CHDIR_TO_TRIAL_DIR="0", TUNE_GLOBAL_CHECKPOINT_S=SNAPSHOT_SECONDS,
                      RAY_AIR_NEW_OUTPUT="0" if self.verbose <= 0 else None):
                grid = tuner.fit()
            self.fit_seconds = time.perf_counter() - start
            self._fail_orphans()
            return grid
        finally:
            self._disconnect()

    def rows(self) -> list[dict[str, Any]]:
        """One row per trial, shaped like :func:`nasdet.search.optuna_driver.trial_rows`.

        Keys: ``trial`` (number), ``trial_id`` (Tune's), ``state`` (``COMPLETE``,
        ``PRUNED``, ``FAIL``, ``RUNNING``/``WAITING`` if unfinished), ``seconds``,
        ``param/<name>``, the trial's metrics, ``node_id``/``node_ip`` (where it ran),
        ``trial_dir`` and ``rejected``/``pruned_after``/``fail_reason`` where they apply.
        Read from the experiment on disk, so it works after the run (or without one).
        """
        return ray_trial_rows(self.experiment_path, self.config)

    def load_study(self) -> optuna.Study:
        """The search's Optuna study, read back from its storage (as any reader would)."""
        return optuna.load_study(study_name=self.study_name,
                                 storage=open_storage(self.storage_url, heartbeat=False))

    def _fail_orphans(self) -> None:
        """Fail this driver's trials still RUNNING once Tune finished (interrupted).

        A killed driver may have asked the study for a trial after Tune's last snapshot;
        the restored experiment does not know it, so nothing tells it. Marked as the
        Optuna driver marks a trial its killed driver cut off (it does not count).
        """
        study = self.load_study()
        for t in study.get_trials(deepcopy=False, states=(TrialState.RUNNING,)):
            if RAY_TRIAL_ATTR in t.user_attrs:
                study._storage.set_trial_user_attr(t._trial_id, "interrupted", True)
                study._storage.set_trial_state_values(t._trial_id, TrialState.FAIL)

    # -- Ray ---------------------------------------------------------------------------
    def _ray_line(self) -> str:
        """The header line saying which Ray the trials run on."""
        address, key = ray_target(self.address)
        if not self.started_ray:
            return "[search] Ray: the connection this process had already"
        if key == RAY_ADDRESS_ENV:
            return (f"[search] Ray: joined the cluster at {address} (from {RAY_ADDRESS_ENV}; "
                    "--address overrides it)")
        if address:
            return f"[search] Ray: joined the cluster at {address}"
        return "[search] Ray: private instance on 127.0.0.1 (this machine only, no dashboard)"

    def _connect(self) -> None:
        start = time.perf_counter()
        if connect_ray(self.address, verbose=self.verbose > 0):
            self.started_ray = True
            self.ray_init_seconds = time.perf_counter() - start

    def _disconnect(self) -> None:
        if self.started_ray and ray.is_initialized():
            ray.shutdown()
        self.started_ray = False

    # -- Tune --------------------------------------------------------------------------
    def _trainable(self):
        spec = TrialSpec(config=self.config, work_dir=self.work_dir, data_root=self.data_root,
                         cfg_options=self.cfg_options, keep_checkpoints=self.keep_checkpoints,
                         fidelities=fidelities(self.config, self.reduction_factor))
        resources = {"cpu": self.cpus_per_trial, "gpu": self.gpus_per_trial}
        return tune.with_resources(make_trainable(spec), resources)

    def _tuner(self, trainable):
        objectives = self.config.objectives
        n_stages = len(self.config.stages)
        guided = self.config.id_guided is not None
        study = {"storage": open_storage(self.storage_url, heartbeat=False),
                 "study_name": self.study_name}
        if self.config.multi_objective:
            searcher = StageAwareOptunaSearch(
                n_stages, id_guided=guided,
                space=SpaceSampler(self.config.space_path), sampler=make_sampler(self.config),
                metric=[o.metric for o in objectives],
                mode=[_mode(o.direction) for o in objectives], **study)
        else:
            searcher = StageAwareOptunaSearch(
                n_stages, id_guided=guided,
                space=SpaceSampler(self.config.space_path), sampler=make_sampler(self.config),
                metric=objectives[0].metric, mode=_mode(objectives[0].direction), **study)
        ot_study = searcher._ot_study  # as the Optuna driver labels its study
        ot_study.set_metric_names([o.metric for o in objectives])
        ot_study.set_user_attr("search_config", str(self.config.path))
        ot_study.set_user_attr("work_dir", str(self.work_dir))
        ot_study.set_user_attr("backend", "ray")
        ot_study.set_user_attr("ray_experiment", str(self.experiment_path))
        enqueue_listed(searcher._ot_study, self.config)  # the config's enqueue list first
        if self.early_stopping:
            last = max(s.options["epochs"] for s in self.config.stages if s.type == "train") \
                if any(s.type == "train" for s in self.config.stages) else 1
            scheduler = EpochASHAScheduler(
                n_stages=n_stages, time_attr="epoch", metric="score", mode=_mode(objectives[0].direction),
                grace_period=1, max_t=max(2, last), reduction_factor=self.reduction_factor,
                stop_last_trials=False)
        else:
            scheduler = FIFOScheduler()
        return tune.Tuner(
            trainable,
            tune_config=tune.TuneConfig(
                search_alg=searcher, scheduler=scheduler, num_samples=self.config.n_trials,
                max_concurrent_trials=self.max_concurrent, reuse_actors=True,
                trial_dirname_creator=trial_dirname),
            run_config=tune.RunConfig(
                name=self.study_name, storage_path=str(self.storage_path),
                failure_config=tune.FailureConfig(max_failures=0, fail_fast=False),
                callbacks=[ProgressLines(self.config, self.work_dir)], verbose=self.verbose,
                log_to_file=True))


class EpochASHAScheduler(ASHAScheduler):
    """ASHA over epochs (``time_attr='epoch'``), plus one rung of its own for proxy scores.

    Train stages report the first objective as ``score`` at ``epoch`` (epochs trained
    so far), so ASHA's rungs are epochs. A proxy stage's result carries its ``report``
    proxy as ``proxy_score`` (``score`` NaN, ``epoch`` 0: no rung of the epoch axis);
    this scheduler stops it by ASHA's rule on a rung of its own: below the top
    ``1 / reduction_factor`` of the proxy scores recorded before it. A trial's last
    stage is its end, not a rung.

    Args:
        n_stages: Stages of a complete trial.
        reduction_factor: ASHA's reduction factor.
        mode: ``max`` or ``min`` (the first objective's).
        **kwargs: ``ASHAScheduler``'s other arguments.
    """

    def __init__(self, *, n_stages: int, reduction_factor: float, mode: str, **kwargs: Any):
        super().__init__(reduction_factor=reduction_factor, mode=mode, **kwargs)
        self._n_stages = n_stages
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
            if recorded:
                import numpy as np

                cutoff = float(np.nanpercentile(recorded, (1 - 1 / self._proxy_rf) * 100))
                if value < cutoff:
                    return self.STOP
            return self.CONTINUE
        return super().on_trial_result(tune_controller, trial, result)


def trial_dirname(trial: Any) -> str:
    """Tune's own directory of a trial: ``trial_<id>`` (parameters stay in params.json)."""
    return f"trial_{trial.trial_id}"


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

    def _best(self) -> str:
        if not self.complete:
            return "-"
        objectives = self.config.objectives
        if self.config.multi_objective:
            return f"{len(_pareto_front(self.complete, objectives))} on the Pareto front"
        sign = 1.0 if objectives[0].direction == "maximize" else -1.0
        number, values = max(self.complete.items(), key=lambda kv: sign * kv[1][0])
        return f"{objectives[0].metric}={values[0]:.4g} (trial {number})"

    def _line(self, trials: list, trial: Any, state: str, what: str, stage: str | None,
              note: str = "") -> None:
        self.done += 1
        self.finished.add(trial.trial_id)
        self.finished |= {t.trial_id for t in trials if t.status in ("TERMINATED", "ERROR")}
        number = trial_number(trial.experiment_tag, trial.trial_id)
        seconds = (trial.last_result or {}).get("time_total_s")
        if seconds is None and trial.trial_id in self.started:  # failed before a result
            seconds = time.perf_counter() - self.started[trial.trial_id]
        _say(trial_line(
            f"{number} ({trial.trial_id})", state, what, stage=stage, seconds=seconds,
            done=len(self.finished), n_trials=self.config.n_trials, best=self._best(),
            elapsed_s=time.perf_counter() - self.start, finished_here=self.done, note=note))

    def on_trial_complete(self, iteration: int, trials: list, trial: Any, **info: Any) -> None:
        result = trial.last_result or {}
        row = _row(trial.trial_id, trial.config, result, None, self.config,
                   tag=trial.experiment_tag)
        what = ""
        if row["state"] == "COMPLETE":
            values = [float(row.get(o.metric, math.nan)) for o in self.config.objectives]
            self.complete[row["trial"]] = values
            what = ", ".join(f"{o.metric}={v:.4g}"
                             for o, v in zip(self.config.objectives, values, strict=True))
        elif row.get("rejected"):
            what = f"rejected: {row['rejected']}"
        elif row["state"] == "PRUNED":
            what = "stopped by ASHA"
        else:
            what = row.get("fail_reason", "")
        self._line(trials, trial, row["state"].lower(), what, result.get("stage_name"))

    def on_trial_error(self, iteration: int, trials: list, trial: Any, **info: Any) -> None:
        done = int((trial.last_result or {}).get("stages_done", 0) or 0)
        stages = self.config.stages
        stage = stages[done].name if done < len(stages) else None
        note = ""
        if self.work_dir is not None:
            note = f" | log {self.work_dir / 'trials' / trial.trial_id / TRIAL_LOG}"
        self._line(trials, trial, "fail", _live_error_reason(trial), stage, note)


def _live_error_reason(trial: Any) -> str:
    """:func:`_error_reason` of a trial that just failed (its error files are local yet)."""
    exc = None
    with contextlib.suppress(Exception):
        import cloudpickle

        with open(trial.pickled_error_file, "rb") as f:
            exc = cloudpickle.load(f)
    cause = getattr(exc, "cause", None) or exc
    if cause is not None and not type(cause).__name__.startswith(("RayTaskError", "TuneError")):
        return f"{type(cause).__name__}: {cause}"
    text = ""
    with contextlib.suppress(Exception):
        text = Path(trial.error_file).read_text()
    lines = [ln.strip() for ln in text.strip().splitlines() if ln.strip()]
    return lines[-1] if lines else _error_reason(trial)


def _pareto_front(values: dict[Any, list[float]], objectives: list) -> list[Any]:
    """The keys of ``values`` no other entry dominates (directions from ``objectives``)."""
    signs = [1.0 if o.direction == "maximize" else -1.0 for o in objectives]
    scored = {k: [s * x for s, x in zip(signs, v, strict=True)] for k, v in values.items()}

    def dominates(a: list[float], b: list[float]) -> bool:
        return all(x >= y for x, y in zip(a, b, strict=True)) and a != b

    return [k for k, v in scored.items()
            if not any(dominates(w, v) for j, w in scored.items() if j != k)]


# ------------------------------------------------------------------------------ rows
def ray_trial_rows(experiment_path: str | Path, config: SearchConfig) -> list[dict[str, Any]]:
    """Rows of a Tune experiment of this driver (see :meth:`RaySearch.rows`).

    Args:
        experiment_path: ``<work_dir>/ray_results/<study name>``.
        config: The search config it ran.
    """
    experiment_path = Path(experiment_path).absolute()
    if not experiment_path.is_dir():
        raise NasdetError("no Ray Tune experiment here", file=experiment_path)
    analysis = ExperimentAnalysis(str(experiment_path))
    rows = []
    for trial in analysis.trials:
        error = None
        if trial.status == "ERROR":
            error = _error_reason(trial)
        row = _row(trial.trial_id, trial.config, trial.last_result, error, config,
                   status=trial.status, tag=trial.experiment_tag)
        rows.append(row)
    rows.sort(key=lambda r: (isinstance(r["trial"], str), str(r["trial"]).zfill(12)))
    numbers = {r["trial_id"]: r["trial"] for r in rows}
    for r in rows:  # the source's trial number, as the rows name trials
        if ID_GUIDED_ATTR in r:
            r[ID_GUIDED_ATTR] = numbers.get(r[ID_GUIDED_ATTR], r[ID_GUIDED_ATTR])
    return rows


def _row(trial_id: str, params: dict[str, Any] | None, result: dict[str, Any] | None,
         error: str | None, config: SearchConfig, *, status: str = "TERMINATED",
         tag: str = "") -> dict[str, Any]:
    result = dict(result or {})
    params = dict(params or {})
    row: dict[str, Any] = {"trial": trial_number(tag, trial_id),
                           "trial_id": trial_id, "state": "COMPLETE",
                           "seconds": result.get("time_total_s")}
    if ID_GUIDED_ATTR in params:
        row[ID_GUIDED_ATTR] = params.pop(ID_GUIDED_ATTR)
    if ENQUEUED_ATTR in params:
        row[ENQUEUED_ATTR] = params.pop(ENQUEUED_ATTR)
    row.update({f"param/{k}": v for k, v in params.items()})
    row.update({k: v for k, v in result.items()
                if k not in _TUNE_KEYS and not k.startswith("config/")
                and k not in BOOKKEEPING_KEYS
                and not (isinstance(v, float) and math.isnan(v))})
    for key in ("node_id", "node_ip", "trial_dir"):
        if result.get(key):
            row[key] = result[key]
    done = result.get("stages_done", 0)
    if error is not None:
        row["state"] = "FAIL"
        row["fail_reason"] = error
    elif status in ("PENDING", "RUNNING", "PAUSED"):
        row["state"] = "RUNNING" if status == "RUNNING" else "WAITING"
    elif result.get("rejected"):
        row["state"] = "PRUNED"
        row["rejected"] = result["rejected"]
    elif done != len(config.stages):
        row["state"] = "PRUNED"
        row["pruned_after"] = result.get("stage_name") or "-"
    else:
        try:
            objective_values(config, row)
        except (KeyError, TypeError, ValueError):
            row["state"] = "FAIL"
            row["fail_reason"] = "finished without every objective metric"
    return row


def trial_number(tag: str | None, trial_id: str) -> int | str:
    """0-based creation order of a trial (Tune's experiment tag starts with it, from 1)."""
    counter = (tag or "").split("_", 1)[0]
    return int(counter) - 1 if counter.isdigit() else trial_id


def _error_reason(trial: Any) -> str:
    """``Type: message`` of the exception a trial raised (its last line if unpicklable)."""
    exc = None
    with contextlib.suppress(Exception):
        exc = trial.get_pickled_error()
    cause = getattr(exc, "cause", None) or exc
    if cause is not None and not type(cause).__name__.startswith(("RayTaskError", "TuneError")):
        return f"{type(cause).__name__}: {cause}"
    text = ""
    with contextlib.suppress(Exception):
        text = str(trial.get_error() or exc or "")
    lines = [ln.strip() for ln in text.strip().splitlines() if ln.strip()]
    return lines[-1] if lines else "the trial raised (no error text stored)"


# ------------------------------------------------------------------------------ helpers
@contextlib.contextmanager
def _env(**values: str | None) -> Iterator[None]:
    """Set environment variables the user has not set, for the block only."""
    old = {k: os.environ.get(k) for k in values}
    for key, value in values.items():
        if value is not None and key not in os.environ:
            os.environ[key] = value
    try:
        yield
    finally:
        for key, value in old.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value
