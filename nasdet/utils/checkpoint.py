"""Checkpoint loading that keeps ``torch.load(weights_only=True)`` on.

torch >= 2.6 loads with ``weights_only=True`` by default, which refuses the few
non-tensor Python objects mmengine stores in its checkpoints (the message hub's
``HistoryBuffer``, NumPy scalars and arrays in ``meta``). Rather than turning the
safe loader off, :func:`allow_mmengine_checkpoints` adds exactly those types to
torch's allowlist of safe globals; mmengine's own ``Runner(resume=True)`` and
``load_from`` then work unchanged, and arbitrary pickled code still cannot run.
"""

from __future__ import annotations

import pickle
import warnings
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from nasdet.errors import NasdetError

_registered = False


def safe_globals() -> list[Any]:
    """The allowlist: types mmengine and mmdet put into checkpoints besides tensors.

    Returns:
        Classes and functions that ``torch.load(weights_only=True)`` may rebuild.
    """
    from mmengine.logging.history_buffer import HistoryBuffer

    # NumPy 2 pickles arrays through numpy._core; NumPy 1 through numpy.core.
    try:
        from numpy._core import multiarray as core_multiarray
    except ImportError:  # NumPy < 2
        from numpy.core import multiarray as core_multiarray
    allowed: list[Any] = [
        HistoryBuffer, np.ndarray, np.dtype, core_multiarray._reconstruct,
        core_multiarray.scalar,
    ]
    # dtype classes (numpy.dtypes.Float64DType, ...) appear in pickled dtypes.
    allowed += [type(np.dtype(t)) for t in _NUMPY_DTYPES]
    # HistoryBuffer pickles its statistics methods as getattr(HistoryBuffer, 'min'):
    # stand in for builtins.getattr with a version limited to exactly that.
    allowed.append((_history_buffer_method, "builtins.getattr"))
    return allowed


def _history_buffer_method(owner: Any, name: str) -> Any:
    from mmengine.logging.history_buffer import HistoryBuffer

    if owner is not HistoryBuffer or name.startswith("_") or not callable(
            getattr(HistoryBuffer, name, None)):
        raise pickle.UnpicklingError(
            f"getattr({getattr(owner, '__name__', type(owner).__name__)}, {name!r}) is not "
            "allowed: only HistoryBuffer's statistics methods are")
    return getattr(HistoryBuffer, name)


_NUMPY_DTYPES = (
    "bool", "int8", "int16", "int32", "int64", "uint8", "uint16", "uint32", "uint64",
    "float16", "float32", "float64", "complex64", "complex128", "str", "object",
)


def allow_mmengine_checkpoints() -> None:
    """Register :func:`safe_globals` with torch (idempotent)."""
    global _registered
    if _registered:
        return
    torch.serialization.add_safe_globals(safe_globals())
    _registered = True


def checkpoint_file_kind(path: str | Path) -> str | None:
    """Which format ``torch.save`` wrote ``path`` in, judged by its first bytes.

    Args:
        path: An existing file.

    Returns:
        ``'zip'`` (torch >= 1.6), ``'legacy'`` (the older pickle stream, which starts
        with torch's magic number) or ``None`` for anything else (text, empty, an
        image, a plain pickle, ...).
    """
    with open(path, "rb") as f:
        head = f.read(4)
    if head == b"PK\x03\x04":
        return "zip"
    if head == b"\x80\x02\x8a\n":  # pickle protocol 2, then LONG1 of 10 bytes: the magic
        return "legacy"
    return None


def _unpickling_detail(message: str) -> str:
    """The informative line of torch's multi-line weights-only message."""
    lines = [ln.strip() for ln in message.splitlines() if ln.strip()]
    for line in lines:
        if "GLOBAL" in line or line.startswith("Unsupported"):
            return line
    rest = [ln for ln in lines[1:] if not ln.startswith(("Check the documentation", "Please file"))]
    return (rest or lines or ["unknown reason"])[-1]


