"""Dense heads with configurable parameter sharing."""

from nasdet.models.dense_heads.level_sharing import LEVEL_SHARING
from nasdet.models.dense_heads.sharing_retina_head import CLS_REG_SHARING, SharingRetinaHead
from nasdet.models.dense_heads.sharing_rpn_head import SharingRPNHead

__all__ = ["CLS_REG_SHARING", "LEVEL_SHARING", "SharingRPNHead", "SharingRetinaHead"]
