"""The pre-training study's report: AP of I, S and D, ID per layer, spectra, ID dynamics.

Input is the summary :func:`nasdet.study.pretraining.run_pretraining_study` writes
(``study.json``). Output (in one directory): ``report.md``, ``ap.png``,
``eigenspectra.png``, ``id_per_layer.png``, ``id_per_width.png`` and
``id_dynamics_<model>.png``. The text under "What the numbers say" is computed from
the numbers (no claim is hard-coded), so it stays true whatever a run shows.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from nasdet.report.plotting import new_figure, save_figure
from nasdet.report.spectrum_report import plot_eigenspectra, plot_id_bars, plot_id_dynamics
from nasdet.utils.io import atomic_write_text

__all__ = ["headline_table", "model_rows", "write_study_report"]

_NAMES = {
    "I": "I (fine-tuned from the pre-trained backbone)",
    "S": "S (from scratch)",
    "D": "D (from scratch, widths derived from S's stage ID)",
}


def _stats(values: Sequence[float]) -> tuple[float, float]:
    arr = np.asarray(values, dtype=float)
    return float(arr.mean()), float(arr.std(ddof=1)) if len(arr) > 1 else 0.0


def _layer_ids(summary: Mapping[str, Any], label: str) -> dict[str, float]:
    for run in summary["spectrum"]["checkpoints"]:
        if run["label"] == label:
            return {n: float(v["measures"]["id_dof"]) for n, v in run["layers"].items()}
    return {}


def _final_ids(summary: Mapping[str, Any], model: str) -> dict[str, float]:
    """A model's trained ID: its analysed spectrum, else its history's last entry."""
    ids = _layer_ids(summary, model)
    hist = (summary.get("histories") or {}).get(model)
    if not ids and hist and hist.get("entries"):
        ids = {n: float(v["id"]) for n, v in hist["entries"][-1]["layers"].items()}
    return ids


def _backbone(ids: Mapping[str, float]) -> dict[str, float]:
    return {n: v for n, v in ids.items() if n.startswith("backbone.")}


def model_rows(summary: Mapping[str, Any]) -> list[dict[str, Any]]:
    """Per model: AP statistics over seeds, params, MACs, epochs, mean backbone ID."""
    rows = []
    for model in ("I", "S", "D"):
        runs = [r for r in summary["runs"] if r["model"] == model]
        if not runs:
            continue
        ap, ap_sd = _stats([r["ap"] for r in runs])
        ap50, ap50_sd = _stats([r["ap50"] for r in runs])
        cost = summary["complexity"].get(model, {})
        ids = _backbone(_final_ids(summary, model))
        rows.append({
            "model": model, "name": _NAMES[model], "seeds": len(runs),
            "ap": ap, "ap_sd": ap_sd, "ap50": ap50, "ap50_sd": ap50_sd,
            "params": cost.get("params"), "macs": cost.get("macs"),
            "epochs": runs[0]["epochs"],
            "train_seconds": float(np.mean([r["train_seconds"] for r in runs])),
            "backbone_id": float(np.mean(list(ids.values()))) if ids else None,
        })
    return rows


def _pm(mean: float, sd: float, seeds: int) -> str:
    return f"{mean:.3f} ± {sd:.3f}" if seeds > 1 else f"{mean:.3f}"


def headline_table(summary: Mapping[str, Any]) -> str:
    """The Markdown table the README shows."""
    lines = ["| model | AP | AP50 | params (M) | MACs (G) | epochs | mean backbone-stage ID |",
             "|---|---:|---:|---:|---:|---:|---:|"]
    for r in model_rows(summary):
        bid = "" if r["backbone_id"] is None else f"{r['backbone_id']:.1f}"
        lines.append(
            f"| {r['name']} | {_pm(r['ap'], r['ap_sd'], r['seeds'])} | "
            f"{_pm(r['ap50'], r['ap50_sd'], r['seeds'])} | {r['params'] / 1e6:.3f} | "
            f"{r['macs'] / 1e9:.3f} | {r['epochs']} | {bid} |")
    return "\n".join(lines)


def _plot_ap(summary: Mapping[str, Any], path: Path) -> Path:
    rows = model_rows(summary)
    fig, ax = new_figure("COCO box AP on the validation split (bars: mean over seeds)",
                         "model", "AP (fraction)", size=(6.5, 4.0))
    x = np.arange(len(rows))
    for offset, key, label in ((-0.18, "ap", "AP@[.5:.95]"), (0.18, "ap50", "AP@.5")):
        ax.bar(x + offset, [r[key] for r in rows], width=0.34, label=label, alpha=0.8)
        for i, r in enumerate(rows):
            vals = [run[key] for run in summary["runs"] if run["model"] == r["model"]]
            ax.plot([x[i] + offset] * len(vals), vals, "k.", ms=5)
    ax.set_xticks(x, [r["model"] for r in rows])
    ax.legend(fontsize=8)
    return save_figure(fig, path)


def _observations(summary: Mapping[str, Any]) -> list[str]:
    rows = {r["model"]: r for r in model_rows(summary)}
    out = []
    if "I" in rows and "S" in rows:
        i, s = rows["I"], rows["S"]
        noise = max(i["ap_sd"], s["ap_sd"])
        diff = i["ap"] - s["ap"]
        verdict = ("within the seed-to-seed spread" if i["seeds"] > 1 and abs(diff) <= 2 * noise
                   else "I higher" if diff > 0 else "S higher")
        out.append(f"AP: I {i['ap']:.3f} vs S {s['ap']:.3f} (I − S = {diff:+.3f}; "
                   + (f"largest seed std {noise:.3f}; " if i["seeds"] > 1 else "one seed; ")
                   + f"{verdict}), with S trained {s['epochs']} epochs and I {i['epochs']}.")
    ids = {lab: _layer_ids(summary, lab) for lab in ("I pre-trained", "I", "S init", "S")}
    common = [n for n in ids["I"] if n in ids["S"]]
    if common:
        lower = [n for n in common if ids["I"][n] < ids["S"][n]]
        ratio = float(np.mean([ids["I"][n] / ids["S"][n] for n in common if ids["S"][n] > 0]))
        out.append(f"ID: trained I has a lower ID than trained S in {len(lower)} of "
                   f"{len(common)} probed layers (mean ratio I/S {ratio:.2f}).")
        bb = [n for n in common if n.startswith("backbone.")]
        if bb and ids["I pre-trained"]:
            moved = np.mean([ids["I"][n] / ids["I pre-trained"][n] for n in bb
                             if ids["I pre-trained"].get(n, 0) > 0])
            out.append(f"Fine-tuning changed the pre-trained backbone stages' ID by a factor "
                       f"{moved:.2f} on average (trained I / pre-trained backbone).")
        if bb and ids["S init"]:
            grown = np.mean([ids["S"][n] / ids["S init"][n] for n in bb
                             if ids["S init"].get(n, 0) > 0])
            out.append(f"S's backbone stages end with {grown:.2f}x the ID they had at "
                       "initialisation (mean over stages).")
    for model, hist in summary.get("histories", {}).items():
        dyn = hist.get("dynamics", {})
        drop = [n for n, d in dyn.items() if d.get("dropping")]
        reb = [n for n, d in dyn.items() if d.get("rebounding")]
        out.append(f"Dynamics of {model}: {len(drop)} of {len(dyn)} layers dropping"
                   + (f" ({', '.join(drop)})" if drop else "")
                   + f", {len(reb)} rebounding" + (f" ({', '.join(reb)})" if reb else "") + ".")
    d = summary.get("derived")
    if d and "D" in rows and "S" in rows:
        s, dd = rows["S"], rows["D"]
        out.append(
            f"Derived widths {d['original']} → {d['widths']} ({d['metric']} budget "
            f"{d['budget']:g}x): params {dd['params'] / s['params']:.2f}x, MACs "
            f"{dd['macs'] / s['macs']:.2f}x of S; AP {dd['ap']:.3f} vs S {s['ap']:.3f} "
            f"({dd['ap'] - s['ap']:+.3f}).")
    return out


def write_study_report(summary: Mapping[str, Any], out_dir: str | Path) -> dict[str, Path]:
    """``report.md`` and its figures in ``out_dir``.

    Args:
        summary: The study summary (``study.json``).
        out_dir: Output directory (created).

    Returns:
        Paths by kind.
    """
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    paths: dict[str, Path] = {"ap": _plot_ap(summary, out / "ap.png")}
    spectrum = summary["spectrum"]
    paths["eigenspectra"] = plot_eigenspectra(spectrum, out / "eigenspectra.png")
    paths["id"] = plot_id_bars(spectrum, out / "id_per_layer.png")
    paths["id_per_width"] = plot_id_bars(spectrum, out / "id_per_width.png", per_width=True)
    for model, hist in summary.get("histories", {}).items():
        paths[f"dynamics_{model}"] = plot_id_dynamics(hist, out / f"id_dynamics_{model}.png")

    opts = summary["options"]
    pre = summary.get("pretrain") or {}
    lines = [
        "# Pre-training study: I vs S, eigenspectra, widths from ID", "",
        f"I: `{opts['i_config']}`, S: `{opts['s_config']}`, seeds {opts['seeds']}, "
        f"cfg-options `{opts.get('cfg_options') or {}}`, backend {opts['backend']}; "
        f"{summary['seconds'] / 60:.1f} min for this invocation.",
    ]
    if pre.get("val_top1") is not None:
        lines.append(
            f"I's backbone: pre-trained {pre['epochs']} epochs on `{pre['data']}` "
            f"({pre['classes']} classes), val top-1 {pre['val_top1']:.3f}, "
            f"{pre['train_seconds']:.0f} s.")
    elif pre.get("source"):
        lines.append(f"I's backbone: `{pre['source']}`.")
    lines += ["", "## AP, size and ID", "", headline_table(summary), "",
              f"AP: COCO box AP (pycocotools) on the validation split, fractions; mean ± "
              f"sample std over seeds. MACs per {summary['input_size'][0]}x"
              f"{summary['input_size'][1]} image. ID: Suzuki's degrees of freedom "
              f"`N(λ) = Σ μ/(μ+λ)`, {spectrum['meta']['lambda_rule']}, on "
              f"{spectrum['meta']['num_images']} validation images.", "",
              "![AP](ap.png)", "", "## What the numbers say", ""]
    lines += [f"- {o}" for o in _observations(summary)]
    lines += ["", "## ID per layer", "", _id_table(summary), "",
              "![ID per layer](id_per_layer.png)", "", "![ID per width](id_per_width.png)", "",
              "## Eigenspectra per layer", "", "![eigenspectra](eigenspectra.png)", "",
              "## ID during training", "",
              "Measured after every epoch on the same validation images; a layer is "
              "*dropping* when its ID fell more than 10% below its start, *rebounding* when "
              "it then recovered more than 5% of the start.", ""]
    for model in summary.get("histories", {}):
        lines += [f"![ID dynamics {model}](id_dynamics_{model}.png)", ""]
    d = summary.get("derived")
    if d:
        lines += ["## Widths derived from S's stage ID", "",
                  "| stage | ID in S | S width | derived width |", "|---|---:|---:|---:|"]
        for name, v, old, new in zip(d["layers"], d["ids"], d["original"], d["widths"],
                                     strict=True):
            lines.append(f"| {name} | {v:.1f} | {old} | {new} |")
        lines += ["", f"Scale {d['scale']:.3f} channels per ID dimension; {d['metric']} of "
                  f"the derived detector {d['ratio']:.3f}x S's (budget {d['budget']:g}x). "
                  f"Config: `derived_config.py` in the study's work dir.", ""]
    lines += ["## Runs", "", "| model | seed | epochs | AP | AP50 | train s |",
              "|---|---:|---:|---:|---:|---:|"]
    for r in summary["runs"]:
        lines.append(f"| {r['model']} | {r['seed']} | {r['epochs']} | {r['ap']:.3f} | "
                     f"{r['ap50']:.3f} | {r['train_seconds']:.0f} |")
    paths["report"] = atomic_write_text(out / "report.md", "\n".join(lines) + "\n")
    return paths


def _id_table(summary: Mapping[str, Any]) -> str:
    labels = [r["label"] for r in summary["spectrum"]["checkpoints"]]
    per = {lab: _layer_ids(summary, lab) for lab in labels}
    names = list(per[labels[0]])
    channels = {n: v["channels"] for n, v in summary["spectrum"]["checkpoints"][0]["layers"].items()}
    lines = ["| layer | channels | " + " | ".join(labels) + " |",
             "|---|---:|" + "---:|" * len(labels)]
    for n in names:
        lines.append(f"| {n} | {channels.get(n, '')} | "
                     + " | ".join(f"{per[lab].get(n, float('nan')):.1f}" for lab in labels) + " |")
    return "\n".join(lines)
