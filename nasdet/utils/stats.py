"""Rank statistics of a proxy against a benchmark target, with bootstrap intervals.

Every report that ranks proxies uses :func:`proxy_statistics`: for one proxy's scores
and one target (e.g. AP after the last epoch) over the same architectures it returns

* Kendall's τ (tau-b, ties handled) and Spearman's ρ, each with a BCa bootstrap
  interval (:func:`scipy.stats.bootstrap`, ``method='BCa'``);
* Δτ = τ(proxy) − τ(#params) and Δτ = τ(proxy) − τ(MACs): paired differences, both τ
  of a difference computed on the *same* bootstrap resample of architectures, with a
  BCa interval on the difference;
* the partial Kendall τ of proxy and target given log #params,
  ``τ_xy·z = (τ_xy − τ_xz τ_yz) / sqrt((1 − τ_xz²)(1 − τ_yz²))``, with its interval
  (τ is invariant under the monotone log, so log #params and #params give the same);
* top-10% recall and τ as a fraction of the test–retest ceiling (:func:`test_retest`).

Architectures are the resampling unit: a bootstrap resample draws architectures with
replacement and keeps each one's (score, target, #params, MACs) together. The
statistics are computed from the resample's index array alone: with ``c`` the
multiplicities of the ``n`` architectures in a resample and ``S_a = sign(a_i − a_j)``,
``τ_b(a, b) = cᵀ(S_a∘S_b)c / sqrt(cᵀ|S_a|c · cᵀ|S_b|c)`` equals
:func:`scipy.stats.kendalltau` of the resampled values (a repeated architecture is a
tied pair in both variables, which tau-b drops from numerator and both denominators),
so every resample costs three ``n×n`` quadratic forms.

Undefined cases are reported, not raised: NaN scores (a proxy that failed on some
architectures) are dropped pairwise and the remaining ``n`` is reported; a constant
proxy gives τ = NaN with a note; a statistic that does not vary over the resamples
(e.g. Δτ of a proxy against itself) gets the zero-width interval ``[value, value]``.

Example:
    >>> import numpy as np
    >>> rng = np.random.default_rng(0)
    >>> params = rng.uniform(1e6, 5e6, 40)
    >>> ap = np.log(params) + rng.normal(0, 0.3, 40)
    >>> out = proxy_statistics(ap + rng.normal(0, 0.1, 40), ap, n_params=params,
    ...                        macs=params * 10, n_resamples=500)
    >>> out["n"], out["tau"] > 0.5, len(out["tau_ci"])
    (40, True, 2)
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import numpy as np
from scipy import stats as sps

__all__ = [
    "kendall_tau_b",
    "mean_difference",
    "null_sd_kendall",
    "partial_kendall",
    "proxy_statistics",
    "rank_aggregate",
    "test_retest",
    "top_fraction_recall",
]

ArrayLike = Sequence[float] | np.ndarray

#: Bootstrap resamples of :func:`proxy_statistics` and :func:`test_retest`.
DEFAULT_RESAMPLES = 2000
#: Fewest architectures for which any statistic is computed.
MIN_N = 3


def null_sd_kendall(n: int) -> float:
    """Standard deviation of Kendall's τ between independent, untied samples of size ``n``.

    ``sqrt(2(2n + 5) / (9n(n − 1)))`` (Kendall 1938): a τ within about two of these of
    zero is what unrelated scores give.

    Args:
        n: Number of architectures (≥ 2).
    """
    if n < 2:
        return float("nan")
    return math.sqrt(2.0 * (2 * n + 5) / (9.0 * n * (n - 1)))


def _signs(v: np.ndarray) -> np.ndarray:
    return np.sign(v[:, None] - v[None, :])


def _quad(counts: np.ndarray, mat: np.ndarray) -> np.ndarray:
    """``cᵀ M c`` for every row ``c`` of ``counts`` (any leading shape)."""
    return np.einsum("...i,...i->...", counts @ mat, counts)


def _counts(idx: np.ndarray, n: int) -> np.ndarray:
    """Multiplicity of each of ``n`` indices in every row of ``idx`` (shape ``(..., m)``)."""
    idx = np.asarray(idx, dtype=np.int64)
    lead = idx.shape[:-1]
    rows = int(np.prod(lead)) if lead else 1
    flat = idx.reshape(rows, -1) + n * np.arange(rows)[:, None]
    return np.bincount(flat.ravel(), minlength=rows * n).reshape(*lead, n).astype(np.float64)


class _Taus:
    """τ_b between named variables of one set of architectures, from resample counts."""

    def __init__(self, variables: Mapping[str, np.ndarray]):
        self.s = {k: _signs(np.asarray(v, dtype=np.float64)) for k, v in variables.items()}
        self.a = {k: np.abs(s) for k, s in self.s.items()}

    def tau(self, a: str, b: str, counts: np.ndarray) -> np.ndarray:
        num = _quad(counts, self.s[a] * self.s[b])
        den = np.sqrt(_quad(counts, self.a[a]) * _quad(counts, self.a[b]))
        with np.errstate(invalid="ignore", divide="ignore"):
            return np.where(den > 0, num / np.where(den > 0, den, 1.0), np.nan)


def kendall_tau_b(x: ArrayLike, y: ArrayLike) -> float:
    """Kendall's tau-b of ``x`` and ``y`` (finite pairs only); NaN if either is constant.

    Args:
        x, y: Paired samples of equal length.
    """
    x, y = _finite_pairs(x, y)
    if x.size < 2:
        return float("nan")
    return float(_Taus({"x": x, "y": y}).tau("x", "y", np.ones(x.size)))


def _partial(t_xy: np.ndarray, t_xz: np.ndarray, t_yz: np.ndarray) -> np.ndarray:
    den = np.sqrt((1.0 - t_xz ** 2) * (1.0 - t_yz ** 2))
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(den > 0, (t_xy - t_xz * t_yz) / np.where(den > 0, den, 1.0), np.nan)


def partial_kendall(x: ArrayLike, y: ArrayLike, z: ArrayLike) -> float:
    """Kendall's partial τ of ``x`` and ``y`` given ``z`` (Kendall 1942).

    ``τ_xy·z = (τ_xy − τ_xz τ_yz) / sqrt((1 − τ_xz²)(1 − τ_yz²))`` from tau-b values;
    NaN when ``z`` ranks ``x`` or ``y`` perfectly (|τ| = 1) or a variable is constant.

    Args:
        x, y, z: Paired samples of equal length (rows with a NaN anywhere are dropped).
    """
    arr = np.column_stack([np.asarray(v, dtype=np.float64) for v in (x, y, z)])
    arr = arr[np.isfinite(arr).all(axis=1)]
    if arr.shape[0] < MIN_N:
        return float("nan")
    taus = _Taus({"x": arr[:, 0], "y": arr[:, 1], "z": arr[:, 2]})
    ones = np.ones(arr.shape[0])
    return float(_partial(taus.tau("x", "y", ones), taus.tau("x", "z", ones),
                          taus.tau("y", "z", ones)))


def _finite_pairs(x: ArrayLike, y: ArrayLike) -> tuple[np.ndarray, np.ndarray]:
    x = np.asarray(x, dtype=np.float64).ravel()
    y = np.asarray(y, dtype=np.float64).ravel()
    if x.shape != y.shape:
        raise ValueError(f"paired samples differ in length: {x.size} and {y.size}")
    keep = np.isfinite(x) & np.isfinite(y)
    return x[keep], y[keep]


def _spearman_rows(x: np.ndarray, y: np.ndarray) -> np.ndarray:
    """Spearman's ρ (Pearson of average ranks) along the last axis."""
    rx = sps.rankdata(x, axis=-1)
    ry = sps.rankdata(y, axis=-1)
    rx = rx - rx.mean(axis=-1, keepdims=True)
    ry = ry - ry.mean(axis=-1, keepdims=True)
    den = np.sqrt((rx * rx).sum(-1) * (ry * ry).sum(-1))
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(den > 0, (rx * ry).sum(-1) / np.where(den > 0, den, 1.0), np.nan)


