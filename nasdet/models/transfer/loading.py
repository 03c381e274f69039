"""Reading the backbone weights a transfer strategy starts from."""

from __future__ import annotations

from pathlib import Path

import torch

from nasdet.errors import NasdetError
from nasdet.utils.checkpoint import load_checkpoint_file


def is_url(checkpoint: str | Path) -> bool:
    """Whether ``checkpoint`` names a remote/zoo checkpoint (``torchvision://``, ``https://``)."""
    return "://" in str(checkpoint)


def read_state_dict(
    checkpoint: str | Path,
    *,
    prefix: str | None = None,
    key: str = "checkpoint",
    map_location: str = "cpu",
) -> dict[str, torch.Tensor]:
    """The tensors of a checkpoint, optionally only those under ``prefix`` (stripped).

    Local files are read by :func:`nasdet.utils.checkpoint.load_checkpoint_file`
    (``weights_only=True`` with nasdet's allowlist); ``torchvision://``,
    ``open-mmlab://`` and ``http(s)://`` names go through mmengine's
    ``CheckpointLoader``, which downloads and caches them.

    Args:
        checkpoint: Path or URL.
        prefix: Keep only keys starting with this (e.g. ``'backbone.'`` to take a
            backbone out of a detector checkpoint) and strip it.
        key: The option that named the checkpoint, for error messages.
        map_location: Device for the tensors.

    Returns:
        Name -> tensor, ``module.`` prefixes removed.

    Raises:
        NasdetError: Missing or unreadable file, or no key under ``prefix``.
    """
    if is_url(checkpoint):
        from mmengine.runner import CheckpointLoader

        ckpt = CheckpointLoader.load_checkpoint(str(checkpoint), map_location=map_location)
        if isinstance(ckpt, dict) and isinstance(ckpt.get("state_dict"), dict):
            ckpt = ckpt["state_dict"]
        state = ckpt
    else:
        if not Path(checkpoint).is_file():
            raise NasdetError("checkpoint file not found", file=checkpoint, key=key)
        state = load_checkpoint_file(checkpoint, map_location=map_location)["state_dict"]
    state = {k.removeprefix("module."): v for k, v in state.items() if isinstance(v, torch.Tensor)}
    if prefix:
        state = {k[len(prefix) :]: v for k, v in state.items() if k.startswith(prefix)}
        if not state:
            raise NasdetError(f"no key starts with prefix {prefix!r}", file=checkpoint, key=key)
    return state
