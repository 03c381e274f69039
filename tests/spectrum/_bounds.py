"""Rounding-error bounds of the spectrum engine, computed from the samples themselves.

The tests compare :class:`~nasdet.spectrum.StreamingCovariance` with a float64 NumPy
reference on the same (fp32 or fp64) values. A fixed ``rtol`` tuned on one CPU fails on
another (BLAS kernels block, vectorise and fuse differently), so every tolerance here is
a bound on the error of the arithmetic the engine actually does, valid for any order of
summation, with or without FMA:

* Each chunk of at most ``K`` rows (``_chunk_rows(C)``, 4096 for ``C <= 256``) is
  centred on a shift ``s`` near the mean (``a = fl(x - s)``, relative error ``<= u``;
  ``|a| <= |x - m| + d`` with ``d`` from :func:`_shift_offset`)
  and its Gram ``A^T A`` is a GEMM of ``K``-term dot products, so (Higham, *Accuracy and
  Stability of Numerical Algorithms*, 2nd ed., eq. 3.5)
  ``|fl(A^T A) - A^T A| <= gamma_K |A|^T |A|`` with ``gamma_k = k u / (1 - k u)``.
* The column sums ``S = sum a`` (same summation) give the mean and the rank-one
  correction ``M2 = G - S S^T / n``; their error adds ``2 gamma_K |S| |S|^T / n``, bounded
  here by ``2 gamma_K s s^T / n`` with ``s = sum |a|``.
* Chunks and batches are added in float64 (``gamma`` of the number of additions at
  ``u = 2^-53``), and the reference ``np.cov`` has the same float64 error.

So ``|C - C_ref| <= B`` entrywise, ``B = [gamma_{K+2} (|A|^T|A| + 2 s s^T / n) +
gamma64_{n} |A|^T|A|] / (n - ddof)``, and by Weyl's theorem every eigenvalue moves by at
most ``||C - C_ref||_2 <= || |C - C_ref| ||_2 <= ||B||_2`` (the spectral norm of a
non-negative matrix is monotone in its entries). The bound is a worst case over all
rounding directions: blocked FMA kernels with random-like rounding stay far below it
(the tests print nothing; docs/spectrum_accuracy.md lists the observed error / bound).
"""

from __future__ import annotations

import numpy as np
import torch

from nasdet.spectrum.covariance import _chunk_rows

U_FP32 = 2.0**-24
U_FP64 = 2.0**-53


def gamma(k: int, u: float) -> float:
    """Higham's ``gamma_k = k u / (1 - k u)``: the error factor of a ``k``-term sum."""
    ku = k * u
    assert ku < 1, (k, u)
    return ku / (1 - ku)


def _as_samples(samples: np.ndarray | torch.Tensor) -> np.ndarray:
    if isinstance(samples, torch.Tensor):
        samples = samples.detach().cpu().double().numpy()
    return np.asarray(samples, dtype=np.float64)


def _unit(dtype: str) -> float:
    return U_FP64 if dtype == "float64" else U_FP32