def _bootstrap(stat: Callable[[np.ndarray], np.ndarray], n: int, names: Sequence[str], *,
               n_resamples: int, confidence_level: float, seed: int
               ) -> tuple[np.ndarray, np.ndarray, list[str]]:
    """BCa intervals of the named statistics of an index resample of ``0..n-1``.

    ``stat(idx)`` maps index arrays of shape ``(..., m)`` to ``(len(names), ...)``. One call
    of :func:`scipy.stats.bootstrap` resamples the index vector (every statistic sees the
    same resamples). Returns ``(low, high, notes)``; a statistic that is constant over
    the resamples gets ``low = high = value``, one that is undefined on some resample
    gets NaN bounds and a note.
    """
    n_stats = len(names)
    point = stat(np.arange(n))
    low = np.full(n_stats, np.nan)
    high = np.full(n_stats, np.nan)
    notes: list[str] = []
    if n < MIN_N or not np.isfinite(point).any():
        return low, high, notes

    def statistic(idx: np.ndarray, axis: int = -1) -> np.ndarray:
        return stat(np.moveaxis(np.asarray(idx), axis, -1))

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        res = sps.bootstrap((np.arange(n),), statistic, n_resamples=n_resamples,
                            vectorized=True, paired=False, confidence_level=confidence_level,
                            method="BCa", rng=np.random.default_rng(seed))
    dist = np.asarray(res.bootstrap_distribution).reshape(n_stats, -1)
    lo = np.asarray(res.confidence_interval.low, dtype=np.float64).reshape(n_stats)
    hi = np.asarray(res.confidence_interval.high, dtype=np.float64).reshape(n_stats)
    for k in range(n_stats):
        if not math.isfinite(point[k]):
            continue
        bad = int((~np.isfinite(dist[k])).sum())
        if bad:
            notes.append(f"{names[k]}: undefined on {bad} of {dist.shape[1]} resamples, "
                         "no interval")
        elif np.all(dist[k] == point[k]):
            low[k] = high[k] = point[k]
        else:
            low[k], high[k] = lo[k], hi[k]
    return low, high, notes


