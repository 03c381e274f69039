"""Cost baselines: trainable parameter count and multiply-accumulates."""

from __future__ import annotations

import logging
import math
import warnings
from typing import Any, Literal

import torch
from torch import Tensor, nn
from torch.nn.modules.conv import _ConvNd, _ConvTransposeNd

from nasdet.errors import NasdetError
from nasdet.proxies.adapters import ModelAdapter, flatten_tensors
from nasdet.proxies.base import PROXIES, Proxy

__all__ = ["MACs", "Params", "count_macs_hooks", "count_macs_mmengine"]


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


def count_macs_hooks(model: nn.Module, run: Any) -> int:
    """Multiply-accumulates of convolution and linear layers during ``run()``.

    Counted with forward hooks on every call of

    * ``_ConvNd`` (Conv1d/2d/3d and subclasses such as mmcv's wrappers):
      ``numel(output) · in_channels / groups · prod(kernel_size)``;
    * ``_ConvTransposeNd``: ``numel(input) · out_channels / groups · prod(kernel_size)``;
    * ``nn.Linear``: ``numel(output) · in_features``.

    Biases, normalisation, activations, pooling, interpolation and RoI ops are not
    counted.

    Args:
        model: The network whose layers are hooked.
        run: Zero-argument callable that runs the forward pass.

    Returns:
        The total over the whole batch.
    """
    total = 0

    def conv_hook(m: nn.Module, inp: tuple[Tensor, ...], out: Tensor) -> None:
        nonlocal total
        k = math.prod(m.kernel_size)
        if isinstance(m, _ConvTransposeNd):
            total += inp[0].numel() * (m.out_channels // m.groups) * k
        else:
            total += out.numel() * (m.in_channels // m.groups) * k

    def linear_hook(m: nn.Module, inp: tuple[Tensor, ...], out: Tensor) -> None:
        nonlocal total
        total += out.numel() * m.in_features

    handles = []
    for module in model.modules():
        if isinstance(module, _ConvNd):
            handles.append(module.register_forward_hook(conv_hook))
        elif isinstance(module, nn.Linear):
            handles.append(module.register_forward_hook(linear_hook))
    try:
        with torch.no_grad():
            run()
    finally:
        for h in handles:
            h.remove()
    return total


class _AdapterForward(nn.Module):
    """``inputs -> tuple of tensors`` wrapper that ``torch.jit.trace`` can follow."""

    def __init__(self, model: nn.Module, adapter: ModelAdapter):
        super().__init__()
        self.model = model
        self.adapter = adapter

    def forward(self, inputs: Tensor) -> tuple[Tensor, ...]:
        return tuple(flatten_tensors(self.adapter.forward(self.model, inputs)))


def count_macs_mmengine(model: nn.Module, adapter: ModelAdapter) -> int:
    """Multiply-accumulates of ``adapter.forward`` counted by mmengine's ``FlopAnalyzer``.

    mmengine (after fvcore) traces the forward with ``torch.jit.trace`` and counts one
    fused multiply-add as one "flop", so its total is a MAC count. Besides convolutions
    and matrix products it also counts element-wise normalisation, upsampling and
    pooling ops.

    Args:
        model: The network.
        adapter: Supplies the inputs and the forward.

    Returns:
        The total over the whole batch.
    """
    try:
        from mmengine.analysis import FlopAnalyzer
    except ImportError as exc:
        raise NasdetError("the 'mmengine' MAC backend needs mmengine", key="backend") from exc
    wrapper = _AdapterForward(model, adapter)
    logger = logging.getLogger("mmengine")
    level = logger.level
    logger.setLevel(logging.ERROR)
    try:
        with torch.no_grad(), warnings.catch_warnings():
            warnings.simplefilter("ignore")  # tracer warnings about python control flow
            analyzer = FlopAnalyzer(wrapper, (adapter.inputs(),))
            analyzer.unsupported_ops_warnings(False)
            analyzer.uncalled_modules_warnings(False)
            analyzer.tracer_warnings("none")
            return int(analyzer.total())
    finally:
        logger.setLevel(level)


def _mmengine_available() -> bool:
    try:
        import mmengine.analysis  # noqa: F401
    except ImportError:
        return False
    return True


@PROXIES.register_module(name="macs")
class MACs(Proxy):
    """Multiply-accumulates per image at the adapter's input size.

    Definition: the MACs of one ``adapter.forward(model, adapter.inputs())`` pass in eval
    mode, divided by the batch size. For an MMDetection detector this is its
    ``'tensor'``-mode forward (``_forward``), as ``tools/analysis_tools/get_flops.py``
    counts it; the RoI head's share depends on how many proposals the RPN keeps.

    Backends:

    * ``'mmengine'``: :func:`count_macs_mmengine`, mmengine's ``FlopAnalyzer``
      (``torch.jit.trace``); besides convolutions and matrix products it counts
      element-wise ops (BatchNorm, upsampling, pooling), about 0.2% more than the
      conv/linear count on a ResNet-18 FPN detector.
    * ``'hooks'``: :func:`count_macs_hooks`, convolution and linear layers only, with
      forward hooks; no tracing, so it works on any model and is faster.
    * ``'auto'`` (default): ``'mmengine'`` when ``mmengine.analysis`` imports, else
      ``'hooks'``. A tracing failure is reported as the proxy's failure, never silently
      replaced by the other backend, so all candidates of a search are counted alike.

    Args:
        backend: ``'auto'``, ``'mmengine'`` or ``'hooks'``; the backend actually used is
            kept in ``self.backend_used`` after :meth:`score`.
        seed: See :class:`~nasdet.proxies.base.Proxy`.
    """

    name = "macs"
    reference = "multiply-accumulate count (cost baseline)"
    mode = "eval"
    needs = "none"
    unit = "multiply-accumulates per image"

    def __init__(self, backend: Literal["auto", "hooks", "mmengine"] = "auto",
                 seed: int | None = 0):
        super().__init__(seed=seed)
        if backend not in ("auto", "hooks", "mmengine"):
            raise NasdetError("backend must be 'auto', 'hooks' or 'mmengine'",
                              key=f"backend={backend!r}")
        self.backend = backend
        self.backend_used: str | None = None

    def compute(self, model: nn.Module, adapter: ModelAdapter) -> float:
        inputs = adapter.inputs()
        backend = self.backend
        if backend == "auto":
            backend = "mmengine" if _mmengine_available() else "hooks"
        if backend == "mmengine":
            total = count_macs_mmengine(model, adapter)
        else:
            total = count_macs_hooks(model, lambda: adapter.forward(model, inputs))
        self.backend_used = backend
        return total / inputs.shape[0]
