"""Training-free proxies: a registry, model adapters and the published baselines.

Use::

    from nasdet.proxies import MMDetAdapter, compute_proxies
    adapter = MMDetAdapter(model, data_batch)
    for r in compute_proxies(model, adapter, ["params", "macs", "synflow", "zen"]):
        print(r.name, r.value, r.unit, f"{r.seconds:.2f} s", r.error or "")

Registered baselines (``PROXIES``):

============  =======  ========  =====================================================
name          mode     needs     reference
============  =======  ========  =====================================================
params        eval     none      parameter count
macs          eval     none      multiply-accumulates per image
grad_norm     train    loss      Abdelfattah et al., ICLR 2021
snip          train    loss      Lee et al., ICLR 2019
synflow       eval     features  Tanaka et al., NeurIPS 2020
naswot        train    features  Mellor et al., ICML 2021
zen           train    features  Lin et al., ICCV 2021
maedet        eval     features  Sun et al., ICML 2022
meco          train    features  Jiang et al., NeurIPS 2023
zico          train    loss      Li et al., ICLR 2023
azns_*        train    features  Lee and Ham, CVPR 2024 (expressivity, progressivity,
                                 trainability)
============  =======  ========  =====================================================

Intrinsic-dimensionality proxies (eigenspectrum of the feature covariance, built on
:mod:`nasdet.spectrum`; see :mod:`nasdet.proxies.intrinsic_dim`): ``id_sum``,
``id_mean``, ``id_util``, ``spectrum_entropy`` and ``id_trained``; variants that
separate the spectrum's shape from the width (:mod:`nasdet.proxies.id_variants`):
``id_width_norm``, ``id_gauss_rel`` and ``id_dynamics``.

A new proxy::

    @PROXIES.register_module(name="my_proxy")
    class MyProxy(Proxy):
        name, mode, needs, unit = "my_proxy", "eval", "features", "log"
        reference = "Author et al., Venue Year"

        def compute(self, model, adapter):
            feats = adapter.features(model, adapter.inputs())
            ...
"""

from __future__ import annotations

from nasdet.proxies.adapters import (
    MMDetAdapter,
    ModelAdapter,
    TorchAdapter,
    flatten_tensors,
    sum_losses,
)
from nasdet.proxies.azns import AZNASExpressivity, AZNASProgressivity, AZNASTrainability
from nasdet.proxies.base import (
    PROXIES,
    Proxy,
    ProxyResult,
    compute_proxies,
    preserved_state,
    registered_proxies,
)

# Importing the definitions registers them.
from nasdet.proxies.cost import MACs, Params
from nasdet.proxies.gradient import GradNorm, Snip, loss_gradients
from nasdet.proxies.id_variants import IDDynamics, IDGaussRel, IDWidthNorm
from nasdet.proxies.intrinsic_dim import (
    IDMean,
    IDSum,
    IDTrained,
    IDUtilisation,
    SpectrumEntropy,
    layer_spectra,
)
from nasdet.proxies.maedet import MAEDet
from nasdet.proxies.meco import MeCo
from nasdet.proxies.naswot import NASWOT, hamming_kernel
from nasdet.proxies.synflow import SynFlow
from nasdet.proxies.zen import Zen
from nasdet.proxies.zico import ZiCo

__all__ = [
    "AZNASExpressivity",
    "AZNASProgressivity",
    "AZNASTrainability",
    "IDDynamics",
    "IDGaussRel",
    "IDMean",
    "IDSum",
    "IDTrained",
    "IDUtilisation",
    "IDWidthNorm",
    "MACs",
    "MAEDet",
    "MMDetAdapter",
    "MeCo",
    "ModelAdapter",
    "NASWOT",
    "PROXIES",
    "GradNorm",
    "Params",
    "Proxy",
    "ProxyResult",
    "Snip",
    "SpectrumEntropy",
    "SynFlow",
    "TorchAdapter",
    "Zen",
    "ZiCo",
    "compute_proxies",
    "flatten_tensors",
    "hamming_kernel",
    "layer_spectra",
    "loss_gradients",
    "preserved_state",
    "registered_proxies",
    "sum_losses",
]
