"""How well does each proxy rank architectures by trained AP? Correlations and plots.

For every proxy: Kendall's tau and Spearman's rho against AP with bootstrap 95%
intervals (percentile, resampling architectures), top-k recall (of the true top
``top_fraction`` by AP, the share the proxy also puts in its top ``top_fraction``),
and the proxy's cost relative to training (mean proxy seconds / mean training seconds
per architecture).
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import numpy as np
from scipy.stats import kendalltau, spearmanr

from nasdet.report.plotting import new_figure, save_figure
from nasdet.utils.io import atomic_write_json, atomic_write_text


def top_k_recall(target: np.ndarray, score: np.ndarray, fraction: float = 0.1) -> float:
    """Of the true top ``fraction`` by ``target``, the share ``score`` also ranks top.

    ``k = ceil(fraction * n)`` (at least 1); ties are broken by position.

    Example:
        >>> top_k_recall(np.array([1., 2, 3, 4]), np.array([4., 3, 2, 1]), 0.5)
        0.0
    """
    n = len(target)
    k = max(1, math.ceil(fraction * n))
    true_top = set(np.argsort(-target, kind="stable")[:k].tolist())
    proxy_top = set(np.argsort(-score, kind="stable")[:k].tolist())
    return len(true_top & proxy_top) / k


def _corr(x: np.ndarray, y: np.ndarray) -> tuple[float, float]:
    if np.ptp(x) == 0 or np.ptp(y) == 0:
        return float("nan"), float("nan")
    return float(kendalltau(x, y).statistic), float(spearmanr(x, y).statistic)


def correlations(rows: list[dict[str, Any]], *, target: str = "ap", fraction: float = 0.1,
                 n_boot: int = 1000, seed: int = 0) -> list[dict[str, Any]]:
    """One row per proxy: tau, rho (with 95% bootstrap intervals), top-k recall, cost.

    Args:
        rows: Architectures with ``target``, ``proxy/<name>`` and optionally
            ``seconds/proxy/<name>`` and ``seconds/<train stage>`` keys.
        target: The trained metric to rank by.
        fraction: Top fraction for the recall.
        n_boot: Bootstrap resamples.
        seed: Seed of the bootstrap.

    Returns:
        Rows sorted by Kendall's tau, best first.
    """
    usable = [r for r in rows if r.get(target) is not None]
    proxies = sorted({k.removeprefix("proxy/") for r in usable for k in r
                      if k.startswith("proxy/")})
    train_keys = sorted({k for r in usable for k in r
                         if k.startswith("seconds/") and not k.startswith("seconds/proxy/")
                         and k not in ("seconds/complexity", "seconds/proxy")})
    train_s = [sum(float(r.get(k, 0.0)) for k in train_keys) for r in usable]
    mean_train = float(np.mean(train_s)) if train_s else float("nan")
    rng = np.random.default_rng(seed)
    out = []
    for name in proxies:
        pairs = [(float(r[f"proxy/{name}"]), float(r[target])) for r in usable
                 if r.get(f"proxy/{name}") is not None]
        if len(pairs) < 3:
            continue
        x, y = map(np.asarray, zip(*pairs, strict=True))
        tau, rho = _corr(x, y)
        boot = []
        for _ in range(n_boot):
            idx = rng.integers(0, len(x), len(x))
            boot.append(_corr(x[idx], y[idx]))
        boot_arr = np.array(boot, dtype=float)
        lo = np.nanpercentile(boot_arr, 2.5, axis=0)
        hi = np.nanpercentile(boot_arr, 97.5, axis=0)
        secs = [float(r[f"seconds/proxy/{name}"]) for r in usable
                if r.get(f"seconds/proxy/{name}") is not None]
        mean_s = float(np.mean(secs)) if secs else float("nan")
        out.append({
            "proxy": name, "n": len(x),
            "kendall_tau": tau, "tau_lo": float(lo[0]), "tau_hi": float(hi[0]),
            "spearman_rho": rho, "rho_lo": float(lo[1]), "rho_hi": float(hi[1]),
            "top10_recall": top_k_recall(y, x, fraction),
            "proxy_seconds": mean_s,
            "cost_ratio": mean_s / mean_train if mean_train and mean_train == mean_train else
            float("nan"),
        })
    return sorted(out, key=lambda r: -(r["kendall_tau"] if r["kendall_tau"] == r["kendall_tau"]
                                       else -2))


#: The trained metrics a benchmark ranks by: COCO box AP first, then AP at IoU 0.5.
TARGETS = ("ap", "ap50")
TARGET_NAMES = {"ap": "COCO box AP (mAP@[.5:.95])", "ap50": "box AP at IoU 0.5"}


def _spread(values: list[float]) -> dict[str, float] | None:
    if len(values) < 2:
        return None
    return {"min": min(values), "max": max(values), "std": float(np.std(values, ddof=1))}


def write_proxy_report(rows: list[dict[str, Any]], out_dir: str | Path, *,
                       targets: tuple[str, ...] = TARGETS,
                       noise: dict[str, Any] | None = None, command: str = "") -> Path:
    """``correlations.json``/``.md`` and ``proxy_scatter_<target>.png`` for a benchmark.

    One section per target: the spread of the target across architectures next to
    the seed-to-seed spread of one architecture (is the ranking signal above the
    noise?), then each proxy's correlations.

    Args:
        rows: One per architecture (see :func:`correlations`).
        out_dir: Where to write.
        targets: Trained metrics to rank by, the first is the headline.
        noise: One architecture retrained with other seeds:
            ``{"trial": n, "values": {target: [value per seed, ...]}}``.
        command: The command that regenerates the table.

    Returns:
        Path of ``correlations.md``.
    """
    out = Path(out_dir)
    n_archs = len(rows)
    sections: dict[str, Any] = {}
    text = [f"# Proxy benchmark: how well do proxies rank {n_archs} architectures by trained AP?",
            ""]
    for target in targets:
        table = correlations(rows, target=target)
        spread = _spread([float(r[target]) for r in rows if r.get(target) is not None])
        seeds = [float(v) for v in ((noise or {}).get("values") or {}).get(target, [])]
        seed_spread = _spread(seeds)
        sections[target] = {"correlations": table, "spread_across_architectures": spread,
                            "seed_noise": {"trial": noise.get("trial"), "values": seeds,
                                           **(seed_spread or {})} if seeds else None}
        plot = f"proxy_scatter_{target}.png"
        _scatter(rows, table, target, out / plot)
        text += [f"## {TARGET_NAMES.get(target, target)} (`{target}`)", ""]
        if spread:
            text.append(f"Across architectures: {target} from {spread['min']:.3f} to "
                        f"{spread['max']:.3f} (std {spread['std']:.3f}).")
        if seed_spread:
            ratio = spread["std"] / seed_spread["std"] if spread and seed_spread["std"] else \
                float("nan")
            text.append(f"One architecture (trial {noise.get('trial')}) trained {len(seeds)} "
                        f"times with different seeds: " + ", ".join(f"{v:.3f}" for v in seeds)
                        + f" (std {seed_spread['std']:.3f}); the spread across architectures "
                        f"is {ratio:.1f}x the seed noise.")
        text += ["", "| proxy | Kendall τ [95% CI] | Spearman ρ [95% CI] | top-10% recall | "
                 "seconds | cost / training |", "|---|---|---|---|---|---|"]
        for r in table:
            text.append(
                f"| {r['proxy']} | {r['kendall_tau']:.2f} [{r['tau_lo']:.2f}, "
                f"{r['tau_hi']:.2f}] | {r['spearman_rho']:.2f} [{r['rho_lo']:.2f}, "
                f"{r['rho_hi']:.2f}] | {r['top10_recall']:.2f} | {r['proxy_seconds']:.2f} | "
                f"{r['cost_ratio']:.2%} |")
        text += ["", f"![proxies vs {target}]({plot})", ""]
    text += ["Kendall τ / Spearman ρ: rank correlation of the proxy (scored at "
             "initialisation, `id_trained` after its short training) with the trained "
             "metric, 95% percentile bootstrap over architectures. Top-10% recall: of the "
             "true top 10% of architectures, the share the proxy also ranks in its top 10%. "
             "Seconds: proxy wall clock per architecture; cost / training: that over the "
             "training's wall clock.", ""]
    if command:
        text += ["Regenerate with:", "", f"    {command}", ""]
    atomic_write_json(out / "correlations.json", {
        "n_architectures": n_archs, "targets": sections, "command": command,
        "units": {"ap/ap50": "COCO box AP on the validation split, fractions (pycocotools)",
                  "kendall_tau/spearman_rho": "rank correlation in [-1, 1], 95% bootstrap "
                  "percentile interval over architectures", "top10_recall": "fraction",
                  "proxy_seconds": "wall-clock seconds per architecture",
                  "cost_ratio": "proxy seconds / training seconds per architecture"}})
    return atomic_write_text(out / "correlations.md", "\n".join(text))


def _scatter(rows, table, target: str, path: Path) -> None:
    if not table:
        return
    n = len(table)
    cols = min(4, n)
    nrows = math.ceil(n / cols)
    fig, _ = new_figure("", "", "", size=(3.6 * cols, 3.2 * nrows))
    fig.clf()
    for i, t in enumerate(table, start=1):
        ax = fig.add_subplot(nrows, cols, i)
        pts = [(float(r[f"proxy/{t['proxy']}"]), float(r[target])) for r in rows
               if r.get(f"proxy/{t['proxy']}") is not None and r.get(target) is not None]
        ax.scatter(*zip(*pts, strict=True), s=14)
        if t["proxy"] in ("synflow", "params", "macs") and min(p[0] for p in pts) > 0:
            ax.set_xscale("log")  # these span orders of magnitude
        ax.set_title(f"{t['proxy']}: tau={t['kendall_tau']:.2f}", fontsize=9)
        ax.set_xlabel(f"proxy/{t['proxy']}", fontsize=8)
        ax.set_ylabel(target, fontsize=8)
        ax.grid(alpha=0.3)
    fig.suptitle(f"Proxy scores vs trained {target} ({TARGET_NAMES.get(target, target)})")
    save_figure(fig, path)
