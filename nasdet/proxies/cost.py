"""Cost baselines: trainable parameter count and multiply-accumulates."""

from __future__ import annotations

import torch
from torch import Tensor, nn

from nasdet.models.utils.macs import count_macs, model_complexity, roi_counts
from nasdet.proxies.adapters import ModelAdapter, flatten_tensors
from nasdet.proxies.base import PROXIES, Proxy

__all__ = ["MACs", "Params"]


@PROXIES.register_module(name="params")
class Params(Proxy):
    """Number of trainable parameters.

    Definition: ``Σ_p numel(p)`` over ``model.parameters()`` with ``requires_grad``
    (each shared tensor once). The usual size baseline of zero-cost-proxy studies, e.g.
    Abdelfattah et al., "Zero-Cost Proxies for Lightweight NAS", ICLR 2021.

    Args:
        trainable_only: Count only parameters with ``requires_grad`` (default); with
            ``False`` frozen parameters (e.g. mmdet's ``frozen_stages``) count too.
        seed: See :class:`~nasdet.proxies.base.Proxy`.
    """

    name = "params"
    reference = "parameter count (baseline in Abdelfattah et al., ICLR 2021)"
    mode = "eval"
    needs = "none"
    unit = "parameters"

    def __init__(self, trainable_only: bool = True, seed: int | None = 0):
        super().__init__(seed=seed)
        self.trainable_only = trainable_only

    def compute(self, model: nn.Module, adapter: ModelAdapter) -> float:
        return float(sum(p.numel() for p in model.parameters()
                         if p.requires_grad or not self.trainable_only))


class _AdapterForward(nn.Module):
    """``inputs -> tuple of tensors`` wrapper that ``torch.jit.trace`` can follow."""

    def __init__(self, model: nn.Module, adapter: ModelAdapter):
        super().__init__()
        self.model = model
        self.adapter = adapter

    def forward(self, inputs: Tensor) -> tuple[Tensor, ...]:
        return tuple(flatten_tensors(self.adapter.forward(self.model, inputs)))


@PROXIES.register_module(name="macs")
class MACs(Proxy):
    """Multiply-accumulates per image at the probe batch's input size.

    Definition: the count of :mod:`nasdet.models.utils.macs`, the one MAC counter
    (mmengine's ``FlopAnalyzer`` with its convolution, linear and matrix-product
    handles only). An MMDetection detector is counted as the search space counts its
    ``macs`` (:func:`~nasdet.models.utils.macs.model_complexity`: backbone, neck, dense
    heads, and the RoI heads on the RPN's test-time maximum of fixed RoIs) at the
    padded size of the probe images, so ``proxy/macs`` equals the space's ``macs`` when
    that size is the space's ``input_size``. Any other model: one
    ``adapter.forward(model, adapter.inputs())`` pass in eval mode, divided by the
    batch size.

    Args:
        seed: See :class:`~nasdet.proxies.base.Proxy`.
    """

    name = "macs"
    reference = "multiply-accumulate count (cost baseline)"
    mode = "eval"
    needs = "none"
    unit = "multiply-accumulates per image"

    def compute(self, model: nn.Module, adapter: ModelAdapter) -> float:
        inputs = adapter.inputs()
        if hasattr(model, "extract_feat"):
            rois, mask_rois = roi_counts(model)
            found = model_complexity(model, tuple(inputs.shape[-2:]), rois=rois,
                                     mask_rois=mask_rois)
            return float(found.macs)
        with torch.no_grad():
            return count_macs(_AdapterForward(model, adapter), inputs) / inputs.shape[0]
