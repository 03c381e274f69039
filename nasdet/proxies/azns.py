"""AZ-NAS: expressivity, progressivity and trainability of the backbone's stages.

Reference: J. Lee and B. Ham, "AZ-NAS: Assembling Zero-Cost Proxies for Network
Architecture Search", CVPR 2024 (arXiv:2403.19232). AZ-NAS assembles four terms by
rank aggregation over the population (see :func:`nasdet.utils.stats.rank_aggregate`);
three are per-model scores and registered here (the fourth, complexity, is ``macs``):

=====================  ==================================================  ==========
name                   score                                               unit
=====================  ==================================================  ==========
azns_expressivity      Σ_s H(p_s), the entropy of the normalised            nats
                       eigenvalues of stage ``s``'s feature covariance
azns_progressivity     min_s (H(p_{s+1}) − H(p_s)) over consecutive stages  nats
azns_trainability      mean over consecutive stages of −σ − 1/σ + 2, σ the  (≤ 0)
                       spectral norm of the stage-to-stage Jacobian
=====================  ==================================================  ==========

Common to all three, as in the authors' code: the model (a copy of it) is
re-initialised with Kaiming-normal (fan-in, ReLU gain) convolution and linear weights,
zero biases and unit/zero normalisation affine parameters (``kaiming_init=False``
keeps the model's own weights); it runs in train mode (BatchNorm with batch
statistics) on the probe batch. The "stages" are ``adapter.stage_features`` (for an
mmdet detector: the backbone's ``out_indices`` stages, C2..C5 of a ResNet), the
chain of blocks the paper's terms are defined on; FPN levels are not a chain and are
not used.
"""

from __future__ import annotations

import copy
import math

import torch
from torch import Tensor, nn
from torch.nn import functional as F

from nasdet.errors import NasdetError
from nasdet.proxies._utils import reinit
from nasdet.proxies.adapters import ModelAdapter
from nasdet.proxies.base import PROXIES, Proxy

__all__ = ["AZNASExpressivity", "AZNASProgressivity", "AZNASTrainability",
           "isotropy_entropy", "kaiming_init", "stage_jacobian_norm"]

REFERENCE = "Lee and Ham, AZ-NAS, CVPR 2024"


def kaiming_init(model: nn.Module) -> None:
    """Re-initialise ``model`` as AZ-NAS does, in place: convolution and linear weights
    Kaiming normal (``mode='fan_in'``, ``nonlinearity='relu'``; see :func:`reinit`)."""
    reinit(model, lambda w: nn.init.kaiming_normal_(w, mode="fan_in", nonlinearity="relu"))


def isotropy_entropy(fmap: Tensor) -> float:
    """Entropy (nats) of the normalised eigenvalues of a feature map's channel covariance.

    Samples are images × positions; the covariance is centred and divided by the
    sample count, in float64; eigenvalues are clipped at 0 and ``0·log 0 = 0``. It is
    ``log C`` for ``C`` uncorrelated channels of equal variance (isotropic) and 0 for a
    rank-1 feature map (the authors' code adds 1e-8 inside the log; the difference is
    below 1e-7 nats per channel).

    Args:
        fmap: ``B×C×...`` feature map.
    """
    f = fmap.detach().to(torch.float64)
    x = f.transpose(0, 1).reshape(f.shape[1], -1)
    x = x - x.mean(dim=1, keepdim=True)
    cov = x @ x.T / x.shape[1]
    s = torch.linalg.eigvalsh(cov).clamp_min(0.0)
    total = float(s.sum())
    if total <= 0.0:
        return 0.0
    p = s / total
    p = p[p > 0]
    return float(-(p * p.log()).sum())


def stage_jacobian_norm(f_in: Tensor, f_out: Tensor, g_out: Tensor) -> float:
    """AZ-NAS's estimate of the spectral norm of ``∂f_out/∂f_in``.

    ``g_in = Jᵀ g_out`` by one backward pass; when ``f_in`` has ``r`` times the spatial
    size of ``f_out`` it is pixel-unshuffled by ``r`` (an ``r×r`` patch of input
    positions becomes ``r²`` channels of one output position). With ``N`` samples
    (images × output positions), ``M = (1/N) Σ g_in g_outᵀ``, which for Rademacher
    ``g_out`` estimates the per-position Jacobian ``Jᵀ``; the result is ``σ_max(M)``.

    Args:
        f_in: Earlier stage (part of the graph of ``f_out``).
        f_out: Later stage.
        g_out: Vector of ``f_out``'s shape to pull back (±1 entries in AZ-NAS).

    Returns:
        ``σ_max``, or ``nan`` when ``f_out`` is ``f_in`` (an identity stage, which the
        authors score ``-inf``).
    """
    (g_in,) = torch.autograd.grad(f_out, f_in, grad_outputs=g_out, retain_graph=True,
                                  allow_unused=True)
    if g_in is None:
        raise NasdetError("a stage does not depend on the stage before it",
                          key=f"stage of shape {tuple(f_out.shape)}")
    if g_in.shape == g_out.shape and torch.equal(g_in, g_out):
        return float("nan")
    if g_in.shape[2:] != g_out.shape[2:]:
        ratio = g_in.shape[2] / g_out.shape[2]
        r = int(round(ratio))
        if r < 1 or g_in.shape[2] != r * g_out.shape[2] or g_in.shape[3] != r * g_out.shape[3]:
            raise NasdetError(f"stage sizes {tuple(g_in.shape[2:])} -> {tuple(g_out.shape[2:])} "
                              "are not an integer downsampling", key="stage_features")
        g_in = F.pixel_unshuffle(g_in, r)
    b, co = g_out.shape[:2]
    ci = g_in.shape[1]
    go = g_out.detach().to(torch.float64).permute(0, 2, 3, 1).reshape(-1, co)
    gi = g_in.detach().to(torch.float64).permute(0, 2, 3, 1).reshape(-1, ci)
    mat = gi.T @ go / go.shape[0]
    return float(torch.linalg.svdvals(mat).max())


