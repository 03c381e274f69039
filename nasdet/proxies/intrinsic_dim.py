"""Intrinsic-dimensionality proxies: the eigenspectrum of feature covariances.

Each proxy runs the probe batch through the model, accumulates the channel covariance
of every probed feature map (samples = images x spatial positions, as
:class:`~nasdet.spectrum.StreamingCovariance` does) and summarises the spectra:

=================  =========================================================== =========
name               score                                                       unit
=================  =========================================================== =========
id_sum             Σ over layers of Suzuki's degrees of freedom N(λ)            dims
id_mean            mean over layers of N(λ)                                     dims
id_util            mean over layers of N(λ) / channels ("utilisation")          fraction
spectrum_entropy   mean over layers of the spectral entropy (log effective rank) nats
id_trained         id_mean after ``steps`` SGD steps on the probe batch's loss  dims
=================  =========================================================== =========

N(λ) = Σ_j μ_j / (μ_j + λ) over the covariance eigenvalues μ_j, with the scale-free
default λ = 1e-3 · μ_max (:data:`nasdet.spectrum.measures.DEFAULT_REL_LAMBDA`);
Shinya, Simo-Serra and Suzuki, ICCV 2019 workshops (arXiv:1909.04021) use it to
compare how ImageNet-pretrained and from-scratch detectors use their width.

Probed layers (``layers``): ``'stages'`` (the backbone's output stages,
``adapter.stage_features``), ``'features'`` (what the detector's heads read, e.g. FPN
levels, ``adapter.features``) or ``'both'`` (default). Spectra are measured in eval
mode, as trained models are analysed, so a candidate's score at initialisation and
after training are on the same footing.
"""

from __future__ import annotations

import copy
import math

import torch
from torch import Tensor, nn

from nasdet.proxies.adapters import ModelAdapter
from nasdet.proxies.base import PROXIES, Proxy
from nasdet.spectrum import StreamingCovariance, eigenvalues, spectrum_measures
from nasdet.spectrum.measures import DEFAULT_REL_LAMBDA

__all__ = ["IDMean", "IDSum", "IDTrained", "IDUtilisation", "SpectrumEntropy", "layer_spectra"]

LAYER_CHOICES = ("stages", "features", "both")


def layer_spectra(model: nn.Module, adapter: ModelAdapter, *, layers: str = "both",
                  max_positions: int | None = 4096, rel_lambda: float = DEFAULT_REL_LAMBDA
                  ) -> list[dict[str, float]]:
    """Spectral measures of each probed feature map for the adapter's inputs.

    Args:
        model: The model (its mode is the caller's).
        adapter: Supplies inputs and feature maps.
        layers: ``'stages'``, ``'features'`` or ``'both'``.
        max_positions: Positions sampled per image and layer (``None``: all), seeded.
        rel_lambda: λ of the degrees of freedom relative to the largest eigenvalue.

    Returns:
        :func:`~nasdet.spectrum.spectrum_measures` of each layer, plus ``channels``.
    """
    if layers not in LAYER_CHOICES:
        raise ValueError(f"layers must be one of {LAYER_CHOICES}, got {layers!r}")
    inputs = adapter.inputs()
    maps: list[Tensor] = []
    with torch.no_grad():
        if layers in ("stages", "both"):
            maps += adapter.stage_features(model, inputs)
        if layers in ("features", "both"):
            maps += adapter.features(model, inputs)
    out = []
    for i, fmap in enumerate(m for m in maps if m.ndim >= 3):
        acc = StreamingCovariance(fmap.shape[1])
        acc.update_feature_map(fmap, max_positions=max_positions, generator=i)
        measures = spectrum_measures(eigenvalues(acc.covariance()), rel_lambda=rel_lambda)
        out.append({**measures, "channels": float(fmap.shape[1])})
    if not out:
        raise ValueError("the adapter returned no feature map with spatial dims")
    return out


