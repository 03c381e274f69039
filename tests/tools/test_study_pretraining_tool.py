"""tools/study_pretraining.py: bad input is one error line, before anything trains."""

from __future__ import annotations

from nasdet.cli import run_tool
from tests.conftest import CONFIGS, load_tool


def test_bad_input_is_one_error_line(tmp_path, capsys):
    tool = load_tool("study_pretraining")
    work = tmp_path / "study"
    assert run_tool(tool.main, ["--seeds", "0", "0", "--work-dir", str(work)]) == 2
    assert "--seeds" in capsys.readouterr().err
    assert run_tool(tool.main, ["--i-config", str(tmp_path / "none.py"),
                                "--work-dir", str(work)]) == 2
    assert "config file not found" in capsys.readouterr().err
    # An S config that declares no scratch strategy is refused by name.
    assert run_tool(tool.main, ["--s-config", str(CONFIGS / "tiny_faster_rcnn_synth.py"),
                                "--work-dir", str(work)]) == 2
    err = capsys.readouterr().err
    assert "--s-config" in err and "scratch" in err
    assert not (work / "runs").exists()
