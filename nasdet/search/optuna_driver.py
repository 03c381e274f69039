"""The in-process search driver: one Optuna study, trials run here one after another.

TPE for one objective, NSGA-II for several (or any Optuna sampler the config names); a
pruner (median by default, or any Optuna pruner) stops trials between train stages or,
with ``report_every_epoch``, between epochs: the step of a report is the epochs trained
so far (single objective). A proxy stage prunes by its own median rule
(:func:`proxy_rung_prunes`), never on the AP step axis. Every finished trial is in the storage the moment
it ends, so a search killed with SIGKILL loses only the trial in flight; ``resume``
continues the study until it has ``n_trials`` finished trials.

With ``id_guided`` (see :mod:`nasdet.search.config`) a finished trial's proposal
(``id_widths.json``) is enqueued as a later trial, with the user attribute
``id_guided_from`` (the source trial's number), unless a trial with the same params
exists (one cut off by a killed driver does not count) or the enqueued trials already
fill ``n_trials``. Optuna runs enqueued trials first; they count like any other, and a
resumed search enqueues what its finished trials proposed and was not run.

Several worker processes may share one study in an RDB storage (the default SQLite
file, PostgreSQL, MySQL; their heartbeats tell a live worker's trial from a killed
one): start the same command with ``--resume`` in another shell, or on another machine
with the same ``--storage`` URL. ``n_trials`` counts for the whole study: a worker stops
once the finished trials and those other workers are running reach it.

The terminal gets only the driver's own lines: a header, one line per finished trial
(:func:`trial_line`) and errors. Everything else a trial prints (mmengine, mmdet,
pycocotools, C extensions, warnings) goes to ``<trial_dir>/trial.log``; what the
driver itself causes (Optuna's own log, the report) to ``<work_dir>/search.log``.
"""

from __future__ import annotations

import json
import math
import os
import sys
import time
import traceback
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any, TextIO

import numpy as np
import optuna
from optuna.trial import TrialState

from nasdet.errors import NasdetError
from nasdet.search.config import SearchConfig, Stage
from nasdet.search.evaluator import CandidateRejected, TrialEvaluator, read_id_proposal
from nasdet.search.storage import default_storage_url, open_storage
from nasdet.utils.output import output_to

FINISHED = (TrialState.COMPLETE, TrialState.PRUNED, TrialState.FAIL)
#: User attribute (and row column) of a trial run from another trial's ID-guided proposal.
ID_GUIDED_ATTR = "id_guided_from"
#: User attribute (and row column) of a trial run from the config's ``enqueue`` list: its name.
ENQUEUED_ATTR = "enqueued_as"
#: Each trial's log file (inside its trial directory) and the driver's (in the work dir).
TRIAL_LOG = "trial.log"
SEARCH_LOG = "search.log"
#: User attribute: the stage that ended a trial (its last stage, or where it stopped).
ENDED_AT_ATTR = "ended_at"


def counts_towards_n_trials(trial: optuna.trial.FrozenTrial) -> bool:
    """Finished trials, except those cut off by a killed driver (they are re-run).

    A trial that raised carries a ``fail_reason``; one failed by the heartbeat check or
    by :func:`_fail_interrupted` does not.
    """
    if trial.state == TrialState.FAIL:
        return "fail_reason" in trial.user_attrs
    return trial.state in FINISHED


def _interrupted(trial: optuna.trial.FrozenTrial) -> bool:
    return trial.state == TrialState.FAIL and not counts_towards_n_trials(trial)


def trial_params(trial: optuna.trial.FrozenTrial) -> dict[str, Any]:
    """A trial's params; an enqueued trial that has not started holds them as fixed params."""
    return dict(trial.params) or dict(trial.system_attrs.get("fixed_params") or {})


def _canonical(params: Mapping[str, Any]) -> str:
    return json.dumps(dict(params), sort_keys=True, default=str)


