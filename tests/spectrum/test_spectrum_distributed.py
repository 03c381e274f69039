"""Distributed spectra over 2 gloo processes equal one process over the union of the data.

* ``StreamingCovariance.all_reduce`` against one accumulator over all samples;
* ``measure_spectra(..., all_reduce=True)`` of the tiny detector, each process on half of
  4 probe images, against the one-process ``measure_spectra`` over all 4.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp

from nasdet.spectrum import StreamingCovariance
from tests.spectrum._bounds import (
    U_FP64,
    assert_covariance_within,
    assert_eigenvalues_within,
    covariance_bound,
    dof_interval,
    eigenvalue_bound,
    entropy_interval,
    gamma,
    mean_bound,
)

pytestmark = pytest.mark.skipif(not dist.is_gloo_available(), reason="gloo backend missing")

WORLD = 2
C = 10
CONSTANT = -2.723508284053181


def _data() -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """fp64 samples (offset 1e3), fp32 feature maps, and fp64 maps with constant channels."""
    g = torch.Generator().manual_seed(0)
    mix = torch.randn(C, C, generator=g, dtype=torch.float64)
    samples = torch.randn(3000, C, generator=g, dtype=torch.float64) @ mix + 1e3
    maps = torch.randn(6, C, 9, 11, generator=g) * 2 - 5
    constant = torch.randn(4, C, 5, 5, generator=g, dtype=torch.float64)
    # The same constant on every process, one for which (25 c + 75 c) / 100 != c in fp64.
    constant[:, :3] = CONSTANT
    return samples, maps, constant


def _rank_slices(rank: int) -> tuple[slice, slice, slice, slice]:
    # Unequal shares; rank 1 sees no sample at all for the fourth accumulator.
    return (
        slice(0, 1100) if rank == 0 else slice(1100, 3000),
        slice(0, 1) if rank == 0 else slice(1, 6),
        slice(0, 1) if rank == 0 else slice(1, 4),
        slice(0, 500) if rank == 0 else slice(0, 0),
    )


def _worker(rank: int, init_file: str, out_dir: str) -> None:
    torch.set_num_threads(1)  # two processes on two cores
    dist.init_process_group("gloo", init_method=f"file://{init_file}", rank=rank, world_size=WORLD)
    try:
        samples, maps, constant = _data()
        s_rows, s_maps, s_const, s_some = _rank_slices(rank)
        accs = [StreamingCovariance(C) for _ in range(4)]
        accs[0].update(samples[s_rows])
        accs[1].update_feature_map(maps[s_maps])
        accs[2].update_feature_map(constant[s_const])
        accs[3].update(samples[s_some])  # empty on rank 1
        for acc in accs:
            acc.all_reduce()
        torch.save([acc.state_dict() for acc in accs], Path(out_dir) / f"rank{rank}.pt")
    finally:
        dist.destroy_process_group()


def test_all_reduce_over_two_gloo_processes_equals_single_process(tmp_path: Path) -> None:
    mp.spawn(_worker, args=(str(tmp_path / "init"), str(tmp_path)), nprocs=WORLD, join=True)
    states = [torch.load(tmp_path / f"rank{r}.pt", weights_only=True) for r in range(WORLD)]

    samples, maps, constant = _data()
    single = [StreamingCovariance(C) for _ in range(4)]
    single[0].update(samples)
    single[1].update_feature_map(maps)
    single[2].update_feature_map(constant)
    single[3].update(samples[:500])
    # The reduced and the single-process states are each within the rounding bound of
    # the float64 covariance of their samples (fp32 Gram for the fp32 maps), so within
    # twice that bound of each other.
    def as_samples(t: torch.Tensor) -> np.ndarray:
        return (t if t.ndim == 2 else t.movedim(1, -1).reshape(-1, C)).double().numpy()

    inputs = [(samples, "float64"), (maps, "float32"), (constant, "float64"),
              (samples[:500], "float64")]
    for i, (ref, (data, kind)) in enumerate(zip(single, inputs, strict=True)):
        x = as_samples(data)
        bound = 2 * covariance_bound(x, dtype=kind)
        m_bound = 2 * mean_bound(x, dtype=kind)
        for rank in range(WORLD):
            got = StreamingCovariance(C)
            got.load_state_dict(states[rank][i])
            assert got.count == ref.count, (i, rank)
            assert np.all(np.abs(got.mean.numpy() - ref.mean.numpy()) <= m_bound), (i, rank)
            assert_covariance_within(got.covariance(), ref.covariance().numpy(), bound)
        # Both processes end with the identical state.
        assert torch.equal(states[0][i]["m2"], states[1][i]["m2"])

    # The union's covariance also matches NumPy on the materialised samples.
    got = StreamingCovariance(C)
    got.load_state_dict(states[0][0])
    ref_cov = np.cov(samples.numpy(), rowvar=False)
    assert_covariance_within(got.covariance(), ref_cov,
                             covariance_bound(samples.numpy(), dtype="float64"))
    # Channels constant on every process stay exactly constant after the reduction.
    got.load_state_dict(states[0][2])
    assert torch.all(got.covariance()[:3] == 0) and torch.all(got.mean[:3] == CONSTANT)


def test_all_reduce_without_process_group_is_a_clear_error() -> None:
    from nasdet.errors import NasdetError

    if dist.is_initialized():
        pytest.skip("a process group is already initialised in this process")
    with pytest.raises(NasdetError, match="init_process_group"):
        StreamingCovariance(3).all_reduce()


# ----------------------------------------------------------------------------- detector
#: Backbone stages and FPN levels (``neck.0`` ... ``neck.4``) of the tiny detector.
LAYERS = ["backbone_stages", "neck"]
PROBE_IMAGES = 4
#: What the processes share: the model and probe dataset, built once before forking.
_SHARED: dict[str, object] = {}


def _spectra(model, dataset, indices: list[int], all_reduce: bool) -> dict[str, dict]:
    from nasdet.spectrum.detector import iter_probe_batches, measure_spectra

    # One image a batch: every layer call is one image's map (no padding between images).
    res = measure_spectra(model, iter_probe_batches(dataset, indices, 1), layers=LAYERS,
                          full_forward=False, all_reduce=all_reduce)
    return {name: {"count": r.count, "channels": r.channels, "eigenvalues": r.eigenvalues,
                   "measures": r.measures} for name, r in res.items()}


def _spectra_worker(rank: int, init_file: str, out_dir: str) -> None:
    torch.set_num_threads(1)
    dist.init_process_group("gloo", init_method=f"file://{init_file}", rank=rank, world_size=WORLD)
    try:
        model, dataset = _SHARED["model"], _SHARED["dataset"]
        half = list(range(rank * PROBE_IMAGES // WORLD, (rank + 1) * PROBE_IMAGES // WORLD))
        out = {"reduced": _spectra(model, dataset, half, all_reduce=True),
               "local": _spectra(model, dataset, half, all_reduce=False)}
        torch.save(out, Path(out_dir) / f"spectra{rank}.pt")
    finally:
        dist.destroy_process_group()


def _samples_per_image(model, dataset) -> dict[str, list[np.ndarray]]:
    """Every probed output, image by image, as the probe saw it (float64 copies)."""
    from nasdet.spectrum.detector import iter_probe_batches
    from nasdet.spectrum.probes import select_modules

    out: dict[str, list[np.ndarray]] = {}

    def keep(name: str, value) -> None:
        if isinstance(value, (tuple, list)):
            for i, item in enumerate(value):
                keep(f"{name}.{i}", item)
            return
        assert value.dtype == torch.float32
        out.setdefault(name, []).append(
            value.movedim(1, -1).reshape(-1, value.shape[1]).double().numpy())

    modules = dict(model.named_modules())
    handles = [modules[n].register_forward_hook(lambda _m, _i, o, n=n: keep(n, o))
               for n in select_modules(model, LAYERS)]
    try:
        with torch.no_grad():
            for batch in iter_probe_batches(dataset, list(range(PROBE_IMAGES)), 1):
                model.extract_feat(model.data_preprocessor(batch, False)["inputs"])
    finally:
        for h in handles:
            h.remove()
    return out


def _merged_bound(parts: list[np.ndarray], rows: int) -> np.ndarray:
    """Entrywise bound on |all-reduced covariance - np.cov(union)|.

    Each process's ``M2_r = (n_r - 1) C_r`` is within ``(n_r - 1) B_r`` of exact
    (:func:`covariance_bound` of its own samples, one chunk per image); the reduction
    adds ``n_r d_r d_r^T`` with ``d_r = m_r - mu`` computed from engine means (each
    within :func:`mean_bound`, so ``d_r`` within ``e_r``), sums in float64, and
    ``np.cov`` of the union has its own float64 error.
    """
    x = np.concatenate(parts)
    n = x.shape[0]
    mu = x.mean(0)
    ns = [p.shape[0] for p in parts]
    e_means = [mean_bound(p, dot_length=rows) for p in parts]
    e_mu = sum(k * e for k, e in zip(ns, e_means, strict=True)) / n + gamma(
        WORLD + 2, U_FP64) * sum(k * (np.abs(p.mean(0)) + e)
                                 for k, p, e in zip(ns, parts, e_means, strict=True)) / n
    total = np.zeros((x.shape[1], x.shape[1]))
    for p, k, e_m in zip(parts, ns, e_means, strict=True):
        d, e = np.abs(p.mean(0) - mu), e_m + e_mu
        total += (k - 1) * covariance_bound(p, dot_length=rows)
        total += k * (np.outer(d, e) + np.outer(e, d) + np.outer(e, e))
        c_abs = np.abs(np.cov(p, rowvar=False)) if k > 1 else 0.0
        total += gamma(WORLD + 8, U_FP64) * ((k - 1) * c_abs + k * np.outer(d + e, d + e))
    return total / (n - 1) + covariance_bound(x, dtype="float64")


def test_measure_spectra_over_two_gloo_processes_equals_one_process(
        tiny_det_root: Path, tmp_path: Path) -> None:
    pytest.importorskip("mmdet")
    from nasdet.models.utils.build import build_detector
    from nasdet.spectrum.detector import build_probe_dataset
    from tests.conftest import shrink_config

    cfg = shrink_config("tiny_faster_rcnn_synth.py", tiny_det_root, tmp_path / "work")
    model = build_detector(cfg).eval()  # seed 0; the forked processes share these weights
    dataset = build_probe_dataset(cfg, "val")
    _SHARED.update(model=model, dataset=dataset)
    try:
        # fork: the processes inherit the model and dataset (spawn would rebuild them).
        mp.start_processes(_spectra_worker, args=(str(tmp_path / "init"), str(tmp_path)),
                           nprocs=WORLD, join=True, start_method="fork")
    finally:
        _SHARED.clear()
    ranks = [torch.load(tmp_path / f"spectra{r}.pt", weights_only=False) for r in range(WORLD)]
    single = _spectra(model, dataset, list(range(PROBE_IMAGES)), all_reduce=False)
    per_image = _samples_per_image(model, dataset)
    assert list(single) == list(per_image) and len(single) == 4 + 5  # 4 stages, 5 levels

    for name, one in single.items():
        images = per_image[name]
        rows = images[0].shape[0]
        assert all(im.shape[0] == rows for im in images)
        x = np.concatenate(images)
        ref_cov = np.cov(x, rowvar=False)
        ref = np.clip(np.linalg.eigvalsh(ref_cov)[::-1], 0.0, None)
        assert ref[0] > 0, name  # a real spectrum, not a dead layer
        eps_one = eigenvalue_bound(covariance_bound(x, dot_length=rows))
        half = PROBE_IMAGES // WORLD
        eps_dist = eigenvalue_bound(_merged_bound(
            [np.concatenate(images[r * half:(r + 1) * half]) for r in range(WORLD)], rows))
        assert one["count"] == x.shape[0]
        assert_eigenvalues_within(one["eigenvalues"], ref, eps_one)
        eps = max(eps_one, eps_dist)
        lo, hi = dof_interval(ref, eps)
        e_lo, e_hi = entropy_interval(ref, eps)
        for rank, out in enumerate(ranks):
            got = out["reduced"][name]
            # Every process ends with the one-process result: the same samples counted,
            # eigenvalues within both Weyl bounds, ID and effective rank within the range
            # those bounds allow around the float64 spectrum.
            assert list(out["reduced"]) == list(single), rank
            assert (got["count"], got["channels"]) == (one["count"], one["channels"])
            assert_eigenvalues_within(got["eigenvalues"], ref, eps_dist)
            assert_eigenvalues_within(got["eigenvalues"], one["eigenvalues"].numpy(),
                                      eps_one + eps_dist)
            for res in (got, one):
                assert lo <= res["measures"]["id_dof"] <= hi, (name, rank, lo, hi)
                assert np.exp(e_lo) <= res["measures"]["effective_rank"] <= np.exp(e_hi)
            assert torch.equal(got["eigenvalues"], ranks[0]["reduced"][name]["eigenvalues"])
            # The bounds are tight enough to tell: one process's own half is not the union.
            local = out["local"][name]
            assert local["count"] == one["count"] // WORLD
            err = np.abs(np.sort(local["eigenvalues"].numpy())[::-1] - ref).max()
            assert err > eps_dist, (name, rank, err, eps_dist)
