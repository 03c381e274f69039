"""The in-process search driver: one Optuna study, trials run here one after another.

TPE for one objective, NSGA-II for several (or any Optuna sampler the config names); a
pruner (median by default, or any Optuna pruner) stops trials between train stages or,
with ``report_every_epoch``, between epochs: the step of a report is the epochs trained
so far (single objective). A proxy stage prunes by its own median rule
(:func:`~nasdet.search.trials.proxy_rung_prunes`), never on the AP step axis. Every
finished trial is in the storage the moment it ends, so a search killed with SIGKILL
loses only the trial in flight; ``resume`` continues the study until it has
``n_trials`` finished trials (the bookkeeping both drivers share is in
:mod:`nasdet.search.trials`).

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

A trial cut off by a lost process (the driver SIGKILLed, Ctrl-C, a machine lost) is
failed and retried with the same params as a new trial (user attribute
``retried_from``, Optuna's ``retry_history``), up to ``max_failures`` times
(:class:`~nasdet.search.retry.RetryInterrupted`, Optuna's
``RetryHeartbeatStaleTrialCallback``). The retry runs in the old trial's directory:
the stages it finished are not run again and training continues from the last epoch
checkpoint; interrupted trials do not count towards ``n_trials``. Which trials a
driver takes over: each trial records its worker (machine, pid, process start time,
see :func:`~nasdet.search.retry.worker_record`); a resumed driver fails at once the
RUNNING trials of a worker of this machine whose process is gone (no need to wait for
the heartbeat) and never touches a live worker's. Trials of workers on other machines
are failed by the heartbeat of RDB storages after the grace period and retried by the
storage's callback (any live worker's next trial start runs the check).

The terminal gets only the driver's own lines: a header, one line per finished trial
(:func:`~nasdet.search.trials.trial_line`) and errors. Everything else a trial prints
(mmengine, mmdet, pycocotools, C extensions, warnings) goes to ``<trial_dir>/trial.log``;
what the driver itself causes (Optuna's own log, the report) to ``<work_dir>/search.log``.
"""

from __future__ import annotations

import math
import os
import sys
import time
import traceback
from pathlib import Path
from typing import Any, TextIO

import optuna
from optuna.trial import TrialState

from nasdet.search.config import SearchConfig, Stage
from nasdet.search.evaluator import CandidateRejected, TrialEvaluator, read_id_proposal
from nasdet.search.retry import RetryInterrupted, take_over_interrupted, worker_record
from nasdet.search.storage import default_storage_url, open_storage
from nasdet.search.trials import (
    ENDED_AT_ATTR,
    FINISHED,
    ID_GUIDED_ATTR,
    RETRIED_FROM_ATTR,
    SEARCH_LOG,
    TRIAL_LOG,
    WORKER_ATTR,
    best_text,
    check_study,
    enqueue_id_proposal,
    enqueue_listed,
    error_text,
    interrupted,
    is_scored,
    make_pruner,
    make_sampler,
    n_taken,
    objective_values,
    outcome_text,
    params_tried,
    proxy_rung_prunes,
    proxy_score,
    rung_scores,
    stage_score,
    trial_line,
)
from nasdet.utils.output import output_to


