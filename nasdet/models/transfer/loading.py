"""The rule a pretrained backbone checkpoint must meet: it fills most of the backbone."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path

import torch
from torch import nn

from nasdet.errors import NasdetError

#: Least share of a backbone's weight elements a pretrained checkpoint must fill.
MIN_LOADED_FRACTION = 0.5


def check_state_fills(
    module: nn.Module,
    state: Mapping[str, torch.Tensor],
    *,
    source: str | Path,
    key: str,
    min_fraction: float = MIN_LOADED_FRACTION,
) -> int:
    """Refuse a checkpoint that would leave ``module`` mostly at its random initialisation.

    MMDetection's ``Pretrained`` init only logs missing keys and shape mismatches, so a
    checkpoint of another network trains from random weights without a word. Checked
    before anything is copied; the module's tensors are counted at the module's shapes
    (parameters and statistics, not ``num_batches_tracked``):

    * none of them in ``state``: error (another architecture, or a prefix is needed);
    * a shared convolution weight with another kernel size (a basic block's 3x3 where a
      bottleneck has a 1x1): error, a leading slice of it would be no width slice;
    * the tensors ``state`` has cover less than ``min_fraction`` of the module's elements
      (a much shallower network, a few stray names): error.

    Widths are left to :func:`~nasdet.models.utils.load_sliced_state_dict`, which slices
    wider tensors and refuses narrower ones.

    Args:
        module: The network to load into.
        state: Name -> tensor, as :func:`read_state_dict` returns it.
        source: The checkpoint, for messages.
        key: The option that named it (``init_cfg.checkpoint``, ``checkpoint``).
        min_fraction: Least share of the module's elements the checkpoint must hold.

    Returns:
        The number of the module's elements found in ``state``.

    Raises:
        NasdetError: one of the cases above, naming ``source`` and ``key``.
    """
    own = {k: v for k, v in module.state_dict().items() if not k.endswith("num_batches_tracked")}
    name = type(module).__name__
    found = [k for k in own if k in state]
    if own and not found:
        hint = " (a detector checkpoint? use prefix='backbone.')" if any(
            k.startswith("backbone.") for k in state) else ""
        raise NasdetError(
            f"none of the backbone's weights are in the checkpoint: another architecture, or "
            f"a prefix is needed{hint}; {name} expects e.g. {next(iter(own))}, the checkpoint "
            f"holds e.g. {next(iter(state), '(nothing)')}",
            file=source, key=key)
    for k in found:
        want, have = tuple(own[k].shape), tuple(state[k].shape)
        if len(want) >= 3 and len(want) == len(have) and want[2:] != have[2:]:
            raise NasdetError(
                f"{k}: kernel {have[2:]} in the checkpoint vs {want[2:]} in {name}: another "
                "block type (basic vs bottleneck?) or depth", file=source, key=key)
    total = sum(v.numel() for v in own.values())
    filled = sum(own[k].numel() for k in found)
    if total and filled < min_fraction * total:
        first = next(k for k in own if k not in state)
        raise NasdetError(
            f"the checkpoint holds only {filled / total:.0%} of {name}'s weight elements "
            f"({len(found)} of {len(own)} tensors; first missing: {first}), at least "
            f"{min_fraction:.0%} are needed: training would start mostly from random "
            "weights (a shallower or another network?)", file=source, key=key)
    return filled
