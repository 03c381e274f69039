"""ID variants that separate the spectrum's shape from the layer's width.

``id_sum`` and ``id_mean`` grow with the channel count of the probed layers, so they
partly count parameters. These variants divide that out or compare against a
reference spectrum:

===============  ====================================================================  ========
name             score                                                                 unit
===============  ====================================================================  ========
id_width_norm    Σ_l α(stride_l) · N_l / C_l over backbone stages and FPN levels,      weighted
                 α the MAE-DET multi-scale weights by the layer's stride               fraction
id_gauss_rel     mean_l N_l / N_l(twin), the twin being the same architecture with     ratio
                 every conv/linear weight redrawn Kaiming-normal (same seed)
id_dynamics      mean_l N_l/C_l after ``steps`` SGD steps minus the same at            fraction
                 initialisation
===============  ====================================================================  ========

``N_l`` is Suzuki's degrees of freedom of layer ``l``'s channel covariance (samples =
images × positions, λ = 1e-3 · μ_max) as in :mod:`nasdet.proxies.intrinsic_dim`, whose
layer selection (``layers``), sampling and eval-mode measurement these share. A
combination "ID term + log #params" needs the population, not one model: form it with
:func:`nasdet.utils.stats.rank_aggregate`.
"""

from __future__ import annotations

import copy
import math
from collections.abc import Mapping
from typing import Any

import torch
from torch import Tensor, nn

from nasdet.errors import NasdetError
from nasdet.proxies._utils import WEIGHT_LAYERS
from nasdet.proxies.adapters import ModelAdapter
from nasdet.proxies.base import PROXIES
from nasdet.proxies.intrinsic_dim import IDTrained, _IDProxy, layer_spectra
from nasdet.proxies.maedet import DEFAULT_STAGE_WEIGHTS

__all__ = ["DEFAULT_SCALE_WEIGHTS", "IDDynamics", "IDGaussRel", "IDWidthNorm",
           "scale_spectra", "scale_weight"]

#: MAE-DET's stage weights by stride: C1..C5 are strides 2..32 (``(0, 0, 1, 1, 6)``).
DEFAULT_SCALE_WEIGHTS: dict[int, float] = {
    2 ** (i + 1): float(w) for i, w in enumerate(DEFAULT_STAGE_WEIGHTS)}


def scale_weight(stride: int, weights: Mapping[int, float]) -> float:
    """Weight of a map of ``stride``: that of the largest listed stride ≤ ``stride``.

    Strides below the smallest listed one take its weight (so with the MAE-DET default,
    stride 64, e.g. an FPN's P6, weighs as stride 32, and stride 1 as stride 2).

    Args:
        stride: Input size over the map's size.
        weights: ``{stride: weight}``.
    """
    keys = sorted(weights)
    below = [k for k in keys if k <= stride]
    return float(weights[below[-1] if below else keys[0]])


class _ShapeRecorder(ModelAdapter):
    """Delegates to an adapter and records the shapes of the maps it returns."""

    def __init__(self, adapter: ModelAdapter):
        self.adapter = adapter
        self.shapes: list[torch.Size] = []

    def inputs(self) -> Tensor:
        return self.adapter.inputs()

    def loss(self, model: nn.Module, inputs: Tensor) -> Tensor:
        return self.adapter.loss(model, inputs)

    def features(self, model: nn.Module, inputs: Tensor) -> list[Tensor]:
        maps = self.adapter.features(model, inputs)
        self.shapes += [m.shape for m in maps if m.ndim >= 3]
        return maps

    def stage_features(self, model: nn.Module, inputs: Tensor) -> list[Tensor]:
        maps = self.adapter.stage_features(model, inputs)
        self.shapes += [m.shape for m in maps if m.ndim >= 3]
        return maps


def scale_spectra(model: nn.Module, adapter: ModelAdapter, **kwargs: Any) -> list[dict[str, float]]:
    """:func:`~nasdet.proxies.intrinsic_dim.layer_spectra` plus each map's ``stride``.

    The stride is the input's height over the map's, rounded to a power of two.

    Args:
        model: The model (its mode is the caller's).
        adapter: Supplies inputs and feature maps.
        kwargs: ``layers``, ``max_positions``, ``rel_lambda`` of ``layer_spectra``.
    """
    recorder = _ShapeRecorder(adapter)
    spectra = layer_spectra(model, recorder, **kwargs)
    height = adapter.inputs().shape[-2] if adapter.inputs().ndim >= 3 else 1
    for s, shape in zip(spectra, recorder.shapes, strict=True):
        ratio = max(height / shape[-2], 1.0) if shape[-2] else 1.0
        s["stride"] = float(2 ** round(math.log2(ratio)))
    return spectra


def _width_norm(spectra: list[dict[str, float]], weights: Mapping[int, float] | None) -> float:
    if weights is None:
        return sum(s["id_dof"] / s["channels"] for s in spectra) / len(spectra)
    return sum(scale_weight(int(s["stride"]), weights) * s["id_dof"] / s["channels"]
               for s in spectra)


