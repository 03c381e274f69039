"""MeCo: minimum eigenvalue of the channel correlation of every convolution's output."""

from __future__ import annotations

from typing import Any, Literal

import torch
from torch import Tensor, nn
from torch.nn.modules.conv import _ConvNd

from nasdet.errors import NasdetError
from nasdet.proxies.adapters import ModelAdapter
from nasdet.proxies.base import PROXIES, Proxy

__all__ = ["MeCo", "min_correlation_eigenvalue"]

Samples = Literal["one", "batch"]


def min_correlation_eigenvalue(fmap: Tensor, samples: Samples = "one") -> float:
    """Smallest eigenvalue of the ``C×C`` Pearson correlation of a feature map's channels.

    Computed in float64. A constant channel has no correlation; as in the authors'
    implementation its NaN entries (diagonal included) are set to 0, so such a layer
    scores at most 0.

    Args:
        fmap: ``B×C×...`` feature map.
        samples: ``'one'``: the spatial positions of the first image are the samples (the
            paper's single input); ``'batch'``: images × positions of the whole batch.
    """
    if fmap.dim() < 3:
        raise NasdetError(f"MeCo needs a map with spatial dims, got shape {tuple(fmap.shape)}",
                          key="fmap")
    f = fmap.detach().to(torch.float64)
    if samples == "one":
        rows = f[0].reshape(f.shape[1], -1)
    else:
        rows = f.transpose(0, 1).reshape(f.shape[1], -1)
    corr = torch.corrcoef(rows)
    corr = torch.nan_to_num(corr, nan=0.0, posinf=0.0, neginf=0.0)
    return float(torch.linalg.eigvalsh(corr).min())


@PROXIES.register_module(name="meco")
class MeCo(Proxy):
    """MeCo score.

    Reference: T. Jiang, H. Wang, R. Bie, "MeCo: Zero-Shot NAS with One Data and Single
    Forward Pass via Minimum Eigenvalue of Correlation", NeurIPS 2023.

    Definition: one forward pass of the probe batch in train mode; for the output
    ``F_l`` (``C_l×H_l×W_l`` for one image) of every convolution ``l`` the forward calls,
    ``R_l`` is the ``C_l×C_l`` Pearson correlation matrix of its channels, with the
    ``H_l·W_l`` spatial positions as samples, and

        ``MeCo = Σ_l λ_min(R_l)``.

    ``λ_min(R_l)`` lies in ``[0, 1]``: 1 for uncorrelated channels, 0 when one channel
    is a linear combination of others (always so when ``C_l > H_l·W_l``).

    Choices for detectors, stated: the layers are every ``nn.Conv*`` module that
    ``adapter.features`` runs (for an mmdet detector: all convolutions of the backbone
    and the neck, i.e. what the heads read; the heads' own convolutions are not run),
    each call counted once (a convolution shared by several FPN levels contributes one
    term per level; convolutions with one output channel, whose 1×1 correlation is 1
    whatever the network, are skipped); "one data" is the first image of the probe
    batch, whose positions are the samples, while the batch as a whole passes through
    (BatchNorm in train mode normalises with the batch's statistics).
    ``samples='batch'`` uses images × positions instead, the samples nasdet's ID
    measures use (at 128-px inputs a 256-channel stride-32 map has 16 positions per
    image, so with one image its term is 0 by rank alone).

    Args:
        samples: ``'one'`` (the paper) or ``'batch'``.
        seed: See :class:`~nasdet.proxies.base.Proxy`.
    """

    name = "meco"
    reference = "Jiang et al., MeCo, NeurIPS 2023"
    mode = "train"
    needs = "features"
    unit = "sum of correlation eigenvalues"

    def __init__(self, samples: Samples = "one", seed: int | None = 0):
        super().__init__(seed=seed)
        if samples not in ("one", "batch"):
            raise NasdetError("samples must be 'one' or 'batch'", key=f"samples={samples!r}")
        self.samples = samples

    def compute(self, model: nn.Module, adapter: ModelAdapter) -> float:
        values: list[float] = []

        def hook(_m: nn.Module, _inp: Any, out: Any) -> None:
            if isinstance(out, Tensor) and out.dim() >= 3 and out.shape[1] >= 2:
                values.append(min_correlation_eigenvalue(out, self.samples))

        handles = [m.register_forward_hook(hook) for m in model.modules()
                   if isinstance(m, _ConvNd)]
        try:
            with torch.no_grad():
                adapter.features(model, adapter.inputs())
        finally:
            for h in handles:
                h.remove()
        if not values:
            raise NasdetError("the feature forward called no convolution with 2+ channels",
                              key=type(model).__name__)
        return float(sum(values))
