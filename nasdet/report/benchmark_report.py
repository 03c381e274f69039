"""The benchmark report: test–retest curve, predictor table with paired intervals, plots."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

from nasdet.report.plotting import new_figure, save_figure
from nasdet.utils.io import atomic_write_text


def _ci(v: list[float], digits: int = 2) -> str:
    if not all(math.isfinite(x) for x in v):
        return "[n/a]"
    return f"[{v[0]:+.{digits}f}, {v[1]:+.{digits}f}]"


def _num(v: float, fmt: str = "+.2f") -> str:
    return "n/a" if v is None or not math.isfinite(v) else format(v, fmt)


def plot_retest(result: dict[str, Any], path: Path) -> Path:
    """Test–retest Kendall τ of the seed pairs after each epoch, with its interval."""
    fig, ax = new_figure(f"Test-retest tau of {result['metric'].upper()} "
                         f"({result['seed_pairs']} architectures x 2 seeds)",
                         "training epoch", "Kendall tau between seeds")
    pts = [r for r in result["retest"] if math.isfinite(r["tau"])]
    if pts:
        e = [r["epoch"] for r in pts]
        ax.plot(e, [r["tau"] for r in pts], marker="o", label="tau")
        lo = [r["tau_ci"][0] for r in pts]
        hi = [r["tau_ci"][1] for r in pts]
        ax.fill_between(e, lo, hi, alpha=0.2, label="95% BCa interval")
    ax.axhline(0.6, color="k", ls="--", lw=1, label="goal 0.6")
    ax.axvline(result["target_epoch"], color="C3", ls=":", lw=1, label="target epoch")
    ax.set_ylim(-0.2, 1.0)
    ax.legend(loc="lower right")
    return save_figure(fig, path)


def plot_forest(result: dict[str, Any], path: Path, key: str, xlabel: str) -> Path:
    """Each predictor's statistic ``key`` with its interval, sorted."""
    items = [(n, s) for n, s in result["predictors"].items() if math.isfinite(s[key])]
    items.sort(key=lambda t: t[1][key])
    fig, ax = new_figure(f"{xlabel} against {result['metric'].upper()} at epoch "
                         f"{result['target_epoch']} ({result['architectures']} architectures)",
                         xlabel, "predictor", size=(7, max(3.0, 0.28 * len(items) + 1)))
    for i, (_, s) in enumerate(items):
        lo, hi = s[f"{key}_ci"]
        colour = {"fidelity": "C2", "id": "C0", "id+params": "C4"}.get(s["kind"], "C7")
        ax.plot([lo, hi], [i, i], color=colour, lw=2)
        ax.plot([s[key]], [i], "o", color=colour)
    ax.set_yticks(range(len(items)))
    ax.set_yticklabels([n for n, _ in items], fontsize=7)
    ax.axvline(0.0, color="k", lw=1)
    return save_figure(fig, path)


def _id_guided_lines(gain: dict[str, Any] | None) -> list[str]:
    """The ID-guided proposals against their sources (``analysis.id_guided_gain``)."""
    if not gain:
        return []
    m, d, o, z = gain["metric"].upper(), gain["delta"], gain["delta_other_seed"], gain["beyond_size"]
    lines = ["## ID-guided widths against their sources", "",
             f"{gain['n']} trained proposals (backbone widths proportional to the source's "
             f"stage ID at epoch {gain['epoch']}, at no more MACs), each against the "
             "architecture it came from, paired; 95% BCa intervals over proposals.", "",
             "| compared with | n | mean delta " + m + " [95% CI] | proposal better |",
             "|---|---:|---|---:|",
             f"| the source's run it came from | {d['n']} | {_num(d['mean'], '+.3f')} "
             f"{_ci(d['ci'], 3)} | {_num(100 * d['positive'], '.0f')}% |"]
    if o["n"]:
        lines.append(f"| the source's other seed | {o['n']} | {_num(o['mean'], '+.3f')} "
                     f"{_ci(o['ci'], 3)} | {_num(100 * o['positive'], '.0f')}% |")
    lines.append(f"| what size predicts (fit on log MACs, log #params) | {z['n']} | "
                 f"{_num(z['mean'], '+.3f')} {_ci(z['ci'], 3)} beyond its "
                 f"{_num(z['expected'], '+.3f')} | {_num(100 * z['positive'], '.0f')}% |")
    size = gain["size_model"]
    lines += ["", f"Median #params ratio {gain['params_ratio']:.2f} (proposal / source; "
              f"{100 * gain['fewer_params']:.0f}% of the proposals are smaller), median MACs "
              f"ratio {gain['macs_ratio']:.2f}. One training's seed-to-seed SD of {m}: "
              f"{gain['seed_sd']:.3f}. Mean {m} of the sources {gain['source_mean']:.3f}, of "
              f"the sampled population {gain['population_mean']:.3f} (a source picked for a "
              "good run would regress to its mean: the other-seed row is free of that). "
              f"Size model over the {size['n']} sampled architectures: {m} = a + "
              f"{size['log_macs'][0]:.4f} (SE {size['log_macs'][1]:.4f}) log MACs + "
              f"{size['log_params'][0]:.4f} (SE {size['log_params'][1]:.4f}) log #params; "
              "its row says how much of the proposals' result any architecture of their "
              "MACs and #params would have had.", ""]
    return lines


