"""Search efficiency by replay over a benchmark table: training seconds to the top 5%.

    python benchmarks/search_efficiency.py docs/benchmark/tiny_synth_arch --repeats 50 --workers 2

Replays (no training; see nasdet.benchmark.replay) random search, TPE, TPE with a proxy
rung for each proxy (and a control rung on random scores), TPE with successive halving
over epochs (Optuna's SuccessiveHalvingPruner, ASHA's rule), proxy rung + successive
halving and TPE with the ID-guided step (nasdet.benchmark.proposals; proposals outside
the table go to its proposals.json, which the benchmark command trains as rows), each
``--repeats`` times with other seeds. Prints and writes (``<table>/replay/``):
training seconds until an architecture of the table's top-5% target is trained, per
strategy, as a ratio to random search with a 95% bootstrap interval, and, for a
strategy that adds one part (a rung, successive halving, the ID-guided step) to
another of the plan, as a ratio to that one, paired by seed (repeat i of both runs
the sampler with seed i); the regret against training seconds as a plot with 95% bands.
"""

from __future__ import annotations

import argparse
import dataclasses
import math
import sys
import time
import warnings
from pathlib import Path

import numpy as np

_STATE: dict = {}


def _init(table: str, target_epoch: int, metric: str) -> None:
    from nasdet.benchmark.proposals import table_proposals
    from nasdet.benchmark.replay import _space_path
    from nasdet.benchmark.table import load_benchmark
    from nasdet.space import SearchSpace

    bench = load_benchmark(table)
    space = SearchSpace.from_yaml(_space_path(bench))
    proposals = table_proposals(bench, space, target_epoch,
                                cache=_proposals_cache(table, target_epoch))
    _STATE.update(bench=bench, space=space, target_epoch=target_epoch, metric=metric,
                  proposals=proposals)


def _proposals_cache(table: str, epoch: int) -> Path:
    return Path(table) / "replay" / f"id_proposals_epoch{epoch}.json"


def _run(job):
    from nasdet.benchmark.replay import replay

    strategy, seed = job
    t = replay(_STATE["bench"], strategy, target_epoch=_STATE["target_epoch"],
               metric=_STATE["metric"], seed=seed, space=_STATE["space"],
               proposals=_STATE["proposals"])
    return strategy.name, seed, t.seconds, t.best, t.missing


def strategies(proxies: list[str], asha_proxy: str | None):
    from nasdet.benchmark.replay import CHANCE, Strategy

    out = [Strategy("random"), Strategy("tpe", sampler="tpe"),
           Strategy("tpe+asha", sampler="tpe", pruner="asha"),
           Strategy("tpe+id_guided", sampler="tpe", id_guided=True)]
    out += [Strategy(f"tpe+rung:{p}", sampler="tpe", proxy=p) for p in [CHANCE, *proxies]]
    if asha_proxy:
        out.append(Strategy(f"tpe+rung:{asha_proxy}+asha", sampler="tpe", proxy=asha_proxy,
                            pruner="asha"))
    return out


def without_last_part(s, plan):
    """The plan's strategy that is ``s`` without its rung, else without successive
    halving, else without the ID-guided step (``None``: no such strategy)."""
    if s.proxy is not None:
        want = dataclasses.replace(s, proxy=None)
    elif s.pruner != "none":
        want = dataclasses.replace(s, pruner="none")
    elif s.id_guided:
        want = dataclasses.replace(s, id_guided=False)
    else:
        return None
    return next((p for p in plan if dataclasses.replace(p, name=want.name) == want), None)


