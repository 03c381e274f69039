"""Streaming, mergeable, all-reducible channel covariance of feature samples.

A feature map of shape ``(B, C, H, W)`` contributes ``B * H * W`` samples of dimension
``C``; its covariance is ``C x C``. The accumulator never stores the samples: it keeps
the sample count ``n``, the mean ``m`` and the centred sum of outer products
``M2 = sum_i (x_i - m)(x_i - m)^T`` in float64, and folds each batch in with the
parallel update of Chan, Golub and LeVeque (1979)::

    n  = n_a + n_b
    d  = m_b - m_a
    m  = m_a + d * n_b / n
    M2 = M2_a + M2_b + d d^T * n_a * n_b / n

The batch statistics ``(m_b, M2_b)`` come from fp32 Gram matrices of the batch after
subtracting a shift close to its mean (the running mean, else the mean of the batch's
first chunk, or a constant channel's value), so a feature offset of 1e4 with unit spread
costs no precision; the exact batch mean is recovered from the column sums. The batch is
processed in cache-sized chunks: each chunk is centred in one pass, multiplied by a plain
BLAS GEMM in fp32, and its ``C x C`` Gram is added to the float64 state, so only ``C x C``
work per chunk is done in float64. fp16/bf16 inputs are upcast to fp32 in the centring
pass; fp64 inputs stay in fp64 throughout.

Accuracy (docs/spectrum_accuracy.md): with fp32 (or narrower) inputs each covariance
entry is within ``gamma_{K+2} (|A|^T|A| + 2 s s^T / n) / (n - ddof)`` of the exact
covariance of the given values, for any summation order the BLAS uses: ``A`` the
centred samples, ``s = sum |a|`` per channel, ``K`` the rows of one chunk (at most
``max(4096, C)``), ``gamma_k = k u / (1 - k u)``, ``u = 2^-24``. By Weyl's theorem every
eigenvalue is then within the spectral norm of that bound matrix. Measured errors are far
smaller: about 1e-8..5e-8 of the largest eigenvalue on detector features. fp64 inputs are
accurate to float64 rounding.
"""

from __future__ import annotations

import math
from collections.abc import Iterator, Mapping
from typing import Any

import torch

from nasdet.errors import NasdetError

__all__ = ["StreamingCovariance"]

# Rows (samples) per chunk: a chunk of about 1M fp32 elements (4 MiB) stays in the
# last-level cache between centring it and multiplying it; at most 4096 rows, because
# each chunk's fp32 Gram is flushed to float64, so fp32 rounding grows with the chunk
# length only (measured max error 5e-8 of the largest entry at 4096 rows vs 8e-7 for a
# 120k-row batch accumulated in fp32); at least C rows, so that the C x C flush stays
# small next to the chunk's 2 * rows * C^2 flops.
_CHUNK_ELEMENTS = 1 << 20
_MAX_CHUNK_ROWS = 4096
_MIN_CHUNK_ROWS = 256