def params_tried(trials: Iterable[optuna.trial.FrozenTrial], params: Mapping[str, Any]) -> bool:
    """Whether one of ``trials`` has (or, enqueued, will have) exactly ``params``."""
    key = _canonical(params)
    return any(_canonical(trial_params(t)) == key for t in trials)


def enqueue_id_proposal(study: optuna.Study, params: Mapping[str, Any], source: int | str,
                        trials: Iterable[optuna.trial.FrozenTrial] | None = None) -> bool:
    """Enqueue an ID-guided proposal of trial ``source`` unless its params were tried.

    Args:
        study: The study (the next ``ask`` returns the enqueued trial).
        params: The proposed candidate's params (``id_widths.json``'s ``params``).
        source: The proposing trial (number, or Ray Tune's trial id).
        trials: The trials whose params count as tried (default: all of the study's).

    Returns:
        Whether a trial was enqueued.
    """
    trials = study.get_trials(deepcopy=False) if trials is None else trials
    if params_tried(trials, params):
        return False
    # Our own check above, not skip_if_exists: a trial cut off by a killed driver has
    # the params but never ran, and must not block them.
    study.enqueue_trial(dict(params), user_attrs={ID_GUIDED_ATTR: source})
    return True


def enqueue_listed(study: optuna.Study, config: SearchConfig) -> list[str]:
    """Enqueue the config's ``enqueue`` candidates not tried yet, while ``n_trials`` has room.

    A trial cut off by a killed driver does not count as tried: its candidate is run again.

    Returns:
        The names enqueued.
    """
    names = []
    for item in config.enqueue:
        trials = [t for t in study.get_trials(deepcopy=False) if not _interrupted(t)]
        taken = sum(1 for t in trials if counts_towards_n_trials(t)
                    or t.state in (TrialState.WAITING, TrialState.RUNNING))
        if taken >= config.n_trials or params_tried(trials, item["params"]):
            continue
        study.enqueue_trial(dict(item["params"]), user_attrs={ENQUEUED_ATTR: item["name"]})
        names.append(item["name"])
    return names


def make_sampler(config: SearchConfig, *, stream: Sequence[int] = ()) -> optuna.samplers.BaseSampler:
    """The sampler the config asks for, seeded.

    ``tpe``, ``nsga2`` and ``random`` keep nasdet's defaults (TPE: multivariate, grouped,
    constant liar, 4 start-up trials; NSGA-II: population 8); any other ``type`` is a
    class of ``optuna.samplers`` built with the section's other keys as arguments.

    Args:
        config: The search config (``sampler.seed``, else ``seed``).
        stream: Empty for the worker that creates a study: the config's seed as is, so a
            fresh search is reproducible. A resumed or joining worker passes something
            that tells it apart (trials so far, process id): a sampler seeded like the
            first would replay the first worker's candidates.
    """
    import inspect

    from nasdet.search.config import optuna_class

    kind = config.sampler.get("type")
    seed = config.sampler.get("seed", config.seed)
    if stream:
        seed = int(np.random.SeedSequence([int(seed or 0), *stream]).generate_state(1)[0])
    kwargs = {k: v for k, v in config.sampler.items() if k not in ("type", "seed")}
    if kind == "random":
        return optuna.samplers.RandomSampler(seed=seed)
    if kind == "nsga2":
        kwargs["population_size"] = int(kwargs.get("population_size", 8))
        return optuna.samplers.NSGAIISampler(seed=seed, **kwargs)
    if kind == "tpe":
        # multivariate + group handle define-by-run spaces whose parameters come and go.
        kwargs = {"multivariate": True, "group": True, "constant_liar": True, **kwargs}
        kwargs["n_startup_trials"] = int(kwargs.get("n_startup_trials", 4))
        return optuna.samplers.TPESampler(seed=seed, **kwargs)
    cls = optuna_class("sampler", kind)
    if "seed" in inspect.signature(cls.__init__).parameters:
        kwargs["seed"] = seed
    return _build(config, "sampler", cls, kwargs)


