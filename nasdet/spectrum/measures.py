"""Eigenvalues of a covariance matrix and intrinsic-dimensionality (ID) measures.

Every measure takes the eigenvalues ``mu_1 >= ... >= mu_C >= 0`` of a channel covariance
matrix and returns a plain float. All measures are invariant to rescaling the features
(``mu -> a * mu``) except ``total_variance`` and ``max_eigenvalue``, and all of them are
defined for degenerate layers: an all-zero spectrum (dead ReLU layer, constant features,
fewer than two samples) gives 0, never NaN or Inf.

Measures:

* :func:`degrees_of_freedom`: Suzuki's degrees of freedom
  ``N(lambda) = sum_j mu_j / (mu_j + lambda)``, the ID used by Shinya, Simo-Serra and
  Suzuki (arXiv 1909.04021). A direction with variance far above ``lambda`` counts as
  one dimension, far below as zero.
* :func:`participation_ratio`: ``(sum mu)^2 / sum mu^2``.
* :func:`effective_rank`: ``exp(H(p))`` with ``p = mu / sum mu`` (Roy and Vetterli 2007).
* :func:`num_components`: number of leading components that explain a fraction of the
  total variance (as in PCA).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch

from nasdet.errors import NasdetError

__all__ = [
    "DEFAULT_REL_LAMBDA",
    "DEFAULT_VARIANCE_FRACTIONS",
    "degrees_of_freedom",
    "dof_lambda",
    "effective_rank",
    "eigenvalues",
    "num_components",
    "participation_ratio",
    "spectrum_measures",
]

#: Default ``lambda`` of :func:`degrees_of_freedom`, relative to the largest eigenvalue.
#:
#: ``lambda = 1e-3 * mu_max``: a direction counts as one dimension when its variance is
#: well above 0.1% of the dominant direction's (30 dB below it), as half at exactly that
#: level, and hardly at all far below it, e.g. at the ~1e-7 relative rounding floor of an
#: fp32 covariance. Relative, because the measure exists to compare layers, widths and
#: pretrained vs from-scratch detectors whose activation scales differ by orders of
#: magnitude (BN and initialisation, backbone vs FPN); with an absolute ``lambda`` those
#: scales, not the shape of the spectrum, would drive the ID. Relative to the largest
#: eigenvalue rather than the trace, so that ``k`` equal directions give ``N ~= k`` for
#: any ``k`` (a trace-relative ``lambda`` grows with ``k``). The seed paper's own choice
#: of ``lambda`` is not reproduced here; pass ``lam`` for an absolute ``lambda`` or
#: ``rel_lambda`` for another fraction.
DEFAULT_REL_LAMBDA = 1e-3

#: Fractions of explained variance reported by :func:`spectrum_measures`.
DEFAULT_VARIANCE_FRACTIONS = (0.90, 0.95, 0.99)

SpectrumLike = torch.Tensor | np.ndarray | Sequence[float]


def eigenvalues(cov: torch.Tensor | np.ndarray) -> torch.Tensor:
    """Eigenvalues of a symmetric covariance matrix, descending and clipped at 0.

    Args:
        cov: Square symmetric matrix ``(C, C)`` (tensor or array). Only its symmetric
            part is used; it is decomposed in float64 with ``torch.linalg.eigvalsh``.

    Returns:
        Float64 tensor of shape ``(C,)`` on ``cov``'s device, sorted descending; tiny
        negative eigenvalues from rounding are clipped to 0.
    """
    mat = torch.as_tensor(cov).detach().to(torch.float64)
    if mat.ndim != 2 or mat.shape[0] != mat.shape[1]:
        raise NasdetError(f"expected a square matrix, got shape {tuple(mat.shape)}", key="cov")
    if mat.shape[0] == 0:
        return mat.new_zeros(0)
    if not bool(torch.isfinite(mat).all()):
        raise NasdetError("covariance has NaN or Inf entries", key="cov")
    sym = (mat + mat.T) * 0.5
    vals = torch.linalg.eigvalsh(sym)
    return vals.flip(0).clamp_min_(0.0)


def _spectrum(eigs: SpectrumLike) -> np.ndarray:
    """Eigenvalues as a float64 NumPy vector, sorted descending, negatives clipped."""
    if isinstance(eigs, torch.Tensor):
        arr = eigs.detach().to("cpu", torch.float64).numpy()
    else:
        arr = np.asarray(eigs, dtype=np.float64)
    arr = arr.reshape(-1)
    if not np.all(np.isfinite(arr)):
        raise NasdetError("eigenvalues contain NaN or Inf", key="eigenvalues")
    return np.sort(np.clip(arr, 0.0, None))[::-1]


def dof_lambda(
    eigs: SpectrumLike, *, rel_lambda: float = DEFAULT_REL_LAMBDA, lam: float | None = None
) -> float:
    """The ``lambda`` that :func:`degrees_of_freedom` uses.

    Args:
        eigs: Eigenvalues of the covariance matrix.
        rel_lambda: ``lambda`` relative to the largest eigenvalue (used when ``lam`` is
            ``None``).
        lam: Absolute ``lambda``, in the squared units of the features; overrides
            ``rel_lambda``.

    Returns:
        ``lam`` if given, else ``rel_lambda * max(eigs)`` (0 for an empty or all-zero
        spectrum).
    """
    if lam is not None:
        if not np.isfinite(lam) or lam < 0:
            raise NasdetError(f"must be a finite number >= 0, got {lam}", key="lam")
        return float(lam)
    if not np.isfinite(rel_lambda) or rel_lambda < 0:
        raise NasdetError(f"must be a finite number >= 0, got {rel_lambda}", key="rel_lambda")
    mu = _spectrum(eigs)
    return float(rel_lambda * mu[0]) if mu.size else 0.0


def degrees_of_freedom(
    eigs: SpectrumLike, *, rel_lambda: float = DEFAULT_REL_LAMBDA, lam: float | None = None
) -> float:
    """Suzuki's degrees of freedom ``N(lambda) = sum_j mu_j / (mu_j + lambda)``.

    This is the intrinsic dimensionality of a layer in Shinya, Simo-Serra and Suzuki,
    "Understanding the Effects of Pre-Training for Object Detectors via Eigenspectrum"
    (ICCV 2019 workshops, arXiv 1909.04021).

    Args:
        eigs: Eigenvalues ``mu_j`` of the covariance matrix (any order; negatives are
            clipped to 0).
        rel_lambda: ``lambda`` as a fraction of the largest eigenvalue; the default
            :data:`DEFAULT_REL_LAMBDA` (1e-3) makes the measure scale-free (see there
            for the reasoning).
        lam: Absolute ``lambda`` (squared feature units); overrides ``rel_lambda``.

    Returns:
        A number in ``[0, C]``. With ``lambda = 0`` it is the number of positive
        eigenvalues (the rank). 0 for an all-zero spectrum.

    Example:
        >>> degrees_of_freedom([1.0, 1.0, 0.0], lam=1.0)
        1.0
    """
    mu = _spectrum(eigs)
    lam_v = dof_lambda(mu, rel_lambda=rel_lambda, lam=lam)
    denom = mu + lam_v
    # mu = 0 contributes 0, also when lambda = 0 (the limit lambda -> 0+).
    terms = np.divide(mu, denom, out=np.zeros_like(mu), where=denom > 0)
    return float(terms.sum())


def participation_ratio(eigs: SpectrumLike) -> float:
    """Participation ratio ``(sum mu)^2 / sum mu^2``.

    Args:
        eigs: Eigenvalues of the covariance matrix.

    Returns:
        A number in ``[1, C]`` (``k`` for ``k`` equal non-zero eigenvalues); 0 for an
        all-zero spectrum.
    """
    mu = _spectrum(eigs)
    if mu.size == 0 or mu[0] == 0:
        return 0.0
    p = mu / mu[0]  # scale first: squares of large eigenvalues cannot overflow
    return float(p.sum() ** 2 / np.dot(p, p))


def effective_rank(eigs: SpectrumLike) -> float:
    """Effective rank ``exp(-sum p_j log p_j)``, ``p = mu / sum mu`` (Roy and Vetterli 2007).

    Args:
        eigs: Eigenvalues of the covariance matrix.

    Returns:
        A number in ``[1, C]`` (``k`` for ``k`` equal non-zero eigenvalues); 0 for an
        all-zero spectrum. Zero eigenvalues contribute ``0 log 0 = 0``.
    """
    mu = _spectrum(eigs)
    total = mu.sum() if mu.size else 0.0
    if total == 0:
        return 0.0
    p = mu[mu > 0] / total
    return float(np.exp(-np.dot(p, np.log(p))))


def num_components(eigs: SpectrumLike, fraction: float) -> int:
    """Smallest ``k`` whose ``k`` largest eigenvalues explain ``fraction`` of the variance.

    Args:
        eigs: Eigenvalues of the covariance matrix.
        fraction: Target fraction of the total variance, in ``(0, 1]``.

    Returns:
        ``min k`` with ``sum_{j<=k} mu_j >= fraction * sum_j mu_j``; 0 for an all-zero
        spectrum.
    """
    if not 0 < fraction <= 1:
        raise NasdetError(f"must be in (0, 1], got {fraction}", key="fraction")
    mu = _spectrum(eigs)
    total = mu.sum() if mu.size else 0.0
    if total == 0:
        return 0
    ratio = np.cumsum(mu) / total
    k = int(np.searchsorted(ratio, fraction, side="left")) + 1
    return min(k, int(np.count_nonzero(mu)))


def _fraction_key(fraction: float) -> str:
    return f"n_components_{fraction * 100:g}"


def spectrum_measures(
    eigs: SpectrumLike,
    *,
    rel_lambda: float = DEFAULT_REL_LAMBDA,
    lam: float | None = None,
    variance_fractions: Sequence[float] = DEFAULT_VARIANCE_FRACTIONS,
) -> dict[str, float]:
    """All measures of one spectrum.

    Args:
        eigs: Eigenvalues of the covariance matrix.
        rel_lambda: Relative ``lambda`` of :func:`degrees_of_freedom`.
        lam: Absolute ``lambda`` of :func:`degrees_of_freedom` (overrides
            ``rel_lambda``).
        variance_fractions: Fractions for :func:`num_components`.

    Returns:
        A dict with

        * ``id_dof``: :func:`degrees_of_freedom` (number of dimensions),
        * ``dof_lambda``: the ``lambda`` it used (squared feature units),
        * ``participation_ratio``, ``effective_rank`` (number of dimensions),
        * ``n_components_90``, ``n_components_95``, ``n_components_99`` (one key per
          fraction, named by its percentage),
        * ``num_eigenvalues`` (``C``), ``total_variance`` (trace, squared feature units)
          and ``max_eigenvalue`` (squared feature units).
    """
    mu = _spectrum(eigs)
    out: dict[str, float] = {
        "id_dof": degrees_of_freedom(mu, rel_lambda=rel_lambda, lam=lam),
        "dof_lambda": dof_lambda(mu, rel_lambda=rel_lambda, lam=lam),
        "participation_ratio": participation_ratio(mu),
        "effective_rank": effective_rank(mu),
    }
    for fraction in variance_fractions:
        out[_fraction_key(fraction)] = float(num_components(mu, fraction))
    out["num_eigenvalues"] = float(mu.size)
    out["total_variance"] = float(mu.sum()) if mu.size else 0.0
    out["max_eigenvalue"] = float(mu[0]) if mu.size else 0.0
    return out