def covariance_bound(
    samples: np.ndarray | torch.Tensor,
    *,
    dtype: str = "float32",
    dot_length: int | None = None,
    ddof: int = 1,
) -> np.ndarray:
    """Entrywise bound on ``|engine covariance - np.cov|`` for these samples.

    Args:
        samples: ``(n, C)`` samples exactly as the engine saw them (fp32/fp16 values).
        dtype: ``"float32"`` (the engine's Gram for fp32/fp16/bf16 inputs) or
            ``"float64"``.
        dot_length: Rows of the longest chunk one Gram sums over; default: what the
            engine uses for ``C`` channels, capped at ``n``.
        ddof: As in :meth:`StreamingCovariance.covariance`.

    Returns:
        ``(C, C)`` float64 matrix ``B`` with ``|C - C_ref| <= B`` entrywise.
    """
    x = _as_samples(samples)
    n, c = x.shape
    k = min(n, dot_length if dot_length is not None else _chunk_rows(c))
    a = np.abs(x - x.mean(0)) + _shift_offset(x, k)
    abs_gram = a.T @ a
    s = a.sum(0)
    u = _unit(dtype)
    chunks = -(-n // max(k, 1))
    g64 = gamma(chunks + n + 8, U_FP64)  # float64 adds of the engine and of np.cov
    bound = gamma(k + 2, u) * (abs_gram + 2.0 * np.outer(s, s) / n) + g64 * abs_gram
    return bound / max(n - ddof, 1)


def _shift_offset(x: np.ndarray, k: int) -> np.ndarray:
    """Per-channel bound on how far the engine's shift can lie from the mean.

    The engine centres each batch on the running mean or on its first chunk's mean,
    both means of runs of at least ``k`` (or one batch of) consecutive samples; twice the
    largest deviation of a ``k``-row block mean from the overall mean covers them.
    """
    n = x.shape[0]
    blocks = [x[i : i + k].mean(0) for i in range(0, n - k + 1, k)] or [x.mean(0)]
    return 2.0 * np.abs(np.stack(blocks) - x.mean(0)).max(0)


def mean_bound(
    samples: np.ndarray | torch.Tensor, *, dtype: str = "float32", dot_length: int | None = None
) -> np.ndarray:
    """Per-channel bound on ``|engine mean - float64 mean|`` (column sums of ``K`` rows)."""
    x = _as_samples(samples)
    n, c = x.shape
    k = min(n, dot_length if dot_length is not None else _chunk_rows(c))
    m = x.mean(0)
    spread = np.abs(x - m).mean(0) + _shift_offset(x, k)
    return gamma(k + 2, _unit(dtype)) * spread + gamma(n + 8, U_FP64) * (np.abs(m) + spread)


def eigenvalue_bound(entry_bound: np.ndarray) -> float:
    """Weyl: ``max_i |lambda_i - lambda_i_ref| <= ||B||_2`` for an entrywise bound ``B``."""
    return float(np.linalg.norm(entry_bound, 2))


def assert_covariance_within(got: torch.Tensor | np.ndarray, ref: np.ndarray,
                             bound: np.ndarray) -> float:
    """Assert ``|got - ref| <= bound`` entrywise; return the largest ``error / bound``."""
    got = _as_samples(got)
    err = np.abs(got - ref)
    ratio = err / np.where(bound > 0, bound, np.inf)
    worst = np.unravel_index(int(np.argmax(ratio)), ratio.shape)
    assert np.all(err <= bound), (
        f"covariance entry {worst}: error {err[worst]:.3g} > bound {bound[worst]:.3g}")
    return float(ratio.max())


def assert_eigenvalues_within(got: torch.Tensor | np.ndarray, ref: np.ndarray,
                              eps: float) -> float:
    """Assert every eigenvalue (both sorted descending) is within ``eps``; return err/eps."""
    got = np.sort(_as_samples(got).reshape(-1))[::-1]
    ref = np.sort(np.asarray(ref, dtype=np.float64).reshape(-1))[::-1]
    err = float(np.abs(got - ref).max())
    # eigvalsh in float64 adds its own backward error, ~C u64 ||C||_2 (negligible here).
    eps = eps + 8 * ref.size * U_FP64 * float(np.abs(ref).max())
    assert err <= eps, f"eigenvalue error {err:.3g} > Weyl bound {eps:.3g}"
    return err / eps


def dof_interval(ref_eigs: np.ndarray, eps: float, rel_lambda: float = 1e-3
                 ) -> tuple[float, float]:
    """Range of Suzuki's ``N(lambda)`` over all spectra within ``eps`` of ``ref_eigs``.

    ``N = sum mu / (mu + lambda)`` grows with every ``mu_j`` and falls with ``lambda =
    rel_lambda * mu_max``, so its extremes over ``|mu_j - ref_j| <= eps`` are at
    ``mu +- eps`` with ``lambda`` at the other end.
    """
    mu = np.clip(np.asarray(ref_eigs, dtype=np.float64), 0, None)
    top = mu.max()
    lam_lo, lam_hi = rel_lambda * max(top - eps, 0.0), rel_lambda * (top + eps)
    hi_mu = mu + eps
    lo_mu = np.clip(mu - eps, 0, None)
    hi = float(np.sum(hi_mu / (hi_mu + lam_lo))) if lam_lo > 0 else float(mu.size)
    lo = float(np.sum(lo_mu / (lo_mu + lam_hi)))
    return lo, hi


def entropy_interval(ref_eigs: np.ndarray, eps: float) -> tuple[float, float]:
    """Range of the spectrum entropy ``H(mu / sum mu)`` over spectra within ``eps``.

    ``H = log T - F / T`` with ``T = sum mu`` and ``F = sum mu log mu`` (after scaling by
    ``mu_max``, H is scale-free); each of ``T`` and ``F`` is bounded term by term
    (``t log t`` is convex with its minimum at ``1/e``) and the two are combined at
    their extremes.
    """
    mu = np.clip(np.asarray(ref_eigs, dtype=np.float64), 0, None)
    scale = mu.max()
    mu, e = mu / scale, eps / scale
    lo_mu, hi_mu = np.clip(mu - e, 0, None), mu + e

    def f(t: np.ndarray) -> np.ndarray:
        return np.where(t > 0, t * np.log(np.where(t > 0, t, 1.0)), 0.0)

    f_hi = np.maximum(f(lo_mu), f(hi_mu)).sum()
    f_lo = f(np.clip(1 / np.e, lo_mu, hi_mu)).sum()
    t_lo, t_hi = lo_mu.sum(), hi_mu.sum()
    lo = np.log(t_lo) - max(f_hi / t_lo, f_hi / t_hi)
    hi = np.log(t_hi) - min(f_lo / t_lo, f_lo / t_hi)
    return float(lo), float(hi)
