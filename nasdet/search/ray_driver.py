"""The Ray Tune driver: the same trials as the Optuna driver, spread over a Ray cluster.

One Tune trial is one candidate. Ray Tune's ``OptunaSearch`` samples it from the
space's define-by-run ``suggest`` with the sampler
:func:`~nasdet.search.trials.make_sampler` builds (TPE for one objective, NSGA-II for
several); the trial runs the config's fidelity stages through :class:`TrialEvaluator`
and calls ``tune.report`` after each stage. The Tune pieces (trainable, searcher,
scheduler, callback) are in :mod:`nasdet.search.ray_tune`, the bookkeeping this driver
shares with the Optuna driver in :mod:`nasdet.search.trials`.

Early stopping uses Tune's asynchronous successive halving over epochs
(:class:`~nasdet.search.ray_tune.EpochASHAScheduler`: ``time_attr='epoch'``,
``grace_period=1``, ``max_t`` = the last train stage's epochs, rungs at 1, rf, rf^2,
... epochs). Train stages report the
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
(:func:`nasdet.search.trials.trial_line`) and errors; Ray's own worker logs
stay in Ray's session directory.

Trials survive a lost worker, node or driver. After every training epoch a trial hands
Tune a ``tune.Checkpoint`` (its latest epoch checkpoint and stage progress, see
:mod:`nasdet.search.ray_trial`), which Tune keeps in the experiment's storage
(``<work_dir>/ray_results``, the last one per trial). A trial whose worker process or
node died is retried by Tune up to ``max_failures`` times (the search config's key,
``--max-failures``; ``tune.FailureConfig``) on any node, continuing from that epoch; a
trial that raised is failed for good (its retries raise again at once). Checkpoints
are removed when a trial ends (:class:`~nasdet.search.ray_tune.RemoveCheckpoints`),
unless ``keep_checkpoints``. **On a cluster the storage must be reachable from every
node**: the work dir on a shared file system (the same absolute path everywhere), since
a trial restored on another node reads its checkpoint from there (Ray Tune's
``storage_path`` on cloud storage serves the same purpose for Tune's own files).

A killed driver loses at most the trials in flight: ``resume=True`` restores the Tune
experiment, keeps finished trials, continues unfinished ones from their last
checkpoint, and a trial that had finished every stage after
Tune's last snapshot is taken back from its own ``metrics.json`` rather than re-run.
(Tune snapshots every 2 s here, so only a trial both started and finished within the
last 2 s before the kill is unknown to the restored experiment; its directory stays.)
"""

from __future__ import annotations

import contextlib
import os
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any, TextIO

import optuna
import ray
from optuna.trial import TrialState
from ray import tune
from ray.tune import ExperimentAnalysis
from ray.tune.schedulers import FIFOScheduler

from nasdet.errors import NasdetError
from nasdet.search.config import SearchConfig
from nasdet.search.evaluator import TrialEvaluator

# Keep the searcher, sampler, scheduler, callback and trial_dirname importable from here:
# Tune experiments snapshotted before they moved to ray_tune pickled them by this name.
from nasdet.search.ray_train import WorkerScaling
from nasdet.search.ray_trial import TrialSpec, lines_to, make_trainable, say
from nasdet.search.ray_tune import (
    EpochASHAScheduler,
    ProgressLines,
    RemoveCheckpoints,
    SpaceSampler,
    StageAwareOptunaSearch,
    error_reason,
    result_row,
    trial_dirname,
)
from nasdet.search.storage import default_storage_url, open_storage
from nasdet.search.trials import (
    ID_GUIDED_ATTR,
    RAY_TRIAL_ATTR,
    SEARCH_LOG,
    TRIAL_LOG,
    check_study,
    enqueue_listed,
    is_scored,
    make_sampler,
    mark_interrupted,
    rung_startup,
)
from nasdet.utils.output import output_to
from nasdet.utils.ray_cluster import RAY_ADDRESS_ENV, connect_ray, ray_target

# Ray Tune snapshots its experiment state at most this often (seconds) unless the user
# sets TUNE_GLOBAL_CHECKPOINT_S; Tune's own default ("auto") waits at least 10 s.
SNAPSHOT_SECONDS = "2"


def fidelities(config: SearchConfig, reduction_factor: float) -> tuple[float, ...]:
    """Per stage, the fidelity its result reports: ``rf ** j`` for the j-th scored stage.

    Args:
        config: The search config.
        reduction_factor: ASHA's reduction factor.
    """
    out, j = [], 0
    for stage in config.stages:
        if is_scored(stage, config):
            out.append(float(reduction_factor ** j))
            j += 1
        else:
            out.append(0.0)
    return tuple(out)


def _mode(direction: str) -> str:
    return "max" if direction == "maximize" else "min"