def make_pruner(config: SearchConfig) -> optuna.pruners.BasePruner:
    """The pruner the config asks for (always none for several objectives).

    ``median`` is Optuna's median pruner with 2 start-up trials and no warm-up steps;
    any other ``type`` is a class of ``optuna.pruners`` built with the section's other
    keys as arguments (``reduction_factor`` only where the class takes it: else it is
    the Ray driver's ASHA factor).
    """
    import inspect

    from nasdet.search.config import optuna_class

    kind = config.pruner.get("type")
    if config.multi_objective or kind == "none":
        return optuna.pruners.NopPruner()
    cls = optuna_class("pruner", kind)
    takes = inspect.signature(cls.__init__).parameters
    kwargs = {k: v for k, v in config.pruner.items()
              if k != "type" and (k != "reduction_factor" or k in takes)}
    if kind == "median":
        kwargs = {"n_warmup_steps": 0, **kwargs}
        kwargs["n_startup_trials"] = int(kwargs.get("n_startup_trials", 2))
    return _build(config, "pruner", cls, kwargs)


def _build(config: SearchConfig, section: str, cls: type, kwargs: dict[str, Any]) -> Any:
    """``cls(**kwargs)``; Optuna's refusal of a value as one error naming the key."""
    try:
        return cls(**kwargs)
    except (TypeError, ValueError) as exc:
        raise NasdetError(f"optuna.{section}s.{cls.__name__}{tuple(kwargs) or ''}: {exc}",
                          file=config.path, key=section) from None


def stage_score(config: SearchConfig, stage: Stage, metrics: dict[str, float]) -> float | None:
    """The value a pruner compares after a train stage or epoch (None: nothing to compare).

    Train stages report the first objective's metric (e.g. ``ap50``) at the step
    ``metrics["epochs"]``; proxy and complexity stages report nothing on that axis (a
    proxy rung is judged by :func:`proxy_rung_prunes`).
    """
    if stage.type == "train":
        return metrics.get(config.objectives[0].metric, metrics.get("ap50"))
    return None


def proxy_score(stage: Stage, metrics: dict[str, float]) -> float | None:
    """A proxy stage's ``report`` proxy score (None: ``report: null``, or it failed)."""
    if stage.type != "proxy":
        return None
    report = stage.options.get("report")
    return metrics.get(f"proxy/{report}") if report is not None else None


def proxy_rung_prunes(config: SearchConfig, value: float, others: Iterable[float]) -> bool:
    """Whether a proxy score is worse than the median of the complete trials' scores.

    The median rule proxy rungs always had (median pruner, ``pruner.n_startup_trials``
    complete trials first, default 2), compared in the first objective's direction.

    Args:
        config: The search config.
        value: This trial's proxy score.
        others: The same proxy's scores of the study's complete trials.
    """
    if config.multi_objective or config.pruner.get("type") == "none" or not math.isfinite(value):
        return False
    values = [float(v) for v in others if math.isfinite(float(v))]
    if not values or len(values) < int(config.pruner.get("n_startup_trials", 2)):
        return False
    median = float(np.median(values))
    return value < median if config.objectives[0].direction == "maximize" else value > median


def objective_values(config: SearchConfig, metrics: dict[str, float]) -> list[float]:
    """The objectives' values of a finished trial."""
    return [float(metrics[o.metric]) for o in config.objectives]