class OptunaSearch:
    """Run a search config with Optuna in this process.

    Args:
        config: The validated search config.
        work_dir: Where trial directories, the default SQLite storage and reports go.
        storage: Any Optuna storage URL (default: ``sqlite:///<work_dir>/study.db``).
        study_name: Default: the search config's file stem.
        resume: Continue an existing study; without it an existing study is an error.
        keep_checkpoints: Keep trials' checkpoints (otherwise removed when a trial
            ends; a trial cut off keeps them until its retry ends).
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
        self.retry = RetryInterrupted(config.max_failures, self.evaluator.remove_checkpoints)
        self._heartbeat = False

    def open_study(self) -> optuna.Study:
        """Create (or with ``resume``, load) the study; clear errors for both mistakes."""
        storage = open_storage(self.storage_url)
        from optuna.storages._heartbeat import is_heartbeat_enabled

        self._heartbeat = is_heartbeat_enabled(storage)
        if self._heartbeat:  # a dead worker's trial: failed by heartbeat, then retried
            storage.heartbeat_stale_trial_callback = self.retry
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
            retried = take_over_interrupted(study, self.retry, heartbeat=self._heartbeat)
            if retried:
                self._say(f"[search] retrying interrupted trial(s) {retried} where they "
                          "stopped")
        enqueue_listed(study, self.config)
        done = n_taken(study.get_trials(deepcopy=False))
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
        trial.set_user_attr(WORKER_ATTR, worker_record(self.work_dir))
        candidate = self.evaluator.space.suggest(trial)
        trial_dir = self.work_dir / "trials" / f"{trial.number:04d}"
        retried = RETRIED_FROM_ATTR in trial.user_attrs
        old = trial.user_attrs.get("trial_dir")
        if retried and old and Path(old).is_dir():  # continue where it was cut off
            trial_dir = Path(old)
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
            if not is_scored(stage, self.config) or score is None or not math.isfinite(score):
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

        def restored(stage: Stage, index: int, metrics: dict[str, float]) -> None:
            """A stage the interrupted run finished: recorded again, not judged again."""
            reached["done"] = index + 1
            trial.set_user_attr(ENDED_AT_ATTR, stage.name)
            trial.set_user_attr("metrics", metrics)
            for key, value in metrics.items():
                if key.startswith("proxy/"):
                    trial.set_user_attr(key, value)

        def stopped_in() -> None:
            if reached["done"] < len(stages):
                trial.set_user_attr(ENDED_AT_ATTR, stages[reached["done"]].name)

        with output_to(trial_dir / TRIAL_LOG):
            try:
                per_epoch = any(s.options.get("report_every_epoch") for s in stages)
                metrics = self.evaluator.run(
                    candidate, trial_dir, report, resume=retried, restored=restored,
                    **({"epoch_report": report_epoch} if per_epoch else {}))
            except CandidateRejected as exc:
                stopped_in()
                trial.set_user_attr("rejected", str(exc))
                raise optuna.TrialPruned(f"rejected: {exc}") from None
            except optuna.TrialPruned:
                raise
            except Exception as exc:
                stopped_in()
                trial.set_user_attr("fail_reason", error_text(exc))
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
        others = rung_scores(trial.study.get_trials(deepcopy=False), key, trial.number)
        if proxy_rung_prunes(self.config, float(value), others, stage):
            trial.set_user_attr("pruned_after", stage.name)
            raise optuna.TrialPruned(f"pruned after stage '{stage.name}' ({key} below "
                                     "the median)")

    def _progress(self, study: optuna.Study, trial: optuna.trial.FrozenTrial) -> None:
        trials = study.get_trials(deepcopy=False)
        done = n_taken(trials)
        self._finished_here += 1
        state = trial.state.name.lower()
        what = outcome_text(state, self.config.objectives, trial.values or [],
                            rejected=trial.user_attrs.get("rejected"),
                            pruned=_pruned_text(trial),
                            fail_reason=trial.user_attrs.get("fail_reason", ""))
        source = trial.user_attrs.get(ID_GUIDED_ATTR)
        number = f"{trial.number} (ID-guided from trial {source})" if source is not None \
            else str(trial.number)
        if RETRIED_FROM_ATTR in trial.user_attrs:
            number += f" (retry of trial {trial.user_attrs[RETRIED_FROM_ATTR]})"
        note = ""
        if state == "fail" and trial.user_attrs.get("trial_dir"):
            note = f" | log {Path(trial.user_attrs['trial_dir']) / TRIAL_LOG}"
        self._say(trial_line(
            number, state, what, stage=trial.user_attrs.get(ENDED_AT_ATTR),
            seconds=trial.duration.total_seconds() if trial.duration else None, done=done,
            n_trials=self.config.n_trials, best=best_text(self.config, {
                t.number: t.values for t in trials if t.state == TrialState.COMPLETE}),
            elapsed_s=time.perf_counter() - self._started, finished_here=self._finished_here,
            note=note))

    def _stop_when_taken(self, study: optuna.Study, trial: optuna.trial.FrozenTrial) -> None:
        """Stop this worker once finished + running trials (of any worker) fill n_trials."""
        if n_taken(study.get_trials(deepcopy=False), (TrialState.RUNNING,)) >= self.config.n_trials:
            study.stop()

    def _enqueue_proposal(self, study: optuna.Study, trial: optuna.trial.FrozenTrial,
                          quiet: bool = False) -> None:
        """Enqueue ``trial``'s ID-guided proposal while ``n_trials`` leaves room for it."""
        params = read_id_proposal(trial.user_attrs.get("trial_dir"))
        if params is None:
            return
        trials = [t for t in study.get_trials(deepcopy=False) if not interrupted(t)]
        if params_tried(trials, params):
            what = "tried already"
        elif n_taken(trials, (TrialState.WAITING,)) >= self.config.n_trials:
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
