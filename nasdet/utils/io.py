"""Atomic writes: a killed process never leaves a half-written result file."""

from __future__ import annotations

import hashlib
import json
import os
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any


def atomic_write(path: str | Path, write: Callable[[Path], None]) -> Path:
    """Write ``path`` through ``write(tmp_path)`` and rename it into place.

    The temporary file lives in the same directory, so the final ``os.replace`` is
    atomic on POSIX file systems.

    Args:
        path: Destination file.
        write: Callable that writes the complete content to the path it is given.

    Returns:
        The destination path.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    try:
        write(Path(tmp))
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path


def atomic_write_text(path: str | Path, text: str) -> Path:
    """Atomically write ``text`` to ``path`` (UTF-8)."""
    return atomic_write(path, lambda p: p.write_text(text, encoding="utf-8"))


def atomic_write_json(path: str | Path, obj: Any, *, indent: int = 2) -> Path:
    """Atomically write ``obj`` as JSON to ``path``."""
    text = json.dumps(obj, indent=indent, sort_keys=False, default=_json_default) + "\n"
    return atomic_write_text(path, text)


def _json_default(obj: Any) -> Any:
    # NumPy / torch scalars and arrays appear in measurements; store plain numbers.
    if hasattr(obj, "tolist"):
        return obj.tolist()
    if isinstance(obj, Path):
        return str(obj)
    raise TypeError(f"not JSON serialisable: {type(obj).__name__}")


def read_yaml(path: str | Path) -> Any:
    """``yaml.safe_load`` of a file; a broken file is one clear error naming it.

    Raises:
        NasdetError: not UTF-8, not valid YAML (with line and column), or a tag such as
            ``!!python/object`` (safe loading refuses them: plain data only).
    """
    import yaml

    from nasdet.errors import NasdetError

    path = Path(path)
    try:
        return yaml.safe_load(path.read_text(encoding="utf-8"))
    except UnicodeDecodeError:
        raise NasdetError("not a YAML text file (not UTF-8)", file=path) from None
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark else ""
        problem = str(getattr(exc, "problem", None) or exc).splitlines()[0]
        if "constructor for the tag '" in problem:
            tag = problem.split("'")[1].replace("tag:yaml.org,2002:", "!!")
            message = (f"YAML tag {tag}{where}: tags like !!python/... are not allowed "
                       "(plain values, lists and mappings only)")
        else:
            ctx, cmark = getattr(exc, "context", None), getattr(exc, "context_mark", None)
            ctx = f" ({ctx} from line {cmark.line + 1})" if ctx and cmark else ""
            message = f"not valid YAML{where}: {problem}{ctx}"
        raise NasdetError(message, file=path) from None


def sha256_of(file: str | Path) -> str:
    """The SHA-256 of a file's bytes, as hex."""
    digest = hashlib.sha256()
    with open(file, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()