def trial_line(number: int | str, state: str, what: str, *, stage: str | None,
               seconds: float | None, done: int, n_trials: int, best: str,
               elapsed_s: float, finished_here: int, note: str = "") -> str:
    """The one terminal line of a finished trial (both drivers print it).

    ``[search] trial 3 complete: ap50=0.41 | ended at full | 52 s | 4/8 done |
    best ap50=0.45 (trial 1) | ETA 3.5 min``; the ETA is the remaining trials times the
    mean wall-clock time per trial finished by this run so far.

    Args:
        number: The trial's number.
        state: ``complete``, ``pruned`` or ``fail``.
        what: Objective values, or why the trial was pruned or failed.
        stage: The stage that ended the trial (None: unknown).
        seconds: The trial's wall-clock seconds (None: unknown).
        done: Trials of the search finished so far.
        n_trials: Trials the search runs.
        best: The best trial so far, as text.
        elapsed_s: Wall-clock seconds since this run started its first trial.
        finished_here: Trials this run finished.
        note: Appended as is (e.g. where the log of a failed trial is).
    """
    remaining = max(0, n_trials - done)
    if remaining == 0:
        eta = "ETA 0 min"
    elif finished_here > 0:
        eta = f"ETA {remaining * elapsed_s / finished_here / 60:.1f} min"
    else:
        eta = "ETA -"
    took = f"{seconds:.0f} s" if seconds is not None and math.isfinite(seconds) else "? s"
    return (f"[search] trial {number} {state}: {what or '-'} | ended at {stage or '?'} | "
            f"{took} | {done}/{n_trials} done | best {best} | {eta}{note}")


def check_study(storage: optuna.storages.BaseStorage, url: str, study_name: str,
                resume: bool) -> bool:
    """Whether ``study_name`` exists in ``storage``; the same two errors for both backends.

    Args:
        storage: The opened storage.
        url: Its URL (for the messages).
        study_name: The study.
        resume: Whether the search continues an existing study.

    Raises:
        NasdetError: The study exists without ``resume``, or is missing with it.
    """
    exists = study_name in {s.study_name for s in storage.get_all_studies()}
    if exists and not resume:
        raise NasdetError(
            f"study '{study_name}' already exists in {url}; pass --resume to continue it "
            "or --study-name for a new one", key="--study-name")
    if resume and not exists:
        raise NasdetError(f"no study '{study_name}' to resume in {url}", key="--resume")
    return exists


