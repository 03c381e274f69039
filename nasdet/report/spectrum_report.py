"""Tables and plots of layer eigenspectra: checkpoints side by side, and ID over training.

Inputs are plain dicts, so reports can be redrawn from stored JSON:

* a spectrum analysis (:func:`nasdet.spectrum.analysis.analyze_checkpoints`, or the JSON
  that :func:`write_spectrum_json` wrote): ``{"meta", "checkpoints": [{"label",
  "layers": {name: {"channels", "count", "eigenvalues", "measures"}}}]}``;
* an ID history (:class:`nasdet.hooks.EigenspectrumHook`): ``{"entries": [{"iteration",
  "layers": {name: {"id", ...}}}], "dynamics": {name: {"dropping", ...}}}``.

Figures:

* :func:`plot_eigenspectra`: normalised eigenvalues ``mu_j / mu_1`` against the index
  ``j`` on a log scale, one subplot per layer, one line per checkpoint;
* :func:`plot_id_bars`: ID per layer as grouped bars (one group per layer, one bar per
  checkpoint), absolute or divided by the layer's width;
* :func:`plot_id_dynamics`: ID per layer against the training iteration, dropping and
  rebounding layers marked.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from nasdet.report.plotting import new_figure, plt, save_figure
from nasdet.utils.io import atomic_write_json

__all__ = [
    "TABLE_COLUMNS",
    "eigenspectra_figure",
    "format_spectrum_table",
    "id_bars_figure",
    "id_dynamics_figure",
    "layer_names",
    "plot_eigenspectra",
    "plot_id_bars",
    "plot_id_dynamics",
    "write_spectrum_json",
    "write_spectrum_report",
]

#: Table columns: (header, measure key, format). ``channels`` and ``count`` are layer
#: fields, the rest keys of the layer's ``measures``.
TABLE_COLUMNS: tuple[tuple[str, str, str], ...] = (
    ("C", "channels", "d"),
    ("samples", "count", "d"),
    ("ID N(lam)", "id_dof", ".2f"),
    ("ID/C", "id_per_width", ".3f"),
    ("PR", "participation_ratio", ".2f"),
    ("eff.rank", "effective_rank", ".2f"),
    ("n95", "n_components_95", ".0f"),
)

_TABLE_LEGEND = (
    "C: channels (layer width); samples: images x spatial positions; ID N(lam): Suzuki's "
    "degrees of freedom, dimensions; ID/C: ID as a fraction of the width; PR: "
    "participation ratio, dimensions; eff.rank: effective rank, dimensions; n95: "
    "principal components explaining 95% of the variance"
)


#: Lowest normalised eigenvalue shown by :func:`plot_eigenspectra`. Directions without
#: variance in exact arithmetic (a rank-deficient layer, fewer samples than channels)
#: come out as rounding noise anywhere below ~1e-7 of ``mu_1`` (down to 1e-30); the
#: axis stops here so that the informative part of the curves keeps its room.
_LOG_FLOOR = 1e-12


def layer_names(result: Mapping[str, Any]) -> list[str]:
    """Probe entries of an analysis, in order of first appearance over checkpoints."""
    names: list[str] = []
    for run in result["checkpoints"]:
        names += [name for name in run["layers"] if name not in names]
    return names


def _value(layer: Mapping[str, Any], key: str) -> float:
    if key in ("channels", "count"):
        return layer[key]
    measures = layer["measures"]
    if key == "id_per_width" and key not in measures:
        return measures["id_dof"] / layer["channels"]
    return measures[key]


def write_spectrum_json(result: Mapping[str, Any], path: str | Path) -> Path:
    """Write an analysis as JSON, atomically.

    Args:
        result: What :func:`nasdet.spectrum.analysis.analyze_checkpoints` returned (units
            and the lambda rule are in its ``meta``).
        path: Destination file.

    Returns:
        The path written.
    """
    return atomic_write_json(path, dict(result))


def format_spectrum_table(result: Mapping[str, Any]) -> str:
    """A plain-text table, one row per layer and checkpoint.

    Args:
        result: An analysis (see the module docstring).

    Returns:
        The table: a header line stating the images and the lambda rule, the column
        headers, the rows (layer name on its first row only), and a line of units.
    """
    meta = result.get("meta", {})
    labels = [run["label"] for run in result["checkpoints"]]
    names = layer_names(result)
    name_w = max([len("layer"), *(len(n) for n in names)])
    label_w = max([len("checkpoint"), *(len(lab) for lab in labels)])
    col_w = [max(len(head), 9) for head, _, _ in TABLE_COLUMNS]
    lines = []
    if meta:
        lines.append(
            f"Eigenspectra of {meta.get('config', '?')}: {meta.get('num_images', '?')} "
            f"{meta.get('split', '?')} images, {meta.get('forward', '')}; "
            f"{meta.get('lambda_rule', '')}")
    header = f"{'layer':<{name_w}}  {'checkpoint':<{label_w}}  " + "  ".join(
        f"{head:>{w}}" for (head, _, _), w in zip(TABLE_COLUMNS, col_w, strict=True))
    lines += [header, "-" * len(header)]
    rank_capped = False
    for name in names:
        first = True
        for run in result["checkpoints"]:
            layer = run["layers"].get(name)
            cells = []
            for (_, key, fmt), w in zip(TABLE_COLUMNS, col_w, strict=True):
                if layer is None:
                    cells.append(f"{'-':>{w}}")
                elif key == "count":
                    capped = layer["count"] <= layer["channels"]
                    rank_capped |= capped
                    cells.append(f"{layer['count']:>{w - 1}d}" + ("*" if capped else " "))
                else:
                    cells.append(f"{_value(layer, key):>{w}{fmt}}")
            shown = name if first else ""
            lines.append(f"{shown:<{name_w}}  {run['label']:<{label_w}}  " + "  ".join(cells))
            first = False
    lines.append(_TABLE_LEGEND)
    if rank_capped:
        lines.append("*: no more samples than channels: the covariance has rank <= samples - 1, "
                     "so every ID measure is capped by the sample count; use more images")
    return "\n".join(lines)


def _lambda_note(result: Mapping[str, Any]) -> str:
    rule = result.get("meta", {}).get("lambda_rule")
    return f" ({rule})" if rule else ""


def eigenspectra_figure(result: Mapping[str, Any], *, max_cols: int = 4):
    """The figure of :func:`plot_eigenspectra` (not saved; for inspection and tests).

    Args:
        result: An analysis.
        max_cols: Subplots per row.

    Returns:
        ``(fig, axes)``: one axes per layer, in :func:`layer_names` order.
    """
    names = layer_names(result)
    ncols = max(1, min(max_cols, len(names)))
    nrows = max(1, math.ceil(len(names) / ncols))
    fig, grid = plt.subplots(nrows, ncols, figsize=(3.4 * ncols, 2.8 * nrows + 0.6),
                             squeeze=False)
    axes = list(grid.ravel())
    for ax in axes[len(names):]:
        ax.set_visible(False)
    for ax, name in zip(axes[: len(names)], names, strict=True):
        dead = []
        for run in result["checkpoints"]:
            layer = run["layers"].get(name)
            if layer is None:
                continue
            mu = np.asarray(layer["eigenvalues"], dtype=np.float64)
            if mu.size == 0 or mu[0] <= 0:
                dead.append(run["label"])
                continue
            ratio = mu / mu[0]
            ratio[ratio <= 0] = np.nan  # zero eigenvalues have no place on a log axis
            ax.plot(np.arange(1, mu.size + 1), ratio, label=run["label"], lw=1.3)
        ax.set_yscale("log")
        low, _ = ax.get_ylim()
        if ax.lines and low < _LOG_FLOOR:
            ax.set_ylim(bottom=_LOG_FLOOR)
        ax.set_title(f"{name} (C={_channels(result, name)})", fontsize=9)
        ax.set_xlabel("eigenvalue index j", fontsize=8)
        ax.set_ylabel("mu_j / mu_1", fontsize=8)
        ax.tick_params(labelsize=7)
        ax.grid(alpha=0.3, which="both")
        if dead:
            ax.text(0.5, 0.5, f"all-zero spectrum: {', '.join(dead)}", transform=ax.transAxes,
                    ha="center", fontsize=7)
    if names:
        axes[0].legend(fontsize=7)
    fig.suptitle("Eigenspectra of the channel covariance (normalised by the largest "
                 "eigenvalue)", fontsize=10)
    return fig, axes[: len(names)]


def _channels(result: Mapping[str, Any], name: str) -> str:
    widths = sorted({run["layers"][name]["channels"] for run in result["checkpoints"]
                     if name in run["layers"]})
    return "/".join(str(w) for w in widths)


def plot_eigenspectra(result: Mapping[str, Any], path: str | Path, *, max_cols: int = 4
                      ) -> Path:
    """Eigenspectrum curves per layer, checkpoints overlaid, log y-scale; saved as PNG.

    Args:
        result: An analysis.
        path: PNG to write (atomically).
        max_cols: Subplots per row.

    Returns:
        The path written.
    """
    fig, _ = eigenspectra_figure(result, max_cols=max_cols)
    return save_figure(fig, path)


def id_bars_figure(result: Mapping[str, Any], *, per_width: bool = False):
    """The figure of :func:`plot_id_bars` (not saved).

    Args:
        result: An analysis.
        per_width: Plot ``ID / channels`` instead of the ID.

    Returns:
        ``(fig, ax)``; ``ax.containers`` holds one bar container per checkpoint.
    """
    names = layer_names(result)
    runs = result["checkpoints"]
    key = "id_per_width" if per_width else "id_dof"
    if per_width:
        title = "Intrinsic dimensionality per layer, divided by the layer's width"
        ylabel = "ID N(lambda) / channels (fraction of width)"
    else:
        title = "Intrinsic dimensionality per layer"
        ylabel = "ID N(lambda) (dimensions)"
    fig, ax = new_figure(title + _lambda_note(result), "layer", ylabel,
                         size=(max(6.0, 0.55 * len(names) * max(1, len(runs)) + 2), 4.4))
    ax.title.set_fontsize(9)
    x = np.arange(len(names))
    width = 0.8 / max(1, len(runs))
    for i, run in enumerate(runs):
        heights = [_value(run["layers"][n], key) if n in run["layers"] else np.nan
                   for n in names]
        ax.bar(x + (i - (len(runs) - 1) / 2) * width, heights, width, label=run["label"])
    ax.set_xticks(x)
    ax.set_xticklabels(names, rotation=45 if len(names) > 4 else 0, ha="right"
                       if len(names) > 4 else "center", fontsize=8)
    if per_width:
        ax.set_ylim(0, 1.05)
    ax.legend(fontsize=8)
    return fig, ax


def plot_id_bars(result: Mapping[str, Any], path: str | Path, *, per_width: bool = False
                 ) -> Path:
    """ID per layer as grouped bars (one group per layer, one bar per checkpoint).

    Args:
        result: An analysis.
        path: PNG to write (atomically).
        per_width: Divide each ID by the layer's number of channels.

    Returns:
        The path written.
    """
    fig, _ = id_bars_figure(result, per_width=per_width)
    return save_figure(fig, path)


def write_spectrum_report(result: Mapping[str, Any], out_dir: str | Path) -> dict[str, Path]:
    """The JSON and the three figures of an analysis, in ``out_dir``.

    Args:
        result: An analysis.
        out_dir: Output directory (created).

    Returns:
        Paths by kind: ``json`` (``spectrum.json``), ``eigenspectra``
        (``eigenspectra.png``), ``id`` (``id_per_layer.png``), ``id_per_width``
        (``id_per_width.png``).
    """
    out = Path(out_dir)
    return {
        "json": write_spectrum_json(result, out / "spectrum.json"),
        "eigenspectra": plot_eigenspectra(result, out / "eigenspectra.png"),
        "id": plot_id_bars(result, out / "id_per_layer.png"),
        "id_per_width": plot_id_bars(result, out / "id_per_width.png", per_width=True),
    }


# ----------------------------------------------------------------------------- dynamics
def _series(history: Mapping[str, Any], name: str, key: str = "id"
            ) -> tuple[list[int], list[float]]:
    xs, ys = [], []
    for entry in history.get("entries", []):
        layer = entry.get("layers", {}).get(name)
        if layer is not None:
            xs.append(int(entry["iteration"]))
            ys.append(float(layer[key]))
    return xs, ys


def _history_layers(history: Mapping[str, Any]) -> list[str]:
    names: list[str] = []
    for entry in history.get("entries", []):
        names += [n for n in entry.get("layers", {}) if n not in names]
    return names


def id_dynamics_figure(history: Mapping[str, Any], *, layers: Sequence[str] | None = None):
    """The figure of :func:`plot_id_dynamics` (not saved).

    Args:
        history: An ID history (see the module docstring).
        layers: Layers to draw (default: all).

    Returns:
        ``(fig, ax)`` with one line per layer (``label`` = layer name plus its flags).
    """
    rule = history.get("meta", {}).get("lambda_rule")
    fig, ax = new_figure(
        "Intrinsic dimensionality during training" + (f"\n({rule})" if rule else ""),
        "training iteration", "ID N(lambda) (dimensions)", size=(9.0, 4.6))
    ax.title.set_fontsize(9)
    dynamics = history.get("dynamics", {})
    drop_marked = rebound_marked = False
    for name in layers if layers is not None else _history_layers(history):
        xs, ys = _series(history, name)
        if not xs:
            continue
        flags = dynamics.get(name, {})
        tags = [t for t in ("dropping", "rebounding") if flags.get(t)]
        label = name + (f" ({', '.join(tags)})" if tags else "")
        (line,) = ax.plot(xs, ys, marker="o", ms=3, lw=1.3, label=label)
        if flags.get("dropping"):
            i = int(flags["min_index"])
            ax.plot(xs[i], ys[i], "v", ms=9, color=line.get_color(), mfc="none",
                    label=None if drop_marked else "minimum of a dropping layer")
            drop_marked = True
        if flags.get("rebounding"):
            ax.plot(xs[-1], ys[-1], "^", ms=9, color=line.get_color(), mfc="none",
                    label=None if rebound_marked else "latest value of a rebounding layer")
            rebound_marked = True
    if ax.lines:
        ax.legend(fontsize=7, loc="upper left", bbox_to_anchor=(1.01, 1.0))
    return fig, ax


def plot_id_dynamics(history: Mapping[str, Any], path: str | Path, *,
                     layers: Sequence[str] | None = None) -> Path:
    """ID per layer against the training iteration; saved as PNG (atomically).

    Args:
        history: An ID history (see the module docstring).
        path: PNG to write.
        layers: Layers to draw (default: all).

    Returns:
        The path written.
    """
    fig, _ = id_dynamics_figure(history, layers=layers)
    return save_figure(fig, path)
