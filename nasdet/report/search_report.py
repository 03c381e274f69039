"""The report of a search: trials table, Pareto front, best configs, plots.

Works from backend-neutral rows (one dict per trial, as the Optuna and Ray drivers
produce them), so both backends get the same report.
"""

from __future__ import annotations

import csv
import io
import json
import shutil
from pathlib import Path
from typing import Any

import numpy as np

from nasdet.report.plotting import new_figure, save_figure
from nasdet.utils.io import atomic_write_json, atomic_write_text

UNITS = {
    "ap": "COCO bbox mAP@[.5:.95] (fraction)",
    "ap50": "COCO bbox mAP@0.5 (fraction)",
    "params": "trainable parameters (count, shared counted once)",
    "macs": "multiply-accumulates per image at the space's input size (count)",
}


def _complete(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [r for r in rows if r.get("state") in ("COMPLETE", "TERMINATED")]


def pareto_front(rows: list[dict[str, Any]], objectives: list[tuple[str, str]]
                 ) -> list[dict[str, Any]]:
    """Rows not dominated by any other row.

    Args:
        rows: Finished trials with every objective metric present.
        objectives: ``(metric, direction)`` pairs, direction ``maximize``/``minimize``.

    Returns:
        The non-dominated rows, sorted by the first objective (best first).
    """
    usable = [r for r in rows if all(r.get(m) is not None for m, _ in objectives)]
    sign = np.array([1.0 if d == "maximize" else -1.0 for _, d in objectives])
    vals = np.array([[float(r[m]) for m, _ in objectives] for r in usable]) * sign \
        if usable else np.zeros((0, len(objectives)))
    front = []
    for i, v in enumerate(vals):
        dominated = np.any(np.all(vals >= v, axis=1) & np.any(vals > v, axis=1))
        if not dominated:
            front.append(usable[i])
    return sorted(front, key=lambda r: -sign[0] * float(r[objectives[0][0]]))


def _write_csv(path: Path, rows: list[dict[str, Any]]) -> None:
    keys: list[str] = []
    for r in rows:
        keys += [k for k in r if k not in keys and k != "traceback"]
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=keys, extrasaction="ignore")
    writer.writeheader()
    for r in rows:
        writer.writerow({k: r.get(k, "") for k in keys})
    atomic_write_text(path, buf.getvalue())


def _fmt(v: Any) -> str:
    if isinstance(v, float):
        return f"{v:.4g}"
    return "" if v is None else str(v)


def _markdown_table(rows: list[dict[str, Any]], cols: list[str]) -> str:
    lines = ["| " + " | ".join(cols) + " |", "|" + "---|" * len(cols)]
    lines += ["| " + " | ".join(_fmt(r.get(c)) for c in cols) + " |" for r in rows]
    return "\n".join(lines)


def _best_first(rows, metric: str, direction: str):
    done = [r for r in rows if r.get(metric) is not None]
    return sorted(done, key=lambda r: float(r[metric]), reverse=direction == "maximize")


