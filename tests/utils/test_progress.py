"""The progress helper: a tqdm bar on a terminal, plain periodic lines elsewhere."""

from __future__ import annotations

import io
import re

import pytest

import nasdet.utils.progress as progress_module
from nasdet.utils.progress import LineProgress, progress

LINE = re.compile(r"^demo: (\d+)/(\d+) img \((\d+)%, (\d+) s, [0-9.e+]+ img/s(, .*)?\)$")


class FakeClock:
    """``time.monotonic`` that only moves when told to."""

    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture()
def clock(monkeypatch: pytest.MonkeyPatch) -> FakeClock:
    fake = FakeClock()
    monkeypatch.setattr(progress_module.time, "monotonic", fake)
    return fake


def test_not_a_terminal_gives_a_line_every_step_and_no_carriage_returns(monkeypatch, clock):
    err = io.StringIO()  # not a terminal: isatty() is False
    monkeypatch.setattr("sys.stderr", err)
    bar = progress(range(50), desc="demo", unit="img")
    assert isinstance(bar, LineProgress)
    for _ in bar:
        clock.now += 0.5  # 25 s in all: never the 30 s interval
    text = err.getvalue()
    assert "\r" not in text and text.endswith("\n")
    lines = text.splitlines()
    parsed = [LINE.match(line) for line in lines]
    assert all(parsed), lines
    # Every 10 % of 50 items: after 5, 10, ..., 50; the close adds nothing new.
    assert [int(m.group(1)) for m in parsed] == list(range(5, 51, 5))
    assert [int(m.group(3)) for m in parsed] == list(range(10, 101, 10))
    assert {int(m.group(2)) for m in parsed} == {50}
    # Elapsed seconds as the fake clock says: 2.5 s per 5 items.
    assert [int(m.group(4)) for m in parsed] == [round(2.5 * k) for k in range(1, 11)]


def test_interval_lines_without_a_total_and_a_last_line_on_close(clock):
    out = io.StringIO()
    with LineProgress(desc="demo", unit="img", file=out, interval_s=30.0) as bar:
        for _ in range(10):
            clock.now += 7.0  # a line whenever 30 s passed since the last one
            bar.update(3)
    lines = out.getvalue().splitlines()
    # Updates at 7, 14, ..., 70 s: lines at 35 s (15 items) and 70 s (30 items); the
    # close has nothing new to say.
    assert lines == ["demo: 15 img (35 s, 0.429 img/s)", "demo: 30 img (70 s, 0.429 img/s)"]


def test_close_writes_the_unfinished_count_once(clock):
    out = io.StringIO()
    bar = LineProgress(total=100, desc="demo", unit="img", file=out)
    bar.update(7)  # below the first 10 % step
    clock.now += 1.0
    bar.close()
    bar.close()
    assert out.getvalue() == "demo: 7/100 img (7%, 1 s, 7 img/s)\n"


def test_postfix_and_disable(clock):
    out = io.StringIO()
    bar = LineProgress(range(4), desc="demo", unit="img", file=out, step_percent=50)
    for i in bar:
        clock.now += 1.0
        bar.set_postfix(loss=f"{1.0 / (i + 1):.3f}")
    assert out.getvalue().splitlines() == [
        "demo: 2/4 img (50%, 2 s, 1 img/s, loss=0.500)",
        "demo: 4/4 img (100%, 4 s, 1 img/s, loss=0.250)",
    ]
    quiet = io.StringIO()
    for _ in progress(range(4), desc="demo", disable=True, file=quiet):
        pass
    assert quiet.getvalue() == ""


def test_a_terminal_gets_tqdm(monkeypatch):
    from tqdm import tqdm

    class Terminal(io.StringIO):
        def isatty(self) -> bool:
            return True

    monkeypatch.setattr("sys.stderr", Terminal())
    bar = progress(total=3, desc="demo", leave=False)
    try:
        assert isinstance(bar, tqdm)
    finally:
        bar.close()


def test_dataset_generation_writes_lines_to_a_log(tmp_path, capsys):
    """A call site: the synthetic dataset's progress, with stderr a capture (no tty)."""
    from nasdet.data import ensure_dataset

    ensure_dataset("detection", tmp_path / "det", num_classes=2, image_size=32, num_train=8,
                   num_val=2, scale_range=(8, 16), seed=0, progress=True)
    err = capsys.readouterr().err
    lines = [line for line in err.splitlines() if line.startswith("detection dataset det:")]
    assert "\r" not in err and lines, err
    assert lines[-1].startswith("detection dataset det: 10/10 img (100%")
