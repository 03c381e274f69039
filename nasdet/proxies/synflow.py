"""SynFlow: data-free synaptic flow of the all-ones input through |θ|."""

from __future__ import annotations

import copy

import torch
from torch import nn

from nasdet.errors import NasdetError
from nasdet.proxies._utils import model_device_dtype, replace_norm_layers, weight_params
from nasdet.proxies.adapters import ModelAdapter
from nasdet.proxies.base import PROXIES, Proxy

__all__ = ["SynFlow"]


@PROXIES.register_module(name="synflow")
class SynFlow(Proxy):
    """Synaptic flow of the network at initialisation.

    Reference: H. Tanaka, D. Kunin, D. L. K. Yamins, S. Ganguli, "Pruning neural networks
    without any data by iteratively conserving synaptic flow", NeurIPS 2020
    (arXiv:2006.05467); used as a network-level proxy by Abdelfattah et al., "Zero-Cost
    Proxies for Lightweight NAS", ICLR 2021.

    Definition: on a copy of the model (the original is never touched),

    1. every BatchNorm and GroupNorm layer is replaced by the identity, as Abdelfattah et
       al. do for SynFlow (with an all-ones input, batch statistics would zero the
       signal, and running statistics would make the score depend on them);
    2. the copy is cast to float64 (products of |θ| over ~50 layers overflow float32) and
       every floating-point parameter and buffer is replaced by its absolute value
       (Tanaka et al.'s "linearise": ``θ ← |θ|``);
    3. a single all-ones input ``1`` of the probe batch's ``C×H×W`` shape is fed through
       ``adapter.features`` in eval mode and ``R = Σ`` of all entries of all returned
       feature maps;
    4. the score is ``Σ_l Σ W_l ⊙ ∂R/∂W_l`` over the (absolute) weight tensors of every
       trainable convolution and linear layer that ``R`` depends on.

    Because the copy is discarded, the sign "restore" step of Tanaka et al. is implicit;
    the model's own parameters never change sign. For a bias-free linear/ReLU chain of
    ``L`` layers the score is ``L · 1ᵀ|W_L|⋯|W_1|1``. For a detector the score covers the
    network up to ``adapter.features`` (backbone and neck), not the heads.

    Args:
        seed: See :class:`~nasdet.proxies.base.Proxy` (SynFlow itself is deterministic).
    """

    name = "synflow"
    reference = "Tanaka et al., SynFlow, NeurIPS 2020; Abdelfattah et al., ICLR 2021"
    mode = "eval"
    needs = "features"
    unit = "synaptic flow"

    def compute(self, model: nn.Module, adapter: ModelAdapter) -> float:
        net = copy.deepcopy(model)
        replace_norm_layers(net)
        net.double()
        with torch.no_grad():
            for tensor in net.state_dict().values():
                if tensor.is_floating_point():
                    tensor.abs_()
        device, _ = model_device_dtype(net)
        shape = (1, *adapter.inputs().shape[1:])
        ones = torch.ones(shape, dtype=torch.float64, device=device)
        weights = [p for _, p in weight_params(net) if p.requires_grad]
        if not weights:
            raise NasdetError("the model has no trainable convolution or linear weight",
                              key=type(model).__name__)
        with torch.enable_grad():
            feats = adapter.features(net, ones)
            flow = torch.stack([f.sum() for f in feats]).sum()
            grads = torch.autograd.grad(flow, weights, allow_unused=True)
        scored = [(w * g).sum() for w, g in zip(weights, grads, strict=True) if g is not None]
        if not scored:
            raise NasdetError("the features depend on no trainable convolution or linear weight",
                              key=type(model).__name__)
        return float(torch.stack(scored).sum().detach())
