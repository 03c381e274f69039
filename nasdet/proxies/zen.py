"""Zen-score: Gaussian-complexity expressivity of the pre-GAP feature map."""

from __future__ import annotations

import copy
import math
from typing import Any

import torch
from torch import Tensor, nn
from torch.nn.modules.batchnorm import _BatchNorm

from nasdet.errors import NasdetError
from nasdet.proxies._utils import gaussian_init
from nasdet.proxies.adapters import ModelAdapter
from nasdet.proxies.base import PROXIES, Proxy

__all__ = ["Zen"]


def _log(value: float) -> float:
    return math.log(value) if value > 0 else float("-inf")


@PROXIES.register_module(name="zen")
class Zen(Proxy):
    """Zen-score.

    Reference: M. Lin, P. Wang, Z. Sun, H. Chen, X. Sun, Q. Qian, H. Li, R. Jin, "Zen-NAS:
    A Zero-Shot NAS for High-Performance Image Recognition", ICCV 2021
    (arXiv:2102.01063), Algorithm 1.

    Definition, per repeat (the score is the mean over ``repeats``), on a copy of the
    model:

    1. Gaussian initialisation: every convolution and linear weight ~ N(0, 1), their
       biases 0, BatchNorm/GroupNorm affine weight 1 and bias 0;
    2. every BatchNorm layer in train mode (normalising with mini-batch statistics, also
       where a detector's ``norm_eval`` would keep it in eval mode);
    3. ``x, ε ~ N(0, I)`` of the probe batch's shape ``B×C×H×W``;
    4. ``f`` = the last map of ``adapter.stage_features`` (the backbone's pre-GAP map)
       and ``Δ = (1/B) Σ_b ‖f(x)_b − f(x + αε)_b‖_F`` (the expectation over ``x, ε`` is
       estimated by the batch mean);
    5. for the ``i``-th BatchNorm call during ``f(x)`` with ``m`` channels,
       ``σ̄_i = sqrt((1/m) Σ_j σ_{i,j}²)`` where ``σ_{i,j}²`` is the (biased) mini-batch
       variance of channel ``j`` that BatchNorm normalises with;
    6. ``Zen = log Δ + Σ_i log σ̄_i``.

    Differences from the paper, stated: Algorithm 1 first removes all residual links of
    the network; a generic MMDetection backbone has no uniform switch for that, so
    residual links are kept. The authors' released code reads ``running_var`` after the
    forward pass and uses an L1 norm for ``Δ``; this implementation follows the paper's
    text (batch variance, Frobenius norm). Only BatchNorm layers enter step 5, as in the
    paper; GroupNorm/LayerNorm do not.

    Args:
        alpha: Perturbation scale ``α`` (paper: 0.01).
        repeats: Independent repeats (fresh initialisation and inputs) averaged.
        gaussian_init: Re-initialise with N(0, 1) as in the paper (default); ``False``
            scores the model's own weights.
        seed: See :class:`~nasdet.proxies.base.Proxy`.
    """

    name = "zen"
    reference = "Lin et al., Zen-NAS, ICCV 2021"
    mode = "train"
    needs = "features"
    unit = "log"

    def __init__(self, alpha: float = 0.01, repeats: int = 1, gaussian_init: bool = True,
                 seed: int | None = 0):
        super().__init__(seed=seed)
        if alpha <= 0 or repeats < 1:
            raise NasdetError("alpha must be > 0 and repeats >= 1",
                              key=f"alpha={alpha}, repeats={repeats}")
        self.alpha = alpha
        self.repeats = repeats
        self.gaussian_init = gaussian_init

    def _once(self, net: nn.Module, adapter: ModelAdapter) -> float:
        like = adapter.inputs()
        x = torch.randn(like.shape, dtype=like.dtype, device=like.device)
        eps = torch.randn(like.shape, dtype=like.dtype, device=like.device)
        if self.gaussian_init:
            gaussian_init(net)
        bn_log_sigma: list[float] = []
        recording = True

        def bn_hook(module: nn.Module, inp: tuple[Tensor, ...], _out: Any) -> None:
            if not recording:
                return
            h = inp[0].detach().to(torch.float64)
            dims = [d for d in range(h.dim()) if d != 1]
            var = h.var(dim=dims, unbiased=False)
            bn_log_sigma.append(0.5 * _log(float(var.mean())))

        handles = []
        for m in net.modules():
            if isinstance(m, _BatchNorm):
                m.train()
                handles.append(m.register_forward_hook(bn_hook))
        try:
            with torch.no_grad():
                clean = adapter.stage_features(net, x)[-1]
                recording = False
                noisy = adapter.stage_features(net, x + self.alpha * eps)[-1]
        finally:
            for h in handles:
                h.remove()
        diff = (clean - noisy).to(torch.float64).reshape(clean.shape[0], -1)
        delta = float(diff.norm(dim=1).mean())
        return _log(delta) + sum(bn_log_sigma)

    def compute(self, model: nn.Module, adapter: ModelAdapter) -> float:
        net = copy.deepcopy(model)
        return sum(self._once(net, adapter) for _ in range(self.repeats)) / self.repeats
