"""StreamingCovariance against np.cov / eigh / scikit-learn on materialised samples."""

from __future__ import annotations

import io
import math

import numpy as np
import pytest
import torch

from nasdet.errors import NasdetError
from nasdet.spectrum import StreamingCovariance, eigenvalues, spectrum_measures
from nasdet.spectrum.covariance import _random_positions
from tests.spectrum._bounds import (
    U_FP64,
    assert_covariance_within,
    assert_eigenvalues_within,
    covariance_bound,
    dof_interval,
    eigenvalue_bound,
    gamma,
    mean_bound,
)

# Tolerances are rounding-error bounds computed from the samples (tests/spectrum/_bounds.py),
# not a relative tolerance tuned on one CPU.


def _samples(n: int, spectrum: np.ndarray, seed: int, offset: float = 0.0) -> np.ndarray:
    """Samples whose population covariance is Q diag(spectrum) Q^T for a random rotation Q."""
    rng = np.random.default_rng(seed)
    q, _ = np.linalg.qr(rng.standard_normal((spectrum.size, spectrum.size)))
    return (rng.standard_normal((n, spectrum.size)) * np.sqrt(spectrum)) @ q.T + offset


def _random_batches(x: torch.Tensor, seed: int, max_size: int = 97) -> list[torch.Tensor]:
    rng = np.random.default_rng(seed)
    out, start = [], 0
    while start < x.shape[0]:
        size = int(rng.integers(1, max_size + 1))
        out.append(x[start : start + size])
        start += size
    return out


def _fmap_samples(fmap: torch.Tensor) -> np.ndarray:
    """(B, C, *spatial) -> (B * prod(spatial), C) float64 samples."""
    c = fmap.shape[1]
    return fmap.movedim(1, -1).reshape(-1, c).double().numpy()


# ----------------------------------------------------------------------------- accuracy
def test_streaming_fp32_with_large_offset_matches_numpy_and_sklearn() -> None:
    """End to end: 1e4 offset, many small fp32 batches -> eigenvalues and measures."""
    decomposition = pytest.importorskip("sklearn.decomposition")
    spectrum = np.linspace(4.0, 1.0, 24)
    x32 = torch.from_numpy(_samples(4000, spectrum, seed=0, offset=1e4)).float()
    x = x32.double().numpy()  # the reference sees exactly the fp32 values
    acc = StreamingCovariance(24)
    for batch in _random_batches(x32, seed=0):
        acc.update(batch)
    assert acc.count == 4000
    assert np.all(np.abs(acc.mean.numpy() - x.mean(0)) <= mean_bound(x, dot_length=97))
    ref_cov = np.cov(x, rowvar=False)
    bound = covariance_bound(x, dot_length=97)  # batches of at most 97 rows
    assert_covariance_within(acc.covariance(), ref_cov, bound)

    ours = eigenvalues(acc.covariance()).numpy()
    ref = np.linalg.eigh(ref_cov)[0][::-1]
    eps = eigenvalue_bound(bound)
    assert_eigenvalues_within(ours, ref, eps)
    pca = decomposition.PCA(svd_solver="full").fit(x)
    assert_eigenvalues_within(ours, pca.explained_variance_, eps)

    # The measures are the formulas applied to our eigenvalues (checked against fp64 in
    # test_measures.py); the ID also lies in the range the Weyl bound allows around ref.
    got = spectrum_measures(ours)
    lam = 1e-3 * ours[0]
    p = ours / ours.sum()
    assert got["id_dof"] == pytest.approx(np.sum(ours / (ours + lam)), rel=1e-12)
    lo, hi = dof_interval(ref, eps)
    assert lo <= got["id_dof"] <= hi
    assert got["participation_ratio"] == pytest.approx(ours.sum() ** 2 / np.sum(ours**2),
                                                       rel=1e-12)
    assert got["effective_rank"] == pytest.approx(np.exp(-np.sum(p * np.log(p))), rel=1e-12)
    cumulative = np.cumsum(ref) / ref.sum()
    for fraction in (0.9, 0.95, 0.99):
        # Far enough from the threshold that an eps-perturbation cannot change the count.
        assert np.min(np.abs(cumulative - fraction)) > 2 * ref.size * eps / ref.sum()
        n_ref = decomposition.PCA(n_components=fraction, svd_solver="full").fit(x).n_components_
        assert got[f"n_components_{round(fraction * 100)}"] == n_ref

    # The offset makes this test sharp: the one-pass fp32 formula E[xx^T] - m m^T fails.
    naive = (x32.T @ x32) / 4000 - torch.outer(x32.mean(0), x32.mean(0))
    assert np.any(np.abs(naive.double().numpy() * 4000 / 3999 - ref_cov) > bound)