class RaySearch:
    """Run a search config with Ray Tune, locally or on a cluster.

    Args:
        config: The validated search config.
        work_dir: Trials, Tune's results and checkpoints and reports go here; on a
            cluster it must be the same absolute path on every node (shared storage),
            so a trial retried on another node finds its checkpoint.
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
        keep_checkpoints: Keep trials' training checkpoints (otherwise removed when a
            trial ends: never while Tune may still retry it).
        study_name: Tune experiment name (default: the search config's file stem).
        data_root: Dataset root for every candidate (default: the base config's,
            resolved here, so it must be the same path on every node).
        cfg_options: Overrides applied to every candidate's config.
        workers_per_trial: Above 1, each train stage runs as a Ray Train
            ``TorchTrainer`` of this many DDP workers (see :mod:`nasdet.search.ray_train`;
            the trial itself then reserves no CPU or GPU, and at most as many trials run
            at once as the cluster has workers' resources for).
        cpus_per_worker: CPUs of each such worker.
        gpus_per_worker: GPUs of each such worker (> 0: NCCL, else gloo).
        placement_strategy: ``PACK``, ``SPREAD``, ``STRICT_SPREAD`` or ``STRICT_PACK``.
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
                 out: TextIO | None = None, workers_per_trial: int = 1,
                 cpus_per_worker: float = 1, gpus_per_worker: float = 0,
                 placement_strategy: str = "PACK"):
        self.scaling = WorkerScaling(workers_per_trial, cpus_per_worker, gpus_per_worker,
                                     placement_strategy)
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
        scored = sum(is_scored(s, self.config) for s in self.config.stages)
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
        with quiet as terminal, lines_to(self.out or terminal):
            return self._run()

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
            say(f"[search] study '{self.study_name}' | storage {self.storage_url} | "
                f"n_trials {self.config.n_trials} ({'resumed' if self.resume else 'new'}, "
                f"{'ASHA' if self.early_stopping else 'no early stopping'}) | work dir "
                f"{self.work_dir}")
            say(f"[search] Ray Tune experiment: {self.experiment_path}")
            say(self._ray_line())
            if self.scaling.distributed:
                sc = self.scaling
                say(f"[search] train stages: {sc.num_workers} Ray Train workers per trial "
                    f"({sc.cpus_per_worker:g} CPU, {sc.gpus_per_worker:g} GPU each, "
                    f"{sc.placement_strategy}, {sc.backend})")
            say(f"[search] library output: {self.work_dir / SEARCH_LOG} and each trial's "
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
        """One row per trial, with :func:`nasdet.search.trials.trial_row`'s columns.

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
                mark_interrupted(study, t)

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
                         fidelities=fidelities(self.config, self.reduction_factor),
                         scaling=self.scaling, experiment_dir=self.experiment_path)
        resources = {"cpu": self.cpus_per_trial, "gpu": self.gpus_per_trial}
        if self.scaling.distributed:  # the trial's driver; its workers hold CPUs and GPUs
            resources = {"cpu": 0, "gpu": 0, "memory": DRIVER_MEMORY}
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
            last = max((s.options["epochs"] for s in self.config.stages if s.type == "train"), default=1)
            scheduler = EpochASHAScheduler(
                n_stages=n_stages, time_attr="epoch", metric="score", mode=_mode(objectives[0].direction),
                startup=rung_startup(self.config),
                grace_period=1, max_t=max(2, last), reduction_factor=self.reduction_factor,
                stop_last_trials=False)
        else:
            scheduler = FIFOScheduler()
        return tune.Tuner(
            trainable,
            tune_config=tune.TuneConfig(
                search_alg=searcher, scheduler=scheduler, num_samples=self.config.n_trials,
                max_concurrent_trials=self._concurrency(), reuse_actors=True,
                trial_dirname_creator=trial_dirname),
            run_config=tune.RunConfig(
                name=self.study_name, storage_path=str(self.storage_path),
                failure_config=tune.FailureConfig(max_failures=self.config.max_failures,
                                                  fail_fast=False),
                checkpoint_config=tune.CheckpointConfig(num_to_keep=1),
                callbacks=self._callbacks(), verbose=self.verbose, log_to_file=True))

    def _concurrency(self) -> int | None:
        """``max_concurrent``; with Train workers, by default as many trials as fit."""
        if self.max_concurrent is not None or not self.scaling.distributed:
            return self.max_concurrent
        have, s = ray.cluster_resources(), self.scaling
        fits = [have.get(k, 0) / (s.num_workers * need)
                for k, need in (("CPU", s.cpus_per_worker), ("GPU", s.gpus_per_worker)) if need]
        return max(1, int(min(fits)))

    def _callbacks(self) -> list:
        """Tune callbacks: the trial lines, and removing checkpoints of ended trials."""
        callbacks: list = [ProgressLines(self.config, self.work_dir)]
        if not self.keep_checkpoints:
            callbacks.append(RemoveCheckpoints(self.work_dir))
        return callbacks

#: What the driver of a trial with Ray Train workers reserves (bytes, bookkeeping only).
DRIVER_MEMORY = 64 * 2**20

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
            error = error_reason(trial)
        row = result_row(trial.trial_id, trial.config, trial.last_result, error, config,
                   status=trial.status, tag=trial.experiment_tag)
        rows.append(row)
    rows.sort(key=lambda r: (isinstance(r["trial"], str), str(r["trial"]).zfill(12)))
    numbers = {r["trial_id"]: r["trial"] for r in rows}
    for r in rows:  # the source's trial number, as the rows name trials
        if ID_GUIDED_ATTR in r:
            r[ID_GUIDED_ATTR] = numbers.get(r[ID_GUIDED_ATTR], r[ID_GUIDED_ATTR])
    return rows

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