def write_benchmark_report(result: dict[str, Any], out_dir: str | Path) -> Path:
    """Write ``report.md`` and its plots from :func:`nasdet.benchmark.analysis.analyse`.

    Args:
        result: The analysis.
        out_dir: The report directory.

    Returns:
        Path of ``report.md``.
    """
    out = Path(out_dir)
    metric = result["metric"]
    plot_retest(result, out / f"retest_{metric}.png")
    plot_forest(result, out / f"tau_{metric}.png", "tau", "Kendall tau")
    plot_forest(result, out / f"delta_tau_params_{metric}.png", "delta_tau_params",
                "paired delta tau vs #params")
    meta = result.get("meta", {})
    lines = [f"# Tabular benchmark: {Path(str(meta.get('space', '?'))).name}", ""]
    goal = result["goal"]
    verdict = (f"**Goal met** by {', '.join(goal['passing'])}." if goal["passing"] else
               "**Goal not met**: no ID-based predictor beats both #params and MACs with a "
               "paired 95% interval above 0 at under 2% of the training cost"
               + ("; every ID interval is tight enough (half-width <= 0.1) for this to be a "
                  "finding." if goal["decisive"] else
                  f"; the intervals are still too wide to call it (largest tau half-width "
                  f"{goal['max_tau_half_width']:.2f} > 0.1): about "
                  f"{goal.get('architectures_needed') or '?'} architectures would narrow it "
                  "to 0.1 at this noise (intervals shrink as 1/sqrt(n))."))
    if not goal["passing"] and goal.get("bound"):
        verdict += (" Every ID predictor under 2% of the cost has a paired delta tau over "
                    f"MACs of at most {goal['bound']['delta_tau_macs_upper']:+.2f} (the "
                    f"highest upper end of their 95% intervals: {goal['bound']['predictor']}).")
    lines += [verdict, "",
              f"{result['architectures']} architectures ({result['rows']} trainings, "
              f"{result['seed_pairs']} architectures with a second seed), "
              f"{meta.get('epochs')} epochs each, overrides {meta.get('cfg_options', {})}. "
              f"Target: {metric.upper()} after epoch {result['target_epoch']}: "
              f"{result['target_reason']}."]
    if result.get("target_range"):
        lo, hi = result["target_range"]
        lines.append(f"Target range over architectures: {lo:.3f}-{hi:.3f}.")
    if result.get("train_seconds"):
        secs, scales = sorted(result["train_seconds"]), result.get("machine_scales") or {}
        machines = ("" if len(scales) < 2 else "; rows of several machines, on the scale of "
                    "the one with most rows: " + ", ".join(f"{m} x{f:.2f}"
                                                           for m, f in scales.items()))
        lines.append(f"Training to the target epoch: median {secs[len(secs) // 2]:.0f} CPU s "
                     f"per architecture (one thread; {secs[0]:.0f}-{secs[-1]:.0f}{machines}).")
    lines += ["", "## Test-retest (the ceiling of any predictor)", "",
              f"![test-retest](retest_{metric}.png)", "",
              "| epoch | tau | 95% CI | pairs |", "|---:|---:|---|---:|"]
    for r in result["retest"]:
        lines.append(f"| {r['epoch']} | {_num(r['tau'], '.2f')} | {_ci(r['tau_ci'])} | {r['n']} |")
    stab = result.get("stability")
    if stab:
        lines += ["", f"Within one run, the ranking of the {stab['n']} architectures after "
                  f"epochs {stab['epochs'][0]} and {stab['epochs'][1]} agrees at tau "
                  f"{_num(stab['tau'], '.2f')} {_ci(stab['tau_ci'])}: where that is far above "
                  "the test-retest tau, the noise is the training seed's, not the "
                  "evaluation's."]
    lines += ["", f"## Predictors against {metric.upper()} at epoch {result['target_epoch']}", "",
              "Intervals: 95% BCa bootstrap over architectures; delta tau is paired (the same "
              "resamples for the predictor and #params / MACs); partial tau is given log "
              "#params; cost = predictor seconds / training seconds to the target epoch.", "",
              f"![tau](tau_{metric}.png) ![delta](delta_tau_params_{metric}.png)", "",
              "| predictor | kind | n | tau [95% CI] | rho [95% CI] | delta tau vs #params | "
              "delta tau vs MACs | partial tau (log #params) | top-10% recall | tau / ceiling | "
              "cost |", "|---|---|---:|---|---|---|---|---|---:|---:|---:|"]
    ordered = sorted(result["predictors"].items(),
                     key=lambda t: -t[1]["tau"] if math.isfinite(t[1]["tau"]) else math.inf)
    for name, s in ordered:
        lines.append(
            f"| {name} | {s['kind']} | {s['n']} | {_num(s['tau'])} {_ci(s['tau_ci'])} | "
            f"{_num(s['rho'])} {_ci(s['rho_ci'])} | {_num(s['delta_tau_params'])} "
            f"{_ci(s['delta_tau_params_ci'])} | {_num(s['delta_tau_macs'])} "
            f"{_ci(s['delta_tau_macs_ci'])} | {_num(s['partial_tau_params'])} "
            f"{_ci(s['partial_tau_params_ci'])} | {_num(s['top_recall'], '.2f')} | "
            f"{_num(s['tau_over_ceiling'], '.2f')} | {_num(100 * s['cost_fraction'], '.2f')}% |")
    notes = sorted({f"{n}: {s['note']}" for n, s in result["predictors"].items() if s.get("note")
                    and not n.endswith("+log_params")})
    if notes:
        lines += ["", "Notes: " + "; ".join(notes) + "."]
    lines += ["", f"Rule of the goal: {goal['rule']}.", ""]
    lines += _id_guided_lines(result.get("id_guided"))
    return atomic_write_text(out / "report.md", "\n".join(lines))
