"""Transfer-learning modules: detector wrappers, L2-SP, feature transfer, flexible GN.

Importing this package registers, in ``mmdet.registry.MODELS``:

* ``FeatureTransferDetector``: a student detector distilling a frozen teacher backbone;
* ``L2SPDetector``: a detector with the L2-SP penalty towards its pretrained weights;
* ``ReinitDetector``: pretrained weights with the top backbone stages re-initialised;

and, in mmengine's root registry (where mmcv keeps its norm layers), ``FlexGN``: a
GroupNorm whose group count adapts to widths that are not multiples of 32.

All wrappers keep the wrapped detector's parameter names (see
:class:`DetectorWrapper`). The strategies that combine them with config changes live
in ``configs/transfer/`` and :mod:`nasdet.transfer`.
"""

from nasdet.models.transfer.feature_transfer import (
    LOSS_TYPES,
    FeatureTransferDetector,
    feature_transfer_loss,
)
from nasdet.models.transfer.l2sp import L2SPDetector, l2sp_penalty
from nasdet.models.transfer.norm import FlexGroupNorm, divisor_at_most
from nasdet.models.transfer.reinit import ReinitDetector, reinit_module
from nasdet.models.transfer.wrapper import DetectorWrapper, unwrap_detector

__all__ = [
    "LOSS_TYPES",
    "DetectorWrapper",
    "FeatureTransferDetector",
    "FlexGroupNorm",
    "L2SPDetector",
    "ReinitDetector",
    "divisor_at_most",
    "feature_transfer_loss",
    "l2sp_penalty",
    "reinit_module",
    "unwrap_detector",
]
