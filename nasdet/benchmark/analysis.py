"""What a benchmark table says about proxies: the target, its ceiling, every proxy's rank.

:func:`analyse` picks the target epoch from the test–retest τ of the architectures
trained with two seeds (the first epoch at which a second training ranks the
architectures with τ >= :data:`RETEST_GOAL`, else the last; with fewer than
:data:`MIN_PAIRS` pairs no epoch is chosen by it: a τ of a handful of pairs is noise,
and the last epoch is used), then scores every
candidate predictor of that target with :func:`nasdet.utils.stats.proxy_statistics`:

* every proxy recorded at initialisation (``proxies`` of the rows);
* the ID the table records during training, normalised by width (``id_per_width``),
  at initialisation and after epoch 1, averaged over backbone stages and FPN levels;
* the fidelity baselines every proxy must beat for the same money: AP after epoch 1
  and 2 of the same run (its cost: those epochs' training seconds);
* rank aggregates of each ID proxy with log #params (AZ-NAS's way of combining terms).

:func:`id_guided_gain` holds each trained ID-guided proposal (widths proportional to its
source's stage ID, at no more MACs) against the architecture it came from.

Costs are the predictor's seconds over the training seconds of one architecture to the
target epoch (median over architectures), both on one CPU thread.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import numpy as np

from nasdet.benchmark.table import Benchmark, load_benchmark
from nasdet.utils.stats import mean_difference, proxy_statistics, rank_aggregate, test_retest

#: Test–retest τ a target must reach to rank architectures reproducibly.
RETEST_GOAL = 0.6
#: Seed pairs below which the test–retest τ does not choose the target epoch (the
#: benchmark's plan trains at least this many twice).
MIN_PAIRS = 20
#: Cost ceiling (fraction of training) of a proxy worth computing.
COST_GOAL = 0.02
#: Proxies built on the eigenspectrum's ID (for the goal check and the aggregates).
ID_PROXIES = ("id_sum", "id_mean", "id_util", "id_trained", "id_width_norm", "id_gauss_rel",
              "id_dynamics", "spectrum_entropy")


def _mean_layer(row: dict[str, Any], field: str, index: int) -> float:
    values = [v[index] for v in row.get(field, {}).values() if len(v) > index]
    return float(np.mean(values)) if values else math.nan


def predictors(rows: list[dict[str, Any]], target_epoch: int) -> dict[str, dict[str, Any]]:
    """Every candidate predictor: ``{name: {"scores", "seconds", "kind"}}``."""
    out: dict[str, dict[str, Any]] = {}
    names = sorted({n for r in rows for n in r.get("proxies", {})})
    for name in names:
        out[name] = {
            "scores": [r.get("proxies", {}).get(name, math.nan) for r in rows],
            "seconds": [r.get("proxy_seconds", {}).get(name, math.nan) for r in rows],
            "kind": "id" if name in ID_PROXIES else "proxy"}
    zero = [0.0] * len(rows)
    out["table/id_per_width_init"] = {
        "scores": [_mean_layer(r, "id_per_width", 0) for r in rows], "seconds": zero,
        "kind": "id", "note": "recorded by the training's ID hook at iteration 0"}
    for epochs in (1, 2):
        if target_epoch > epochs:
            cost = [float(sum(r["epoch_cpu_seconds"][:epochs])) for r in rows]
            out[f"fidelity/ap_epoch{epochs}"] = {
                "scores": [r["ap"][epochs - 1] for r in rows], "seconds": cost,
                "kind": "fidelity"}
    if target_epoch > 1:
        out["table/id_per_width_epoch1"] = {
            "scores": [_mean_layer(r, "id_per_width", 1) for r in rows],
            "seconds": [float(r["epoch_cpu_seconds"][0]) for r in rows], "kind": "id",
            "note": "after one training epoch: costs that epoch"}
    logp = np.log([float(r["n_params"]) for r in rows])
    for name in [n for n in list(out) if out[n]["kind"] == "id"]:
        out[f"{name}+log_params"] = {
            "scores": rank_aggregate(out[name]["scores"], logp).tolist(),
            "seconds": out[name]["seconds"], "kind": "id+params",
            "note": "mean rank of the ID term and log #params"}
    return out


def analyse(bench: Benchmark, *, metric: str = "ap", n_resamples: int = 2000,
            seed: int = 0) -> dict[str, Any]:
    """The test–retest curve, the target and every predictor's statistics.

    Args:
        bench: The table.
        metric: ``ap`` or ``ap50``.
        n_resamples: Bootstrap resamples of every interval.
        seed: Seed of the resampling.

    Returns:
        A JSON-ready dict (``retest``, ``target_epoch``, ``target_reason``,
        ``predictors``, ``goal``, sizes and units).
    """
    full, bench = bench, bench.sampled()  # proposal rows are not of the random population
    epochs = bench.epochs
    pairs = bench.seed_pairs()
    retest = []
    for e in range(1, epochs + 1):
        r = test_retest([a[metric][e - 1] for a, _ in pairs], [b[metric][e - 1] for _, b in pairs],
                        n_resamples=n_resamples, seed=seed)
        retest.append({"epoch": e, **r})
    reached = [r["epoch"] for r in retest if math.isfinite(r["tau"]) and r["tau"] >= RETEST_GOAL]
    if pairs and len(pairs) < MIN_PAIRS:
        target_epoch = epochs
        reason = (f"only {len(pairs)} seed pairs (fewer than {MIN_PAIRS}): their "
                  "test-retest tau does not choose an epoch yet; the last epoch is used")
    elif reached:
        target_epoch = reached[0]
        reason = (f"the first epoch whose test-retest tau reaches {RETEST_GOAL} "
                  f"({retest[target_epoch - 1]['tau']:.2f} over {len(pairs)} pairs)")
    else:
        target_epoch = epochs
        best = max((r for r in retest if math.isfinite(r["tau"])), key=lambda r: r["tau"],
                   default=None)
        reason = (f"no epoch reaches test-retest tau {RETEST_GOAL} over {len(pairs)} pairs "
                  f"(best: {best['tau']:.2f} at epoch {best['epoch']}); the last epoch is used"
                  if best else "no architecture trained twice yet; the last epoch is used")
    rows = bench.first_seed()
    target = bench.target(rows, metric, target_epoch)
    ceiling = retest[target_epoch - 1] if retest else None
    # The same runs ranked one epoch apart: near 1 while the test-retest tau is low says
    # the noise is the training seed's, not the evaluation's (more validation images or
    # averaging epochs would not raise the ceiling; more seeds or epochs would).
    stability = None
    if target_epoch > 1:
        stability = {"epochs": [target_epoch - 1, target_epoch], **test_retest(
            [r[metric][target_epoch - 2] for r in rows], target,
            n_resamples=n_resamples, seed=seed)}
    n_params = [float(r["n_params"]) for r in rows]
    macs = [float(r["macs"]) for r in rows]
    train_cost = np.array([float(sum(r["epoch_cpu_seconds"][:target_epoch])) for r in rows])
    results = {}
    for name, p in predictors(rows, target_epoch).items():
        st = proxy_statistics(p["scores"], target, n_params=n_params, macs=macs,
                              ceiling=ceiling, n_resamples=n_resamples, seed=seed)
        cost = np.asarray(p["seconds"], dtype=float) / train_cost
        st["cost_fraction"] = float(np.nanmedian(cost)) if np.isfinite(cost).any() else math.nan
        st["kind"] = p["kind"]
        st["note"] = p.get("note")
        results[name] = st
    goal = _goal(results, len(rows))
    return {"metric": metric, "epochs": epochs, "architectures": len(rows),
            "rows": len(bench.rows), "seed_pairs": len(pairs), "retest": retest,
            "target_epoch": target_epoch, "target_reason": reason, "stability": stability,
            "target_range": [float(min(target)), float(max(target))] if target else None,
            "predictors": results, "goal": goal, "meta": bench.meta,
            "id_guided": id_guided_gain(full, metric=metric, epoch=target_epoch,
                                        n_resamples=n_resamples, seed=seed),
            # the training bill per architecture, machines put on one scale (table.py)
            "train_seconds": [float(sum(bench.epoch_costs(r)[:target_epoch])) for r in rows],
            "machine_scales": bench.machine_scales,
            "units": {"tau": "Kendall tau-b", "rho": "Spearman rho",
                      "cost_fraction": "predictor seconds / training seconds to the target "
                                       "epoch, median over architectures (one CPU thread)",
                      "intervals": "95% BCa bootstrap over architectures"}}


def id_guided_gain(bench: Benchmark, *, metric: str = "ap", epoch: int | None = None,
                   n_resamples: int = 2000, seed: int = 0) -> dict[str, Any] | None:
    """Each trained ID-guided proposal against its source architecture (paired).

    The seed paper's claim is that widths from the eigenspectrum keep AP at fewer
    parameters. The source's AP is the run the proposal was made from; a source chosen
    because that run went well regresses to its mean, so where the source was also
    trained with another seed the proposal is compared with that run too (free of the
    selection), and the seed-to-seed noise of one training is given beside them. What
    size alone predicts is the control: AP fitted on log MACs and log #params over the
    sampled population, the proposal's fitted AP minus its source's; ``beyond_size`` is
    the observed difference minus that.

    Returns:
        None without a proposal whose source is in the table, else ``{"n", "delta",
        "delta_other_seed", "beyond_size", "size_model", "params_ratio", "fewer_params",
        "macs_ratio", "seed_sd", "source_mean", "population_mean", "epoch", "metric"}``
        (``delta*``: :func:`mean_difference` of proposal minus source; ratios: median
        proposal / source; ``fewer_params``: the share of proposals smaller than their
        source).
    """
    e = bench.epochs if epoch is None else int(epoch)
    by_run = {(r["arch_id"], r["seed"]): r for r in bench.rows}
    runs: dict[int, list[dict[str, Any]]] = {}
    for r in bench.rows:
        runs.setdefault(r["arch_id"], []).append(r)
    props = [r for r in bench.rows if r.get("origin") == "id_guided"
             and (r.get("source_arch"), r.get("source_seed")) in by_run
             and r["seed"] == min(x["seed"] for x in runs[r["arch_id"]])]
    if not props:
        return None
    sources = [by_run[(p["source_arch"], p["source_seed"])] for p in props]
    others = [(p, next(o for o in runs[p["source_arch"]] if o["seed"] != p["source_seed"]))
              for p in props if any(o["seed"] != p["source_seed"] for o in runs[p["source_arch"]])]
    population_bench = bench.sampled()
    gaps = [a[metric][e - 1] - b[metric][e - 1] for a, b in population_bench.seed_pairs()]
    sampled = population_bench.first_seed()
    population = bench.target(sampled, metric, e)
    model = _size_model(sampled, population)
    prop_ap, source_ap = ([r[metric][e - 1] for r in rs] for rs in (props, sources))
    observed = np.subtract(prop_ap, source_ap)
    expected = [model["fit"](p) - model["fit"](s) for p, s in zip(props, sources, strict=True)]
    return {
        "metric": metric, "epoch": e, "n": len(props),
        "delta": mean_difference(prop_ap, source_ap, n_resamples=n_resamples, seed=seed),
        "delta_other_seed": mean_difference([p[metric][e - 1] for p, _ in others],
                                            [o[metric][e - 1] for _, o in others],
                                            n_resamples=n_resamples, seed=seed),
        "beyond_size": {**mean_difference(observed, expected, n_resamples=n_resamples,
                                          seed=seed), "expected": float(np.mean(expected))},
        "size_model": {k: v for k, v in model.items() if k != "fit"},
        "params_ratio": float(np.median(ratio := [p["n_params"] / s["n_params"]
                                                  for p, s in zip(props, sources, strict=True)])),
        "fewer_params": float(np.mean(np.asarray(ratio) < 1)),
        "macs_ratio": float(np.median([p["macs"] / s["macs"]
                                       for p, s in zip(props, sources, strict=True)])),
        # one training's seed SD: the SD of a two-seed difference over sqrt(2)
        "seed_sd": float(np.std(gaps, ddof=1) / math.sqrt(2)) if len(gaps) > 1 else math.nan,
        "source_mean": float(np.mean(source_ap)),
        "population_mean": float(np.mean(population)) if population else math.nan}


def _size_model(rows: list[dict[str, Any]], target: list[float]) -> dict[str, Any]:
    """Least squares ``target ~ 1 + log MACs + log #params``: coefficients, SEs, ``fit(row)``."""
    def features(r: dict[str, Any]) -> np.ndarray:
        return np.array([1.0, math.log(r["macs"]), math.log(r["n_params"])])

    x = np.array([features(r) for r in rows])
    y = np.asarray(target, dtype=float)
    if len(y) <= x.shape[1]:
        nan = math.nan
        return {"n": len(y), "log_macs": [nan, nan], "log_params": [nan, nan],
                "fit": lambda r: nan}
    coef, *_ = np.linalg.lstsq(x, y, rcond=None)
    resid = y - x @ coef
    cov = resid @ resid / (len(y) - x.shape[1]) * np.linalg.pinv(x.T @ x)
    se = np.sqrt(np.diag(cov))
    return {"n": len(y), "log_macs": [float(coef[1]), float(se[1])],
            "log_params": [float(coef[2]), float(se[2])],
            "fit": lambda r: float(features(r) @ coef)}