def _boot_ratio(a: np.ndarray, b: np.ndarray, rng, n: int = 2000,
                stat=np.mean, paired: bool = False) -> tuple[float, float]:
    """95% percentile-bootstrap interval of stat(a) / stat(b), a and b resampled apart
    (or, ``paired``, by the same repeats: a[i] and b[i] ran with the same seed).

    A repeat that never reached the goal is ``inf``: the median stays finite while
    more than half did, so the interval's ends are order statistics, not interpolated.
    """
    ia = rng.integers(0, len(a), (n, len(a)))
    ib = ia if paired else rng.integers(0, len(b), (n, len(b)))
    r = stat(a[ia], axis=1) / stat(b[ib], axis=1)
    return (float(np.quantile(r, 0.025, method="lower")),
            float(np.quantile(r, 0.975, method="higher")))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("table", help="benchmark directory")
    parser.add_argument("--repeats", type=int, default=50)
    parser.add_argument("--workers", type=int, default=1)
    parser.add_argument("--metric", default="ap", choices=("ap", "ap50"))
    parser.add_argument("--target-epoch", type=int, help="default: the analysis' target epoch")
    parser.add_argument("--proxies", nargs="+",
                        help="proxies of the rungs (default: the 8 best by tau, ID ones included)")
    parser.add_argument("--top", type=float, default=0.05, help="top fraction to reach")
    parser.add_argument("--no-proposals", action="store_true",
                        help="do not add the ID-guided proposals outside the table to its "
                             "proposals.json (the benchmark command trains those)")
    args = parser.parse_args(argv)

    import multiprocessing as mp

    from nasdet.benchmark.analysis import analyse
    from nasdet.benchmark.replay import regret_curve
    from nasdet.benchmark.table import load_benchmark
    from nasdet.report.plotting import new_figure, save_figure
    from nasdet.utils.io import atomic_write_json, atomic_write_text

    start = time.perf_counter()
    bench = load_benchmark(args.table)
    analysis = analyse(bench, metric=args.metric, n_resamples=200)
    epoch = args.target_epoch or analysis["target_epoch"]
    rows = bench.first_seed()
    target = np.array(bench.target(rows, args.metric, epoch))
    threshold = float(np.quantile(target, 1 - args.top))
    optimum = float(target.max())
    preds = analysis["predictors"]
    per_arch = {n for r in rows for n in r.get("proxies", {})}
    ranked = sorted((n for n in preds if n in per_arch and math.isfinite(preds[n]["tau"])),
                    key=lambda n: -preds[n]["tau"])
    proxies = args.proxies or ranked[:8]
    best_proxy = proxies[0] if proxies else None
    plan = strategies(proxies, best_proxy)
    jobs = [(s, seed) for s in plan for seed in range(args.repeats)]
    print(f"[replay] {len(rows)} architectures, target {args.metric.upper()} at epoch {epoch}, "
          f"top-{args.top:.0%} threshold {threshold:.3f}; {len(plan)} strategies x "
          f"{args.repeats} repeats", flush=True)
    initargs = (args.table, epoch, args.metric)
    _init(*initargs)  # the ID-guided proposals, computed once and cached for the workers
    if args.workers > 1:
        with mp.get_context("fork").Pool(args.workers, _init, initargs) as pool:
            results = pool.map(_run, jobs, chunksize=4)
    else:
        results = [_run(j) for j in jobs]
    traces: dict[str, list] = {}
    missing: dict[str, list[int]] = {}
    wanted: dict[str, int] = {}  # proposal key -> its source architecture
    for name, _, seconds, best, lost in results:
        traces.setdefault(name, []).append((np.array(seconds), np.array(best)))
        missing.setdefault(name, []).append(len(lost))
        for source, key in lost:
            wanted.setdefault(key, source)

    def reach(seconds, best):
        hit = np.nonzero(best >= threshold)[0]
        return float(seconds[hit[0]]) if len(hit) else math.inf

    rng = np.random.default_rng(0)
    reached = {s.name: np.array([reach(*t) for t in traces[s.name]]) for s in plan}
    random_reach = reached["random"]
    median_random = float(_median(random_reach, 0))
    table = []
    for s in plan:
        r = reached[s.name]
        found = np.isfinite(r)
        entry = {"strategy": s.name, "repeats": len(r), "reached": int(found.sum()),
                 "proposals_outside_table": float(np.mean(missing[s.name])),
                 # inf while half the repeats or more never reached it
                 "median_seconds": float(_median(r, 0)),
                 "mean_seconds": float(r.mean()) if found.all() else math.inf}
        entry["median_ratio_to_random"] = entry["median_seconds"] / median_random
        entry["median_ratio_ci"] = list(_boot_ratio(r, random_reach, rng, stat=_median))
        if found.all() and np.isfinite(random_reach).all():
            entry["ratio_to_random"] = entry["mean_seconds"] / float(random_reach.mean())
            entry["ratio_ci"] = list(_boot_ratio(r, random_reach, rng))
        else:
            entry["ratio_to_random"], entry["ratio_ci"] = math.inf, [math.nan, math.nan]
        base = without_last_part(s, plan)
        entry["vs"], entry["ratio_to_vs"], entry["ratio_to_vs_ci"] = None, math.nan, [
            math.nan, math.nan]
        if base is not None and np.isfinite(r).all() and np.isfinite(reached[base.name]).all():
            b = reached[base.name]  # repeat i of both: the same seed, so paired
            entry.update(vs=base.name, ratio_to_vs=float(r.mean() / b.mean()),
                         ratio_to_vs_ci=list(_boot_ratio(r, b, rng, paired=True)))
        table.append(entry)
    total = float(sum(sum(bench.epoch_costs(r)[:epoch]) for r in rows))
    grid = np.linspace(0, total, 200)
    fig, ax = new_figure(f"Replayed searches over {len(rows)} architectures "
                         f"({args.repeats} repeats)", "training CPU seconds spent",
                         f"regret ({args.metric.upper()} of the best - best found)")
    shown = ["random", "tpe", "tpe+asha"] + [s.name for s in plan[3:6]] + [plan[-1].name]
    for name in dict.fromkeys(shown):
        reg = regret_curve([_trace(t) for t in traces[name]], grid, optimum)
        with warnings.catch_warnings():  # before a first trained architecture: no regret yet
            warnings.simplefilter("ignore", RuntimeWarning)
            mean = np.nanmean(reg, 0)
            lo, hi = np.nanquantile(reg, 0.025, 0), np.nanquantile(reg, 0.975, 0)
        ax.plot(grid, mean, label=name)
        ax.fill_between(grid, lo, hi, alpha=0.12)
    ax.set_yscale("symlog", linthresh=1e-3)
    ax.legend(fontsize=7)
    out = Path(args.table) / "replay"
    save_figure(fig, out / f"regret_{args.metric}.png")
    scales = bench.machine_scales
    scale_note = ("" if len(scales) < 2 else " Rows of other machines are put on the scale of "
                  "the one with most rows (factor fitted on log MACs and log #params, "
                  "nasdet.benchmark.table.machine_scales): "
                  + ", ".join(f"{m} x{f:.2f}" for m, f in scales.items()) + ".")
    lines = [f"# Search efficiency by replay ({args.metric.upper()} at epoch {epoch})", "",
             f"{len(rows)} architectures of the table, {args.repeats} repeats per strategy "
             f"(seeds 0-{args.repeats - 1}); goal: train an architecture of the top "
             f"{args.top:.0%} ({args.metric.upper()} >= {threshold:.3f}); costs are the table's "
             "training CPU seconds (one thread) plus each rung's proxy seconds. Ratio: mean "
             "seconds over random search's (where every repeat reached the goal); median "
             "ratio: the medians' (finite while more than half did); 95% bootstrap "
             "intervals over repeats. Paired: mean seconds over those of the search "
             "without the strategy's last part, repeats resampled together (the same "
             "seeds). The rung on 'chance' scores at random: what a rung saves without "
             "any signal. The other rungs' proxies are the best by tau on this table (the "
             "rung + successive halving one: the best): an in-sample choice, which "
             "flatters them." + scale_note, "",
             f"![regret](regret_{args.metric}.png)", "",
             "ID-guided: after each architecture trained to the target, its proposal "
             "(widths proportional to its stages' ID at that epoch, at no more MACs) is the "
             "next trial when the table holds it; proposals outside the table (mean per "
             "repeat in the last column) are not trained in the replay: "
             f"{len(wanted)} distinct ones, added to the table's proposals.json for the "
             "benchmark command to train." if not args.no_proposals else
             f"ID-guided: {len(wanted)} distinct proposals were outside the table.", "",
             "| strategy | reached | median s | mean s | ratio to random [95% CI] | "
             "median ratio [95% CI] | paired ratio [95% CI] | proposals outside |",
             "|---|---:|---:|---:|---|---|---|---:|"]
    for e in table:
        ci, mci = e["ratio_ci"], e["median_ratio_ci"]
        lines.append(f"| {e['strategy']} | {e['reached']}/{e['repeats']} | "
                     f"{e['median_seconds']:.0f} | {e['mean_seconds']:.0f} | "
                     f"{e['ratio_to_random']:.2f} [{ci[0]:.2f}, {ci[1]:.2f}] | "
                     f"{e['median_ratio_to_random']:.2f} [{mci[0]:.2f}, {mci[1]:.2f}] | "
                     f"{_paired(e)} | {e['proposals_outside_table']:.1f} |")
    atomic_write_text(out / f"replay_{args.metric}.md", "\n".join(lines) + "\n")
    atomic_write_json(out / f"replay_{args.metric}.json", {
        "target_epoch": epoch, "threshold": threshold, "repeats": args.repeats,
        "strategies": table, "machine_scales": scales,
        "units": "seconds: training CPU seconds on one thread, on the scale of the machine "
                 "with most rows"})
    if wanted and not args.no_proposals:
        from nasdet.benchmark.proposals import add_proposals

        props = _STATE["proposals"]
        added = add_proposals(args.table, [props[a] for a in dict.fromkeys(wanted.values())])
        if added:
            print(f"[replay] {len(added)} new ID-guided proposals in {args.table}/proposals.json: "
                  "the benchmark command trains them as rows")
    print("\n".join(lines[8:]))
    print(f"[replay] {time.perf_counter() - start:.0f} s; written to {out}")
    return 0


def _paired(entry: dict) -> str:
    if entry["vs"] is None:
        return "-"
    lo, hi = entry["ratio_to_vs_ci"]
    return f"{entry['ratio_to_vs']:.2f} [{lo:.2f}, {hi:.2f}] vs {entry['vs']}"


def _median(x: np.ndarray, axis: int) -> np.ndarray:
    """The lower median: never an interpolation with a repeat that did not reach (inf)."""
    return np.sort(x, axis=axis).take((x.shape[axis] - 1) // 2, axis=axis)


def _trace(t):
    from nasdet.benchmark.replay import Trace

    return Trace(seconds=list(t[0]), best=list(t[1]))


if __name__ == "__main__":
    sys.exit(main())