def test_fp64_input_keeps_float64_precision_on_a_wide_spectrum() -> None:
    x = _samples(3000, np.geomspace(100.0, 1e-4, 20), seed=1, offset=1e4)
    acc = StreamingCovariance(20)
    for batch in _random_batches(torch.from_numpy(x), seed=1, max_size=500):
        acc.update(batch)
    ref_cov = np.cov(x, rowvar=False)
    bound = covariance_bound(x, dtype="float64", dot_length=500)
    assert_covariance_within(acc.covariance(), ref_cov, bound)
    ref = np.linalg.eigh(ref_cov)[0][::-1]
    eps = eigenvalue_bound(bound)
    assert eps < 1e-6 * ref[-1]  # float64: even the smallest eigenvalue (1e-4) is sharp
    assert_eigenvalues_within(eigenvalues(acc.covariance()), ref, eps)


def test_streaming_equals_one_shot() -> None:
    x = torch.from_numpy(_samples(20000, np.linspace(3.0, 0.5, 32), seed=2, offset=1e4)).float()
    one = StreamingCovariance(32)
    one.update(x)
    many = StreamingCovariance(32)
    for batch in _random_batches(x, seed=2, max_size=300):
        many.update(batch)
    assert one.count == many.count == 20000
    # Each is within its rounding bound of the float64 covariance, so of each other.
    xd = x.double().numpy()
    ref = np.cov(xd, rowvar=False)
    b_one, b_many = covariance_bound(xd), covariance_bound(xd, dot_length=300)
    assert_covariance_within(one.covariance(), ref, b_one)
    assert_covariance_within(many.covariance(), ref, b_many)
    assert_covariance_within(many.covariance(), one.covariance().numpy(), b_one + b_many)
    assert_eigenvalues_within(eigenvalues(many.covariance()), eigenvalues(one.covariance()),
                              eigenvalue_bound(b_one) + eigenvalue_bound(b_many))
    # Weyl with the actual difference: the eigensolver adds nothing beyond it.
    diff = float(torch.linalg.matrix_norm(many.covariance() - one.covariance(), ord=2))
    assert_eigenvalues_within(eigenvalues(many.covariance()), eigenvalues(one.covariance()), diff)
    m_bound = mean_bound(xd) + mean_bound(xd, dot_length=300)
    assert np.all(np.abs(many.mean.numpy() - one.mean.numpy()) <= m_bound)


@pytest.mark.parametrize(
    "shape",
    [(3, 16, 70, 80), (40, 16, 5, 6), (4, 8, 300), (2, 8, 4, 10, 12), (2, 4, 3, 5000)],
    ids=["large-maps", "many-small-maps", "1d", "3d", "rows-longer-than-a-chunk"],
)
def test_feature_map_samples_are_images_times_positions(shape: tuple[int, ...]) -> None:
    g = torch.Generator().manual_seed(3)
    c = shape[1]
    mix = torch.randn(c, c, generator=g) / math.sqrt(c) + torch.eye(c)
    fmap = torch.einsum("bc...,cd->bd...", torch.randn(shape, generator=g), mix) + 50.0
    acc = StreamingCovariance(c)
    acc.update_feature_map(fmap)
    samples = _fmap_samples(fmap)
    assert acc.count == samples.shape[0] == math.prod(shape) // c
    assert_covariance_within(acc.covariance(), np.cov(samples, rowvar=False),
                             covariance_bound(samples))
    assert np.all(np.abs(acc.mean.numpy() - samples.mean(0)) <= mean_bound(samples))


def test_stride_keeps_every_kth_position() -> None:
    fmap = torch.randn(2, 6, 11, 9, generator=torch.Generator().manual_seed(4))
    acc = StreamingCovariance(6)
    acc.update_feature_map(fmap, stride=3)
    assert acc.count == 2 * 4 * 3  # ceil(11 / 3) * ceil(9 / 3) positions per image
    samples = _fmap_samples(fmap[:, :, ::3, ::3])
    ref = np.cov(samples, rowvar=False)
    assert_covariance_within(acc.covariance(), ref, covariance_bound(samples))
    # Not the covariance of all positions.
    assert np.any(np.abs(np.cov(_fmap_samples(fmap), rowvar=False) - ref)
                  > covariance_bound(samples))


def test_random_positions_count_and_determinism() -> None:
    fmap = torch.randn(3, 5, 12, 10, generator=torch.Generator().manual_seed(5))
    covs = []
    for seed in (7, 7, 8):
        acc = StreamingCovariance(5)
        acc.update_feature_map(fmap, max_positions=25, generator=seed)
        assert acc.count == 3 * 25
        covs.append(acc.covariance())
    assert torch.equal(covs[0], covs[1])
    assert not torch.equal(covs[0], covs[2])
    # Fewer positions than max_positions: all are kept.
    full = StreamingCovariance(5)
    full.update_feature_map(fmap, max_positions=10_000, generator=0)
    assert full.count == 3 * 120
    samples = _fmap_samples(fmap)
    assert_covariance_within(full.covariance(), np.cov(samples, rowvar=False),
                             covariance_bound(samples))


