"""Width-flexible backbones."""

from nasdet.models.backbones.flex_resnet import (
    FlexBasicBlock,
    FlexBottleneck,
    FlexResLayer,
    FlexResNet,
    TiedBlock,
    tied_source_index,
)

__all__ = [
    "FlexBasicBlock",
    "FlexBottleneck",
    "FlexResLayer",
    "FlexResNet",
    "TiedBlock",
    "tied_source_index",
]
