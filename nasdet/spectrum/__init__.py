"""Eigenspectrum engine: streaming channel covariance, eigenvalues and ID measures.

* :class:`StreamingCovariance` accumulates the ``C x C`` covariance of feature samples
  batch by batch; accumulators merge and all-reduce exactly.
* :class:`SpectrumProbe` hooks layers selected by name patterns or presets and feeds
  their outputs (samples = images x spatial positions) into accumulators.
* :func:`eigenvalues` and :func:`spectrum_measures` turn a covariance into its spectrum
  and intrinsic-dimensionality measures (Suzuki's degrees of freedom, participation
  ratio, effective rank, components for a fraction of the variance).

This package depends on torch and NumPy only (no MMDetection, Ray or Optuna).
"""

from __future__ import annotations

from nasdet.spectrum.covariance import StreamingCovariance
from nasdet.spectrum.measures import (
    DEFAULT_REL_LAMBDA,
    DEFAULT_VARIANCE_FRACTIONS,
    degrees_of_freedom,
    dof_lambda,
    effective_rank,
    eigenvalues,
    num_components,
    participation_ratio,
    spectrum_measures,
)
from nasdet.spectrum.probes import PRESETS, LayerSpectrum, Preset, SpectrumProbe, select_modules

__all__ = [
    "DEFAULT_REL_LAMBDA",
    "DEFAULT_VARIANCE_FRACTIONS",
    "PRESETS",
    "LayerSpectrum",
    "Preset",
    "SpectrumProbe",
    "StreamingCovariance",
    "degrees_of_freedom",
    "dof_lambda",
    "effective_rank",
    "eigenvalues",
    "num_components",
    "participation_ratio",
    "select_modules",
    "spectrum_measures",
]
