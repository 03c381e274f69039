"""EigenspectrumHook during tiny trainings, classify_dynamics on hand-made sequences."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp
from torch import nn

from nasdet.errors import NasdetError
from nasdet.hooks import EigenspectrumHook, classify_dynamics
from tests.conftest import shrink_config

LAYERS = ["backbone_stages", "fpn"]
ENTRY_NAMES = [f"backbone.layer{i}" for i in range(1, 5)] + [f"neck.{i}" for i in range(5)]
ITERS_PER_EPOCH = 4  # 16 train images, batch size 4


# ----------------------------------------------------------------------------- dynamics
@pytest.mark.parametrize(
    ("values", "drop", "rebound", "dropping", "rebounding"),
    [
        # fell by 25% of the start, then came back 12.5% of the start
        ([40.0, 30.0, 35.0], 0.25, 0.125, True, True),
        # fell by 25%, recovered only 2.5% (< 5%)
        ([40.0, 30.0, 31.0], 0.25, 0.025, True, False),
        # fell by 5% only: not dropping, so not rebounding either
        ([40.0, 38.0, 40.0], 0.05, 0.05, False, False),
        # grows: no drop; a rise without a drop is no rebound
        ([10.0, 20.0, 30.0], 0.0, 2.0, False, False),
        # minimum reached twice: the first one counts, the latest value is the minimum
        ([10.0, 8.0, 9.0, 8.0], 0.2, 0.0, True, False),
        # still falling
        ([50.0, 45.0, 40.0], 0.2, 0.0, True, False),
    ],
)
def test_classify_dynamics(values, drop, rebound, dropping, rebounding) -> None:
    out = classify_dynamics(values, drop_threshold=0.1, rebound_threshold=0.05)
    assert out["drop"] == pytest.approx(drop)
    assert out["rebound"] == pytest.approx(rebound)
    assert (out["dropping"], out["rebounding"]) == (dropping, rebounding)
    assert out["start"] == values[0] and out["last"] == values[-1]
    assert out["min"] == min(values) and values.index(out["min"]) == out["min_index"]


def test_classify_dynamics_edges() -> None:
    # Exactly at the threshold is not beyond it: (10 - 9) / 10 == 0.1.
    assert not classify_dynamics([10.0, 9.0], 0.1, 0.05)["dropping"]
    assert classify_dynamics([10.0, 8.99], 0.1, 0.05)["dropping"]
    for values in ([], [5.0], [0.0, 0.0, 3.0]):
        out = classify_dynamics(values, 0.1, 0.05)
        assert (out["drop"], out["rebound"], out["dropping"], out["rebounding"]) == \
            (0.0, 0.0, False, False)
    assert classify_dynamics([], 0.1, 0.05)["start"] is None
    with pytest.raises(NasdetError, match="thresholds"):
        classify_dynamics([1.0, 2.0], -0.1, 0.05)


def test_hook_arguments_are_checked() -> None:
    with pytest.raises(NasdetError, match="EigenspectrumHook.interval"):
        EigenspectrumHook(interval=0)
    with pytest.raises(NasdetError, match="EigenspectrumHook.num_images"):
        EigenspectrumHook(num_images=0)


# ----------------------------------------------------------------------------- training
def _hook_cfg(**kw) -> dict:
    return {"type": "EigenspectrumHook", "layers": LAYERS, "num_images": 8, "batch_size": 4,
            **kw}


def _scalars(work: Path) -> list[dict]:
    files = sorted(work.glob("*/vis_data/scalars.json"))
    assert files, "no scalars.json"
    rows = []
    for f in files:
        rows += [json.loads(line) for line in f.read_text().splitlines() if line.strip()]
    return rows


def _hooks() -> list[dict]:
    """One hook per epoch on backbone + FPN, one every 3 iterations on the FPN only."""
    return [_hook_cfg(interval=1, by_epoch=True),
            _hook_cfg(interval=3, by_epoch=False, layers=["fpn"], save_eigenvalues=True,
                      history_file="iter_history.json", plot_file=None)]


@pytest.fixture(scope="module")
def two_epochs(tiny_det_root: Path, tmp_path_factory: pytest.TempPathFactory):
    """2 epochs of the tiny Faster R-CNN with both hooks of :func:`_hooks`."""
    from nasdet.train import build_runner

    work = tmp_path_factory.mktemp("hook_epochs")
    cfg = shrink_config("tiny_faster_rcnn_synth.py", tiny_det_root, work, epochs=2,
                        custom_hooks=_hooks())
    build_runner(cfg).train()
    history = json.loads((work / "eigenspectrum_history.json").read_text())
    iter_history = json.loads((work / "iter_history.json").read_text())
    return cfg, work, history, iter_history


def test_history_has_start_and_every_epoch(two_epochs) -> None:
    _, work, history, _ = two_epochs
    entries = history["entries"]
    assert [e["iteration"] for e in entries] == [0, ITERS_PER_EPOCH, 2 * ITERS_PER_EPOCH]
    assert [e["epoch"] for e in entries] == [0, 1, 2]
    for entry in entries:
        assert list(entry["layers"]) == ENTRY_NAMES
        for rec in entry["layers"].values():
            assert 0 < rec["id"] <= rec["channels"]
            assert rec["id_per_width"] == pytest.approx(rec["id"] / rec["channels"])
            assert "eigenvalues" not in rec
    # 8 val images of 64 px: layer1 at stride 4 has 16 x 16 positions per image.
    assert entries[0]["layers"]["backbone.layer1"]["count"] == 8 * 16 * 16
    # Training changed the spectra.
    assert entries[0]["layers"]["neck.0"]["id"] != entries[-1]["layers"]["neck.0"]["id"]
    for name in ENTRY_NAMES:
        values = [e["layers"][name]["id"] for e in entries]
        assert history["dynamics"][name] == classify_dynamics(values, 0.1, 0.05)
    assert "N(lambda)" in history["meta"]["units"]["id"]
    assert (work / "eigenspectrum_dynamics.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    # The second hook (plot_file=None) drew nothing.
    assert [p.name for p in work.glob("*.png")] == ["eigenspectrum_dynamics.png"]


def test_scalars_are_logged_to_the_visualizer(two_epochs) -> None:
    _, work, history, _ = two_epochs
    rows = [r for r in _scalars(work) if "id/backbone.layer1" in r]
    assert [r["step"] for r in rows] == [0, ITERS_PER_EPOCH, 2 * ITERS_PER_EPOCH]
    for row, entry in zip(rows, history["entries"], strict=True):
        for name in ENTRY_NAMES:
            assert row[f"id/{name}"] == pytest.approx(entry["layers"][name]["id"])
            assert row[f"id_per_width/{name}"] == pytest.approx(
                entry["layers"][name]["id_per_width"])


def test_last_entry_equals_an_analysis_of_the_saved_checkpoint(two_epochs) -> None:
    """The hook measured the trained weights, in eval mode, on the first val images."""
    from nasdet.spectrum.analysis import analyze_checkpoints

    cfg, work, history, _ = two_epochs
    res = analyze_checkpoints(cfg, [work / "epoch_2.pth"], layers=LAYERS, num_images=8,
                              batch_size=4, progress=False)
    layers = res["checkpoints"][0]["layers"]
    for name, rec in history["entries"][-1]["layers"].items():
        assert rec["id"] == pytest.approx(layers[name]["measures"]["id_dof"], rel=1e-9)
        assert rec["count"] == layers[name]["count"]


def test_resume_appends_to_the_history(two_epochs, tiny_det_root: Path) -> None:
    from nasdet.train import build_runner

    cfg, work, before, before_iter = two_epochs
    resumed = shrink_config("tiny_faster_rcnn_synth.py", tiny_det_root, work, epochs=3,
                            custom_hooks=_hooks())
    build_runner(resumed, resume=str(work / "epoch_2.pth")).train()
    history = json.loads((work / "eigenspectrum_history.json").read_text())
    iters = [e["iteration"] for e in history["entries"]]
    # The resumed start (iteration 8) is already in the history: not measured twice.
    assert iters == [0, 4, 8, 12]
    assert history["entries"][:3] == before["entries"]
    rows = [r for r in _scalars(work) if "id/backbone.layer1" in r]
    assert [r["step"] for r in rows] == [0, 4, 8, 12]
    # The iteration-based hook continues its own history: 9 and 12 after the resume.
    after_iter = json.loads((work / "iter_history.json").read_text())
    assert [e["iteration"] for e in after_iter["entries"]] == [0, 3, 6, 8, 9, 12]
    assert after_iter["entries"][:4] == before_iter["entries"]


def test_iteration_interval_and_final_measurement(two_epochs) -> None:
    _, work, _, history = two_epochs
    # start, every 3 iterations, and the last iteration (8) at the end of training
    assert [e["iteration"] for e in history["entries"]] == [0, 3, 6, 8]
    assert [e["epoch"] for e in history["entries"]] == [0, 0, 1, 2]
    rec = history["entries"][-1]["layers"]["neck.0"]
    eigs = np.asarray(rec["eigenvalues"])
    assert eigs.shape == (64,) and np.all(np.diff(eigs) <= 0)
    assert rec["id"] == pytest.approx(float(np.sum(eigs / (eigs + 1e-3 * eigs[0]))))
    assert list(history["entries"][0]["layers"]) == [f"neck.{i}" for i in range(5)]


def test_bad_layer_fails_before_training(tiny_det_root: Path, tmp_path: Path) -> None:
    from nasdet.train import build_runner

    cfg = shrink_config("tiny_faster_rcnn_synth.py", tiny_det_root, tmp_path, epochs=1,
                        custom_hooks=[_hook_cfg(layers=["neck.nothing"])])
    runner = build_runner(cfg)
    with pytest.raises(NasdetError, match=r"neck\.nothing: pattern 'neck\.nothing' matches no"):
        runner.train()
    assert runner.iter == 0


# ----------------------------------------------------------------------------- distributed
class _Toy(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.backbone = nn.Sequential(nn.Conv2d(3, 6, 3, padding=1), nn.ReLU(),
                                      nn.Conv2d(6, 4, 1))

    def extract_feat(self, x: torch.Tensor) -> torch.Tensor:
        return self.backbone(x)


def _images() -> list[torch.Tensor]:
    g = torch.Generator().manual_seed(1)
    return [torch.randn(2, 3, 7, 5, generator=g) for _ in range(3)]


def _measure(batches: list[torch.Tensor]) -> dict:
    from nasdet.spectrum.detector import measure_spectra

    res = measure_spectra(_Toy(), [{"inputs": b, "data_samples": None} for b in batches],
                          layers=["backbone.0", "backbone.2"], preprocessed=True,
                          full_forward=False)
    return {n: (s.count, s.eigenvalues.tolist(), s.measures["id_dof"]) for n, s in res.items()}


def _worker(rank: int, init_file: str, out_dir: str) -> None:
    dist.init_process_group("gloo", init_method=f"file://{init_file}", rank=rank, world_size=2)
    try:
        torch.set_num_threads(1)
        images = _images()
        mine = images if rank == 0 else []  # rank 1 has no image at all
        Path(out_dir, f"rank{rank}.json").write_text(json.dumps(_measure(mine)))
    finally:
        dist.destroy_process_group()


@pytest.mark.skipif(not dist.is_gloo_available(), reason="gloo backend missing")
def test_measurements_are_all_reduced_over_processes(tmp_path: Path) -> None:
    """What each process of a distributed run gets equals one process over all images."""
    # fork: the children inherit the imported modules (spawn would import them again).
    mp.start_processes(_worker, args=(str(tmp_path / "init"), str(tmp_path)), nprocs=2,
                       join=True, start_method="fork")
    single = _measure(_images())
    for rank in range(2):
        got = json.loads((tmp_path / f"rank{rank}.json").read_text())
        assert set(got) == set(single)
        for name, (count, eigs, id_dof) in single.items():
            assert got[name][0] == count == 3 * 2 * 7 * 5
            np.testing.assert_allclose(got[name][1], eigs, rtol=0, atol=1e-9 * eigs[0])
            assert got[name][2] == pytest.approx(id_dof, rel=1e-9)
