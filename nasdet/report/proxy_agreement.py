"""How well each proxy a search recorded ranks its own finished trials, against #params.

The search report's running check of its proxies: over the fully trained trials, the
Kendall τ between each proxy's score at initialisation and the search's objective, with
a BCa interval, and the paired Δτ against the trial's parameter count
(:func:`nasdet.utils.stats.proxy_statistics`, the function every benchmark report uses).
A proxy "beats #params" only when the whole interval of Δτ lies above 0; otherwise the
report says plainly that it has not, on these trials.
"""

from __future__ import annotations

import math
from typing import Any

from nasdet.utils.stats import MIN_N, proxy_statistics

#: Proxies that are the baselines themselves (their Δτ against #params says nothing).
BASELINES = ("proxy/params", "proxy/macs")


def proxy_agreement(rows: list[dict[str, Any]], metric: str, direction: str, *,
                    rungs: tuple[str, ...] = (), n_resamples: int = 2000) -> list[dict[str, Any]]:
    """One entry per ``proxy/*`` column of the trials that have ``metric``.

    Args:
        rows: Fully trained trials (each with ``params``, ``macs`` and ``proxy/*``).
        metric: The objective the proxies should rank.
        direction: ``maximize`` or ``minimize`` (a minimised metric is ranked negated).
        rungs: Proxies the search prunes on (marked in the table).
        n_resamples: Bootstrap resamples.

    Returns:
        Dicts with ``proxy``, ``rung``, ``n`` and :func:`proxy_statistics`' ``tau``,
        ``tau_ci``, ``tau_params``, ``delta_tau_params``, ``delta_tau_params_ci``, plus
        ``verdict``.
    """
    names = sorted({k for r in rows for k in r if k.startswith("proxy/")})
    sign = 1.0 if direction == "maximize" else -1.0
    out = []
    for name in names:
        use = [r for r in rows if _finite(r.get(name)) and _finite(r.get(metric))
               and _finite(r.get("params")) and _finite(r.get("macs"))]
        entry: dict[str, Any] = {"proxy": name.removeprefix("proxy/"),
                                 "rung": name.removeprefix("proxy/") in rungs, "n": len(use)}
        if len(use) < MIN_N:
            entry["verdict"] = f"too few trained trials ({len(use)} < {MIN_N})"
            out.append(entry)
            continue
        found = proxy_statistics([float(r[name]) for r in use],
                                 [sign * float(r[metric]) for r in use],
                                 n_params=[float(r["params"]) for r in use],
                                 macs=[float(r["macs"]) for r in use],
                                 n_resamples=n_resamples)
        for key in ("n", "tau", "tau_ci", "tau_params", "delta_tau_params",
                    "delta_tau_params_ci"):
            entry[key] = found[key]
        low = found["delta_tau_params_ci"][0]
        if name in BASELINES:
            entry["verdict"] = "baseline"
        elif _finite(low) and low > 0:
            entry["verdict"] = "beats #params"
        else:
            entry["verdict"] = "has not beaten #params on these trials"
        out.append(entry)
    return out


def proxy_agreement_markdown(entries: list[dict[str, Any]], metric: str) -> list[str]:
    """The report section (lines); empty when the search recorded no proxy."""
    if not entries:
        return []
    lines = ["## Proxies against the objective", "",
             f"Kendall τ between each proxy's score at initialisation and `{metric}` over the "
             "fully trained trials, and the paired Δτ = τ(proxy) − τ(#params) on the same "
             "bootstrap resamples (95% BCa intervals). A rung is a proxy the search prunes "
             "on; with few trials the intervals are wide, and a proxy beats #params only "
             "when Δτ's whole interval is above 0.", "",
             "| proxy | rung | n | τ [95% CI] | τ(#params) | Δτ vs #params [95% CI] | verdict |",
             "|---|---|---|---|---|---|---|"]
    for e in entries:
        lines.append(
            f"| {e['proxy']} | {'yes' if e['rung'] else ''} | {e['n']} | "
            f"{_with_ci(e.get('tau'), e.get('tau_ci'))} | {_num(e.get('tau_params'))} | "
            f"{_with_ci(e.get('delta_tau_params'), e.get('delta_tau_params_ci'))} | "
            f"{e['verdict']} |")
    lines.append("")
    return lines


def _finite(v: Any) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)


def _num(v: Any) -> str:
    return f"{v:+.2f}" if _finite(v) else "n/a"


def _with_ci(v: Any, ci: Any) -> str:
    if not _finite(v):
        return "n/a"
    if ci and all(_finite(c) for c in ci):
        return f"{v:+.2f} [{ci[0]:+.2f}, {ci[1]:+.2f}]"
    return f"{v:+.2f}"
