"""Loading a checkpoint into a narrower network by slicing leading channels."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

import torch
from torch import nn

from nasdet.errors import NasdetError


@dataclass
class SlicedLoadResult:
    """What :func:`load_sliced_state_dict` did.

    Args:
        missing_keys: Keys of the module that the state dict does not have; these
            keep their current values.
        unexpected_keys: Keys of the state dict that the module does not have (e.g.
            ``fc.weight`` of a classifier, or the convolutions of blocks that a
            weight-tied backbone does not own); they are ignored.
        sliced_keys: Keys whose tensor was larger in the state dict and of which
            the leading slice was copied.
    """

    missing_keys: list[str] = field(default_factory=list)
    unexpected_keys: list[str] = field(default_factory=list)
    sliced_keys: list[str] = field(default_factory=list)


def leading_slice(source: torch.Tensor, shape: torch.Size | tuple[int, ...]) -> torch.Tensor:
    """Return ``source[:shape[0], :shape[1], ...]``.

    Args:
        source: The larger (or equal) tensor.
        shape: The wanted shape; same number of dims, each at most ``source``'s.

    Returns:
        A view of ``source`` with the wanted shape.
    """
    return source[tuple(slice(0, n) for n in shape)]


def load_sliced_state_dict(
    module: nn.Module,
    state_dict: Mapping[str, torch.Tensor],
    *,
    strict_shapes: bool = False,
    source: str | Path | None = None,
) -> SlicedLoadResult:
    """Copy a state dict into ``module``, slicing tensors that are too large.

    The rule, for every key the module and the state dict share:

    * same shape: the tensor is copied;
    * the module's tensor is smaller or equal in every dimension (same number of
      dimensions): the leading slice ``src[:n0, :n1, ...]`` is copied, so a narrower
      network gets the first channels of every layer, consistently along the
      residual path (a conv's output slice matches the next conv's input slice);
    * any dimension larger than the checkpoint's, or a different number of
      dimensions: :class:`~nasdet.errors.NasdetError` naming the key and both
      shapes. Nothing is zero-padded, because a padded network would not compute
      what the checkpoint computed on its first channels.

    All keys are checked before anything is copied, so an error leaves the module
    unchanged. Missing and unexpected keys are reported, not raised.

    Args:
        module: The module to load into (its ``state_dict()`` names the targets).
        state_dict: Source tensors by name (e.g. a ResNet checkpoint's ``state_dict``).
        strict_shapes: Refuse any shape difference, i.e. behave like
            ``module.load_state_dict(state_dict, strict=False)`` with clear errors.
        source: The checkpoint file, only used in error messages.

    Returns:
        A :class:`SlicedLoadResult` with missing, unexpected and sliced keys.

    Example:
        >>> wide, narrow = nn.Linear(4, 6), nn.Linear(3, 2)
        >>> res = load_sliced_state_dict(narrow, wide.state_dict())
        >>> res.sliced_keys, bool((narrow.weight == wide.weight[:2, :3]).all())
        (['weight', 'bias'], True)
    """
    targets = module.state_dict(keep_vars=True)
    result = SlicedLoadResult()
    plan: list[tuple[torch.Tensor, torch.Tensor]] = []
    for key, target in targets.items():
        if key not in state_dict:
            result.missing_keys.append(key)
            continue
        src = state_dict[key]
        if not isinstance(src, torch.Tensor):
            raise NasdetError(
                f"checkpoint entry is a {type(src).__name__}, not a tensor", file=source, key=key
            )
        if src.shape == target.shape:
            plan.append((target, src))
            continue
        want, have = tuple(target.shape), tuple(src.shape)
        if strict_shapes:
            raise NasdetError(
                f"shape mismatch: model {want} vs checkpoint {have} "
                "(strict_shapes=True refuses slicing)",
                file=source,
                key=key,
            )
        if len(want) != len(have) or any(w > h for w, h in zip(want, have, strict=True)):
            raise NasdetError(
                f"cannot slice checkpoint tensor of shape {have} to the model's "
                f"{want}: slicing only shrinks dimensions (no zero-padding); "
                "use a checkpoint at least as wide as the model",
                file=source,
                key=key,
            )
        plan.append((target, leading_slice(src, want)))
        result.sliced_keys.append(key)
    result.unexpected_keys = [k for k in state_dict if k not in targets]
    with torch.no_grad():
        for target, src in plan:
            target.copy_(src.to(dtype=target.dtype, device=target.device))
    return result