class _IDProxy(Proxy):
    mode = "eval"
    needs = "features"
    reference = ("Shinya, Simo-Serra, Suzuki, Understanding the Effects of Pre-Training for "
                 "Object Detectors via Eigenspectrum, ICCV 2019 workshops (arXiv:1909.04021)")

    def __init__(self, seed: int | None = 0, layers: str = "both",
                 max_positions: int | None = 4096, rel_lambda: float = DEFAULT_REL_LAMBDA):
        super().__init__(seed=seed)
        self.layers, self.max_positions, self.rel_lambda = layers, max_positions, rel_lambda

    def spectra(self, model: nn.Module, adapter: ModelAdapter) -> list[dict[str, float]]:
        return layer_spectra(model, adapter, layers=self.layers,
                             max_positions=self.max_positions, rel_lambda=self.rel_lambda)


@PROXIES.register_module(name="id_sum")
class IDSum(_IDProxy):
    """Σ over probed layers of N(λ): total intrinsic dimensionality at initialisation."""

    name, unit = "id_sum", "dimensions"

    def compute(self, model: nn.Module, adapter: ModelAdapter) -> float:
        return float(sum(s["id_dof"] for s in self.spectra(model, adapter)))


@PROXIES.register_module(name="id_mean")
class IDMean(_IDProxy):
    """Mean over probed layers of N(λ)."""

    name, unit = "id_mean", "dimensions"

    def compute(self, model: nn.Module, adapter: ModelAdapter) -> float:
        spectra = self.spectra(model, adapter)
        return float(sum(s["id_dof"] for s in spectra) / len(spectra))


@PROXIES.register_module(name="id_util")
class IDUtilisation(_IDProxy):
    """Mean over probed layers of N(λ) / channels: the fraction of width in use."""

    name, unit = "id_util", "fraction"

    def compute(self, model: nn.Module, adapter: ModelAdapter) -> float:
        spectra = self.spectra(model, adapter)
        return float(sum(s["id_dof"] / s["channels"] for s in spectra) / len(spectra))


@PROXIES.register_module(name="spectrum_entropy")
class SpectrumEntropy(_IDProxy):
    """Mean over probed layers of the entropy of the normalised spectrum (nats).

    Equals the mean of ``log(effective_rank)`` (Roy and Vetterli, 2007); 0 for a layer
    with a single non-zero direction (or none).
    """

    name, unit = "spectrum_entropy", "nats"

    def compute(self, model: nn.Module, adapter: ModelAdapter) -> float:
        spectra = self.spectra(model, adapter)
        ent = [math.log(s["effective_rank"]) if s["effective_rank"] > 0 else 0.0
               for s in spectra]
        return float(sum(ent) / len(ent))


@PROXIES.register_module(name="id_trained")
class IDTrained(_IDProxy):
    """``id_mean`` after a short training budget on the probe batch.

    A copy of the model takes ``steps`` SGD steps (``lr``, momentum 0.9) on the
    adapter's loss in train mode; its spectra are then measured in eval mode. The
    original model is untouched. Cost: ``steps`` forward/backward passes.

    Args:
        steps: SGD steps before measuring.
        lr: Learning rate of those steps.
        seed, layers, max_positions, rel_lambda: As the other ID proxies.
    """

    name, unit, needs = "id_trained", "dimensions", "loss"

    def __init__(self, steps: int = 10, lr: float = 0.01, **kwargs):
        super().__init__(**kwargs)
        self.steps, self.lr = steps, lr

    def compute(self, model: nn.Module, adapter: ModelAdapter) -> float:
        student = copy.deepcopy(model)
        student.train()
        params = [p for p in student.parameters() if p.requires_grad]
        opt = torch.optim.SGD(params, lr=self.lr, momentum=0.9)
        inputs = adapter.inputs()
        for _ in range(self.steps):
            opt.zero_grad(set_to_none=True)
            loss = adapter.loss(student, inputs)
            if not torch.isfinite(loss):
                raise FloatingPointError(f"loss became {loss.item()} while training")
            loss.backward()
            torch.nn.utils.clip_grad_norm_(params, 10.0)
            opt.step()
        student.eval()
        spectra = self.spectra(student, adapter)
        return float(sum(s["id_dof"] for s in spectra) / len(spectra))
