"""Progress that stays readable in a log file: a tqdm bar on a terminal, lines elsewhere.

A tqdm bar redraws itself with carriage returns, which a log file keeps as one long
line of every redraw. :func:`progress` returns tqdm when ``sys.stderr`` is a terminal
and otherwise a :class:`LineProgress`, which writes one plain line every
``step_percent`` percent of ``total`` and at least every ``interval_s`` seconds, and a
last line when it closes. Both have tqdm's ``update``, ``set_postfix``, ``close``,
iteration and ``with`` (the subset nasdet uses).

Example:
    >>> import io
    >>> out = io.StringIO()
    >>> for _ in progress(range(4), desc="demo", unit="img", file=out, step_percent=50):
    ...     pass
    >>> [line.split(" (")[0] for line in out.getvalue().splitlines()]
    ['demo: 2/4 img', 'demo: 4/4 img']
"""

from __future__ import annotations

import sys
import time
from collections.abc import Iterable, Iterator
from typing import Any, TextIO


class LineProgress:
    """Periodic progress lines (no carriage returns), with tqdm's call shape.

    Args:
        iterable: Items to iterate over (optional: ``update`` counts otherwise).
        total: Number of items expected (default ``len(iterable)`` where it has one).
        desc: Label at the start of every line.
        unit: Name of one item.
        disable: Write nothing.
        file: Stream written to (default ``sys.stderr`` at creation).
        step_percent: A line each time progress crosses a multiple of this percentage.
        interval_s: A line at the latest this many seconds after the previous one.
    """

    def __init__(self, iterable: Iterable[Any] | None = None, total: float | None = None,
                 desc: str = "", *, unit: str = "it", disable: bool = False,
                 file: TextIO | None = None, step_percent: float = 10.0,
                 interval_s: float = 30.0):
        if total is None and iterable is not None and hasattr(iterable, "__len__"):
            total = len(iterable)  # type: ignore[arg-type]
        self.iterable = iterable
        self.total = total
        self.desc = desc
        self.unit = unit
        self.disable = disable
        self.file = file if file is not None else sys.stderr
        self.step_percent = float(step_percent)
        self.interval_s = float(interval_s)
        self.n = 0
        self.postfix = ""
        self._start = self._last_time = time.monotonic()
        self._last_step = 0
        self._written_n = 0
        self._closed = False

    def __iter__(self) -> Iterator[Any]:
        if self.iterable is None:
            raise TypeError("LineProgress without an iterable: call update() instead")
        try:
            for item in self.iterable:
                yield item
                self.update(1)
        finally:
            self.close()

    def __enter__(self) -> LineProgress:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __len__(self) -> int:
        return int(self.total) if self.total is not None else 0

    def update(self, n: float = 1) -> None:
        """Count ``n`` more items; write a line when a step or the interval is reached."""
        self.n += n
        if self.disable:
            return
        now = time.monotonic()
        step = self._step()
        if step > self._last_step or now - self._last_time >= self.interval_s:
            self._write(now)
            self._last_step = step

    def set_postfix(self, ordered_dict: dict[str, Any] | None = None, refresh: bool = True,
                    **kwargs: Any) -> None:
        """Values appended to the next lines, e.g. ``loss=0.31`` (as tqdm's)."""
        values = {**(ordered_dict or {}), **kwargs}
        self.postfix = ", ".join(f"{k}={v}" for k, v in values.items())

    def close(self) -> None:
        """Write the last line (if anything happened since the previous one)."""
        if self._closed:
            return
        self._closed = True
        if not self.disable and self.n != self._written_n:
            self._write(time.monotonic())

    def _step(self) -> int:
        if not self.total or self.step_percent <= 0:
            return 0
        return int(100.0 * self.n / self.total // self.step_percent)

    def _write(self, now: float) -> None:
        elapsed = now - self._start
        count = f"{self.n:g}/{self.total:g}" if self.total else f"{self.n:g}"
        percent = f"{100.0 * self.n / self.total:.0f}%, " if self.total else ""
        rate = f", {self.n / elapsed:.3g} {self.unit}/s" if elapsed > 0 else ""
        extra = f", {self.postfix}" if self.postfix else ""
        label = f"{self.desc}: " if self.desc else ""
        self.file.write(f"{label}{count} {self.unit} ({percent}{elapsed:.0f} s{rate}{extra})\n")
        self.file.flush()
        self._last_time = now
        self._written_n = self.n


def progress(iterable: Iterable[Any] | None = None, total: float | None = None,
             desc: str = "", *, unit: str = "it", disable: bool = False, leave: bool = True,
             file: TextIO | None = None, step_percent: float = 10.0,
             interval_s: float = 30.0) -> Any:
    """A tqdm bar when ``sys.stderr`` is a terminal, else a :class:`LineProgress`.

    Args:
        iterable: Items to iterate over (or None and call ``update``).
        total: Number of items expected.
        desc: Label.
        unit: Name of one item.
        disable: Show nothing.
        leave: Keep the finished bar on the terminal (tqdm only).
        file: Stream for the lines (default ``sys.stderr``); a stream that is not
            ``sys.stderr`` always gets lines.
        step_percent: Lines: one per this many percent of ``total``.
        interval_s: Lines: at the latest one per this many seconds.

    Returns:
        An object with tqdm's ``update``, ``set_postfix``, ``close``, iteration and
        ``with``.
    """
    if file is None and _is_terminal(sys.stderr):
        from tqdm import tqdm

        return tqdm(iterable, total=total, desc=desc, unit=unit, disable=disable, leave=leave)
    return LineProgress(iterable, total, desc, unit=unit, disable=disable, file=file,
                        step_percent=step_percent, interval_s=interval_s)


def _is_terminal(stream: Any) -> bool:
    try:
        return bool(stream.isatty())
    except (AttributeError, ValueError):  # no isatty, or a closed stream
        return False