def _interval(low: float, high: float) -> list[float]:
    return [float(low), float(high)]


def test_retest(target_a: ArrayLike, target_b: ArrayLike, *,
                n_resamples: int = DEFAULT_RESAMPLES, confidence_level: float = 0.95,
                seed: int = 0) -> dict[str, Any]:
    """Kendall τ between two training seeds' targets of the same architectures.

    The ceiling of any proxy: no score can rank the architectures' AP better than a
    second training of them does.

    Args:
        target_a, target_b: The target of each architecture trained twice (first seed,
            second seed), in the same order.
        n_resamples: Bootstrap resamples of architectures.
        confidence_level: Of the BCa interval.
        seed: Seed of the resampling.

    Returns:
        ``{"n", "tau", "tau_ci": [low, high], "notes"}``.

    Example:
        >>> test_retest([0.1, 0.2, 0.3, 0.4], [0.12, 0.18, 0.35, 0.41], n_resamples=200)["tau"]
        1.0
    """
    a, b = _finite_pairs(target_a, target_b)
    n = int(a.size)
    if n < 2:
        return {"n": n, "tau": float("nan"), "tau_ci": [float("nan")] * 2,
                "notes": ["fewer than 2 architectures trained twice"]}
    taus = _Taus({"a": a, "b": b})

    def stat(idx: np.ndarray) -> np.ndarray:
        return taus.tau("a", "b", _counts(idx, n))[None]

    tau = float(stat(np.arange(n))[0])
    low, high, notes = _bootstrap(stat, n, ["tau"], n_resamples=n_resamples,
                                  confidence_level=confidence_level, seed=seed)
    if not math.isfinite(tau):
        notes.append("a target is constant: tau undefined")
    return {"n": n, "tau": tau, "tau_ci": _interval(low[0], high[0]), "notes": notes}


def mean_difference(a: ArrayLike, b: ArrayLike, *, n_resamples: int = DEFAULT_RESAMPLES,
                    confidence_level: float = 0.95, seed: int = 0) -> dict[str, Any]:
    """The mean of the paired differences ``a - b`` with a BCa interval over the pairs.

    Args:
        a, b: Paired values (NaN pairs left out).
        n_resamples: Bootstrap resamples of pairs.
        confidence_level: Of the BCa interval.
        seed: Seed of the resampling.

    Returns:
        ``{"n", "mean", "ci": [low, high], "positive": share of pairs with a > b, "notes"}``.

    Example:
        >>> round(mean_difference([0.3, 0.5, 0.4], [0.2, 0.3, 0.5], n_resamples=200)["mean"], 4)
        0.0667
    """
    x, y = _finite_pairs(a, b)
    d = x - y
    n = int(d.size)

    def stat(idx: np.ndarray) -> np.ndarray:
        return d[idx].mean(axis=-1)[None]

    mean = float(d.mean()) if n else float("nan")
    low, high, notes = _bootstrap(stat, n, ["mean"], n_resamples=n_resamples,
                                  confidence_level=confidence_level, seed=seed)
    return {"n": n, "mean": mean, "ci": _interval(low[0], high[0]),
            "positive": float((d > 0).mean()) if n else float("nan"), "notes": notes}


