"""Helpers shared by the proxy definitions."""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

import torch
from torch import Tensor, nn
from torch.nn.modules.batchnorm import _BatchNorm
from torch.nn.modules.conv import _ConvNd

#: Layers whose ``weight`` the gradient-based proxies score ("the weights").
WEIGHT_LAYERS: tuple[type[nn.Module], ...] = (_ConvNd, nn.Linear)
#: Normalisation layers that SynFlow and MAE-DET replace by the identity.
NORM_LAYERS: tuple[type[nn.Module], ...] = (_BatchNorm, nn.GroupNorm)


def weight_params(model: nn.Module) -> list[tuple[str, nn.Parameter]]:
    """``(name, weight)`` of every convolution and linear layer, each tensor once.

    Biases and normalisation parameters are not included. Frozen weights
    (``requires_grad=False``) are included; callers skip those without a gradient.

    Args:
        model: The network.
    """
    seen: set[int] = set()
    out = []
    for name, module in model.named_modules():
        if isinstance(module, WEIGHT_LAYERS):
            weight = getattr(module, "weight", None)
            if isinstance(weight, nn.Parameter) and id(weight) not in seen:
                seen.add(id(weight))
                out.append((f"{name}.weight" if name else "weight", weight))
    return out


def replace_norm_layers(model: nn.Module) -> int:
    """Replace every BatchNorm/GroupNorm sub-module of ``model`` by ``nn.Identity`` in place.

    Args:
        model: The network (normally a copy).

    Returns:
        The number of layers replaced.
    """
    count = 0
    for parent in list(model.modules()):
        for child_name, child in list(parent.named_children()):
            if isinstance(child, NORM_LAYERS):
                setattr(parent, child_name, nn.Identity())
                count += 1
    return count


@torch.no_grad()
def reinit(model: nn.Module, init_weight: Callable[[Tensor], Any]) -> None:
    """Re-initialise ``model`` in place: ``init_weight`` on every convolution and linear
    weight, their biases 0; BatchNorm/GroupNorm affine weights 1 and biases 0. Other
    parameters are left as they are.

    Args:
        model: The network (normally a copy).
        init_weight: Fills a weight tensor in place.
    """
    for module in model.modules():
        if isinstance(module, WEIGHT_LAYERS):
            init_weight(module.weight)
            if getattr(module, "bias", None) is not None:
                module.bias.zero_()
        elif isinstance(module, NORM_LAYERS):
            if getattr(module, "weight", None) is not None:
                module.weight.fill_(1.0)
            if getattr(module, "bias", None) is not None:
                module.bias.zero_()


def gaussian_init(model: nn.Module) -> None:
    """Re-initialise ``model`` the way Zen-NAS and MAE-DET do, in place: weights N(0, 1)
    (see :func:`reinit`)."""
    reinit(model, lambda w: w.normal_(0.0, 1.0))


def log_std(x: Tensor) -> float:
    """``log(std(x))`` over all elements (population std), robust to huge magnitudes.

    The tensor is scaled by its largest absolute value before squaring, so a float64
    map with entries near 1e200 does not overflow.

    Args:
        x: Any tensor with at least two elements.
    """
    x = x.detach().to(torch.float64)
    scale = float(x.abs().max())
    if scale == 0.0:
        return float("-inf")
    if not math.isfinite(scale):
        return float("nan")
    return math.log(float((x / scale).std(unbiased=False))) + math.log(scale)


def model_device_dtype(model: nn.Module) -> tuple[torch.device, torch.dtype]:
    """Device and floating dtype of the model's first parameter (CPU float32 if none)."""
    for p in model.parameters():
        return p.device, p.dtype
    return torch.device("cpu"), torch.float32
