"""Sharing-aware parameter counting."""

from __future__ import annotations

from torch import nn


def count_parameters(module: nn.Module, *, trainable_only: bool = False) -> int:
    """Count the scalars in the distinct Parameters of ``module``.

    A Parameter reachable under several names (a tied block, a shared conv, a
    module registered twice) is counted once, so the number equals the storage a
    checkpoint of the model needs, not the number of multiply-accumulate weights.

    Args:
        module: Any ``torch.nn.Module``.
        trainable_only: Count only Parameters with ``requires_grad=True``.

    Returns:
        The number of scalar parameters.

    Example:
        >>> conv = nn.Conv2d(2, 3, 1)
        >>> count_parameters(nn.Sequential(conv, conv))
        9
    """
    seen: set[int] = set()
    total = 0
    for _, param in module.named_parameters(remove_duplicate=False):
        if id(param) in seen or (trainable_only and not param.requires_grad):
            continue
        seen.add(id(param))
        total += param.numel()
    return total