def write_search_report(
    rows: list[dict[str, Any]],
    out_dir: str | Path,
    *,
    objectives: list[tuple[str, str]],
    title: str = "search",
    study: Any = None,
    top_k: int = 3,
    elapsed_s: float | None = None,
) -> Path:
    """Write ``trials.csv``, ``pareto.csv``, ``best/``, PNG plots and ``report.md``.

    Args:
        rows: One dict per trial (``trial``, ``state``, ``param/*``, metrics, reasons,
            ``trial_dir``, ``id_guided_from`` for ID-guided trials).
        out_dir: Report directory.
        objectives: ``(metric, direction)`` of the search.
        title: Report title.
        study: The Optuna study, if any (for parameter importances by fANOVA).
        top_k: How many best candidates to export and to show spectra of.
        elapsed_s: Wall-clock seconds of the search, for the header.

    Returns:
        Path of ``report.md``.
    """
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    complete = _complete(rows)
    main_metric, main_dir = objectives[0]
    ranked = _best_first(complete, main_metric, main_dir)

    _write_csv(out / "trials.csv", rows)
    front_objs = objectives if len(objectives) > 1 else [(main_metric, main_dir), ("macs", "minimize")]
    front = pareto_front(complete, front_objs)
    _write_csv(out / "pareto.csv", front)

    best_dir = out / "best"
    if best_dir.exists():
        shutil.rmtree(best_dir)
    best_dir.mkdir()
    exported = []
    for rank, r in enumerate(ranked[:top_k], start=1):
        src = Path(str(r.get("trial_dir", ""))) / "candidate.py"
        if src.is_file():
            dst = best_dir / f"rank{rank}_trial{r['trial']}.py"
            shutil.copyfile(src, dst)
            exported.append(dst.name)

    plots = {
        "history": _plot_history(rows, main_metric, main_dir, out / "history.png"),
        "pareto": _plot_pareto(complete, front, front_objs, out / "pareto.png"),
        "proxy_vs_ap": _plot_proxies(complete, main_metric, out / "proxy_vs_ap.png"),
        "importances": _plot_importances(rows, complete, main_metric, study,
                                         out / "importances.png"),
        "id_per_layer": _plot_id_layers(ranked[:top_k], out / "id_per_layer.png"),
    }

    states: dict[str, int] = {}
    for r in rows:
        states[str(r.get("state"))] = states.get(str(r.get("state")), 0) + 1
    params_cols = sorted({k for r in complete for k in r if k.startswith("param/")})
    head_cols = ["trial", main_metric, *[m for m, _ in objectives[1:]]]
    head_cols += [c for c in ("ap", "ap50", "params", "macs") if c not in head_cols]
    head_cols += sorted({k for r in complete for k in r if k.startswith("proxy/")})
    text = [f"# {title}", ""]
    text.append(f"{len(rows)} trials: " + ", ".join(f"{v} {k.lower()}" for k, v in states.items())
                + (f"; {elapsed_s / 60:.1f} min wall-clock." if elapsed_s else "."))
    text += ["", "## Best candidates", "",
             _markdown_table(ranked[: max(top_k, 5)], head_cols) if ranked else "_no finished trial_",
             "", "Units: " + "; ".join(f"`{k}`: {v}" for k, v in UNITS.items()) + "; "
             "`proxy/*`: each proxy's score at initialisation.", ""]
    if exported:
        text += ["Exported standalone configs (retrain with `tools/train.py`): "
                 + ", ".join(f"`best/{e}`" for e in exported), ""]
    text += ["## Plots", ""]
    for name, path in plots.items():
        if path:
            text += [f"![{name}]({path.name})", ""]
    text += ["## Pareto front", "", _markdown_table(front, head_cols) if front else "_empty_", ""]
    if params_cols and ranked:
        text += ["## Parameters of the best candidates", "",
                 _markdown_table(ranked[:top_k], ["trial", *params_cols]), ""]
    guided = [r for r in rows if r.get("id_guided_from") is not None]
    if guided:
        cols = list(dict.fromkeys(["trial", "id_guided_from", "state", main_metric,
                                   "params", "macs"]))
        text += ["## ID-guided trials", "",
                 "Candidates proposed by the measured stage ID of a finished trial "
                 "(`id_guided_from`; the proposal is that trial's `id_widths.json`).", "",
                 _markdown_table(guided, cols), ""]
    problems = [r for r in rows if r.get("fail_reason") or r.get("rejected")]
    if problems:
        text += ["## Failed and rejected trials", "",
                 _markdown_table(problems, ["trial", "state", "rejected", "fail_reason"]), ""]
    text += ["Files: `trials.csv` (every trial), `pareto.csv`, `summary.json`.", ""]
    atomic_write_json(out / "summary.json", {
        "title": title, "objectives": objectives, "states": states, "elapsed_s": elapsed_s,
        "best": ranked[:top_k], "pareto": front, "units": UNITS})
    return atomic_write_text(out / "report.md", "\n".join(text))


# -- plots -----------------------------------------------------------------------------
def _plot_history(rows, metric: str, direction: str, path: Path) -> Path | None:
    pts = [(r["trial"], float(r[metric])) for r in rows
           if r.get("state") in ("COMPLETE", "TERMINATED") and r.get(metric) is not None]
    if not pts:
        return None
    pts.sort()
    x, y = zip(*pts, strict=True)
    best = np.maximum.accumulate(y) if direction == "maximize" else np.minimum.accumulate(y)
    fig, ax = new_figure("Optimisation history", "trial", f"{metric} ({UNITS.get(metric, '')})")
    ax.plot(x, y, "o", label="trial")
    ax.step(x, best, where="post", label="best so far")
    ax.legend()
    return save_figure(fig, path)


