"""Pre-flight checks: fail before a Runner is built, with one clear message."""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

from mmengine.config import Config

from nasdet.errors import NasdetError
from nasdet.models.utils.build import register_detection_modules, unexpected_argument


def check_loops(cfg: Config) -> None:
    """``train_cfg``, ``val_cfg`` and ``test_cfg`` must hold only their loop's arguments.

    mmengine builds the loops when training or testing starts, so a misspelt key
    (``--cfg-options train_cfg.max_epoch=2``) would fail after the work dir and its
    log were made; this finds it before.

    Args:
        cfg: The config.

    Raises:
        NasdetError: naming the config file and the dotted key of the first unknown
            argument (or unknown loop ``type``).
    """
    from mmdet.registry import LOOPS  # mmdet's own loops, and mmengine's through its parent
    from mmengine.runner import (
        EpochBasedTrainLoop,
        IterBasedTrainLoop,
        TestLoop,
        ValLoop,
    )

    register_detection_modules()
    default = {"val_cfg": ValLoop, "test_cfg": TestLoop}
    for name in ("train_cfg", "val_cfg", "test_cfg"):
        loop = cfg.get(name)
        if not isinstance(loop, dict):
            continue
        keys = [k for k in loop if k not in ("type", "by_epoch")]
        if "type" in loop:
            t = loop["type"]
            cls = t if isinstance(t, type) else LOOPS.get(t)
            if cls is None:
                raise NasdetError(f"unknown loop type {t!r}: not registered in mmengine, "
                                  "mmdet or nasdet", file=cfg.filename, key=f"{name}.type")
        elif name == "train_cfg":
            cls = EpochBasedTrainLoop if loop.get("by_epoch", True) else IterBasedTrainLoop
        else:
            cls = default[name]
        bad = unexpected_argument(cls, keys)
        if bad:
            raise NasdetError(f"{cls.__name__} takes no argument '{bad[0]}'{bad[1]}",
                              file=cfg.filename, key=f"{name}.{bad[0]}")


def check_work_dir(work_dir: str | Path) -> Path:
    """Prove ``work_dir`` can be created and written, leaving nothing behind.

    The directory itself is not created (the Runner creates it once every check has
    passed): see :func:`check_output_dir`.

    Raises:
        NasdetError: naming the directory and ``--work-dir``.
    """
    return check_output_dir(work_dir, key="--work-dir", what="work dir")


def check_output_dir(path: str | Path, *, key: str, what: str = "output directory") -> Path:
    """Prove a directory can be created and written, without creating it.

    A file is created and removed in ``path`` if it exists, else in its nearest
    existing parent, so a failed run leaves no empty directory behind.

    Args:
        path: The directory.
        key: The option naming it (``--work-dir``, ``--out``), for the message.
        what: What the directory is, for the message.

    Returns:
        ``path`` as a path.

    Raises:
        NasdetError: naming the directory and ``key``: it, or a parent, is a file, or
            it is not writable.
    """
    path = Path(path)
    existing = path
    while not existing.exists() and existing != existing.parent:
        existing = existing.parent
    if not existing.is_dir():
        where = "it is" if existing == path else f"{existing} is"
        raise NasdetError(f"{what} cannot be created: {where} a file, not a directory",
                          file=path, key=key)
    try:
        fd, probe = tempfile.mkstemp(prefix=".write-test-", dir=existing)
        os.close(fd)
        os.unlink(probe)
    except OSError as exc:
        where = "" if existing == path else f" (in {existing})"
        raise NasdetError(f"{what} is not writable{where}: {exc.strerror or exc}", file=path,
                          key=key) from None
    return path


