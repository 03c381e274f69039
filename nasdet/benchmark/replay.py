"""Search strategies replayed over a benchmark table: no training, real samplers and pruners.

A replayed trial asks Optuna's sampler for a candidate of the table's search space,
takes the nearest architecture of the table not yet evaluated (the sampler is then
told that architecture's own params: the proposal is failed and the table's
architecture enqueued, so the sampler learns only from what was really "trained"),
and looks its results up: each epoch's AP is reported to the pruner as training would
(``trial.report`` / ``should_prune``), each epoch's training seconds are added to the
search's bill, and a proxy rung pays the proxy's seconds and stops an architecture
before training when its score falls below the running quantile of the scores seen.
The rung on :data:`CHANCE` scores every architecture at random (free): the control that
tells a proxy's signal from what any rung's mechanics save.

The outcome of one replay is its trace: after each trial, the training seconds spent
so far and the best target of the architectures trained to the target epoch.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from nasdet.benchmark.table import Benchmark

#: The proxy name of the control rung: a score drawn at random, at no cost.
CHANCE = "chance"


@dataclass(frozen=True)
class Strategy:
    """A replayed search strategy.

    Args:
        name: Label in tables and plots.
        sampler: ``random`` or ``tpe``.
        proxy: Proxy of a rung before training (``None``: no rung; :data:`CHANCE`: the
            control, a random score).
        proxy_keep: Fraction of architectures the rung lets through (by running quantile).
        pruner: ``none`` or ``asha`` (Optuna's SuccessiveHalvingPruner over epochs).
        reduction_factor: The pruner's reduction factor.
        n_startup: Architectures trained in full before the rung or sampler model act.
        id_guided: After each architecture trained to the target, try its ID-guided
            proposal next (the search's ``id_guided`` step; ``replay(proposals=...)``).
    """

    name: str
    sampler: str = "random"
    proxy: str | None = None
    proxy_keep: float = 0.5
    pruner: str = "none"
    reduction_factor: int = 3
    n_startup: int = 5
    id_guided: bool = False


@dataclass
class Trace:
    """One replay: cumulative seconds and best target after each trial."""

    seconds: list[float] = field(default_factory=list)
    best: list[float] = field(default_factory=list)
    trained: list[int] = field(default_factory=list)
    #: ID-guided proposals (source arch_id, key) that are not in the table: not trained.
    missing: list[tuple[int, str]] = field(default_factory=list)


class _Encoder:
    """Params as vectors, each column scaled to [0, 1] over the table (categories: codes)."""

    def __init__(self, rows: Sequence[dict[str, Any]]):
        self.names = sorted({k for r in rows for k in r["params"]})
        self.codes: dict[str, dict[str, int]] = {}
        self.low: dict[str, float] = {}
        self.span: dict[str, float] = {}
        for name in self.names:
            values = [r["params"].get(name) for r in rows]
            if not all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in values):
                self.codes[name] = {v: i for i, v in enumerate(sorted({repr(v) for v in values}))}
            col = self._column(name, values)
            self.low[name] = float(col.min())
            self.span[name] = float(col.max() - col.min()) or 1.0
        self.matrix = self.encode(rows)

    def _column(self, name: str, values: list[Any]) -> np.ndarray:
        if name in self.codes:  # an unseen category is as far as the farthest code
            return np.asarray([self.codes[name].get(repr(v), len(self.codes[name]))
                               for v in values], dtype=float)
        return np.asarray([np.nan if v is None else v for v in values], dtype=float)

    def encode(self, rows: Sequence[dict[str, Any]]) -> np.ndarray:
        cols = [(self._column(n, [r["params"].get(n) for r in rows]) - self.low[n]) / self.span[n]
                for n in self.names]
        return np.nan_to_num(np.stack(cols, axis=1), nan=-1.0)


class TableObjective:
    """Look-up 'training' of the table's architectures for one replay.

    Args:
        bench: The table.
        rows: The rows replayed (one per architecture).
        target_epoch: The epoch whose AP is the objective (1-based).
        metric: ``ap`` or ``ap50``.
    """

    def __init__(self, bench: Benchmark, rows: Sequence[dict[str, Any]], target_epoch: int,
                 metric: str = "ap"):
        self.rows = list(rows)
        self.target_epoch = int(target_epoch)
        self.metric = metric
        self.encoder = _Encoder(self.rows)

    def nearest(self, params: dict[str, Any], taken: set[int]) -> int:
        """Index of the row nearest to ``params`` (scaled L2) among those not taken."""
        probe = self.encoder.encode([{"params": params}])[0]
        distance = np.linalg.norm(self.encoder.matrix - probe, axis=1)
        distance[list(taken)] = np.inf
        return int(np.argmin(distance))


def replay(bench: Benchmark, strategy: Strategy, *, target_epoch: int, rows=None,
           metric: str = "ap", n_trials: int | None = None, seed: int = 0,
           space: Any = None, proposals: dict[int, dict[str, Any]] | None = None) -> Trace:
    """Replay ``strategy`` once over the table.

    Args:
        bench: The table.
        strategy: What to replay.
        target_epoch: The epoch whose ``metric`` is the objective; ASHA's last rung.
        rows: Rows to search over (default: one per architecture, its first seed).
        metric: ``ap`` or ``ap50``.
        n_trials: Trials (default: every architecture once).
        seed: The sampler's seed (one replay = one seed).
        space: The table's :class:`~nasdet.space.SearchSpace` (default: loaded from
            the table's meta; pass it to replay many times without reloading).
        proposals: ``{arch_id: {"key": ...}}``, each architecture's ID-guided proposal
            (:func:`nasdet.benchmark.proposals.table_proposals`); needed by
            ``id_guided`` strategies. A proposal in ``rows`` is the next trial; one that
            is not lands in ``Trace.missing``.

    Returns:
        The :class:`Trace`.
    """
    import optuna

    from nasdet.space import SearchSpace

    optuna.logging.set_verbosity(optuna.logging.ERROR)
    rows = list(rows if rows is not None else bench.first_seed())
    objective = TableObjective(bench, rows, target_epoch, metric)
    space = space or SearchSpace.from_yaml(_space_path(bench))
    if strategy.sampler == "tpe":
        sampler = optuna.samplers.TPESampler(seed=seed, n_startup_trials=strategy.n_startup)
    else:
        sampler = optuna.samplers.RandomSampler(seed=seed)
    pruner = (optuna.pruners.SuccessiveHalvingPruner(
        min_resource=1, reduction_factor=strategy.reduction_factor)
        if strategy.pruner == "asha" else optuna.pruners.NopPruner())
    study = optuna.create_study(direction="maximize", sampler=sampler, pruner=pruner)
    if strategy.id_guided and proposals is None:
        raise ValueError(f"strategy {strategy.name!r} is ID-guided: pass proposals")
    by_key = {r["key"]: i for i, r in enumerate(rows)}
    guided: list[int] = []  # proposals of the table waiting, as the search enqueues them
    taken: set[int] = set()
    scores: list[float] = []
    trace = Trace()
    chance = np.random.default_rng([seed, 1])  # the control rung's scores
    spent, best = 0.0, -math.inf
    for _ in range(min(n_trials or len(rows), len(rows))):
        guided = [i for i in guided if i not in taken]
        if guided:
            index = guided.pop(0)
        else:
            proposal = study.ask()
            index = objective.nearest(dict(space.suggest(proposal).params), taken)
            study.tell(proposal, state=optuna.trial.TrialState.FAIL)
        taken.add(index)
        row = rows[index]
        study.enqueue_trial(dict(row["params"]), skip_if_exists=False)
        trial = study.ask()
        space.suggest(trial)  # the enqueued params, through the same distributions
        trained_full = False
        if strategy.proxy is not None:
            if strategy.proxy == CHANCE:
                value = float(chance.random())
            else:
                value = row.get("proxies", {}).get(strategy.proxy)
                spent += float(row.get("proxy_seconds", {}).get(strategy.proxy, 0.0))
            ok = value is not None and math.isfinite(value)
            # A proxy that failed on this architecture cannot speak against it: train it.
            keep = (not ok or len(scores) < strategy.n_startup
                    or value >= np.quantile(scores, 1.0 - strategy.proxy_keep))
            if ok:
                scores.append(float(value))
            if not keep:
                study.tell(trial, state=optuna.trial.TrialState.PRUNED)
                trace.seconds.append(spent)
                trace.best.append(best)
                continue
        state, value = optuna.trial.TrialState.COMPLETE, None
        costs = bench.epoch_costs(row)
        for epoch in range(1, target_epoch + 1):
            spent += costs[epoch - 1]
            trial.report(float(row[metric][epoch - 1]), epoch)
            if epoch < target_epoch and trial.should_prune():
                state = optuna.trial.TrialState.PRUNED
                break
        else:
            trained_full = True
            value = float(row[metric][target_epoch - 1])
            best = max(best, value)
            trace.trained.append(int(row["arch_id"]))
            key = ((proposals or {}).get(int(row["arch_id"])) or {}).get("key")
            if strategy.id_guided and key is not None:
                if key in by_key:
                    guided.append(by_key[key])
                else:
                    trace.missing.append((int(row["arch_id"]), key))
        study.tell(trial, value if trained_full else None, state=state)
        trace.seconds.append(spent)
        trace.best.append(best)
    return trace


def _space_path(bench: Benchmark) -> str:
    from pathlib import Path

    space = Path(str(bench.meta.get("space", "")))
    if not space.is_absolute() and not space.is_file() and bench.path is not None:
        # A committed table names its space relative to the repository root.
        for parent in [bench.path, *bench.path.parents]:
            if (parent / space).is_file():
                return str(parent / space)
    return str(space)


def seconds_to_reach(trace: Trace, threshold: float) -> float:
    """Training seconds until the best target first reaches ``threshold`` (inf: never)."""
    for seconds, best in zip(trace.seconds, trace.best, strict=True):
        if best >= threshold:
            return seconds
    return math.inf


def regret_curve(traces: Sequence[Trace], grid: np.ndarray, optimum: float) -> np.ndarray:
    """Regret (optimum - best so far) of each trace on a grid of seconds: (repeats, grid)."""
    out = np.full((len(traces), len(grid)), np.nan)
    for i, t in enumerate(traces):
        seconds = np.asarray(t.seconds)
        best = np.asarray(t.best)
        for j, s in enumerate(grid):
            done = np.nonzero(seconds <= s)[0]
            b = best[done[-1]] if len(done) else -np.inf
            out[i, j] = optimum - b if np.isfinite(b) else np.nan
    return out
