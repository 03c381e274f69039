"""tools/sample_space.py: the table, the dumped configs, one-line errors."""

from __future__ import annotations

import json

import pytest
from mmengine.config import Config

from nasdet.cli import run_tool
from nasdet.space import SearchSpace
from tests.conftest import load_tool
from tests.space.conftest import SPACES


@pytest.fixture(scope="module")
def tool():
    return load_tool("sample_space")


def test_samples_table_and_standalone_configs(tool, tmp_path, capsys):
    space_file = SPACES / "tiny_retinanet_synth.yaml"
    out = tmp_path / "samples"
    assert (
        run_tool(tool.main, [str(space_file), "--num", "3", "--seed", "2", "--out", str(out)]) == 0
    )
    text = capsys.readouterr().out
    assert "space tiny_retinanet_synth: 3 candidates" in text
    assert "input 128x128" in text
    data = json.loads((out / "candidates.json").read_text())
    assert data["input_size"] == [128, 128] and len(data["candidates"]) == 3
    space = SearchSpace.from_yaml(space_file)
    for row in data["candidates"]:
        cand = space.candidate(row["params"])
        assert row["key"] == cand.key
        c = cand.complexity()
        assert (row["num_params"], row["macs"]) == (c.params, c.macs)
        line = next(ln for ln in text.splitlines() if ln.startswith(cand.key))
        budget = "ok" if row["within_budget"] else "over"
        assert line.split()[1:4] == [budget, f"{c.params / 1e6:.3f}", f"{c.macs / 1e9:.3f}"]
        dumped = Config.fromfile(row["config"])
        assert dumped.model.to_dict() == cand.to_config().model.to_dict()
    assert sorted(p.name for p in out.iterdir()) == sorted(
        [f"{r['key']}.py" for r in data["candidates"]] + ["candidates.json"]
    )
    # the same seed gives the same candidates
    assert (
        run_tool(tool.main, [str(space_file), "--num", "3", "--seed", "2", "--no-complexity"]) == 0
    )
    again = capsys.readouterr().out
    assert [ln.split()[0] for ln in again.splitlines()[2:]] == [
        r["key"] for r in data["candidates"]
    ]


def test_user_errors_are_one_line(tool, tmp_path, capsys):
    bad = tmp_path / "bad.yaml"
    bad.write_text(
        "base: configs/tiny_retinanet_synth.py\ninput_size: 128\n"
        "dimensions:\n  w:\n    target: neck.out_channels\n    choices: [30]\n"
    )
    assert run_tool(tool.main, [str(bad)]) == 2
    err = capsys.readouterr().err.strip()
    assert err == (
        f"error: {bad}: dimensions.w.choices: width 30 is not a multiple of the divisor 8"
    )


def test_missing_transfer_checkpoint_is_reported(tool, tmp_path, capsys):
    missing = tmp_path / "missing.pth"
    code = run_tool(
        tool.main,
        [
            str(SPACES / "tiny_synth.yaml"),
            "--num",
            "6",
            "--no-complexity",
            "--out",
            str(tmp_path / "o"),
            "--checkpoint",
            str(missing),
        ],
    )
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and len(err) == 1
    assert err[0].startswith(f"error: {SPACES / 'tiny_synth.yaml'}: dimensions.transfer: ")
    assert "checkpoint file not found" in err[0]
