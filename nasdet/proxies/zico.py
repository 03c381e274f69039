"""ZiCo: inverse coefficient of variation of the weight gradients across mini-batches."""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
from torch import Tensor, nn

from nasdet.errors import NasdetError
from nasdet.proxies._utils import weight_params
from nasdet.proxies.adapters import MMDetAdapter, ModelAdapter, TorchAdapter, sum_losses
from nasdet.proxies.base import PROXIES, Proxy

__all__ = ["ZiCo", "part_loss", "zico_score"]


def part_loss(model: nn.Module, adapter: ModelAdapter, part: slice) -> Tensor:
    """The training loss of the images ``part`` of the probe batch alone.

    Args:
        model: The network.
        adapter: A :class:`~nasdet.proxies.adapters.MMDetAdapter` (the part's data
            samples go with its images) or a :class:`~nasdet.proxies.adapters.TorchAdapter`
            (its targets are sliced alike).
        part: Which images.

    Raises:
        NasdetError: Another adapter type, which cannot split its targets.
    """
    inputs = adapter.inputs()[part]
    if isinstance(adapter, MMDetAdapter):
        return sum_losses(model.loss(inputs, adapter.data_samples[part]))
    if isinstance(adapter, TorchAdapter):
        if adapter.loss_fn is None:
            raise NasdetError("this TorchAdapter has no loss_fn", key="loss_fn")
        targets = adapter.targets[part] if adapter.targets is not None else None
        return adapter.loss_fn(model(inputs), targets)
    raise NasdetError("ZiCo needs the loss of part of the probe batch; this adapter "
                      "cannot split its targets", key=type(adapter).__name__)


def zico_score(grads: Sequence[Sequence[Tensor]]) -> float:
    """``Σ_l log(Σ_θ mean_b|g_θ| / std_b(g_θ))`` from per-batch gradients.

    As in the authors' code: ``std`` is the population standard deviation over the
    mini-batches; parameters whose gradient does not vary (``std = 0``) are left out of
    the inner sum, and a layer whose inner sum is 0 is left out of the outer one.

    Args:
        grads: ``grads[b][l]``: gradient of layer ``l``'s weight on mini-batch ``b``.

    Raises:
        NasdetError: Fewer than two mini-batches, or no layer contributes.
    """
    if len(grads) < 2:
        raise NasdetError("ZiCo needs the gradients of at least two mini-batches",
                          key="splits")
    score, used = 0.0, 0
    for layer in zip(*grads, strict=True):
        g = torch.stack([t.detach().to(torch.float64).reshape(-1) for t in layer])
        std = g.std(dim=0, unbiased=False)
        mean_abs = g.abs().mean(dim=0)
        keep = std > 0
        total = float((mean_abs[keep] / std[keep]).sum())
        if total > 0:
            score += math.log(total)
            used += 1
    if not used:
        raise NasdetError("no weight gradient varies across the mini-batches", key="splits")
    return score


@PROXIES.register_module(name="zico")
class ZiCo(Proxy):
    """ZiCo score.

    Reference: G. Li, Y. Yang, K. Bhardwaj, R. Marculescu, "ZiCo: Zero-shot NAS via
    Inverse Coefficient of Variation on Gradients", ICLR 2023 (arXiv:2301.11300).

    Definition: the probe batch is split into ``splits`` consecutive mini-batches
    (halves by default); for each, one backward pass of its own training loss (model in
    train mode) gives ``g_{b,θ} = ∂L_b/∂θ`` for every weight ``θ`` of every trainable
    convolution and linear layer ``l`` (biases and normalisation parameters excluded);

        ``ZiCo = Σ_l log( Σ_{θ∈l} mean_b|g_{b,θ}| / std_b(g_{b,θ}) )``

    with the population standard deviation over mini-batches (see :func:`zico_score`
    for the zero-variance rules, which follow the authors' code). Layers the loss of
    some mini-batch does not reach are left out.

    Args:
        splits: Mini-batches (≥ 2; the probe batch needs at least that many images).
        seed: See :class:`~nasdet.proxies.base.Proxy` (seeds the detector's samplers).
    """

    name = "zico"
    reference = "Li et al., ZiCo, ICLR 2023"
    mode = "train"
    needs = "loss"
    unit = "log"

    def __init__(self, splits: int = 2, seed: int | None = 0):
        super().__init__(seed=seed)
        if splits < 2:
            raise NasdetError("splits must be >= 2", key=f"splits={splits}")
        self.splits = int(splits)

    def compute(self, model: nn.Module, adapter: ModelAdapter) -> float:
        weights = [p for _, p in weight_params(model) if p.requires_grad]
        if not weights:
            raise NasdetError("the model has no trainable convolution or linear weight",
                              key=type(model).__name__)
        n = adapter.batch_size
        if n < self.splits:
            raise NasdetError(f"the probe batch has {n} images, fewer than splits",
                              key=f"splits={self.splits}")
        per_batch: list[list[Tensor | None]] = []
        with torch.enable_grad():
            for b in range(self.splits):
                part = slice(b * n // self.splits, (b + 1) * n // self.splits)
                loss = part_loss(model, adapter, part)
                per_batch.append(list(torch.autograd.grad(loss, weights, allow_unused=True)))
        reached = [i for i in range(len(weights)) if all(g[i] is not None for g in per_batch)]
        if not reached:
            raise NasdetError("the loss reaches no trainable convolution or linear weight",
                              key=type(model).__name__)
        return zico_score([[g[i] for i in reached] for g in per_batch])
