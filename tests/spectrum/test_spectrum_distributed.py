"""StreamingCovariance.all_reduce over 2 gloo processes equals one accumulator over the union."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp

from nasdet.spectrum import StreamingCovariance
from tests.spectrum._bounds import assert_covariance_within, covariance_bound, mean_bound

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