def check_checkpoint_file(path: str | Path, *, key: str | None = None) -> Path:
    """Cheaply refuse what cannot be a checkpoint, before any work starts.

    Reads four bytes: a tool checks its checkpoint arguments with it before building a
    model or a work dir; :func:`load_checkpoint_file` checks the rest.

    Args:
        path: The file.
        key: The option or argument naming it (``--resume``, ``CHECKPOINT``), if any.

    Returns:
        ``path`` as a path.

    Raises:
        NasdetError: a missing file, a directory, or a file in neither of the formats
            ``torch.save`` writes.
    """
    path = Path(path)
    if path.is_dir():
        raise NasdetError("is a directory, not a checkpoint file", file=path, key=key)
    if not path.is_file():
        raise NasdetError("checkpoint file not found", file=path, key=key)
    try:
        kind = checkpoint_file_kind(path)
    except OSError as exc:
        raise NasdetError(f"cannot read the checkpoint ({exc.strerror or exc})", file=path,
                          key=key) from None
    if kind is None:
        raise NasdetError(
            "not a torch checkpoint: neither the zip archive nor the legacy format that "
            "torch.save writes (a text, image, log or plain pickle file?)", file=path, key=key)
    return path


def load_checkpoint_file(path: str | Path, *, map_location: str = "cpu") -> dict[str, Any]:
    """Load a checkpoint with ``weights_only=True`` and the allowlist.

    Args:
        path: A ``.pth`` file written by mmengine, torchvision or nasdet.
        map_location: Device to map tensors to.

    Returns:
        The checkpoint dict, always with a ``'state_dict'`` entry (a bare state dict
        is wrapped, a ``'model'`` entry is aliased).

    Raises:
        NasdetError: missing file, a file that is not a torch checkpoint at all, or one
            holding objects outside the allowlist.
    """
    path = check_checkpoint_file(path)
    allow_mmengine_checkpoints()
    try:
        with warnings.catch_warnings():  # torch warns about pickle protocols it rarely sees
            warnings.simplefilter("ignore", UserWarning)
            ckpt = torch.load(path, map_location=map_location, weights_only=True)
    except pickle.UnpicklingError as exc:
        detail = _unpickling_detail(str(exc))
        if "GLOBAL" not in detail:
            raise NasdetError(f"not a readable torch checkpoint ({detail})", file=path) from None
        raise NasdetError(
            "refused to load: the file holds objects outside nasdet's allowlist of safe "
            f"types ({detail})", file=path) from None
    except (RuntimeError, EOFError, ValueError, KeyError, OSError) as exc:
        detail = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        raise NasdetError(f"not a readable torch checkpoint ({detail}): truncated or corrupt?",
                          file=path) from None
    if not isinstance(ckpt, dict):
        raise NasdetError(f"expected a dict, found {type(ckpt).__name__}", file=path)
    if "state_dict" in ckpt:
        return ckpt
    if isinstance(ckpt.get("model"), dict):  # torchvision / timm training scripts
        return {**ckpt, "state_dict": ckpt["model"]}
    if ckpt and all(isinstance(v, torch.Tensor) for v in ckpt.values()):
        return {"state_dict": ckpt}
    raise NasdetError("no 'state_dict' (or 'model') entry in the checkpoint", file=path)


