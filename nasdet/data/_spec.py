"""Validation helpers shared by the dataset specs: each failure names the field."""

from __future__ import annotations

import math
from numbers import Real
from typing import Any

from nasdet.data.render import BACKGROUNDS
from nasdet.errors import NasdetError


def _fail(spec: str, key: str, message: str) -> NasdetError:
    return NasdetError(message, key=f"{spec}.{key}")


def check_int(spec: str, key: str, value: Any, lo: int, hi: int | None = None) -> int:
    """``value`` as an ``int`` in ``[lo, hi]`` (booleans rejected)."""
    if isinstance(value, bool) or not isinstance(value, int):
        raise _fail(spec, key, f"must be an integer, got {value!r}")
    if value < lo or (hi is not None and value > hi):
        bound = f"[{lo}, {hi}]" if hi is not None else f">= {lo}"
        raise _fail(spec, key, f"must be {bound}, got {value}")
    return value


def check_float(
    spec: str, key: str, value: Any, lo: float, hi: float, *, lo_open: bool = False
) -> float:
    """``value`` as a finite ``float`` in ``[lo, hi]`` (``(lo, hi]`` if ``lo_open``)."""
    if isinstance(value, bool) or not isinstance(value, Real) or not math.isfinite(value):
        raise _fail(spec, key, f"must be a finite number, got {value!r}")
    if value < lo or value > hi or (lo_open and value == lo):
        bound = f"{'(' if lo_open else '['}{lo}, {hi}]"
        raise _fail(spec, key, f"must be in {bound}, got {value}")
    return float(value)


def check_pair(spec: str, key: str, value: Any, lo: float, hi: float, *, integer: bool) -> tuple:
    """``value`` as an ordered pair ``(min, max)`` with ``lo <= min <= max <= hi``."""
    if not isinstance(value, (tuple, list)) or len(value) != 2:
        raise _fail(spec, key, f"must be a pair (min, max), got {value!r}")
    if integer:
        items = [check_int(spec, key, v, int(lo), int(hi)) for v in value]
    else:
        items = [check_float(spec, key, v, lo, hi) for v in value]
    if items[0] > items[1]:
        raise _fail(spec, key, f"min must not exceed max, got {tuple(value)!r}")
    return tuple(items)


def check_appearance(spec: Any) -> None:
    """Validate and normalise the fields both specs share, in place (frozen-safe)."""
    name = type(spec).__name__
    size = check_int(name, "image_size", spec.image_size, 16, 4096)
    # Any rotation of a shape fits in the image only if sqrt(2) * size <= image_size.
    largest = math.floor(size / math.sqrt(2))
    scale = check_pair(name, "scale_range", spec.scale_range, 4.0, math.inf, integer=False)
    if scale[1] > largest:
        raise _fail(
            name,
            "scale_range",
            f"max must not exceed image_size / sqrt(2) = {largest} px so that every rotation "
            f"fits in the image, got {scale[1]}",
        )
    if spec.background not in BACKGROUNDS:
        raise _fail(
            name, "background", f"must be one of {list(BACKGROUNDS)}, got {spec.background!r}"
        )
    values = {
        "scale_range": scale,
        "num_distractors": check_pair(
            name, "num_distractors", spec.num_distractors, 0, 1000, integer=True
        ),
        "max_rotation": check_float(name, "max_rotation", spec.max_rotation, 0.0, 180.0),
        "noise_std": check_float(name, "noise_std", spec.noise_std, 0.0, 128.0),
        "min_contrast": check_float(name, "min_contrast", spec.min_contrast, 0.0, 400.0),
        "seed": check_int(name, "seed", spec.seed, 0, 2**63 - 1),
    }
    for key, value in values.items():
        object.__setattr__(spec, key, value)
