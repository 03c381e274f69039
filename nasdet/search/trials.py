"""Trial bookkeeping both search drivers share: names, study checks, states, rows, lines.

Both drivers keep their trials in an Optuna study (the Ray driver through Ray Tune's
``OptunaSearch``), so they share what a trial is in it: its user attributes, when it
counts towards ``n_trials``, how a killed driver's trial is marked and retried
(retried by :mod:`nasdet.search.retry`), ID-guided and
listed enqueueing, which stages a pruner judges (:func:`is_scored`), the sampler and
pruner a config asks for, one row per trial for the report (:func:`trial_row`) and one
terminal line per finished trial (:func:`trial_line`).

Example:
    >>> import optuna
    >>> study = optuna.create_study()
    >>> study.enqueue_trial({"x": 1})
    >>> params_tried(study.get_trials(), {"x": 1}), params_tried(study.get_trials(), {"x": 2})
    (True, False)
"""

from __future__ import annotations

import inspect
import json
import math
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

import numpy as np
import optuna
from optuna.trial import TrialState

from nasdet.errors import NasdetError
from nasdet.search.config import Objective, SearchConfig, Stage, optuna_class

FINISHED = (TrialState.COMPLETE, TrialState.PRUNED, TrialState.FAIL)
#: User attribute (and row column) of a trial run from another trial's ID-guided proposal.
ID_GUIDED_ATTR = "id_guided_from"
#: User attribute (and row column) of a trial run from the config's ``enqueue`` list: its name.
ENQUEUED_ATTR = "enqueued_as"
#: User attribute: the stage that ended a trial (its last stage, or where it stopped).
ENDED_AT_ATTR = "ended_at"
#: User attribute of a trial a killed driver cut off (see :func:`mark_interrupted`).
INTERRUPTED_ATTR = "interrupted"
#: User attribute of a retried trial: the number of the trial it continues.
RETRIED_FROM_ATTR = "retried_from"
#: User attribute: which process runs the trial (see :func:`nasdet.search.retry.worker_record`).
WORKER_ATTR = "worker"
#: What a retried trial carries over from the trial it continues (its directory first).
RETRY_CARRIES = ("trial_dir", "candidate_key", ID_GUIDED_ATTR, ENQUEUED_ATTR)
#: User attribute of each Optuna trial the Ray driver ran: the Tune trial id.
RAY_TRIAL_ATTR = "ray_trial_id"
#: Each trial's log file (inside its trial directory) and the driver's (in the work dir).
TRIAL_LOG = "trial.log"
SEARCH_LOG = "search.log"
#: A row's reason and provenance columns, after its metrics, where the trial has them.
ROW_ATTRS = ("rejected", "pruned_after", "fail_reason", "trial_dir", ID_GUIDED_ATTR,
             ENQUEUED_ATTR)
#: The ``fail_reason`` of a trial a killed driver cut off.
INTERRUPTED_REASON = "interrupted: the driver was killed while it ran"


# ------------------------------------------------------------------------------ states
def counts_towards_n_trials(trial: optuna.trial.FrozenTrial) -> bool:
    """Finished trials, except those cut off by a killed driver (they are re-run).

    A trial that raised carries a ``fail_reason``; one failed by the heartbeat check or
    by :func:`mark_interrupted` does not.
    """
    if trial.state == TrialState.FAIL:
        return "fail_reason" in trial.user_attrs
    return trial.state in FINISHED


def interrupted(trial: optuna.trial.FrozenTrial) -> bool:
    """Whether a killed driver cut ``trial`` off (failed without a ``fail_reason``)."""
    return trial.state == TrialState.FAIL and not counts_towards_n_trials(trial)


def n_taken(trials: Iterable[optuna.trial.FrozenTrial], also: Sequence[TrialState] = ()) -> int:
    """Trials that count towards ``n_trials``, plus those in the states ``also``."""
    return sum(1 for t in trials if counts_towards_n_trials(t) or t.state in also)


def mark_interrupted(study: optuna.Study, trial: optuna.trial.FrozenTrial) -> None:
    """Fail a RUNNING trial a killed driver left behind; it does not count, it is re-run."""
    study._storage.set_trial_user_attr(trial._trial_id, INTERRUPTED_ATTR, True)
    study._storage.set_trial_state_values(trial._trial_id, TrialState.FAIL)