test_retest.__test__ = False  # type: ignore[attr-defined]  # a helper, not a pytest test


def _top_weights(v: np.ndarray, k: int) -> np.ndarray:
    """Probability that each entry is among the ``k`` largest, ties broken at random."""
    threshold = np.sort(v)[::-1][k - 1]
    above = v > threshold
    equal = v == threshold
    w = above.astype(np.float64)
    w[equal] = (k - above.sum()) / equal.sum()
    return w


def top_fraction_recall(scores: ArrayLike, target: ArrayLike, fraction: float = 0.1) -> float:
    """Fraction of the true top architectures (by target) that the proxy also ranks on top.

    With ``k = ceil(fraction · n)`` over the ``n`` finite pairs: ``|T ∩ P| / k`` where
    ``T`` and ``P`` are the ``k`` highest by target and by score. Ties at the ``k``-th
    value are broken at random and the expected overlap is returned (deterministic:
    an entry tied with ``e`` others for ``r`` remaining places counts ``r / e``).

    Args:
        scores: The proxy's score per architecture (higher = predicted better).
        target: The trained target (higher = better).
        fraction: Size of the top set as a fraction of ``n``.
    """
    x, y = _finite_pairs(scores, target)
    if x.size == 0:
        return float("nan")
    k = max(1, math.ceil(fraction * x.size - 1e-9))
    return float((_top_weights(x, k) * _top_weights(y, k)).sum() / k)


def _ceiling_tau(ceiling: float | Mapping[str, Any] | None) -> float:
    if ceiling is None:
        return float("nan")
    if isinstance(ceiling, Mapping):
        return float(ceiling["tau"])
    return float(ceiling)


