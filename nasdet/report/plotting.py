"""Matplotlib set-up shared by every report: headless, labelled, saved atomically."""

from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")  # reports are written on servers and in CI: no display
import matplotlib.pyplot as plt  # noqa: E402

from nasdet.utils.io import atomic_write  # noqa: E402


def new_figure(title: str, xlabel: str, ylabel: str, *, size: tuple[float, float] = (6, 4)):
    """A figure with one axes, its title and axis labels set."""
    fig, ax = plt.subplots(figsize=size)
    ax.set_title(title)
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    ax.grid(alpha=0.3)
    return fig, ax


def save_figure(fig, path: str | Path, *, dpi: int = 110) -> Path:
    """Save ``fig`` as PNG atomically and close it."""
    fig.tight_layout()
    out = atomic_write(path, lambda p: fig.savefig(p, dpi=dpi, format="png"))
    plt.close(fig)
    return out