def trial_params(trial: optuna.trial.FrozenTrial) -> dict[str, Any]:
    """A trial's params; an enqueued trial that has not started holds them as fixed params."""
    return dict(trial.params) or dict(trial.system_attrs.get("fixed_params") or {})


def _canonical(params: Mapping[str, Any]) -> str:
    return json.dumps(dict(params), sort_keys=True, default=str)


def params_tried(trials: Iterable[optuna.trial.FrozenTrial], params: Mapping[str, Any]) -> bool:
    """Whether one of ``trials`` has (or, enqueued, will have) exactly ``params``."""
    key = _canonical(params)
    return any(_canonical(trial_params(t)) == key for t in trials)


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


# ------------------------------------------------------------------------------ enqueueing
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
        trials = [t for t in study.get_trials(deepcopy=False) if not interrupted(t)]
        taken = n_taken(trials, (TrialState.WAITING, TrialState.RUNNING))
        if taken >= config.n_trials or params_tried(trials, item["params"]):
            continue
        study.enqueue_trial(dict(item["params"]), user_attrs={ENQUEUED_ATTR: item["name"]})
        names.append(item["name"])
    return names


# ------------------------------------------------------------------------------ strategies
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


# ------------------------------------------------------------------------------ scored stages
def is_scored(stage: Stage, config: SearchConfig) -> bool:
    """Whether a pruner judges a trial after ``stage`` (a rung of its own).

    Train stages with one objective (on the epoch axis), and proxy stages with a
    ``report`` proxy (``report: null`` records the proxies, scores none).
    """
    if stage.type == "proxy":
        return stage.options.get("report") is not None
    return stage.type == "train" and not config.multi_objective


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


def rung_scores(trials: Iterable[optuna.trial.FrozenTrial], key: str, number: int) -> list[float]:
    """The scores ``key`` (``proxy/<name>``) of every trial but ``number`` that has one.

    Every trial that reached the rung counts, those it pruned too (successive halving's
    rule, and the replay's): the complete trials alone are its survivors, and their
    median would climb with every trial the rung lets through.
    """
    return [float(t.user_attrs[key]) for t in trials if t.number != number and key in t.user_attrs]


def proxy_rung_prunes(config: SearchConfig, value: float, others: Iterable[float],
                      stage: Stage | None = None) -> bool:
    """Whether a proxy score is worse than the median of the rung's earlier scores.

    The median rule (the stage's ``n_startup_trials`` scores first, else the pruner's,
    default 2), compared in the first objective's direction, over every trial that
    reached the rung, whatever became of it: what ``benchmarks/search_efficiency.py``
    replays.

    Args:
        config: The search config.
        value: This trial's proxy score.
        others: The same proxy's scores of the study's other trials (complete, pruned,
            running or failed).
        stage: The proxy stage (its ``n_startup_trials``, if it has one).
    """
    if config.multi_objective or config.pruner.get("type") == "none" or not math.isfinite(value):
        return False
    values = [float(v) for v in others if math.isfinite(float(v))]
    options = stage.options if stage is not None else {}
    startup = options.get("n_startup_trials", config.pruner.get("n_startup_trials", 2))
    if not values or len(values) < int(startup):
        return False
    median = float(np.median(values))
    return value < median if config.objectives[0].direction == "maximize" else value > median


def rung_startup(config: SearchConfig) -> dict[str, int]:
    """Proxy stage name -> its ``n_startup_trials``, for the stages that set one."""
    return {s.name: int(s.options["n_startup_trials"]) for s in config.stages
            if "n_startup_trials" in s.options}


def objective_values(config: SearchConfig, metrics: Mapping[str, Any]) -> list[float]:
    """The objectives' values of a finished trial (KeyError: one is missing)."""
    return [float(metrics[o.metric]) for o in config.objectives]


