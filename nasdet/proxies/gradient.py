"""Loss-gradient baselines at initialisation: ``grad_norm`` and ``snip``."""

from __future__ import annotations

from typing import Literal

import torch
from torch import Tensor, nn

from nasdet.errors import NasdetError
from nasdet.proxies._utils import weight_params
from nasdet.proxies.adapters import ModelAdapter
from nasdet.proxies.base import PROXIES, Proxy

__all__ = ["GradNorm", "Snip", "loss_gradients"]


def loss_gradients(model: nn.Module, adapter: ModelAdapter) -> list[tuple[Tensor, Tensor]]:
    """``(weight, dL/dweight)`` for every trainable conv/linear weight the loss reaches.

    One backward pass of ``adapter.loss(model, adapter.inputs())``. Weights that are
    frozen or that the loss does not depend on are left out.

    Args:
        model: The network, already in the proxy's mode.
        adapter: Supplies the probe batch and the loss.

    Raises:
        NasdetError: No conv/linear weight receives a gradient.
    """
    weights = [(n, p) for n, p in weight_params(model) if p.requires_grad]
    if not weights:
        raise NasdetError("the model has no trainable convolution or linear weight",
                          key=type(model).__name__)
    with torch.enable_grad():
        loss = adapter.loss(model, adapter.inputs())
        grads = torch.autograd.grad(loss, [p for _, p in weights], allow_unused=True)
    pairs = [(p.detach(), g) for (_, p), g in zip(weights, grads, strict=True) if g is not None]
    if not pairs:
        raise NasdetError("the loss reaches no trainable convolution or linear weight",
                          key=type(model).__name__)
    return pairs


@PROXIES.register_module(name="grad_norm")
class GradNorm(Proxy):
    """Gradient norm at initialisation.

    Reference: M. S. Abdelfattah, A. Mehrotra, Ł. Dudziak, N. D. Lane, "Zero-Cost
    Proxies for Lightweight NAS", ICLR 2021 (arXiv:2101.08134).

    Definition: one backward pass of the training loss ``L`` on the probe batch (model in
    train mode); with ``g_l = ∂L/∂W_l`` for the weight tensor ``W_l`` of every trainable
    convolution and linear layer ``l`` (biases and normalisation parameters excluded):

    * ``aggregate='layer_sum'`` (default, the paper's "sum of the Euclidean norm of the
      gradients"): ``Σ_l ‖g_l‖_2``;
    * ``aggregate='global'``: ``sqrt(Σ_l ‖g_l‖_2²)``, the L2 norm of the whole gradient.

    Args:
        aggregate: ``'layer_sum'`` or ``'global'``.
        seed: See :class:`~nasdet.proxies.base.Proxy` (seeds the detector's samplers).
    """

    name = "grad_norm"
    reference = "Abdelfattah et al., Zero-Cost Proxies for Lightweight NAS, ICLR 2021"
    mode = "train"
    needs = "loss"
    unit = "gradient L2 norm"

    def __init__(self, aggregate: Literal["layer_sum", "global"] = "layer_sum",
                 seed: int | None = 0):
        super().__init__(seed=seed)
        if aggregate not in ("layer_sum", "global"):
            raise NasdetError("aggregate must be 'layer_sum' or 'global'",
                              key=f"aggregate={aggregate!r}")
        self.aggregate = aggregate

    def compute(self, model: nn.Module, adapter: ModelAdapter) -> float:
        norms = [g.detach().to(torch.float64).norm() for _, g in loss_gradients(model, adapter)]
        if self.aggregate == "global":
            return float(torch.stack(norms).square().sum().sqrt())
        return float(torch.stack(norms).sum())


@PROXIES.register_module(name="snip")
class Snip(Proxy):
    """SNIP connection sensitivity summed over the network.

    Reference: N. Lee, T. Ajanthan, P. H. S. Torr, "SNIP: Single-shot Network Pruning
    based on Connection Sensitivity", ICLR 2019 (arXiv:1810.02340); used as a
    network-level proxy by Abdelfattah et al., ICLR 2021.

    Definition: ``Σ_l Σ |W_l ⊙ ∂L/∂W_l|`` over the weight tensors of every trainable
    convolution and linear layer, from one backward pass of the training loss on the
    probe batch in train mode. (SNIP's ``|∂L/∂c|`` for a multiplicative mask ``c = 1``
    equals ``|W ⊙ ∂L/∂W|``; SNIP's normalisation by the sum over weights is dropped, as
    in Abdelfattah et al., because it would make every network score 1.)

    Args:
        seed: See :class:`~nasdet.proxies.base.Proxy`.
    """

    name = "snip"
    reference = "Lee et al., SNIP, ICLR 2019; Abdelfattah et al., ICLR 2021"
    mode = "train"
    needs = "loss"
    unit = "loss units"

    def compute(self, model: nn.Module, adapter: ModelAdapter) -> float:
        total = torch.zeros((), dtype=torch.float64)
        for w, g in loss_gradients(model, adapter):
            total = total + (w.to(torch.float64) * g.detach().to(torch.float64)).abs().sum().cpu()
        return float(total)
