"""Rounding of channel counts to hardware-friendly multiples."""

from __future__ import annotations

import math

from nasdet.errors import NasdetError


def make_divisible(
    value: float, divisor: int = 8, min_value: int | None = None, min_ratio: float = 0.9
) -> int:
    """Round a channel count to the nearest multiple of ``divisor``.

    The rule: round ``value`` to the nearest multiple of ``divisor`` (halves round
    up), never below ``min_value`` (default: ``divisor``); if rounding went down by
    more than ``1 - min_ratio`` of ``value``, add one ``divisor``. So a width is never
    cut by more than 10 % by default, and is never zero.

    Args:
        value: The wanted number of channels (e.g. ``base * multiplier``); > 0.
        divisor: The multiple to round to; ``1`` leaves integers unchanged.
        min_value: The smallest result allowed; defaults to ``divisor``.
        min_ratio: The result is at least ``min_ratio * value``.

    Returns:
        The rounded channel count.

    Example:
        >>> make_divisible(64 * 0.75), make_divisible(100), make_divisible(10)
        (48, 104, 16)
    """
    if not isinstance(divisor, int) or isinstance(divisor, bool) or divisor < 1:
        raise NasdetError(f"must be a positive integer, got {divisor!r}", key="divisor")
    if not math.isfinite(value) or value <= 0:
        raise NasdetError(f"channel count must be a positive number, got {value!r}", key="width")
    if min_value is None:
        min_value = divisor
    rounded = max(min_value, int(value + divisor / 2) // divisor * divisor)
    if rounded < min_ratio * value:
        rounded += divisor
    return int(rounded)
