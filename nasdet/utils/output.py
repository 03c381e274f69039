"""Where library chatter goes: a log file, while the terminal keeps nasdet's own lines."""

from __future__ import annotations

import contextlib
import io
import logging
import os
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any, TextIO


class _Forward(io.TextIOBase):
    """``sys.stdout``/``sys.stderr`` while redirected: writes go to the log file.

    Once the redirection ends it forwards to the stream it replaced, so a logging
    handler created inside the block (mmengine's logger keeps ``sys.stdout``) never
    writes to a closed file afterwards.
    """

    def __init__(self, log: TextIO, after: TextIO):
        super().__init__()
        self._log: TextIO | None = log
        self._after = after

    @property
    def target(self) -> TextIO:
        return self._log if self._log is not None else self._after

    def end(self) -> None:
        self._log = None

    def write(self, text: str) -> int:
        return self.target.write(text)

    def flush(self) -> None:
        with contextlib.suppress(ValueError, OSError):
            self.target.flush()

    def fileno(self) -> int:
        return self.target.fileno()

    def isatty(self) -> bool:
        with contextlib.suppress(ValueError, OSError, AttributeError):
            return bool(self.target.isatty())
        return False

    def writable(self) -> bool:
        return True

    @property
    def encoding(self) -> str:  # type: ignore[override]
        return getattr(self.target, "encoding", None) or "utf-8"

    def __getattr__(self, name: str) -> Any:
        return getattr(self.target, name)


def _fd_of(stream: Any) -> int | None:
    try:
        return int(stream.fileno())
    except (AttributeError, ValueError, OSError, io.UnsupportedOperation):
        return None


def _flush_all(*streams: Any) -> None:
    for stream in streams:
        with contextlib.suppress(AttributeError, ValueError, OSError):
            stream.flush()
    with contextlib.suppress(Exception):  # C extensions' stdio buffers (printf)
        import ctypes

        ctypes.CDLL(None).fflush(None)


def _stream_handlers() -> list[logging.StreamHandler]:
    loggers = [logging.getLogger(), *(lg for lg in logging.Logger.manager.loggerDict.values()
                                      if isinstance(lg, logging.Logger))]
    return [h for lg in loggers for h in lg.handlers
            if isinstance(h, logging.StreamHandler) and not isinstance(h, logging.FileHandler)]


@contextlib.contextmanager
def output_to(path: str | Path) -> Iterator[TextIO]:
    """Send this process's stdout and stderr to ``path`` for the block.

    pycocotools, mmengine and C extensions print straight to the file descriptors, so
    ``contextlib.redirect_stdout`` alone misses them: descriptors 1 and 2 are pointed
    at the file. ``sys.stdout``/``sys.stderr`` (hence ``print``, ``warnings``) and the
    ``logging`` handlers that write to them (Optuna's, mmengine's) go there too, also
    where those streams are not the descriptors (a notebook, a test's capture).
    Yields a stream to the original stdout for the caller's own lines.

    Args:
        path: Log file, appended to (its folder is created).

    Example:
        >>> import tempfile
        >>> log = Path(tempfile.mkdtemp()) / "run.log"
        >>> with output_to(log) as terminal:
        ...     print("chatter")
        >>> log.read_text()
        'chatter\\n'
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    old_out, old_err = sys.stdout, sys.stderr
    _flush_all(old_out, old_err)
    saved_out, saved_err = os.dup(1), os.dup(2)
    own_terminal = _fd_of(old_out) == 1 or old_out is None
    terminal: TextIO = (os.fdopen(os.dup(saved_out), "w", buffering=1) if own_terminal
                        else old_out)
    handlers = [(h, h.stream) for h in _stream_handlers()
                if h.stream is not None and h.stream in (old_out, old_err, sys.__stdout__,
                                                         sys.__stderr__)]
    with open(path, "a", buffering=1) as log:
        out = _Forward(log, old_out)
        err = _Forward(log, old_err)
        os.dup2(log.fileno(), 1)
        os.dup2(log.fileno(), 2)
        sys.stdout, sys.stderr = out, err
        for handler, stream in handlers:
            handler.setStream(err if stream in (old_err, sys.__stderr__) else out)
        try:
            yield terminal
        finally:
            _flush_all(out, err, sys.stdout, sys.stderr)
            for handler, stream in handlers:
                if handler.stream in (out, err):
                    handler.setStream(stream)
            if sys.stdout is out:
                sys.stdout = old_out
            if sys.stderr is err:
                sys.stderr = old_err
            out.end()
            err.end()
            os.dup2(saved_out, 1)
            os.dup2(saved_err, 2)
            os.close(saved_out)
            os.close(saved_err)
            if own_terminal:
                terminal.close()
            else:
                _flush_all(terminal)


@contextlib.contextmanager
def output_to_folder_log(folder: str | Path, name: str) -> Iterator[TextIO]:
    """:func:`output_to` a temporary file, appended to ``folder/name`` when the block ends.

    Appended only if ``folder`` exists by then: a check that fails before anything
    created the folder (e.g. a work dir) leaves nothing behind.

    Args:
        folder: The folder the log belongs in (not created here).
        name: The log's file name inside ``folder``.
    """
    import shutil
    import tempfile

    fd, tmp = tempfile.mkstemp(suffix=".log", prefix="nasdet-")
    os.close(fd)
    try:
        with output_to(tmp) as terminal:
            yield terminal
    finally:
        folder = Path(folder)
        if folder.is_dir() and os.path.getsize(tmp):
            with open(tmp, "rb") as src, open(folder / name, "ab") as dst:
                shutil.copyfileobj(src, dst)
        os.unlink(tmp)


@contextlib.contextmanager
def quiet_init_logs() -> Iterator[None]:
    """Silence mmengine's per-parameter init log and pycocotools' index messages."""
    from mmengine.logging import MMLogger

    logger = MMLogger.get_current_instance()
    level = logger.level
    logger.setLevel(logging.WARNING)
    try:
        with contextlib.redirect_stdout(io.StringIO()):
            yield
    finally:
        logger.setLevel(level)
