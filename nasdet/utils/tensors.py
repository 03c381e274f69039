"""Tensors inside whatever a forward returns."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from torch import Tensor


def flatten_tensors(output: Any) -> list[Tensor]:
    """All tensors in a nested tuple/list/dict output, depth first, in order.

    Objects with a ``to_dict()`` or ``__dict__`` (mmengine ``InstanceData``,
    ``DetDataSample``) are searched through their fields.

    Args:
        output: Whatever a forward returned.
    """
    if isinstance(output, Tensor):
        return [output]
    if isinstance(output, Mapping):
        return [t for v in output.values() for t in flatten_tensors(v)]
    if isinstance(output, (list, tuple)):
        return [t for v in output for t in flatten_tensors(v)]
    if hasattr(output, "to_dict") and callable(output.to_dict):
        return flatten_tensors(output.to_dict())
    return []
