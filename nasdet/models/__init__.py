"""mmdet-registered modules whose widths and parameter sharing are config choices.

Importing this package registers, in ``mmdet.registry.MODELS``:

* ``FlexResNet`` (backbone): ResNet with per-stage widths/depths and weight-tied blocks;
* ``SharingFPN`` (neck): FPN whose output convs can be shared across levels;
* ``SharingRetinaHead``, ``SharingRPNHead`` (dense heads): level and cls/reg sharing.

Use them from a plain mmdet config with
``custom_imports = dict(imports=['nasdet.models'], allow_failed_imports=False)``.
"""

import nasdet.models.transfer  # noqa: F401  (registers the transfer wrappers and FlexGN)
from nasdet.models.backbones import FlexResNet, TiedBlock, tied_source_index
from nasdet.models.dense_heads import (
    CLS_REG_SHARING,
    LEVEL_SHARING,
    SharingRetinaHead,
    SharingRPNHead,
)
from nasdet.models.necks import SharingFPN
from nasdet.models.utils import (
    SlicedLoadResult,
    count_parameters,
    load_sliced_state_dict,
    make_divisible,
)

__all__ = [
    "CLS_REG_SHARING",
    "LEVEL_SHARING",
    "FlexResNet",
    "SharingFPN",
    "SharingRPNHead",
    "SharingRetinaHead",
    "SlicedLoadResult",
    "TiedBlock",
    "count_parameters",
    "load_sliced_state_dict",
    "make_divisible",
    "tied_source_index",
]