class OptunaSearch:
    """Run a search config with Optuna in this process.

    Args:
        config: The validated search config.
        work_dir: Where trial directories, the default SQLite storage and reports go.
        storage: Any Optuna storage URL (default: ``sqlite:///<work_dir>/study.db``).
        study_name: Default: the search config's file stem.
        resume: Continue an existing study; without it an existing study is an error.
        keep_checkpoints: Keep trials' checkpoints.
        data_root: Dataset root for every candidate (see :class:`TrialEvaluator`).
        cfg_options: Overrides applied to every candidate's config.
        out: Where the driver's own lines go (default ``sys.stdout`` as it was when
            the search started); everything else goes to the log files.

    Example:
        >>> from nasdet.search import OptunaSearch, load_search_config
        >>> cfg = load_search_config('configs/search/tiny_synth.yaml')  # doctest: +SKIP
        >>> study = OptunaSearch(cfg, 'work_dirs/search').run()  # doctest: +SKIP
    """

    def __init__(self, config: SearchConfig, work_dir: str | Path, *, storage: str | None = None,
                 study_name: str | None = None, resume: bool = False,
                 keep_checkpoints: bool = False, data_root: str | Path | None = None,
                 cfg_options: dict[str, Any] | None = None, out: TextIO | None = None):
        self.config = config
        self.work_dir = Path(work_dir).absolute()
        self.storage_url = storage or default_storage_url(self.work_dir)
        self.study_name = study_name or config.path.stem
        self.resume = resume
        self.evaluator = TrialEvaluator(config, keep_checkpoints=keep_checkpoints,
                                        data_root=data_root, cfg_options=cfg_options)
        self.out = out
        self._terminal: TextIO | None = None
        self._started = 0.0
        self._finished_here = 0

    def open_study(self) -> optuna.Study:
        """Create (or with ``resume``, load) the study; clear errors for both mistakes."""
        storage = open_storage(self.storage_url)
        exists = check_study(storage, self.storage_url, self.study_name, self.resume)
        directions = [o.direction for o in self.config.objectives]
        stream: tuple[int, ...] = ()
        if exists:
            study_id = storage.get_study_id_from_name(self.study_name)
            stream = (len(storage.get_all_trials(study_id, deepcopy=False)), os.getpid())
        study = optuna.create_study(
            storage=storage, study_name=self.study_name, directions=directions,
            sampler=make_sampler(self.config, stream=stream), pruner=make_pruner(self.config),
            load_if_exists=True)
        study.set_metric_names([o.metric for o in self.config.objectives])
        study.set_user_attr("search_config", str(self.config.path))
        study.set_user_attr("work_dir", str(self.work_dir))
        return study

    def run(self) -> optuna.Study:
        """Run until the study has ``n_trials`` finished trials; return the study."""
        self.work_dir.mkdir(parents=True, exist_ok=True)
        with output_to(self.work_dir / SEARCH_LOG) as terminal:
            self._terminal = self.out or terminal
            try:
                return self._run()
            finally:
                self._terminal = None

    def _say(self, line: str) -> None:
        """One of the driver's own lines, to the terminal."""
        out = self._terminal or self.out or sys.stdout
        print(line, file=out, flush=True)

    def _run(self) -> optuna.Study:
        study = self.open_study()
        if self.resume:
            _fail_interrupted(study)
        enqueue_listed(study, self.config)
        done = sum(1 for t in study.get_trials(deepcopy=False) if counts_towards_n_trials(t))
        todo = max(0, self.config.n_trials - done)
        self._say(f"[search] study '{self.study_name}' | storage {self.storage_url} | "
                  f"n_trials {self.config.n_trials} ({done} finished, {todo} to run) | "
                  f"work dir {self.work_dir}")
        self._say(f"[search] library output: {self.work_dir / SEARCH_LOG} and each trial's "
                  f"trials/<number>/{TRIAL_LOG}")
        self._started = time.perf_counter()
        self._finished_here = 0
        callbacks = [self._progress, self._stop_when_taken]
        if self.config.id_guided:
            callbacks.append(self._enqueue_proposal)
            if todo:  # a resumed search: proposals of earlier runs that were not run
                for t in study.get_trials(deepcopy=False, states=FINISHED):
                    self._enqueue_proposal(study, t, quiet=True)
        study.optimize(self._objective, n_trials=todo, catch=(Exception,),
                       callbacks=callbacks, gc_after_trial=True)
        return study

    # -- one trial --------------------------------------------------------------------
    def _objective(self, trial: optuna.Trial) -> float | list[float]:
        candidate = self.evaluator.space.suggest(trial)
        trial_dir = self.work_dir / "trials" / f"{trial.number:04d}"
        trial.set_user_attr("trial_dir", str(trial_dir))
        trial.set_user_attr("candidate_key", candidate.key)
        stages = self.config.stages
        reached = {"done": 0}  # stages finished: the next one is where a failure happened

        def report(stage: Stage, index: int, metrics: dict[str, float]) -> None:
            reached["done"] = index + 1
            trial.set_user_attr(ENDED_AT_ATTR, stage.name)
            trial.set_user_attr("metrics", metrics)
            if stage.type == "proxy":  # metrics of their own, not steps of the AP curve
                for key, value in metrics.items():
                    if key.startswith("proxy/"):
                        trial.set_user_attr(key, value)
                self._proxy_rung(trial, stage, metrics)
                return
            if stage.options.get("report_every_epoch"):
                return  # its last epoch was reported (and judged) by report_epoch
            report_epoch(stage, index, int(metrics.get("epochs", index)), metrics,
                         finished=index == len(stages) - 1)

        def report_epoch(stage: Stage, index: int, epoch: int,
                         metrics: dict[str, float], finished: bool = False) -> None:
            score = stage_score(self.config, stage, metrics)
            if score is None or self.config.multi_objective or not math.isfinite(score):
                return
            trial.report(score, epoch)
            # A trial that trained every stage is complete: pruning it saves nothing.
            if not finished and trial.should_prune():
                reached["done"] = index  # the stage did not finish
                trial.set_user_attr(ENDED_AT_ATTR, stage.name)
                trial.set_user_attr("metrics", metrics)
                trial.set_user_attr("pruned_after", stage.name)
                trial.set_user_attr("pruned_at_epoch", epoch)
                raise optuna.TrialPruned(f"pruned at epoch {epoch} (stage '{stage.name}')")

        def stopped_in() -> None:
            if reached["done"] < len(stages):
                trial.set_user_attr(ENDED_AT_ATTR, stages[reached["done"]].name)

        with output_to(trial_dir / TRIAL_LOG):
            try:
                per_epoch = any(s.options.get("report_every_epoch") for s in stages)
                metrics = self.evaluator.run(candidate, trial_dir, report, **(
                    {"epoch_report": report_epoch} if per_epoch else {}))
            except CandidateRejected as exc:
                stopped_in()
                trial.set_user_attr("rejected", str(exc))
                raise optuna.TrialPruned(f"rejected: {exc}") from None
            except optuna.TrialPruned:
                raise
            except Exception as exc:
                stopped_in()
                trial.set_user_attr("fail_reason", f"{type(exc).__name__}: {exc}")
                trial.set_user_attr("traceback", traceback.format_exc()[-4000:])
                traceback.print_exc()  # into the trial's log
                raise
        values = objective_values(self.config, metrics)
        return values if self.config.multi_objective else values[0]

    def _proxy_rung(self, trial: optuna.Trial, stage: Stage, metrics: dict[str, float]) -> None:
        """Prune after a proxy stage by :func:`proxy_rung_prunes` (its own rung)."""
        value = proxy_score(stage, metrics)
        if value is None:
            return
        key = f"proxy/{stage.options['report']}"
        others = [t.user_attrs[key] for t in trial.study.get_trials(
            deepcopy=False, states=(TrialState.COMPLETE,)) if key in t.user_attrs]
        if proxy_rung_prunes(self.config, float(value), others):
            trial.set_user_attr("pruned_after", stage.name)
            raise optuna.TrialPruned(f"pruned after stage '{stage.name}' ({key} below "
                                     "the median)")

    def _progress(self, study: optuna.Study, trial: optuna.trial.FrozenTrial) -> None:
        trials = study.get_trials(deepcopy=False)
        done = sum(1 for t in trials if counts_towards_n_trials(t))
        self._finished_here += 1
        state = trial.state.name.lower()
        rejected = trial.user_attrs.get("rejected")
        what = {"complete": ", ".join(f"{m.metric}={v:.4g}" for m, v in
                                      zip(self.config.objectives, trial.values or [], strict=False)),
                "pruned": f"rejected: {rejected}" if rejected else _pruned_text(trial),
                "fail": trial.user_attrs.get("fail_reason", "")}.get(state, "")
        source = trial.user_attrs.get(ID_GUIDED_ATTR)
        number = f"{trial.number} (ID-guided from trial {source})" if source is not None \
            else trial.number
        note = ""
        if state == "fail" and trial.user_attrs.get("trial_dir"):
            note = f" | log {Path(trial.user_attrs['trial_dir']) / TRIAL_LOG}"
        self._say(trial_line(
            number, state, what, stage=trial.user_attrs.get(ENDED_AT_ATTR),
            seconds=trial.duration.total_seconds() if trial.duration else None, done=done,
            n_trials=self.config.n_trials, best=_best_text(study, self.config),
            elapsed_s=time.perf_counter() - self._started, finished_here=self._finished_here,
            note=note))

    def _stop_when_taken(self, study: optuna.Study, trial: optuna.trial.FrozenTrial) -> None:
        """Stop this worker once finished + running trials (of any worker) fill n_trials."""
        trials = study.get_trials(deepcopy=False)
        taken = sum(1 for t in trials if counts_towards_n_trials(t)
                    or t.state == TrialState.RUNNING)
        if taken >= self.config.n_trials:
            study.stop()

    def _enqueue_proposal(self, study: optuna.Study, trial: optuna.trial.FrozenTrial,
                          quiet: bool = False) -> None:
        """Enqueue ``trial``'s ID-guided proposal while ``n_trials`` leaves room for it."""
        params = read_id_proposal(trial.user_attrs.get("trial_dir"))
        if params is None:
            return
        trials = [t for t in study.get_trials(deepcopy=False) if not _interrupted(t)]
        taken = sum(1 for t in trials if counts_towards_n_trials(t)
                    or t.state == TrialState.WAITING)
        if params_tried(trials, params):
            what = "tried already"
        elif taken >= self.config.n_trials:
            what = f"not run: the {self.config.n_trials} trials are taken"
        else:
            enqueue_id_proposal(study, params, trial.number, trials)
            what = "enqueued"
            quiet = False
        if not quiet:
            dim = self.config.id_guided["dimension"]
            widths = [v for k, v in params.items() if k.rsplit(".", 1)[0] == dim]
            self._say(f"[search] trial {trial.number} proposes ID-guided {dim} {widths}: {what}")