@PROXIES.register_module(name="id_width_norm")
class IDWidthNorm(_IDProxy):
    """``Σ_l α(stride_l) · N_l / C_l``: width-normalised ID weighted across scales.

    Each probed map (backbone stage or FPN level, ``layers='both'``) contributes its
    degrees of freedom per channel, weighted by MAE-DET's multi-scale prior for its
    stride (:data:`DEFAULT_SCALE_WEIGHTS`: strides 4 and below 0, 8 and 16 one, 32 and
    above six), so a wider layer does not score higher for being wide, and the deep,
    low-resolution maps that MAE-DET found to matter most for detection weigh most.

    Args:
        scale_weights: ``{stride: weight}`` (see :func:`scale_weight`); default MAE-DET's.
        seed, layers, max_positions, rel_lambda: As the other ID proxies.
    """

    name, unit = "id_width_norm", "weighted fraction of width"

    def __init__(self, scale_weights: Mapping[int, float] | None = None, **kwargs: Any):
        super().__init__(**kwargs)
        self.scale_weights = dict(DEFAULT_SCALE_WEIGHTS if scale_weights is None
                                  else {int(k): float(v) for k, v in scale_weights.items()})
        if not self.scale_weights:
            raise NasdetError("scale_weights must not be empty", key="scale_weights")

    def compute(self, model: nn.Module, adapter: ModelAdapter) -> float:
        spectra = scale_spectra(model, adapter, layers=self.layers,
                                max_positions=self.max_positions, rel_lambda=self.rel_lambda)
        return float(_width_norm(spectra, self.scale_weights))


@torch.no_grad()
def kaiming_twin(model: nn.Module) -> nn.Module:
    """A copy of ``model`` with every conv/linear weight redrawn Kaiming-normal.

    ``nn.init.kaiming_normal_`` (fan-in, ReLU gain) in module order from torch's
    current generator, biases set to 0; everything else (normalisation layers,
    buffers) as in ``model``.

    Args:
        model: The network.
    """
    twin = copy.deepcopy(model)
    for module in twin.modules():
        if isinstance(module, WEIGHT_LAYERS):
            nn.init.kaiming_normal_(module.weight, mode="fan_in", nonlinearity="relu")
            if getattr(module, "bias", None) is not None:
                module.bias.zero_()
    return twin


@PROXIES.register_module(name="id_gauss_rel")
class IDGaussRel(_IDProxy):
    """``mean_l N_l / N_l(twin)``: ID relative to an i.i.d. Gaussian twin.

    The twin is the same architecture with every convolution and linear weight redrawn
    i.i.d. Kaiming-normal under the proxy's seed (:func:`kaiming_twin`), so the widths,
    depths, strides and normalisation are the model's and only the weights' structure
    differs. 1 means the model's initialisation spreads its features over as many
    directions as Gaussian weights would; layers whose twin has no variance (``N = 0``)
    are left out.

    Args:
        seed, layers, max_positions, rel_lambda: As the other ID proxies.
    """

    name, unit = "id_gauss_rel", "ratio"

    def compute(self, model: nn.Module, adapter: ModelAdapter) -> float:
        own = self.spectra(model, adapter)
        twin = kaiming_twin(model)
        twin.train(False)
        ref = self.spectra(twin, adapter)
        ratios = [a["id_dof"] / b["id_dof"] for a, b in zip(own, ref, strict=True)
                  if b["id_dof"] > 0]
        if not ratios:
            raise NasdetError("every probed layer of the Gaussian twin has zero variance",
                              key=type(model).__name__)
        return float(sum(ratios) / len(ratios))


@PROXIES.register_module(name="id_dynamics")
class IDDynamics(IDTrained):
    """Change of the width-normalised ID over ``steps`` SGD steps on the probe batch.

    ``mean_l N_l/C_l`` (``id_util``) of a copy trained as ``id_trained`` trains it
    (``steps`` SGD steps, ``lr``, momentum 0.9, gradient norm clipped at 10, train
    mode) minus the same of the model at initialisation, both measured in eval mode.
    Positive: the first steps spread the features over more directions. With
    ``scale_weights`` the MAE-DET-weighted sum of ``id_width_norm`` is used instead of
    the mean. Cost: ``steps`` forward/backward passes of the probe batch; the default
    20 steps on 8 probe images are 160 image passes, under 2% of the 8192 of the tiny
    detector's benchmark training (16 epochs of 512 images).

    Args:
        steps: SGD steps.
        lr: Learning rate of those steps.
        scale_weights: ``None`` (mean over layers) or ``{stride: weight}``.
        seed, layers, max_positions, rel_lambda: As the other ID proxies.
    """

    name, unit = "id_dynamics", "fraction of width (change)"

    def __init__(self, steps: int = 20, lr: float = 0.01,
                 scale_weights: Mapping[int, float] | None = None, **kwargs: Any):
        super().__init__(steps=steps, lr=lr, **kwargs)
        self.scale_weights = (None if scale_weights is None
                              else {int(k): float(v) for k, v in scale_weights.items()})
        self._last: list[dict[str, float]] = []

    def spectra(self, model: nn.Module, adapter: ModelAdapter) -> list[dict[str, float]]:
        self._last = scale_spectra(model, adapter, layers=self.layers,
                                   max_positions=self.max_positions, rel_lambda=self.rel_lambda)
        return self._last

    def compute(self, model: nn.Module, adapter: ModelAdapter) -> float:
        before = _width_norm(self.spectra(model, adapter), self.scale_weights)
        super().compute(model, adapter)       # trains a copy; measures it via self.spectra
        after = _width_norm(self._last, self.scale_weights)
        return float(after - before)