def _goal(results: dict[str, dict[str, Any]], n: int) -> dict[str, Any]:
    """Does an ID-based predictor beat #params and MACs (paired, 95%) under 2% cost?

    ``architectures_needed``: how many architectures would bring the widest ID interval
    to half-width 0.1 at the same noise, a bootstrap interval narrowing as 1/sqrt(n).
    ``bound``: the most any cheap ID predictor can beat MACs by and stay inside its
    interval (the highest upper end of Δτ over MACs under the cost goal, and whose):
    what a "none" says in numbers.
    """
    passing, widths, bound = [], [], None
    for name, st in results.items():
        if not st["kind"].startswith("id"):
            continue
        lo_p, lo_m = st["delta_tau_params_ci"][0], st["delta_tau_macs_ci"][0]
        widths.append((st["tau_ci"][1] - st["tau_ci"][0]) / 2)
        cheap = st["cost_fraction"] < COST_GOAL
        if lo_p > 0 and lo_m > 0 and cheap:
            passing.append(name)
        hi_m = st["delta_tau_macs_ci"][1]
        if cheap and math.isfinite(hi_m) and (bound is None or hi_m > bound[0]):
            bound = (float(hi_m), name)
    half = float(np.nanmax(widths)) if widths else math.nan
    needed = None
    if math.isfinite(half) and half > 0.1:
        needed = math.ceil(round(n * (half / 0.1) ** 2, 6))  # round: 0.15 -> 225, not 226
    return {"passing": passing, "max_tau_half_width": half, "architectures_needed": needed,
            "bound": bound and {"delta_tau_macs_upper": bound[0], "predictor": bound[1]},
            "decisive": bool(passing) or (math.isfinite(half) and half <= 0.1),
            "rule": "an ID-based predictor whose paired delta tau over #params and over MACs "
                    f"has a 95% interval above 0 at under {COST_GOAL:.0%} of the training cost; "
                    "'none' is a finding only when every ID interval's half-width <= 0.1"}


def report(directory: str | Path, *, metric: str = "ap", n_resamples: int = 2000) -> Path:
    """Analyse the benchmark in ``directory`` and write ``report/`` (Markdown, JSON, plots)."""
    from nasdet.report.benchmark_report import write_benchmark_report
    from nasdet.utils.io import atomic_write_json

    bench = load_benchmark(directory)
    result = analyse(bench, metric=metric, n_resamples=n_resamples)
    out = Path(directory) / "report"
    atomic_write_json(out / f"analysis_{metric}.json", result)
    return write_benchmark_report(result, out)