def _pruned_text(trial: optuna.trial.FrozenTrial) -> str:
    """Why a trial that was not rejected was pruned, for its terminal line."""
    epoch = trial.user_attrs.get("pruned_at_epoch")
    if epoch is not None:
        return f"pruned at epoch {epoch}"
    stage = trial.user_attrs.get("pruned_after")
    return f"pruned after {stage}" if stage else "pruned"


def _best_text(study: optuna.Study, config: SearchConfig) -> str:
    complete = [t for t in study.get_trials(deepcopy=False) if t.state == TrialState.COMPLETE]
    if not complete:
        return "-"
    if config.multi_objective:
        return f"{len(study.best_trials)} on the Pareto front"
    best = study.best_trial
    return f"{config.objectives[0].metric}={best.value:.4g} (trial {best.number})"


def _fail_interrupted(study: optuna.Study) -> None:
    """Mark trials left RUNNING by a killed driver as FAIL.

    RDB storages do this by heartbeat once the grace period has passed; a journal
    storage has no heartbeat, so a resumed driver assumes it is the study's only worker.
    """
    from optuna.storages._heartbeat import fail_stale_trials, is_heartbeat_enabled

    storage = study._storage
    if is_heartbeat_enabled(storage):
        fail_stale_trials(study)
        return
    for t in study.get_trials(deepcopy=False, states=(TrialState.RUNNING,)):
        storage.set_trial_user_attr(t._trial_id, "interrupted", True)
        storage.set_trial_state_values(t._trial_id, TrialState.FAIL)


def trial_rows(study: optuna.Study, config: SearchConfig) -> list[dict[str, Any]]:
    """One row per trial: number, state, parameters, metrics, reasons."""
    rows = []
    for t in study.get_trials(deepcopy=False):
        row: dict[str, Any] = {"trial": t.number, "state": t.state.name,
                               "seconds": (t.duration.total_seconds() if t.duration else None)}
        row.update({f"param/{k}": v for k, v in t.params.items()})
        row.update(t.user_attrs.get("metrics", {}))
        if t.state == TrialState.FAIL and not counts_towards_n_trials(t):
            row["fail_reason"] = "interrupted: the driver was killed while it ran"
        for key in ("rejected", "pruned_after", "fail_reason", "trial_dir", ID_GUIDED_ATTR,
                    ENQUEUED_ATTR):
            if key in t.user_attrs:
                row[key] = t.user_attrs[key]
        rows.append(row)
    return rows
