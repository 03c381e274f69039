"""GroupNorm whose group count adapts to the channel count (for searched widths)."""

from __future__ import annotations

from mmengine.registry import MODELS as ROOT_MODELS
from torch import nn


def divisor_at_most(channels: int, limit: int) -> int:
    """The largest divisor of ``channels`` that is at most ``limit``.

    Args:
        channels: Number of channels (positive).
        limit: Upper bound on the result (positive).

    Returns:
        ``max(d for d in 1..limit if channels % d == 0)``.

    Example:
        >>> divisor_at_most(64, 32), divisor_at_most(48, 32), divisor_at_most(40, 32)
        (32, 24, 20)
    """
    if channels < 1 or limit < 1:
        raise ValueError(f"channels and limit must be positive, got {channels}, {limit}")
    return max(d for d in range(1, min(channels, limit) + 1) if channels % d == 0)


# Registered in mmengine's root registry, like mmcv's own norm layers, so that
# mmcv's build_norm_layer finds it from any default scope.
@ROOT_MODELS.register_module("FlexGN")
class FlexGroupNorm(nn.GroupNorm):
    """GroupNorm with ``num_groups`` taken as an upper bound.

    mmdet's scratch recipe uses ``GN`` with 32 groups, which fails on widths that are not
    multiples of 32 (common in width search). This layer uses
    ``divisor_at_most(num_channels, num_groups)`` groups, so it *is* ``GN(num_groups)``
    whenever the width is divisible, with the same parameter names (``weight``,
    ``bias``) and the layer name ``gn{i}`` that mmcv gives GroupNorm.

    Args:
        num_channels: Channels of the input.
        num_groups: Largest group count to use (default 32, as mmdet's GN configs).
        eps: Added to the variance.
        affine: Learn a per-channel scale and shift.

    Example:
        >>> FlexGroupNorm(48, num_groups=32).num_groups
        24
    """

    _abbr_ = "gn"

    def __init__(
        self, num_channels: int, num_groups: int = 32, eps: float = 1e-5, affine: bool = True
    ) -> None:
        super().__init__(divisor_at_most(num_channels, num_groups), num_channels, eps, affine)
        self.max_groups = num_groups