def test_random_positions_are_distinct_positions_of_the_same_image() -> None:
    b, h, w, k = 4, 6, 7, 9
    # Channel 0 encodes the image, channel 1 the position: each sample says where it is from.
    image_id = torch.arange(b, dtype=torch.float32).view(b, 1, 1).expand(b, h, w)
    position = torch.arange(h * w, dtype=torch.float32).view(1, h, w).expand(b, h, w)
    fmap = torch.stack([image_id, position], dim=1)
    picked = _random_positions(fmap, k, torch.Generator().manual_seed(0))
    assert picked.shape == (b, 2, k)
    for i in range(b):
        assert torch.all(picked[i, 0] == i)
        positions = picked[i, 1].tolist()
        assert len(set(positions)) == k and all(0 <= p < h * w for p in positions)
    # Images draw independent subsets.
    assert any(not torch.equal(picked[0, 1], picked[i, 1]) for i in range(1, b))


# ----------------------------------------------------------------------------- combining
def test_merge_equals_single_accumulator_over_the_union() -> None:
    x = torch.from_numpy(_samples(5000, np.linspace(2.0, 0.2, 12), seed=6, offset=-300.0))
    for dtype, kind in ((torch.float64, "float64"), (torch.float32, "float32")):
        xd = x.to(dtype)
        samples = xd.double().numpy()
        single = StreamingCovariance(12)
        single.update(xd)
        parts = [StreamingCovariance(12) for _ in range(4)]
        parts[0].update(xd[:1234])
        parts[1].update_feature_map(xd[1234:3000].T.reshape(1, 12, 1766))  # same samples as a map
        parts[3].update(xd[3000:])  # parts[2] stays empty
        merged = StreamingCovariance(12)
        for part in parts:
            merged.merge(part)
        assert merged.count == single.count == 5000
        # Both within the bound of the float64 covariance (chunks of <= 4096 rows).
        bound = covariance_bound(samples, dtype=kind)
        assert_covariance_within(merged.covariance(), single.covariance().numpy(), 2 * bound)
        m_bound = 2 * mean_bound(samples, dtype=kind)
        assert np.all(np.abs(merged.mean.numpy() - single.mean.numpy()) <= m_bound), dtype
    assert parts[0].count == 1234, "merge must not modify its argument"


def test_fp16_and_bf16_inputs_are_upcast() -> None:
    x = torch.from_numpy(_samples(6000, np.linspace(2.0, 0.5, 16), seed=7, offset=100.0))
    for dtype, ulp in ((torch.float16, 2.0**-4), (torch.bfloat16, 2.0**-1)):  # ulp in [64, 128)
        xh = x.to(dtype)
        samples = xh.double().numpy()
        assert 64 <= samples.min() and samples.max() < 128
        # The shift is on the input's grid, so x - s is a multiple of the ulp and every
        # product a multiple of ulp^2; while sum |a_i a_j| stays below 2^24 ulp^2 (here with
        # a 2x margin for the shift), every partial sum of the fp32 Gram is exact in any
        # order: only float64 rounding remains.
        a = np.abs(samples - samples.mean(0))
        assert 2 * (a.T @ a).max() < 2.0**24 * ulp**2
        bound = covariance_bound(samples, dtype="float64")
        ref = np.cov(samples, rowvar=False)
        acc = StreamingCovariance(16)
        for batch in _random_batches(xh, seed=7, max_size=700):
            acc.update(batch)
        assert_covariance_within(acc.covariance(), ref, bound)
        fmap = xh.T.reshape(16, 6, 1000).transpose(0, 1)  # (6, 16, 1000) feature map
        acc_map = StreamingCovariance(16)
        acc_map.update_feature_map(fmap)
        map_samples = _fmap_samples(fmap)
        assert_covariance_within(acc_map.covariance(), np.cov(map_samples, rowvar=False),
                                 covariance_bound(map_samples, dtype="float64"))
        assert acc_map.covariance().dtype == torch.float64