def proxy_statistics(scores: ArrayLike, target: ArrayLike, *, n_params: ArrayLike,
                     macs: ArrayLike, ceiling: float | Mapping[str, Any] | None = None,
                     n_resamples: int = DEFAULT_RESAMPLES, confidence_level: float = 0.95,
                     top_fraction: float = 0.1, seed: int = 0) -> dict[str, Any]:
    """Rank agreement of one proxy with a target, against #params and MACs.

    Rows where the score, the target, #params or MACs is NaN or infinite are dropped
    (the proxy failed there); ``n`` counts the rows used and ``n_dropped`` the others.

    Args:
        scores: The proxy's score per architecture.
        target: The target per architecture (e.g. AP after the last epoch).
        n_params: Parameter count per architecture.
        macs: Multiply-accumulates per architecture.
        ceiling: The test–retest τ (a float, or :func:`test_retest`'s dict).
        n_resamples: Bootstrap resamples of architectures (shared by all statistics).
        confidence_level: Of every BCa interval.
        top_fraction: Size of the top set of :func:`top_fraction_recall`.
        seed: Seed of the resampling (the same seed gives every proxy of a report the
            same resamples when no row is dropped).

    Returns:
        A JSON-ready dict: ``n``, ``n_dropped``, ``tau``, ``tau_ci``, ``rho``,
        ``rho_ci``, ``tau_params``, ``tau_macs``, ``delta_tau_params``,
        ``delta_tau_params_ci``, ``delta_tau_macs``, ``delta_tau_macs_ci``,
        ``partial_tau_params`` (given log #params), ``partial_tau_params_ci``,
        ``top_recall`` (with ``top_fraction``), ``ceiling``, ``tau_over_ceiling``,
        ``tau_over_ceiling_ci`` (``tau_ci`` divided by the ceiling; the ceiling's own
        uncertainty is not included), ``null_sd`` (:func:`null_sd_kendall` of ``n``),
        ``n_resamples``, ``confidence_level``, ``method`` (``'BCa'``) and ``notes``.
        Intervals are ``[low, high]``; undefined values are NaN.
    """
    cols = [np.asarray(v, dtype=np.float64).ravel() for v in (scores, target, n_params, macs)]
    sizes = {c.size for c in cols}
    if len(sizes) != 1:
        raise ValueError(f"scores, target, n_params and macs differ in length: "
                         f"{[c.size for c in cols]}")
    keep = np.all([np.isfinite(c) for c in cols], axis=0)
    x, y, p, m = (c[keep] for c in cols)
    with np.errstate(divide="ignore", invalid="ignore"):
        logp = np.log(p)
    n = int(x.size)
    notes: list[str] = []
    taus = _Taus({"x": x, "y": y, "p": logp, "m": m})

    def stat(idx: np.ndarray) -> np.ndarray:
        c = _counts(idx, n)
        t_xy = taus.tau("x", "y", c)
        t_py = taus.tau("p", "y", c)
        t_my = taus.tau("m", "y", c)
        rho = _spearman_rows(x[idx], y[idx])
        partial = _partial(t_xy, taus.tau("x", "p", c), t_py)
        return np.stack([t_xy, rho, t_xy - t_py, t_xy - t_my, partial])

    nan2 = [float("nan")] * 2
    if n >= MIN_N:
        point = stat(np.arange(n))
        names = ["tau", "rho", "delta_tau_params", "delta_tau_macs", "partial_tau_params"]
        low, high, boot_notes = _bootstrap(stat, n, names, n_resamples=n_resamples,
                                           confidence_level=confidence_level, seed=seed)
        notes += boot_notes
        ones = np.ones(n)
        tau_p, tau_m = float(taus.tau("p", "y", ones)), float(taus.tau("m", "y", ones))
    else:
        point = np.full(5, np.nan)
        low = high = np.full(5, np.nan)
        tau_p = tau_m = float("nan")
        notes.append(f"only {n} complete rows: nothing computed")
    if n >= MIN_N and not np.ptp(x) > 0:
        notes.append("the proxy is constant on these architectures: tau undefined")
    ceil = _ceiling_tau(ceiling)
    frac = point[0] / ceil if math.isfinite(ceil) and ceil > 0 else float("nan")
    frac_ci = ([low[0] / ceil, high[0] / ceil] if math.isfinite(ceil) and ceil > 0 else nan2)
    return {
        "n": n,
        "n_dropped": int((~keep).sum()),
        "tau": float(point[0]),
        "tau_ci": _interval(low[0], high[0]),
        "rho": float(point[1]),
        "rho_ci": _interval(low[1], high[1]),
        "tau_params": tau_p,
        "tau_macs": tau_m,
        "delta_tau_params": float(point[2]),
        "delta_tau_params_ci": _interval(low[2], high[2]),
        "delta_tau_macs": float(point[3]),
        "delta_tau_macs_ci": _interval(low[3], high[3]),
        "partial_tau_params": float(point[4]),
        "partial_tau_params_ci": _interval(low[4], high[4]),
        "top_fraction": float(top_fraction),
        "top_recall": top_fraction_recall(x, y, top_fraction) if n else float("nan"),
        "ceiling": ceil,
        "tau_over_ceiling": float(frac),
        "tau_over_ceiling_ci": [float(v) for v in frac_ci],
        "null_sd": null_sd_kendall(n),
        "n_resamples": int(n_resamples),
        "confidence_level": float(confidence_level),
        "method": "BCa",
        "notes": notes,
    }


def rank_aggregate(*score_lists: ArrayLike, method: str = "mean") -> np.ndarray:
    """Combine several scores of the same architectures by their ranks.

    Each list is ranked on its own (ascending: the highest score gets rank ``n``;
    ties get their average rank; NaN entries are left out of the ranking). An
    architecture with a NaN in any list gets NaN.

    Args:
        score_lists: Two or more equal-length score lists (e.g. an ID proxy and
            log #params).
        method: ``'mean'``: the mean of the ranks; ``'log'``: AZ-NAS's
            ``Σ_m log(rank_m / n_m)`` (Lee and Ham, CVPR 2024, Eq. 9), which
            penalises a low rank in any one term more than the mean does.

    Returns:
        One aggregate score per architecture (higher = better on all terms).

    Example:
        >>> rank_aggregate([1.0, 2.0, 3.0], [30.0, 10.0, 20.0]).tolist()
        [2.0, 1.5, 2.5]
    """
    if not score_lists:
        raise ValueError("rank_aggregate needs at least one score list")
    if method not in ("mean", "log"):
        raise ValueError(f"method must be 'mean' or 'log', got {method!r}")
    cols = [np.asarray(s, dtype=np.float64).ravel() for s in score_lists]
    if len({c.size for c in cols}) != 1:
        raise ValueError(f"score lists differ in length: {[c.size for c in cols]}")
    out = np.zeros(cols[0].size)
    for c in cols:
        ok = np.isfinite(c)
        ranks = np.full(c.size, np.nan)
        ranks[ok] = sps.rankdata(c[ok])
        out += np.log(ranks / ok.sum()) if method == "log" else ranks
    return out / len(cols) if method == "mean" else out