# ------------------------------------------------------------------------------ rows
def trial_row(number: int | str, state: str, seconds: float | None, params: Mapping[str, Any],
              metrics: Mapping[str, Any], attrs: Mapping[str, Any], *,
              trial_id: str | None = None, node: Mapping[str, Any] | None = None,
              ) -> dict[str, Any]:
    """One row of the report: the same columns whichever driver ran the trial.

    Args:
        number: The trial's number.
        state: ``COMPLETE``, ``PRUNED``, ``FAIL``, ``RUNNING`` or ``WAITING``.
        seconds: The trial's wall-clock seconds (None: unknown).
        params: The candidate's params (columns ``param/<name>``).
        metrics: The trial's metrics (columns as named).
        attrs: The trial's :data:`ROW_ATTRS` where it has them (other keys are ignored).
        trial_id: Ray Tune's trial id (Ray rows only).
        node: Where the trial ran, ``node_id``/``node_ip`` (Ray rows only; empty skipped).
    """
    row: dict[str, Any] = {"trial": number}
    if trial_id is not None:
        row["trial_id"] = trial_id
    row.update({"state": state, "seconds": seconds})
    row.update({f"param/{k}": v for k, v in params.items()})
    row.update(metrics)
    row.update({k: v for k, v in (node or {}).items() if v})
    row.update({k: attrs[k] for k in ROW_ATTRS if k in attrs})
    return row


def trial_rows(study: optuna.Study, config: SearchConfig) -> list[dict[str, Any]]:
    """One :func:`trial_row` per trial of a study (either driver's).

    Args:
        study: The study.
        config: The search config it ran.
    """
    rows = []
    for t in study.get_trials(deepcopy=False):
        attrs = dict(t.user_attrs)
        if interrupted(t):
            attrs["fail_reason"] = INTERRUPTED_REASON
        rows.append(trial_row(t.number, t.state.name,
                              t.duration.total_seconds() if t.duration else None,
                              t.params, t.user_attrs.get("metrics", {}), attrs))
    return rows


def error_text(exc: BaseException) -> str:
    """``Type: message``: a failed trial's ``fail_reason`` (both drivers)."""
    return f"{type(exc).__name__}: {exc}"


# ------------------------------------------------------------------------------ lines
def pareto_front(values: Mapping[Any, Sequence[float]], objectives: Sequence[Objective]) -> list[Any]:
    """The keys of ``values`` no other entry dominates (directions from ``objectives``).

    Entries with equal values do not dominate each other: both stay, as in Optuna's
    ``study.best_trials``.
    """
    signs = [1.0 if o.direction == "maximize" else -1.0 for o in objectives]
    scored = {k: [s * x for s, x in zip(signs, v, strict=True)] for k, v in values.items()}

    def dominates(a: list[float], b: list[float]) -> bool:
        return all(x >= y for x, y in zip(a, b, strict=True)) and a != b

    return [k for k, v in scored.items()
            if not any(dominates(w, v) for j, w in scored.items() if j != k)]


def best_text(config: SearchConfig, complete: Mapping[Any, Sequence[float]]) -> str:
    """The best trial so far, for :func:`trial_line`.

    Args:
        config: The search config.
        complete: Objective values of the complete trials so far, by trial number (the
            first of equally good trials is named).
    """
    if not complete:
        return "-"
    objectives = config.objectives
    if config.multi_objective:
        return f"{len(pareto_front(complete, objectives))} on the Pareto front"
    sign = 1.0 if objectives[0].direction == "maximize" else -1.0
    number, values = max(complete.items(), key=lambda kv: sign * kv[1][0])
    return f"{objectives[0].metric}={values[0]:.4g} (trial {number})"


def outcome_text(state: str, objectives: Sequence[Objective], values: Sequence[float], *,
                 rejected: str | None = None, pruned: str = "pruned",
                 fail_reason: str = "") -> str:
    """What a finished trial's line says of it: its values, or why it stopped.

    Args:
        state: ``complete``, ``pruned`` or ``fail``.
        objectives: The config's objectives.
        values: A complete trial's objective values.
        rejected: Why the space's budget rejected the candidate (a pruned trial).
        pruned: What stopped a trial that was pruned, not rejected.
        fail_reason: Why a failed trial failed.
    """
    if state == "complete":
        return ", ".join(f"{o.metric}={v:.4g}" for o, v in zip(objectives, values, strict=False))
    if state == "pruned":
        return f"rejected: {rejected}" if rejected else pruned
    return fail_reason if state == "fail" else ""


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