# ----------------------------------------------------------------------------- definitions
def test_ddof_second_moment_and_uncentred() -> None:
    x = torch.from_numpy(_samples(500, np.linspace(2.0, 1.0, 5), seed=8, offset=3.0))
    acc = StreamingCovariance(5)
    acc.update(x.float())
    xs = x.float().double().numpy()
    bound = covariance_bound(xs, ddof=0)
    assert_covariance_within(acc.covariance(ddof=0), np.cov(xs, rowvar=False, bias=True), bound)
    assert np.any(np.abs(np.cov(xs, rowvar=False) - np.cov(xs, rowvar=False, bias=True)) > bound)
    second = xs.T @ xs / 500
    # E[x x^T] = M2 / n + m m^T: the mean's error enters through m m^T.
    m, dm = np.abs(xs.mean(0)), mean_bound(xs)
    second_bound = bound + np.outer(m, dm) + np.outer(dm, m) + np.outer(dm, dm)
    second_bound += gamma(500 + 8, U_FP64) * np.abs(second)  # float64 rounding of both
    assert_covariance_within(acc.second_moment(), second, second_bound)
    assert torch.equal(acc.covariance(centered=False), acc.second_moment())
    cov = acc.covariance()
    assert torch.equal(cov, cov.T)


def test_zero_and_single_sample_are_defined() -> None:
    acc = StreamingCovariance(4)
    acc.update(torch.zeros(0, 4))
    acc.update_feature_map(torch.zeros(2, 4, 0, 5))
    assert acc.count == 0
    for value in (acc.mean, acc.covariance(), acc.covariance(ddof=0), acc.second_moment()):
        assert torch.all(value == 0)
    x = torch.tensor([[1.0, -2.0, 3.0, 0.5]])
    acc.update(x)
    assert acc.count == 1
    assert torch.all(acc.covariance() == 0) and torch.all(acc.covariance(ddof=0) == 0)
    np.testing.assert_allclose(acc.mean.numpy(), x[0].numpy())
    np.testing.assert_allclose(acc.second_moment().numpy(), (x.T @ x).double().numpy())
    assert spectrum_measures(eigenvalues(acc.covariance()))["id_dof"] == 0.0


def test_constant_and_dead_channels_have_exactly_zero_variance() -> None:
    g = torch.Generator().manual_seed(9)
    fmap = torch.randn(3, 4, 17, 13, generator=g)
    fmap[:, 1] = 0.0  # dead ReLU channel
    fmap[:, 3] = 0.7  # constant channel (e.g. a BN bias behind a dead input)
    acc = StreamingCovariance(4)
    acc.update_feature_map(fmap[:2])
    acc.update_feature_map(fmap[2:])
    cov = acc.covariance()
    assert torch.all(cov[[1, 3]] == 0) and torch.all(cov[:, [1, 3]] == 0)
    # A whole layer of constant channels: every measure is 0, never NaN.
    dead = StreamingCovariance(3)
    for value in (0.0, 0.25, 0.25):
        dead.update_feature_map(torch.full((2, 3, 9, 9), value).clamp_min(0.25))
    measures = spectrum_measures(eigenvalues(dead.covariance()))
    assert all(v == 0.0 for k, v in measures.items() if k != "num_eigenvalues"), measures


def test_state_dict_round_trip_continues_exactly() -> None:
    x = torch.randn(900, 7, generator=torch.Generator().manual_seed(10)) + 5
    straight = StreamingCovariance(7)
    straight.update(x[:400])
    buffer = io.BytesIO()
    torch.save(straight.state_dict(), buffer)
    straight.update(x[400:])
    buffer.seek(0)
    resumed = StreamingCovariance(7)
    resumed.load_state_dict(torch.load(buffer, weights_only=True))
    assert resumed.count == 400
    resumed.update(x[400:])
    assert torch.equal(resumed.covariance(), straight.covariance())
    with pytest.raises(NasdetError) as err:
        StreamingCovariance(8).load_state_dict(straight.state_dict())
    assert err.value.key == "num_features"
    with pytest.raises(NasdetError, match="missing"):
        StreamingCovariance(7).load_state_dict({"count": 3})


def test_user_errors_name_the_problem() -> None:
    acc = StreamingCovariance(3)
    with pytest.raises(NasdetError, match=r"\(N, 3\)"):
        acc.update(torch.zeros(5, 4))
    with pytest.raises(NasdetError, match=r"\(B, 3, \*spatial\)"):
        acc.update_feature_map(torch.zeros(2, 3))
    with pytest.raises(NasdetError) as err:
        acc.update_feature_map(torch.zeros(1, 3, 4, 4), stride=0)
    assert err.value.key == "stride"
    with pytest.raises(NasdetError) as err:
        acc.merge(StreamingCovariance(4))
    assert err.value.key == "num_features"
    with pytest.raises(NasdetError):
        StreamingCovariance(0)
    acc.update(torch.tensor([[1.0, float("nan"), 0.0], [0.0, 1.0, 2.0]]))
    with pytest.raises(NasdetError, match="NaN"):
        acc.covariance()
