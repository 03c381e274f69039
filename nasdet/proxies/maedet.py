"""MAE-DET: multi-scale Gaussian entropy of a detection backbone at initialisation."""

from __future__ import annotations

import copy
import math
from collections.abc import Sequence

import torch
from torch import nn

from nasdet.errors import NasdetError
from nasdet.proxies._utils import gaussian_init, log_std, replace_norm_layers
from nasdet.proxies.adapters import ModelAdapter
from nasdet.proxies.base import PROXIES, Proxy

__all__ = ["MAEDet"]

#: The paper's multi-scale entropy prior for the five stages C1..C5 (strides 2..32).
DEFAULT_STAGE_WEIGHTS = (0.0, 0.0, 1.0, 1.0, 6.0)


@PROXIES.register_module(name="maedet")
class MAEDet(Proxy):
    """MAE-DET entropy score.

    Reference: Z. Sun, M. Lin, X. Sun, Z. Tan, H. Li, R. Jin, "MAE-DET: Revisiting Maximum
    Entropy Principle in Zero-Shot NAS for Efficient Object Detection", ICML 2022
    (arXiv:2111.13336).

    The differential entropy of a Gaussian feature map grows with ``log σ`` (its standard
    deviation) and with its dimension; MAE-DET scores a backbone by a weighted sum of the
    entropies of its stage outputs (the "multi-scale entropy prior").

    Definition, on a copy of the model:

    1. every BatchNorm/GroupNorm layer is replaced by the identity (the entropy is taken
       of the un-normalised network, as in the authors' implementation), the copy is cast
       to float64, and (``gaussian_init=True``) every convolution and linear weight is
       drawn from N(0, 1) with zero biases;
    2. ``x ~ N(0, I)`` of the probe batch's shape is fed through
       ``adapter.stage_features`` in eval mode, giving stage maps ``F_1..F_S`` (for an
       mmdet detector: the backbone's ``out_indices`` stages, C2..C5 for a ResNet);
    3. ``H_i = log σ_i + log C_i`` where ``σ_i`` is the population standard deviation of
       all entries of ``F_i`` and ``C_i`` its channel count (``channel_term=False`` drops
       ``log C_i``);
    4. ``score = Σ_i α_i H_i``; the weights ``α`` are aligned to the *deepest* stages, so
       the paper's ``(0, 0, 1, 1, 6)`` for C1..C5 gives ``(0, 1, 1, 6)`` on C2..C5.

    How this follows the paper: the stage weights are the paper's prior; ``log σ + log C``
    per stage is the per-stage entropy of the authors' released implementation (the
    spatial size term it leaves out is the same for every candidate at a fixed input
    size). The authors evaluate ``σ`` in closed form for their own block types
    (``Σ log sqrt(c_in · k²)`` per convolution, i.e. the std of an activation-free,
    residual-free chain); a generic mmdet backbone has no such form, so ``σ`` is measured
    by this forward pass, which keeps the network's activations and residual links.

    Args:
        stage_weights: ``α``, aligned to the last ``len(stages)`` entries; a backbone with
            more stages than weights raises :class:`~nasdet.errors.NasdetError`.
        channel_term: Add ``log C_i`` to each stage's ``log σ_i``.
        gaussian_init: Re-initialise with N(0, 1) (default); ``False`` keeps the model's
            weights.
        seed: See :class:`~nasdet.proxies.base.Proxy`.
    """

    name = "maedet"
    reference = "Sun et al., MAE-DET, ICML 2022"
    mode = "eval"
    needs = "features"
    unit = "nats (relative)"

    def __init__(self, stage_weights: Sequence[float] = DEFAULT_STAGE_WEIGHTS,
                 channel_term: bool = True, gaussian_init: bool = True,
                 seed: int | None = 0):
        super().__init__(seed=seed)
        self.stage_weights = tuple(float(w) for w in stage_weights)
        if not self.stage_weights:
            raise NasdetError("stage_weights must not be empty", key="stage_weights")
        self.channel_term = channel_term
        self.gaussian_init = gaussian_init

    def compute(self, model: nn.Module, adapter: ModelAdapter) -> float:
        like = adapter.inputs()
        x = torch.randn(like.shape, dtype=torch.float64, device=like.device)
        net = copy.deepcopy(model)
        replace_norm_layers(net)
        net.double()
        if self.gaussian_init:
            gaussian_init(net)
        with torch.no_grad():
            stages = adapter.stage_features(net, x)
        if len(stages) > len(self.stage_weights):
            raise NasdetError(
                f"{len(stages)} stage maps but only {len(self.stage_weights)} stage weights",
                key="stage_weights")
        weights = self.stage_weights[len(self.stage_weights) - len(stages):]
        score = 0.0
        for alpha, fmap in zip(weights, stages, strict=True):
            if alpha == 0.0:
                continue
            entropy = log_std(fmap)
            if self.channel_term:
                entropy += math.log(fmap.shape[1])
            score += alpha * entropy
        return score