def _chunk_rows(num_features: int) -> int:
    rows = min(_MAX_CHUNK_ROWS, _CHUNK_ELEMENTS // max(num_features, 1))
    return max(_MIN_CHUNK_ROWS, num_features, rows)


def _compute_dtype(dtype: torch.dtype) -> torch.dtype:
    # fp64 inputs keep full precision; everything else (fp16, bf16, fp32, ints) runs the
    # Gram in fp32, which is where BLAS is fastest.
    return torch.float64 if dtype == torch.float64 else torch.float32


class StreamingCovariance:
    """Per-channel covariance of feature samples, accumulated batch by batch.

    Args:
        num_features: Number of channels ``C`` (the dimension of one sample).
        device: Device of the accumulated state. ``None`` (default) follows the first
            batch given to :meth:`update` / :meth:`update_feature_map` (CPU until then).

    Streaming, merging and all-reducing compute the same statistic as one pass over all
    samples at once: up to float64 rounding for fp64 inputs; for fp32 (or narrower)
    inputs each way is within the fp32 Gram's rounding bound (module docstring) of the
    exact covariance, so they agree to that bound, not bit for bit.

    Example:
        >>> import torch
        >>> acc = StreamingCovariance(3)
        >>> acc.update(torch.randn(100, 3))
        >>> acc.update_feature_map(torch.randn(2, 3, 8, 8))
        >>> acc.count
        228
        >>> acc.covariance().shape
        torch.Size([3, 3])
    """

    def __init__(self, num_features: int, *, device: torch.device | str | None = None):
        if int(num_features) < 1:
            raise NasdetError(f"must be >= 1, got {num_features}", key="num_features")
        self.num_features = int(num_features)
        self._follow_input = device is None
        dev = torch.device("cpu") if device is None else torch.device(device)
        self._count = 0
        self._mean = torch.zeros(self.num_features, dtype=torch.float64, device=dev)
        self._m2 = torch.zeros(
            self.num_features, self.num_features, dtype=torch.float64, device=dev
        )

    # ------------------------------------------------------------------ properties
    @property
    def count(self) -> int:
        """Number of samples accumulated so far."""
        return self._count

    @property
    def device(self) -> torch.device:
        """Device holding the accumulated state."""
        return self._mean.device

    @property
    def mean(self) -> torch.Tensor:
        """Per-channel mean, float64 of shape ``(C,)``; zeros when no sample was seen."""
        return self._mean.clone()

    def covariance(self, *, centered: bool = True, ddof: int = 1) -> torch.Tensor:
        """The ``C x C`` covariance matrix (float64, symmetric).

        Args:
            centered: ``True`` (default) for the covariance about the mean,
                ``M2 / (n - ddof)``. ``False`` returns the uncentred second moment
                ``E[x x^T]`` (same as :meth:`second_moment`); ``ddof`` then does not
                apply.
            ddof: Delta degrees of freedom of the centred estimate. The default ``1``
                is the unbiased estimate, matching ``numpy.cov`` and scikit-learn's
                ``PCA.explained_variance_``; ``0`` gives the maximum-likelihood one.

        Returns:
            Float64 tensor of shape ``(C, C)``. All zeros when ``n <= ddof`` (no
            sample, or a single sample with ``ddof=1``) instead of NaN.

        Raises:
            NasdetError: If NaN or Inf values were accumulated.
        """
        if not centered:
            return self.second_moment()
        if ddof < 0:
            raise NasdetError(f"must be >= 0, got {ddof}", key="ddof")
        self._check_finite()
        denom = self._count - ddof
        if denom <= 0:
            return torch.zeros_like(self._m2)
        m2 = self._m2
        # The fp32 Gram is symmetric only up to rounding; return an exactly symmetric matrix.
        return (m2 + m2.T).mul_(0.5 / denom)

    def second_moment(self) -> torch.Tensor:
        """Uncentred second moment ``E[x x^T] = M2 / n + m m^T`` (float64, ``C x C``).

        Returns:
            Float64 tensor of shape ``(C, C)``; zeros when no sample was seen.
        """
        self._check_finite()
        if self._count == 0:
            return torch.zeros_like(self._m2)
        m2 = (self._m2 + self._m2.T).mul_(0.5 / self._count)
        return m2.addr_(self._mean, self._mean)

    # ------------------------------------------------------------------ updates
    @torch.no_grad()
    def update(self, x: torch.Tensor) -> None:
        """Add ``N`` samples given as a ``(N, C)`` tensor.

        Args:
            x: Samples, one per row. Any floating dtype; fp16/bf16 are upcast to fp32,
                fp64 is kept in fp64.
        """
        if x.ndim != 2 or x.shape[1] != self.num_features:
            raise NasdetError(
                f"expected samples of shape (N, {self.num_features}), got {tuple(x.shape)}",
                key="x",
            )
        if x.shape[0] == 0:
            return
        x = self._to_state_device(x)
        cdtype = _compute_dtype(x.dtype)
        n = x.shape[0]
        rows = _chunk_rows(self.num_features)
        shift = self._shift(lambda: _chunk_shift(x[:rows], (0,), cdtype), cdtype, x.dtype)
        c = self.num_features
        colsum = torch.zeros(c, dtype=torch.float64, device=x.device)
        scratch = torch.empty(min(rows, n) * c, dtype=cdtype, device=x.device)
        gram = torch.empty(c, c, dtype=cdtype, device=x.device) if cdtype != torch.float64 else None
        for start in range(0, n, rows):
            chunk = x[start : start + rows]
            buf = scratch[: chunk.shape[0] * c].view(chunk.shape[0], c)
            torch.sub(chunk, shift, out=buf)
            colsum += buf.sum(0)
            self._add_gram(buf.T, buf, gram)
        self._fold(colsum, shift, n)

    @torch.no_grad()
    def update_feature_map(
        self,
        fmap: torch.Tensor,
        *,
        stride: int = 1,
        max_positions: int | None = None,
        generator: torch.Generator | int | None = None,
    ) -> None:
        """Add the samples of a ``(B, C, *spatial)`` feature map (images x positions).

        Args:
            fmap: Feature map with channels on dim 1 and at least one spatial dim.
            stride: Keep every ``stride``-th position along each spatial dim (a view,
                no copy). ``1`` keeps all positions.
            max_positions: If set, keep at most this many positions per image, drawn
                uniformly without replacement (after ``stride``), a different subset
                for each image.
            generator: Random source for ``max_positions``: a ``torch.Generator`` or an
                int seed. The same generator state gives the same subsets. ``None`` uses
                torch's global generator.
        """
        if fmap.ndim < 3 or fmap.shape[1] != self.num_features:
            raise NasdetError(
                f"expected a feature map of shape (B, {self.num_features}, *spatial), "
                f"got {tuple(fmap.shape)}",
                key="fmap",
            )
        if int(stride) < 1:
            raise NasdetError(f"must be >= 1, got {stride}", key="stride")
        if max_positions is not None and int(max_positions) < 1:
            raise NasdetError(f"must be >= 1 or None, got {max_positions}", key="max_positions")
        if stride > 1:
            every = (slice(None, None, int(stride)),) * (fmap.ndim - 2)
            fmap = fmap[(slice(None), slice(None), *every)]
        if max_positions is not None:
            fmap = _random_positions(fmap, int(max_positions), generator)
        batch, c = fmap.shape[0], fmap.shape[1]
        spatial = fmap.shape[2:]
        positions = math.prod(spatial)
        n = batch * positions
        if n == 0:
            return
        fmap = self._to_state_device(fmap)
        cdtype = _compute_dtype(fmap.dtype)
        rows = _chunk_rows(c)
        first = next(_fmap_chunks(fmap, rows))
        sample_dims = (0, *range(2, first.ndim))
        shift = self._shift(lambda: _chunk_shift(first, sample_dims, cdtype), cdtype, fmap.dtype)
        colsum = torch.zeros(c, dtype=torch.float64, device=fmap.device)
        scratch = torch.empty(min(rows, n) * c, dtype=cdtype, device=fmap.device)
        gram = (
            torch.empty(c, c, dtype=cdtype, device=fmap.device) if cdtype != torch.float64 else None
        )
        for chunk in _fmap_chunks(fmap, rows):
            # chunk: (b, C, *s) view; centre and move channels first in a single pass.
            chunk_t = chunk.transpose(0, 1)
            buf = scratch[: chunk_t.numel()].view(chunk_t.shape)
            torch.sub(chunk_t, shift.view((c,) + (1,) * (chunk.ndim - 1)), out=buf)
            buf2 = buf.view(c, -1)
            colsum += buf2.sum(1)
            self._add_gram(buf2, buf2.T, gram)
        self._fold(colsum, shift, n)

    # ------------------------------------------------------------------ combining
    @torch.no_grad()
    def merge(self, other: StreamingCovariance) -> StreamingCovariance:
        """Fold another accumulator into this one (in place).

        The result equals a single accumulator that saw the samples of both.

        Args:
            other: Accumulator over the same number of channels; it is not modified.

        Returns:
            ``self``.
        """
        if other.num_features != self.num_features:
            raise NasdetError(
                f"cannot merge {other.num_features} channels into {self.num_features}",
                key="num_features",
            )
        if other._count == 0:
            return self
        mean_b = other._mean.to(self.device)
        m2_b = other._m2.to(self.device)
        self._combine(other._count, mean_b, m2_b)
        return self

    @torch.no_grad()
    def all_reduce(self, group: Any = None) -> StreamingCovariance:
        """Replace the local state by the state over all processes of ``group`` (in place).

        First the counts and count-weighted means are summed into the global mean ``mu``;
        then each process re-centres its ``M2`` on ``mu``
        (``M2_i + n_i (m_i - mu)(m_i - mu)^T``) and those are summed (three collectives
        in all, of sizes ``C + 1``, ``2C`` and ``C x C``). Every process ends
        with the same state, equal to one accumulator over the union of all samples.
        Call it once per accumulation: calling it again would count samples twice.

        Args:
            group: A ``torch.distributed`` process group; ``None`` is the default group.
                With the NCCL backend the state must live on the current CUDA device.

        Returns:
            ``self``.
        """
        import torch.distributed as dist

        if not (dist.is_available() and dist.is_initialized()):
            raise NasdetError(
                "torch.distributed is not initialised; call init_process_group first",
                key="group",
            )
        n_local = float(self._count)
        head = torch.empty(self.num_features + 1, dtype=torch.float64, device=self.device)
        head[0] = n_local
        torch.mul(self._mean, n_local, out=head[1:])
        # max over processes of (mean, -mean), so min == max flags channels whose mean is
        # the same everywhere; they keep that mean exactly (see _chunk_shift for why).
        span = torch.cat([self._mean, -self._mean])
        if n_local == 0:
            span.fill_(-math.inf)
        dist.all_reduce(head, group=group)
        dist.all_reduce(span, group=group, op=dist.ReduceOp.MAX)
        n_total = float(head[0].item())
        if n_total == 0:
            return self
        hi, neg_lo = span[: self.num_features], span[self.num_features :]
        mu = torch.where(hi == -neg_lo, hi, head[1:] / n_total)
        diff = self._mean - mu
        m2 = self._m2.clone() if n_local > 0 else torch.zeros_like(self._m2)
        if n_local > 0:
            m2.addr_(diff, diff, alpha=n_local)
        dist.all_reduce(m2, group=group)
        self._count = int(round(n_total))
        self._mean = mu
        self._m2 = m2
        return self

    def reset(self) -> None:
        """Forget all samples (keeps the number of channels and the device)."""
        self._count = 0
        self._mean.zero_()
        self._m2.zero_()

    # ------------------------------------------------------------------ persistence
    def state_dict(self) -> dict[str, Any]:
        """The accumulated state: ``num_features``, ``count``, ``mean``, ``m2`` (float64).

        Returns:
            A dict that :meth:`load_state_dict` (or ``torch.save``) accepts.
        """
        return {
            "num_features": self.num_features,
            "count": self._count,
            "mean": self._mean.detach().clone(),
            "m2": self._m2.detach().clone(),
        }

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        """Restore a state produced by :meth:`state_dict`.

        Args:
            state: Mapping with keys ``num_features``, ``count``, ``mean`` and ``m2``.
        """
        missing = [k for k in ("num_features", "count", "mean", "m2") if k not in state]
        if missing:
            raise NasdetError(f"state is missing {missing}", key="state_dict")
        c = int(state["num_features"])
        if c != self.num_features:
            raise NasdetError(
                f"state has {c} channels, this accumulator {self.num_features}",
                key="num_features",
            )
        mean = torch.as_tensor(state["mean"], dtype=torch.float64)
        m2 = torch.as_tensor(state["m2"], dtype=torch.float64)
        if tuple(mean.shape) != (c,) or tuple(m2.shape) != (c, c) or int(state["count"]) < 0:
            raise NasdetError(
                f"inconsistent state: count {state['count']}, mean {tuple(mean.shape)}, "
                f"m2 {tuple(m2.shape)} for {c} channels",
                key="state_dict",
            )
        self._count = int(state["count"])
        self._mean = mean.to(self.device).clone()
        self._m2 = m2.to(self.device).clone()
        if self._count == 0:
            # Updates add into M2, so an empty state must be exactly zero.
            self.reset()

    def __repr__(self) -> str:
        return (
            f"{type(self).__name__}(num_features={self.num_features}, count={self._count}, "
            f"device={self.device})"
        )

    # ------------------------------------------------------------------ internals
    def _to_state_device(self, x: torch.Tensor) -> torch.Tensor:
        if x.device == self.device:
            return x
        if self._follow_input and self._count == 0:
            self._mean = self._mean.to(x.device)
            self._m2 = self._m2.to(x.device)
            return x
        return x.to(self.device)

    def _shift(
        self, first_chunk_shift: Any, cdtype: torch.dtype, input_dtype: torch.dtype
    ) -> torch.Tensor:
        # Any shift close to the data mean keeps the fp32 Gram well conditioned; the exact
        # mean is recovered from the column sums, so the shift only affects rounding.
        shift = self._mean.to(cdtype) if self._count > 0 else first_chunk_shift()
        if input_dtype in (torch.float16, torch.bfloat16):
            # A shift on the input's own grid keeps x - shift short (<= 11 significant
            # bits), so the fp32 products are exact; an off-grid shift gives products
            # whose rounding errors correlate and add up (measured 2e-6 vs 1e-7).
            shift = shift.to(input_dtype).to(cdtype)
        return shift

    def _add_gram(self, a: torch.Tensor, b: torch.Tensor, out: torch.Tensor | None) -> None:
        # One chunk's Gram a @ b goes into the float64 M2 right away: fp32 rounding then
        # grows with the chunk length, not with the batch length.
        if out is None:  # float64 inputs
            self._m2.addmm_(a, b)
        else:
            torch.mm(a, b, out=out)
            self._m2.add_(out)

    def _fold(self, colsum: torch.Tensor, shift: torch.Tensor, n: int) -> None:
        # _add_gram has added G = sum (x - s)(x - s)^T of the batch to M2; with
        # colsum = sum (x - s) and delta = colsum / n, the batch's own centred sum is
        # M2_b = G - n delta delta^T = G - delta colsum^T, then Chan's update follows.
        delta = colsum / n
        mean_b = shift.to(torch.float64) + delta
        self._m2.addr_(delta, colsum, alpha=-1.0)
        n_a = self._count
        total = n_a + n
        if n_a == 0:
            self._mean.copy_(mean_b)
        else:
            d = mean_b - self._mean
            self._m2.addr_(d, d, alpha=n_a * n / total)
            self._mean.add_(d, alpha=n / total)
        self._count = total

    def _combine(self, n_b: int, mean_b: torch.Tensor, m2_b: torch.Tensor) -> None:
        n_a = self._count
        if n_a == 0:
            self._mean.copy_(mean_b)
            self._m2.copy_(m2_b)
            self._count = n_b
            return
        total = n_a + n_b
        d = mean_b - self._mean
        self._m2.add_(m2_b).addr_(d, d, alpha=n_a * n_b / total)
        self._mean.add_(d, alpha=n_b / total)
        self._count = total

    def _check_finite(self) -> None:
        if not bool(torch.isfinite(self._m2).all()) or not bool(torch.isfinite(self._mean).all()):
            raise NasdetError(
                "non-finite values (NaN or Inf) were accumulated; the features fed to "
                "this accumulator contain NaN/Inf",
                key="covariance",
            )


def _chunk_shift(chunk: torch.Tensor, dims: tuple[int, ...], cdtype: torch.dtype) -> torch.Tensor:
    """Per-channel shift from one chunk: its mean, or its value where a channel is constant.

    Constant channels (dead ReLU units, a BN bias behind a dead input) are then centred
    to exact zeros, so their variance and covariances come out exactly 0, not rounding
    noise that a scale-free ID measure would count as dimensions.
    """
    lo = chunk.amin(dim=dims)
    hi = chunk.amax(dim=dims)
    mean = chunk.to(cdtype).mean(dim=dims)
    return torch.where(lo == hi, lo.to(cdtype), mean)


def _fmap_chunks(fmap: torch.Tensor, rows: int) -> Iterator[torch.Tensor]:
    """Views of ``fmap`` (B, C, *spatial) holding about ``rows`` positions each."""
    batch = fmap.shape[0]
    spatial = fmap.shape[2:]
    positions = math.prod(spatial)
    if positions == 0:
        return
    if positions <= rows:
        # Small maps: several whole images per chunk.
        per = max(1, rows // positions)
        for b0 in range(0, batch, per):
            yield fmap[b0 : b0 + per]
        return
    # Large maps: slabs of the first spatial dim of one image at a time, each at most
    # `rows` positions (if one index of that dim already holds more, flatten the spatial
    # dims first; a view for contiguous maps).
    inner = positions // spatial[0]
    if inner > rows:
        fmap = fmap.reshape(batch, fmap.shape[1], positions)
        spatial, inner = fmap.shape[2:], 1
    step = max(1, rows // inner)
    for b in range(batch):
        for h0 in range(0, spatial[0], step):
            yield fmap[b : b + 1, :, h0 : h0 + step]


def _random_positions(
    fmap: torch.Tensor, k: int, generator: torch.Generator | int | None
) -> torch.Tensor:
    """Keep ``k`` random positions per image of ``fmap``; returns ``(B, C, k)``."""
    batch, c = fmap.shape[0], fmap.shape[1]
    positions = math.prod(fmap.shape[2:])
    if positions <= k:
        return fmap
    if isinstance(generator, int):
        generator = torch.Generator().manual_seed(generator)
    gen_device = generator.device if generator is not None else torch.device("cpu")
    # Independent uniform subsets per image: the k smallest of P uniform keys.
    keys = torch.rand(batch, positions, generator=generator, device=gen_device)
    idx = keys.topk(k, dim=1, largest=False, sorted=False).indices
    idx = idx.sort(dim=1).values.to(fmap.device)  # sorted: friendlier memory access
    flat = fmap.reshape(batch, c, positions)
    return torch.gather(flat, 2, idx.unsqueeze(1).expand(batch, c, k))
