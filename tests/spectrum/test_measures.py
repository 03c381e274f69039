"""Eigenvalues and ID measures against NumPy, scikit-learn and hand-computed cases."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from nasdet.errors import NasdetError
from nasdet.spectrum import (
    DEFAULT_REL_LAMBDA,
    degrees_of_freedom,
    dof_lambda,
    effective_rank,
    eigenvalues,
    num_components,
    participation_ratio,
    spectrum_measures,
)


def _samples(n: int, spectrum: np.ndarray, seed: int, offset: float = 0.0) -> np.ndarray:
    """Samples whose population covariance is Q diag(spectrum) Q^T for a random rotation Q."""
    rng = np.random.default_rng(seed)
    q, _ = np.linalg.qr(rng.standard_normal((spectrum.size, spectrum.size)))
    return (rng.standard_normal((n, spectrum.size)) * np.sqrt(spectrum)) @ q.T + offset


# ----------------------------------------------------------------------------- eigenvalues
def test_eigenvalues_match_numpy_eigh() -> None:
    x = _samples(2000, np.geomspace(10.0, 1e-3, 20), seed=0)
    cov = np.cov(x, rowvar=False)
    ours = eigenvalues(torch.from_numpy(cov))
    ref = np.linalg.eigh(cov)[0][::-1]
    assert ours.dtype == torch.float64
    assert torch.all(ours[:-1] >= ours[1:]), "not descending"
    np.testing.assert_allclose(ours.numpy(), ref, rtol=1e-9)
    # NumPy arrays are accepted as well.
    np.testing.assert_allclose(eigenvalues(cov).numpy(), ref, rtol=1e-9)


def test_eigenvalues_match_sklearn_pca_explained_variance() -> None:
    decomposition = pytest.importorskip("sklearn.decomposition")
    x = _samples(1500, np.linspace(5.0, 0.5, 12), seed=1, offset=3.0)
    pca = decomposition.PCA(svd_solver="full").fit(x)
    ours = eigenvalues(np.cov(x, rowvar=False)).numpy()
    np.testing.assert_allclose(ours, pca.explained_variance_, rtol=1e-9)


def test_eigenvalues_clip_negative_rounding_and_use_symmetric_part() -> None:
    # [[0, 1], [1, 0]] has eigenvalues 1 and -1; a covariance cannot, so -1 becomes 0.
    assert eigenvalues(torch.tensor([[0.0, 1.0], [1.0, 0.0]])).tolist() == [1.0, 0.0]
    # Only the symmetric part counts: [[2, 1], [0, 2]] -> [[2, .5], [.5, 2]] -> 2.5, 1.5.
    np.testing.assert_allclose(eigenvalues(np.array([[2.0, 1.0], [0.0, 2.0]])), [2.5, 1.5])


def test_eigenvalues_reject_bad_input() -> None:
    with pytest.raises(NasdetError, match="square"):
        eigenvalues(torch.zeros(3, 2))
    with pytest.raises(NasdetError, match="NaN"):
        eigenvalues(torch.tensor([[1.0, float("nan")], [float("nan"), 1.0]]))


# ----------------------------------------------------------------------------- measures
def _reference_measures(mu: np.ndarray, lam: float) -> dict[str, float]:
    """Textbook formulas, written independently of nasdet.spectrum.measures."""
    p = mu / mu.sum()
    p = p[p > 0]
    return {
        "id_dof": float(np.sum(mu / (mu + lam))),
        "participation_ratio": float(mu.sum() ** 2 / np.sum(mu**2)),
        "effective_rank": float(np.exp(-np.sum(p * np.log(p)))),
    }


def test_measures_match_reference_formulas_and_sklearn_components() -> None:
    decomposition = pytest.importorskip("sklearn.decomposition")
    x = _samples(3000, np.geomspace(20.0, 1e-2, 16), seed=2, offset=-7.0)
    mu = np.linalg.eigh(np.cov(x, rowvar=False))[0][::-1]
    got = spectrum_measures(torch.from_numpy(mu.copy()))
    lam = DEFAULT_REL_LAMBDA * mu[0]
    ref = _reference_measures(mu, lam)
    assert got["dof_lambda"] == pytest.approx(lam, rel=1e-12)
    for key, value in ref.items():
        assert got[key] == pytest.approx(value, rel=1e-9), key
    for fraction in (0.9, 0.95, 0.99):
        pca = decomposition.PCA(n_components=fraction, svd_solver="full").fit(x)
        assert got[f"n_components_{round(fraction * 100)}"] == pca.n_components_, fraction
    assert got["num_eigenvalues"] == 16
    assert got["total_variance"] == pytest.approx(mu.sum(), rel=1e-12)
    assert got["max_eigenvalue"] == pytest.approx(mu[0], rel=1e-12)


def test_degrees_of_freedom_hand_computed() -> None:
    # [1, 1, 0] with lambda = 1: 1/2 + 1/2 + 0.
    assert degrees_of_freedom([1.0, 1.0, 0.0], lam=1.0) == pytest.approx(1.0)
    # Default: lambda = 1e-3 * 1, so 2 * 1 / 1.001.
    assert degrees_of_freedom([1.0, 1.0, 0.0]) == pytest.approx(2 / 1.001, rel=1e-12)
    # lambda = 0 counts the positive eigenvalues (the rank), zeros contribute 0 not NaN.
    assert degrees_of_freedom([1.0, 1.0, 0.0], lam=0.0) == 2.0
    # [4, 1] with lambda = 1: 4/5 + 1/2; rel_lambda = 0.25 of the top eigenvalue is the same.
    assert degrees_of_freedom([4.0, 1.0], lam=1.0) == pytest.approx(1.3)
    assert degrees_of_freedom([1.0, 4.0], rel_lambda=0.25) == pytest.approx(1.3)
    assert dof_lambda([1.0, 4.0], rel_lambda=0.25) == pytest.approx(1.0)


def test_participation_ratio_and_effective_rank_hand_computed() -> None:
    assert participation_ratio([1.0, 1.0, 0.0]) == pytest.approx(2.0)
    assert effective_rank([1.0, 1.0, 0.0]) == pytest.approx(2.0)
    assert participation_ratio([3.0, 1.0]) == pytest.approx(16 / 10)
    h = -(0.75 * math.log(0.75) + 0.25 * math.log(0.25))
    assert effective_rank([3.0, 1.0]) == pytest.approx(math.exp(h))
    # Huge eigenvalues must not overflow the squares.
    assert participation_ratio([1e300, 1e300]) == pytest.approx(2.0)


def test_num_components_hand_computed() -> None:
    mu = [2.0, 5.0, 3.0]  # any order: sorted to 5, 3, 2 (cumulative 0.5, 0.8, 1.0)
    assert num_components(mu, 0.5) == 1
    assert num_components(mu, 0.8) == 2
    assert num_components(mu, 0.81) == 3
    assert num_components(mu, 1.0) == 3
    assert num_components([1.0, 0.0, 0.0], 1.0) == 1


def test_measures_are_scale_free_unless_lambda_is_absolute() -> None:
    mu = np.geomspace(3.0, 1e-4, 10)
    base = spectrum_measures(mu)
    scaled = spectrum_measures(mu * 1e6)
    for key in ("id_dof", "participation_ratio", "effective_rank", "n_components_90"):
        assert scaled[key] == pytest.approx(base[key], rel=1e-12), key
    assert degrees_of_freedom(mu * 1e6, lam=1.0) > degrees_of_freedom(mu, lam=1.0) + 1


@pytest.mark.parametrize(
    "eigs",
    [np.zeros(8), np.zeros(0), torch.zeros(5, dtype=torch.float32), [0.0, -1e-18, 0.0]],
    ids=["all-zero", "empty", "torch-zero", "negative-rounding"],
)
def test_degenerate_spectra_are_zero_not_nan(eigs: object) -> None:
    got = spectrum_measures(eigs)
    for key, value in got.items():
        assert math.isfinite(value), key
        if key != "num_eigenvalues":
            assert value == 0.0, key


def test_single_direction_is_one_dimension() -> None:
    got = spectrum_measures([2.5, 0.0, 0.0, 0.0])
    assert got["id_dof"] == pytest.approx(1 / 1.001)
    assert got["participation_ratio"] == got["effective_rank"] == 1.0
    assert got["n_components_99"] == 1.0


def test_measure_arguments_are_validated() -> None:
    with pytest.raises(NasdetError, match="NaN"):
        spectrum_measures([1.0, float("nan")])
    with pytest.raises(NasdetError) as err:
        num_components([1.0], 0.0)
    assert err.value.key == "fraction"
    with pytest.raises(NasdetError):
        num_components([1.0], 1.5)
    with pytest.raises(NasdetError) as err:
        degrees_of_freedom([1.0], lam=-1.0)
    assert err.value.key == "lam"
    with pytest.raises(NasdetError) as err:
        degrees_of_freedom([1.0], rel_lambda=float("inf"))
    assert err.value.key == "rel_lambda"