class _AZNASProxy(Proxy):
    mode = "train"
    needs = "features"
    reference = REFERENCE

    def __init__(self, kaiming_init: bool = True, seed: int | None = 0):
        super().__init__(seed=seed)
        self.kaiming_init = kaiming_init

    def _net(self, model: nn.Module) -> nn.Module:
        if not self.kaiming_init:
            return model
        net = copy.deepcopy(model)
        kaiming_init(net)
        return net

    def _entropies(self, model: nn.Module, adapter: ModelAdapter) -> list[float]:
        net = self._net(model)
        with torch.no_grad():
            stages = [s for s in adapter.stage_features(net, adapter.inputs()) if s.dim() >= 3]
        if not stages:
            raise NasdetError("the adapter returned no stage map with spatial dims",
                              key=type(model).__name__)
        return [isotropy_entropy(s) for s in stages]


@PROXIES.register_module(name="azns_expressivity")
class AZNASExpressivity(_AZNASProxy):
    """AZ-NAS expressivity: ``Σ_s H(p_s)`` over the stages (see the module docstring).

    ``p_s`` are the eigenvalues of stage ``s``'s channel covariance (samples = images ×
    positions) divided by their sum and ``H`` their entropy: a stage whose features
    spread evenly over its channels (isotropic) scores ``log C_s``, a rank-1 stage 0.

    Args:
        kaiming_init: Re-initialise a copy as AZ-NAS does (default).
        seed: See :class:`~nasdet.proxies.base.Proxy`.
    """

    name, unit = "azns_expressivity", "nats"

    def compute(self, model: nn.Module, adapter: ModelAdapter) -> float:
        return float(sum(self._entropies(model, adapter)))


@PROXIES.register_module(name="azns_progressivity")
class AZNASProgressivity(_AZNASProxy):
    """AZ-NAS progressivity: ``min_s (H(p_{s+1}) − H(p_s))`` over consecutive stages.

    The least gain of expressivity from one stage to the next (negative when a stage is
    less isotropic than the one before). Needs at least two stages.

    Args:
        kaiming_init: Re-initialise a copy as AZ-NAS does (default).
        seed: See :class:`~nasdet.proxies.base.Proxy`.
    """

    name, unit = "azns_progressivity", "nats"

    def compute(self, model: nn.Module, adapter: ModelAdapter) -> float:
        ent = self._entropies(model, adapter)
        if len(ent) < 2:
            raise NasdetError("progressivity needs at least two stages", key="stage_features")
        return float(min(b - a for a, b in zip(ent[:-1], ent[1:], strict=True)))


@PROXIES.register_module(name="azns_trainability")
class AZNASTrainability(_AZNASProxy):
    """AZ-NAS trainability: ``mean_s (−σ_s − 1/σ_s + 2)`` over consecutive stage pairs.

    ``σ_s`` is the spectral norm of the Jacobian from stage ``s`` to stage ``s+1``,
    estimated as AZ-NAS does (:func:`stage_jacobian_norm`): one Rademacher vector
    ``g ∈ {−1, +1}`` of stage ``s+1``'s shape per pair, pulled back by one backward
    pass. The term is 0 at ``σ = 1`` (gradients neither explode nor vanish between
    stages) and negative otherwise. A pair whose later stage is the earlier one
    unchanged scores ``-inf``, as in the authors' code, so the proxy then fails.

    Args:
        kaiming_init: Re-initialise a copy as AZ-NAS does (default).
        seed: See :class:`~nasdet.proxies.base.Proxy`.
    """

    name, unit = "azns_trainability", "1 (max 0)"

    def compute(self, model: nn.Module, adapter: ModelAdapter) -> float:
        net = self._net(model)
        x = adapter.inputs().detach().clone().requires_grad_(True)
        with torch.enable_grad():
            stages = [s for s in adapter.stage_features(net, x) if s.dim() >= 3]
            if len(stages) < 2:
                raise NasdetError("trainability needs at least two stages",
                                  key="stage_features")
            scores = []
            for i in reversed(range(1, len(stages))):
                f_out = stages[i]
                g_out = (torch.bernoulli(torch.full_like(f_out, 0.5)) - 0.5) * 2.0
                sigma = stage_jacobian_norm(stages[i - 1], f_out, g_out)
                if math.isnan(sigma):
                    scores.append(float("-inf"))
                elif sigma == 0.0:
                    scores.append(float("-inf"))
                else:
                    scores.append(-sigma - 1.0 / sigma + 2.0)
        return float(sum(scores) / len(scores))
