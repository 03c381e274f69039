"""tools/analyze_spectrum.py run in-process: outputs, printed table, one-line errors."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import pytest
import torch
from mmdet.models.necks import FPN
from mmdet.registry import MODELS
from torch import nn

from nasdet.cli import run_tool
from tests.conftest import REPO, shrink_config

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def _load_tool():
    spec = importlib.util.spec_from_file_location(
        "analyze_spectrum_tool", REPO / "tools" / "analyze_spectrum.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


TOOL = _load_tool()


class _Gate(nn.Module):
    """Returns one number per image: an output without a channel dimension."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x.mean(dim=(1, 2, 3))


@MODELS.register_module(name="_GatedFPNForSpectrumTests", force=True)
class _GatedFPN(FPN):
    """An FPN that also computes a per-image gate (never used for its outputs)."""

    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.gate = _Gate()

    def forward(self, inputs):
        self.gate(inputs[0])
        return super().forward(inputs)


@pytest.fixture(scope="module")
def setup(tiny_det_root: Path, tmp_path_factory: pytest.TempPathFactory):
    """A config file for the tiny detector and a perturbed copy of its initial weights."""
    from nasdet.models.utils.build import build_detector

    tmp = tmp_path_factory.mktemp("tool")
    cfg = shrink_config("tiny_faster_rcnn_synth.py", tiny_det_root, tmp / "work")
    cfg_file = tmp / "tiny.py"
    cfg.dump(str(cfg_file))
    state = build_detector(cfg, seed=0).state_dict()
    g = torch.Generator().manual_seed(1)
    # Conv kernels moved by half their spread (BN statistics left alone).
    perturbed = {k: v + 0.5 * v.std() * torch.randn(v.shape, generator=g) if v.ndim == 4 else v
                 for k, v in state.items()}
    ckpt = tmp / "perturbed.pth"
    torch.save({"state_dict": perturbed, "meta": {"epoch": 3}}, ckpt)
    return cfg_file, ckpt, tmp


def _run(argv: list[str], capsys) -> tuple[int, str, str]:
    rc = run_tool(TOOL.main, [*argv, "--no-progress"])
    captured = capsys.readouterr()
    return rc, captured.out, captured.err


def test_two_checkpoints_write_json_pngs_and_table(setup, capsys) -> None:
    cfg_file, ckpt, tmp = setup
    out = tmp / "out"
    rc, stdout, stderr = _run([str(cfg_file), "init", str(ckpt), "--layers", "backbone_stages",
                               "fpn", "--num-images", "4", "--batch-size", "2", "--labels",
                               "S (scratch)", "P (perturbed)", "--out", str(out)], capsys)
    assert rc == 0, stderr
    res = json.loads((out / "spectrum.json").read_text())
    for name in ("eigenspectra.png", "id_per_layer.png", "id_per_width.png"):
        assert (out / name).read_bytes()[:8] == PNG_MAGIC
    assert [r["label"] for r in res["checkpoints"]] == ["S (scratch)", "P (perturbed)"]
    assert res["checkpoints"][0]["checkpoint"] is None
    assert res["checkpoints"][1]["checkpoint_epoch"] == 3
    assert res["meta"]["num_images"] == 4 and "units" in res["meta"]
    # Every layer x checkpoint is a row of the printed table with the JSON's numbers.
    rows = [line for line in stdout.splitlines() if "(scratch)" in line or "(perturbed)" in line]
    names = list(res["checkpoints"][0]["layers"])
    assert len(rows) == 2 * len(names) == 18
    for i, name in enumerate(names):
        for j, run in enumerate(res["checkpoints"]):
            cells = rows[2 * i + j].split()
            if j == 0:
                assert cells.pop(0) == name
            layer = run["layers"][name]
            assert cells[2] == str(layer["channels"])
            assert cells[3].rstrip("*") == str(layer["count"])
            assert cells[4] == f"{layer['measures']['id_dof']:.2f}"
            assert cells[5] == f"{layer['measures']['id_per_width']:.3f}"
    # The perturbed weights give other spectra.
    a, b = (r["layers"]["neck.0"]["eigenvalues"] for r in res["checkpoints"])
    assert a != b
    assert str(out / "spectrum.json") in stdout


def test_no_checkpoint_means_init_and_absolute_lambda(setup, capsys) -> None:
    cfg_file, _, tmp = setup
    rc, stdout, stderr = _run([str(cfg_file), "--layers", "backbone.layer2", "--num-images",
                               "2", "--lam", "0.01", "--out", str(tmp / "init")], capsys)
    assert rc == 0, stderr
    res = json.loads((tmp / "init" / "spectrum.json").read_text())
    assert [r["label"] for r in res["checkpoints"]] == ["init"]
    layer = res["checkpoints"][0]["layers"]["backbone.layer2"]
    assert layer["measures"]["dof_lambda"] == 0.01
    mu = layer["eigenvalues"]
    assert layer["measures"]["id_dof"] == pytest.approx(sum(m / (m + 0.01) for m in mu))
    assert "absolute" in res["meta"]["lambda_rule"] and "absolute" in stdout


def test_pattern_matching_no_layer(setup, capsys) -> None:
    cfg_file, _, tmp = setup
    rc, stdout, stderr = _run([str(cfg_file), "--layers", "fpn", "neck.nothing_here",
                               "--num-images", "1", "--out", str(tmp / "x")], capsys)
    assert rc == 2 and stdout == ""
    assert len(stderr.strip().splitlines()) == 1
    assert "pattern 'neck.nothing_here' matches no module" in stderr
    assert "backbone.conv1" in stderr  # some names that exist
    assert not (tmp / "x").exists()  # nothing half-written


def test_layer_without_channel_dimension(setup, capsys) -> None:
    cfg_file, _, tmp = setup
    rc, _, stderr = _run([str(cfg_file), "--layers", "neck.gate", "--num-images", "1",
                          "--cfg-options", "model.neck.type=_GatedFPNForSpectrumTests",
                          "--out", str(tmp / "gate")], capsys)
    assert rc == 2
    assert len(stderr.strip().splitlines()) == 1
    assert "neck.gate: output has shape (1,): no channel dimension" in stderr
    assert not (tmp / "gate").exists()


def test_checkpoint_that_does_not_fit(setup, capsys) -> None:
    cfg_file, ckpt, tmp = setup
    state = torch.load(ckpt, weights_only=True)["state_dict"]
    state["neck.fpn_convs.0.conv.weight"] = torch.zeros(32, 64, 3, 3)
    bad = tmp / "narrow.pth"
    torch.save({"state_dict": state}, bad)
    rc, _, stderr = _run([str(cfg_file), str(bad), "--layers", "fpn", "--num-images", "1",
                          "--out", str(tmp / "bad")], capsys)
    assert rc == 2
    assert len(stderr.strip().splitlines()) == 1
    assert f"{bad}: neck.fpn_convs.0.conv.weight: checkpoint does not fit" in stderr
    assert "(32, 64, 3, 3)" in stderr


def test_label_count_must_match(setup, capsys) -> None:
    cfg_file, ckpt, _ = setup
    rc, _, stderr = _run([str(cfg_file), str(ckpt), "--layers", "fpn", "--num-images", "1",
                          "--labels", "a", "b"], capsys)
    assert rc == 2 and "--labels" in stderr and "2 labels for 1 checkpoints" in stderr