def _plot_pareto(rows, front, objectives, path: Path) -> Path | None:
    (m0, _), (m1, _) = objectives[0], objectives[1]
    pts = [(float(r[m1]), float(r[m0])) for r in rows if r.get(m0) is not None and r.get(m1) is not None]
    if not pts:
        return None
    fig, ax = new_figure(f"Pareto front: {m0} vs {m1}", f"{m1} ({UNITS.get(m1, '')})",
                         f"{m0} ({UNITS.get(m0, '')})")
    ax.scatter(*zip(*pts, strict=True), alpha=0.5, label="trials")
    fx = sorted((float(r[m1]), float(r[m0])) for r in front)
    if fx:
        ax.plot(*zip(*fx, strict=True), "r-o", label="Pareto front")
    ax.legend()
    return save_figure(fig, path)


def _plot_proxies(rows, metric: str, path: Path) -> Path | None:
    from scipy.stats import kendalltau

    proxies = sorted({k for r in rows for k in r if k.startswith("proxy/")})
    if not proxies or len(rows) < 2:
        return None
    fig, axes_ = new_figure("", "", "", size=(4 * len(proxies), 3.6))
    fig.clf()
    for i, p in enumerate(proxies, start=1):
        ax = fig.add_subplot(1, len(proxies), i)
        pts = [(float(r[p]), float(r[metric])) for r in rows
               if r.get(p) is not None and r.get(metric) is not None]
        if not pts:
            continue
        x, y = zip(*pts, strict=True)
        tau = kendalltau(x, y).statistic if len(pts) > 2 else float("nan")
        ax.scatter(x, y)
        ax.set_title(f"{p} vs {metric} (Kendall tau {tau:.2f})", fontsize=9)
        ax.set_xlabel(p)
        ax.set_ylabel(metric)
        ax.grid(alpha=0.3)
    return save_figure(fig, path)


def _plot_importances(rows, complete, metric: str, study, path: Path) -> Path | None:
    importances: dict[str, float] = {}
    how = ""
    if study is not None and len(study.directions) == 1:
        try:
            import optuna

            importances = optuna.importance.get_param_importances(study)
            how = "fANOVA (Optuna)"
        except Exception:  # too few trials, or a single distinct value per parameter
            importances = {}
    if not importances:
        importances, how = _forest_importances(complete, metric)
    if not importances:
        return None
    names = list(importances)[::-1]
    fig, ax = new_figure(f"Parameter importances for {metric} ({how})", "importance (fraction)",
                         "parameter", size=(6, 0.4 * len(names) + 1.5))
    ax.barh(names, [importances[n] for n in names])
    return save_figure(fig, path)


def _forest_importances(rows, metric: str) -> tuple[dict[str, float], str]:
    params = sorted({k for r in rows for k in r if k.startswith("param/")})
    rows = [r for r in rows if r.get(metric) is not None]
    if len(rows) < 4 or not params:
        return {}, ""
    from sklearn.ensemble import RandomForestRegressor

    cols = []
    for p in params:
        vals = [r.get(p) for r in rows]
        if all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in vals):
            cols.append([float(v) for v in vals])
        else:  # categorical / absent: the index of the value
            levels = sorted({json.dumps(v) for v in vals})
            cols.append([float(levels.index(json.dumps(v))) for v in vals])
    x = np.array(cols).T
    y = np.array([float(r[metric]) for r in rows])
    forest = RandomForestRegressor(n_estimators=200, random_state=0).fit(x, y)
    imp = dict(zip([p.removeprefix("param/") for p in params], forest.feature_importances_,
                   strict=True))
    return dict(sorted(imp.items(), key=lambda kv: -kv[1])), "random-forest impurity"


def _plot_id_layers(best_rows, path: Path) -> Path | None:
    series = []
    for r in best_rows:
        spec = Path(str(r.get("trial_dir", ""))) / "spectrum.json"
        if spec.is_file():
            layers = json.loads(spec.read_text())["layers"]
            series.append((f"trial {r['trial']}",
                           {k: v["measures"]["id_dof"] for k, v in layers.items()}))
    if not series:
        return None
    layers = list(series[0][1])
    width = 0.8 / len(series)
    fig, ax = new_figure("Intrinsic dimensionality per layer of the best candidates (at init)",
                         "layer", "ID (degrees of freedom)", size=(max(6, 0.6 * len(layers)), 4))
    for i, (label, ids) in enumerate(series):
        ax.bar(np.arange(len(layers)) + i * width, [ids.get(k, 0) for k in layers], width,
               label=label)
    ax.set_xticks(np.arange(len(layers)) + 0.4 - width / 2, layers, rotation=45, ha="right")
    ax.legend()
    return save_figure(fig, path)
