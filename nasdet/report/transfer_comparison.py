"""The transfer comparison's plot and text table (from its rows)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from nasdet.utils.io import atomic_write


def plot_comparison(rows: list[dict[str, Any]], path: Path, *, title: str) -> Path:
    """Bar plot of box AP and AP@0.5 per strategy (PNG, written atomically).

    Args:
        rows: Comparison rows.
        path: Output file.
        title: Plot title.

    Returns:
        ``path``.
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    labels = [r["strategy"] for r in rows]
    ap = [r.get("bbox_mAP") for r in rows]
    ap50 = [r.get("bbox_mAP_50") for r in rows]
    fig, ax = plt.subplots(figsize=(max(5.0, 1.3 * len(rows) + 2), 4.0))
    xs = range(len(rows))
    width = 0.38
    for offset, values, name in ((-width / 2, ap, "AP@[0.5:0.95]"), (width / 2, ap50, "AP@0.5")):
        heights = [v if v is not None else 0.0 for v in values]
        bars = ax.bar([x + offset for x in xs], heights, width, label=name)
        for bar, v in zip(bars, values, strict=True):
            ax.annotate(
                "n/a" if v is None else f"{v:.3f}",
                (bar.get_x() + bar.get_width() / 2, bar.get_height()),
                ha="center",
                va="bottom",
                fontsize=8,
            )
    ax.set_xticks(list(xs))
    ax.set_xticklabels(labels, rotation=20, ha="right")
    ax.set_xlabel("transfer strategy")
    ax.set_ylabel("COCO box AP on val (fraction)")
    ax.set_title(title, fontsize=10)
    ax.legend()
    fig.tight_layout()
    atomic_write(path, lambda p: fig.savefig(p, format="png", dpi=120))
    plt.close(fig)
    return path


def format_table(rows: list[dict[str, Any]]) -> str:
    """The comparison as an aligned text table."""
    head = ["strategy", "bbox_mAP", "mAP@0.5", "train s", "trainable", "total"]
    lines = [head]
    for r in rows:
        lines.append(
            [
                r["strategy"],
                "n/a" if r.get("bbox_mAP") is None else f"{r['bbox_mAP']:.4f}",
                "n/a" if r.get("bbox_mAP_50") is None else f"{r['bbox_mAP_50']:.4f}",
                f"{r['train_seconds']:.1f}",
                f"{r['params_trainable']:,}",
                f"{r['params_total']:,}",
            ]
        )
    widths = [max(len(line[i]) for line in lines) for i in range(len(head))]
    text = [
        "  ".join(
            c.ljust(w) if i == 0 else c.rjust(w)
            for i, (c, w) in enumerate(zip(line, widths, strict=True))
        )
        for line in lines
    ]
    # mmdet's CocoMetric returns nothing when the detector made no detection at all.
    text += [
        f"n/a ({r['strategy']}): no box metric, the detector made no detection on the "
        f"validation images (a diverged training?); its log: {r.get('work_dir', '?')}"
        for r in rows
        if r.get("bbox_mAP") is None
    ]
    return "\n".join(text)
