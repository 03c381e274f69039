"""Where the shipped configs, search spaces and checkpoints are, and paths that name them.

nasdet ships ``configs/``, ``search_spaces/`` and ``checkpoints/``. In a checkout they are
the repository's own directories; an installed wheel carries copies under
``nasdet/.mim/`` (MMDetection's convention for ``mmdet/.mim/configs``), laid out the
same way, so the relative paths between them (a space's ``base: ../configs/...``, a
search config's ``space: ../../search_spaces/...``) hold in both.

A path a user gives is found, in order:

- ``nasdet::REL``: the shipped ``<kind>/REL`` (``kind`` is ``configs``, ``search_spaces``
  or ``checkpoints``), else the shipped ``REL`` (``nasdet::search_spaces/x.yaml``);
- an absolute path: as it is;
- a relative path: next to the file that names it (``relative_to``), then in the
  working directory, then in the shipped tree (``configs/tiny_faster_rcnn_synth.py``
  works from any directory).

A path found nowhere comes back as the first place looked, so the caller's own
"not found" error names it.

Example:
    >>> from nasdet.utils.resources import data_root, resolve_path
    >>> resolve_path("nasdet::tiny_faster_rcnn_synth.py") == (
    ...     data_root() / "configs" / "tiny_faster_rcnn_synth.py")
    True
"""

from __future__ import annotations

from pathlib import Path

__all__ = ["KINDS", "PREFIX", "data_root", "given_or_shipped", "is_shipped_name", "resolve_path"]

#: The prefix that names a shipped file, as ``mmdet::`` names MMDetection's configs.
PREFIX = "nasdet::"

#: The shipped directories, each the root of ``nasdet::`` names of its kind.
KINDS = ("configs", "search_spaces", "checkpoints")

_PACKAGE = Path(__file__).resolve().parents[1]


def data_root() -> Path:
    """The directory holding the shipped ``configs/``, ``search_spaces/``, ``checkpoints/``.

    ``nasdet/.mim`` in an installed wheel; the repository root in a checkout (an
    editable install).
    """
    mim = _PACKAGE / ".mim"
    return mim if mim.is_dir() else _PACKAGE.parent


def is_shipped_name(path: str | Path) -> bool:
    """Whether ``path`` is written ``nasdet::REL``."""
    return str(path).startswith(PREFIX)


def resolve_path(
    path: str | Path, *, kind: str = "configs", relative_to: str | Path | None = None
) -> Path:
    """The file ``path`` names (see the module docstring for the order).

    Args:
        path: ``nasdet::REL``, an absolute path or a relative one.
        kind: Which shipped directory a ``nasdet::`` name starts in: one of
            :data:`KINDS`.
        relative_to: The directory of the file that names ``path`` (a search config
            naming its space), searched first.

    Returns:
        The first existing candidate, else the first candidate (for the caller's error).
    """
    if kind not in KINDS:
        raise ValueError(f"kind must be one of {KINDS}, got {kind!r}")
    text = str(path)
    root = data_root()
    if is_shipped_name(text):
        rel = text[len(PREFIX):].lstrip("/")
        tried = [root / kind / rel, root / rel]
    elif Path(text).is_absolute():
        return Path(text)
    else:
        tried = [Path(relative_to) / text] if relative_to is not None else []
        tried += [Path(text), root / text]
    return next((p for p in tried if p.is_file()), tried[0])


def given_or_shipped(path: str, *, kind: str = "configs") -> str:
    """``path`` itself when it is a file here, else the shipped file it names (if any).

    For command-line arguments that are passed on as text: a path that exists is
    passed on exactly as the user wrote it.

    Args:
        path: A command-line path argument.
        kind: As for :func:`resolve_path`.
    """
    if not is_shipped_name(path) and Path(path).is_file():
        return path
    found = resolve_path(path, kind=kind)
    return str(found) if found.is_file() else path
