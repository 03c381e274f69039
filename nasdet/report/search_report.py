"""The report of a search: headline, trials table, Pareto front, best configs, plots.

Works from backend-neutral rows (one dict per trial, as the Optuna and Ray drivers
produce them), so both backends get the same report. The report opens with the
headline, the three questions a search answers, from the fully trained trials (state
COMPLETE: every stage ran; pruned trials stopped after a shorter training and are not
compared with them):

* (a) the best searched candidate at no more MACs than the base (the trial the search
  config enqueued as ``base``, column ``enqueued_as``) against the base;
* (b) fine-tuning vs scratch: the best trial of each transfer strategy (``param/transfer``)
  or, when the trained trials do not cover both, the base architecture trained both ways
  (enqueued trials named ``base...``);
* (c) the ID per layer of the trained models of (a)'s candidate and of the base
  (``<trial_dir>/train/eigenspectrum_history.json``, last entry; the ID at
  initialisation from ``spectrum.json`` when a trial has no trained measurement).
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
from nasdet.report.proxy_agreement import proxy_agreement, proxy_agreement_markdown
from nasdet.utils.io import atomic_write_json, atomic_write_text

UNITS = {
    "ap": "COCO bbox mAP@[.5:.95] (fraction)",
    "ap50": "COCO bbox mAP@0.5 (fraction)",
    "params": "trainable parameters (count, shared counted once)",
    "macs": "multiply-accumulates per image at the space's input size (count)",
}


#: Row column naming a trial run from the search config's ``enqueue`` list.
ENQUEUED = "enqueued_as"
#: The ``enqueue`` name of the reference candidate of the headline.
BASE_NAME = "base"


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
    rungs: tuple[str, ...] = (),
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
        rungs: The proxies the search prunes on (marked in the proxy section).

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

    head = headline(rows, objectives)
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
    id_plot = _plot_id_base_best(head["id"], out / "id_base_vs_best.png")
    text += ["", *headline_markdown(head, main_metric, id_plot)]
    text += ["", "## Best candidates", "",
             _markdown_table(ranked[: max(top_k, 5)], head_cols) if ranked else "_no finished trial_",
             "", "Units: " + "; ".join(f"`{k}`: {v}" for k, v in UNITS.items()) + "; "
             "`proxy/*`: each proxy's score at initialisation.", ""]
    if exported:
        text += ["Exported standalone configs (retrain with `tools/train.py`): "
                 + ", ".join(f"`best/{e}`" for e in exported), ""]
    agreement = proxy_agreement(complete, main_metric, main_dir, rungs=tuple(rungs))
    text += proxy_agreement_markdown(agreement, main_metric)
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
        "headline": _headline_summary(head), "best": ranked[:top_k], "pareto": front,
        "proxy_agreement": agreement, "units": UNITS})
    return atomic_write_text(out / "report.md", "\n".join(text))


# -- headline --------------------------------------------------------------------------
def _better(a: float, b: float, direction: str) -> bool:
    return a > b if direction == "maximize" else a < b


def _best(rows: list[dict[str, Any]], metric: str, direction: str) -> dict[str, Any] | None:
    ranked = _best_first(rows, metric, direction)
    return ranked[0] if ranked else None


def trained_rows(rows: list[dict[str, Any]], metric: str) -> list[dict[str, Any]]:
    """Fully trained trials (every stage ran) that have ``metric``."""
    return [r for r in _complete(rows) if r.get(metric) is not None]


def _is_base(row: dict[str, Any]) -> bool:
    return row.get(ENQUEUED) == BASE_NAME


def _tag(row: dict[str, Any]) -> str:
    label = f" ({row[ENQUEUED]})" if row.get(ENQUEUED) else ""
    return f"trial {row['trial']}{label}"


def compare_base(rows: list[dict[str, Any]], metric: str, direction: str) -> dict[str, Any]:
    """(a): the best searched candidate at no more MACs than the base, against the base.

    The base a candidate is held against is the base architecture trained the way the
    candidate was: the enqueued ``base...`` trial with the same ``param/transfer`` (a
    fine-tuned candidate against the fine-tuned base, so the comparison credits the
    search, not the transfer strategy), else the trial named ``base``.

    Args:
        rows: Every trial's row.
        metric: The metric compared (the search's first objective).
        direction: ``maximize`` or ``minimize``.

    Returns:
        ``base`` (the reference row or None), ``best`` (the best searched trial with
        ``macs`` at most the base's; without a base, the best searched trial),
        ``best_any`` (the best searched trial at any MACs), ``better`` (``best``
        strictly better than its reference; None when either is missing) and ``note``
        (one sentence saying what was found, or what is missing). Searched trials are
        those not enqueued by name.
    """
    trained = trained_rows(rows, metric)
    searched = [r for r in trained if not r.get(ENQUEUED)]
    best_any = _best(searched, metric, direction)
    base = next((r for r in trained if _is_base(r)), None)
    out: dict[str, Any] = {"base": base, "best": None, "best_any": best_any, "better": None}
    if base is None:
        other = next((r for r in rows if _is_base(r)), None)
        out["best"] = best_any
        out["note"] = (f"No base to compare with: the base (trial {other['trial']}) did not finish "
                       f"({other.get('state')})." if other is not None else
                       "No base to compare with: no trial is named 'base' (list it under "
                       "`enqueue` in the search config).")
        return out
    if base.get("macs") is None:
        out["note"] = f"The base (trial {base['trial']}) has no MAC count to compare at."
        return out
    eligible = [r for r in searched if r.get("macs") is not None
                and float(r["macs"]) <= float(base["macs"])]
    best = _best(eligible, metric, direction)
    out["best"] = best
    if best is None:
        out["note"] = (f"No fully trained searched candidate has at most the base's MACs "
                       f"({len(searched)} searched trials trained).")
        return out
    same = next((r for r in trained if str(r.get(ENQUEUED) or "").startswith(BASE_NAME)
                 and r.get("param/transfer") is not None
                 and r.get("param/transfer") == best.get("param/transfer")), None)
    if same is not None:
        out["base"] = base = same
    out["better"] = _better(float(best[metric]), float(base[metric]), direction)
    ratio = float(best["macs"]) / float(base["macs"]) if float(base["macs"]) else float("nan")
    verdict = "beats" if out["better"] else "does not beat"
    how = f" trained the same way ({best['param/transfer']})" if same is not None else ""
    out["note"] = (f"The best searched candidate at no more MACs, {_tag(best)}, {verdict} the "
                   f"base{how} (trial {base['trial']}): {metric} {float(best[metric]):.4g} vs "
                   f"{float(base[metric]):.4g}, at {ratio:.2f}x the base's MACs.")
    return out


def compare_transfer(rows: list[dict[str, Any]], metric: str, direction: str,
                     strategies: tuple[str, str] = ("finetune", "scratch")) -> dict[str, Any]:
    """(b): fine-tuning vs scratch among the fully trained trials.

    Args:
        rows: Every trial's row.
        metric: The metric compared.
        direction: ``maximize`` or ``minimize``.
        strategies: The two transfer strategies compared.

    Returns:
        ``source`` (``"searched trials"``: the best of each strategy among the fully
        trained searched trials, those not enqueued by name; ``"base both ways"``:
        they do not cover both and the base architecture, the enqueued trials named
        ``base...``, was trained both ways; None: neither covers both), ``best``
        (strategy -> row, every strategy present in that source), ``base_both``
        (strategy -> the base architecture's row, when trained with two or more
        strategies), ``missing`` (strategies of ``strategies`` without a fully trained
        searched trial) and ``note``.
    """
    trained = [r for r in trained_rows(rows, metric) if r.get("param/transfer") is not None]
    searched = [r for r in trained if not r.get(ENQUEUED)]

    def by_strategy(rs: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
        out: dict[str, dict[str, Any]] = {}
        for name in sorted({str(r["param/transfer"]) for r in rs}):
            out[name] = _best([r for r in rs if r["param/transfer"] == name], metric, direction)
        return out

    everything = by_strategy(searched)
    base_rows = [r for r in trained if str(r.get(ENQUEUED) or "").startswith(BASE_NAME)]
    base_both = by_strategy(base_rows)
    base_both = base_both if len(base_both) >= 2 else {}
    a, b = strategies
    res: dict[str, Any] = {"source": None, "best": everything, "base_both": base_both,
                           "missing": [s for s in strategies if s not in everything]}
    if a in everything and b in everything:
        res["source"] = "searched trials"
        what = f"best of each among the {len(searched)} fully trained searched trials"
    elif a in base_both and b in base_both:
        res["source"], res["best"] = "base both ways", base_both
        what = (f"the base trained both ways: the fully trained searched trials have no "
                f"{' and no '.join(res['missing'])} one")
    else:
        missing = " and no ".join(res["missing"])
        res["note"] = (f"No comparison: no fully trained searched {missing} trial, and the "
                       f"base was not trained both ways (enqueue it with transfer {a} and {b}).")
        return res
    ra, rb = res["best"][a], res["best"][b]
    diff = float(ra[metric]) - float(rb[metric])
    res["note"] = (f"{a} vs {b} ({what}): {metric} {float(ra[metric]):.4g} ({_tag(ra)}) vs "
                   f"{float(rb[metric]):.4g} ({_tag(rb)}), difference {diff:+.4g}.")
    return res


def read_layer_ids(row: dict[str, Any] | None) -> tuple[dict[str, dict[str, float]], str] | None:
    """The ID per layer of a trial's model: ``({layer: {"id", "channels"}}, when)``.

    The trained model's (last entry of ``<trial_dir>/train/eigenspectrum_history.json``,
    ``when`` = ``"trained, epoch E"``), else the model at initialisation
    (``<trial_dir>/spectrum.json``, ``when`` = ``"at initialisation"``); None without
    either.
    """
    if row is None or not row.get("trial_dir"):
        return None
    trial_dir = Path(str(row["trial_dir"]))
    try:
        entries = json.loads((trial_dir / "train" / "eigenspectrum_history.json")
                             .read_text())["entries"]
        last = entries[-1]
        return ({k: {"id": float(v["id"]), "channels": float(v["channels"])}
                 for k, v in last["layers"].items()}, f"trained, epoch {last['epoch']}")
    except (OSError, ValueError, KeyError, IndexError, TypeError):
        pass
    try:
        layers = json.loads((trial_dir / "spectrum.json").read_text())["layers"]
        return ({k: {"id": float(v["measures"]["id_dof"]), "channels": float(v["channels"])}
                 for k, v in layers.items()}, "at initialisation")
    except (OSError, ValueError, KeyError, TypeError):
        return None


def headline(rows: list[dict[str, Any]], objectives: list[tuple[str, str]]) -> dict[str, Any]:
    """The three answers: ``base`` (:func:`compare_base`), ``transfer``
    (:func:`compare_transfer`) and ``id`` (per layer, of (a)'s candidate and the base).

    Args:
        rows: Every trial's row.
        objectives: The search's objectives; the first one is compared.
    """
    metric, direction = objectives[0]
    base = compare_base(rows, metric, direction)
    ids = {}
    for label, row in (("base", base["base"]), ("best", base["best"])):
        found = read_layer_ids(row)
        if found is not None:
            ids[label] = {"trial": row["trial"], "layers": found[0], "when": found[1]}
    return {"metric": metric, "direction": direction, "trained": len(trained_rows(rows, metric)),
            "base": base, "transfer": compare_transfer(rows, metric, direction), "id": ids}


def _row_cells(r: dict[str, Any], base: dict[str, Any] | None) -> list[str]:
    ratio = ""
    if base is not None and r.get("macs") is not None and base.get("macs"):
        ratio = f"{float(r['macs']) / float(base['macs']):.2f}"
    return [_tag(r), _fmt(r.get("param/transfer")), _fmt(r.get("ap")), _fmt(r.get("ap50")),
            _fmt(r.get("params")), _fmt(r.get("macs")), ratio]


def _table(header: list[str], body: list[list[str]]) -> list[str]:
    return ["| " + " | ".join(header) + " |", "|" + "---|" * len(header),
            *["| " + " | ".join(cells) + " |" for cells in body]]


def headline_markdown(head: dict[str, Any], metric: str, id_plot: Path | None) -> list[str]:
    """The headline section of ``report.md`` (lines)."""
    cols = ["", "trial", "transfer", "AP", "AP50", "params", "MACs", "MACs / base"]
    a, t, ids = head["base"], head["transfer"], head["id"]
    lines = ["## Headline", "",
             f"From the {head['trained']} fully trained trials (every stage ran), compared "
             f"by `{metric}`. AP, AP50: COCO bbox mAP@[.5:.95] and mAP@0.5 on the "
             "validation split (fractions); params: trainable parameters (count); MACs: "
             "multiply-accumulates per image (count).", "",
             "**(a) Searched vs base at no more MACs.** " + a["note"], ""]
    body = []
    if a["base"] is not None:
        body.append(["base", *_row_cells(a["base"], a["base"])])
    if a["best"] is not None:
        what = "best searched, MACs <= base" if a["base"] is not None else "best searched"
        body.append([what, *_row_cells(a["best"], a["base"])])
    if a["best_any"] is not None and a["best_any"] is not a["best"]:
        body.append(["best searched, any MACs", *_row_cells(a["best_any"], a["base"])])
    if body:
        lines += [*_table(cols, body), ""]
    lines += ["**(b) Fine-tuning vs scratch.** " + t["note"], ""]
    if t["source"] is not None:
        body = [[name, *_row_cells(r, a["base"])] for name, r in t["best"].items()]
        lines += [*_table(["best of strategy", *cols[1:]], body), ""]
    if t["base_both"] and t["source"] != "base both ways":
        parts = [f"{name} {_fmt(r.get(metric))} ({_tag(r)})" for name, r in t["base_both"].items()]
        lines += [f"The base architecture trained each way ({metric}): " + ", ".join(parts)
                  + ".", ""]
    lines += ["**(c) ID per layer, best vs base.** "]
    if not ids:
        lines[-1] += "No ID measurement of the base or of (a)'s candidate."
        return [*lines, ""]
    why = {"base": "the base", "best": "(a)'s searched candidate" if a["best"] is not None
           else "a searched candidate (none in (a))"}
    missing = [why[k] for k in ("base", "best") if k not in ids]
    lines[-1] += ("Suzuki's degrees of freedom N(lambda) of each layer's channel covariance "
                  "(dimensions), on validation images"
                  + (f"; no measurement of {missing[0]}." if missing else "."))
    lines.append("")
    if id_plot is not None:
        lines += [f"![id_base_vs_best]({id_plot.name})", ""]
    names = list(dict.fromkeys(k for v in ids.values() for k in v["layers"]))
    header = ["layer"]
    for label, v in ids.items():
        header += [f"{label} (trial {v['trial']}, {v['when']}) channels", f"{label} ID"]
    body = []
    for name in names:
        cells = [name]
        for v in ids.values():
            layer = v["layers"].get(name)
            cells += [_fmt(layer["channels"]) if layer else "", _fmt(layer["id"]) if layer else ""]
        body.append(cells)
    return [*lines, *_table(header, body), ""]


def _headline_summary(head: dict[str, Any]) -> dict[str, Any]:
    def trial(r: dict[str, Any] | None) -> Any:
        return None if r is None else r.get("trial")

    a, t = head["base"], head["transfer"]
    return {"metric": head["metric"], "trained": head["trained"],
            "base_trial": trial(a["base"]), "best_trial": trial(a["best"]),
            "best_any_trial": trial(a["best_any"]), "better": a["better"], "base_note": a["note"],
            "transfer_source": t["source"], "transfer_best": {k: trial(r) for k, r in t["best"].items()},
            "transfer_missing": t["missing"], "transfer_note": t["note"], "id": head["id"]}


def _plot_id_base_best(ids: dict[str, Any], path: Path) -> Path | None:
    if not ids:
        return None
    names = list(dict.fromkeys(k for v in ids.values() for k in v["layers"]))
    width = 0.8 / len(ids)
    fig, ax = new_figure("ID per layer: best searched vs base", "layer",
                         "ID, N(lambda) (dimensions)", size=(max(6, 0.7 * len(names)), 4))
    x = np.arange(len(names))
    for i, (label, v) in enumerate(ids.items()):
        ax.bar(x + i * width, [v["layers"].get(n, {}).get("id", 0.0) for n in names], width,
               label=f"{label} (trial {v['trial']}, {v['when']})")
    ax.set_xticks(x + 0.4 - width / 2, names, rotation=45, ha="right")
    ax.legend()
    return save_figure(fig, path)


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