def check_state_dict_fits(
    model: torch.nn.Module, state_dict: dict[str, torch.Tensor], *, file: str | Path,
    strict: bool = False, min_matched: float = 0.5, max_mismatched: float = 0.1,
) -> list[str]:
    """Refuse a checkpoint of another architecture with one clear error.

    mmengine loads non-strictly and only logs mismatches, so a checkpoint of another
    detector would silently train from a half-random start. Two rules:

    * ``strict`` (resuming): every entry of the model must be in the checkpoint with
      the same shape;
    * otherwise (``load_from``, fine-tuning): at most ``max_mismatched`` of the entries
      both share may differ in shape, and at least ``min_matched`` of the model's
      elements must be covered by entries of the same name and shape. A few mismatched
      entries, e.g. a classifier for another number of classes, are returned so the
      caller can report them; mmengine skips them when loading.

    Args:
        model: The model the checkpoint is meant for.
        state_dict: The checkpoint's state dict (``module.`` prefixes allowed).
        file: The checkpoint path, for the message.
        strict: Resuming rule (see above).
        min_matched: Fraction of the model's elements that must match (non-strict rule).
        max_mismatched: Fraction of shared entries that may differ (non-strict rule).

    Returns:
        Keys present in both with different shapes (non-strict rule only).

    Raises:
        NasdetError: naming the first offending key and, for shapes, both shapes.
    """
    own = model.state_dict()
    sd = {k.removeprefix("module."): v for k, v in state_dict.items()}
    mismatched = [k for k in own if k in sd and tuple(own[k].shape) != tuple(sd[k].shape)]
    missing = [k for k in own if k not in sd]

    def shape_error(key: str) -> NasdetError:
        return NasdetError(
            f"checkpoint does not fit this model: shape {tuple(sd[key].shape)} in the "
            f"checkpoint vs {tuple(own[key].shape)} in the model (another architecture?)",
            file=file, key=key)

    if strict:
        if mismatched:
            raise shape_error(mismatched[0])
        if missing:
            raise NasdetError(
                f"checkpoint does not fit this model: {len(missing)}/{len(own)} of the model's "
                "entries are missing from it (another architecture?)", file=file, key=missing[0])
        return []
    shared = sum(1 for k in own if k in sd)
    if mismatched and len(mismatched) > max_mismatched * shared:
        raise shape_error(mismatched[0])
    total = sum(v.numel() for v in own.values())
    matched = sum(v.numel() for k, v in own.items() if k in sd and k not in mismatched)
    if total and matched / total < min_matched:
        raise NasdetError(
            f"checkpoint does not fit this model: it covers {matched / total:.0%} of the model's "
            f"weights (another architecture?)", file=file, key=missing[0] if missing else None)
    return mismatched


def load_weights(model: nn.Module, path: str | Path) -> dict[str, Any]:
    """Load a checkpoint into ``model``, refusing one of another architecture.

    The file is read with ``weights_only=True`` (see :mod:`nasdet.utils.checkpoint`)
    and must fit strictly: every entry of the model present with the same shape.
    Extra entries (e.g. EMA copies) are ignored.

    Args:
        model: The model to load into (in place).
        path: The checkpoint file.

    Returns:
        The checkpoint's ``meta`` dict (``{}`` if it has none).

    Raises:
        NasdetError: Missing/unreadable file, or a checkpoint that does not fit the model
            (naming the file and the first offending key).
    """
    ckpt = load_checkpoint_file(path)
    state = {k.removeprefix("module."): v for k, v in ckpt["state_dict"].items()}
    check_state_dict_fits(model, state, file=path, strict=True)
    own = model.state_dict()
    model.load_state_dict({k: state[k] for k in own}, strict=True)
    meta = ckpt.get("meta")
    return dict(meta) if isinstance(meta, dict) else {}


def is_url(checkpoint: str | Path) -> bool:
    """Whether ``checkpoint`` names a remote/zoo checkpoint (``torchvision://``, ``https://``)."""
    return "://" in str(checkpoint)


def read_state_dict(
    checkpoint: str | Path,
    *,
    prefix: str | None = None,
    key: str = "checkpoint",
    prefix_key: str | None = None,
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
        prefix_key: The option that named ``prefix`` (default: ``key``).
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
        try:
            state = load_checkpoint_file(checkpoint, map_location=map_location)["state_dict"]
        except NasdetError as exc:  # name the option that pointed at the file
            raise NasdetError(exc.message, file=exc.file or checkpoint,
                              key=exc.key or key) from None
    state = {k.removeprefix("module."): v for k, v in state.items() if isinstance(v, torch.Tensor)}
    if prefix:
        state = {k[len(prefix) :]: v for k, v in state.items() if k.startswith(prefix)}
        if not state:
            raise NasdetError(f"no key starts with prefix {prefix!r}", file=checkpoint,
                              key=prefix_key or key)
    return state
