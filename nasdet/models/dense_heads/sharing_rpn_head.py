"""RPN head whose conv and predictors may be shared across levels or not."""

from __future__ import annotations

import torch.nn.functional as F
from mmdet.models.dense_heads import RPNHead
from mmdet.registry import MODELS
from torch import Tensor, nn

from nasdet.models.dense_heads.level_sharing import (
    LEVEL_SHARING,
    LevelIndexedForward,
    check_choice,
    num_copies,
    pack,
    pick,
)


@MODELS.register_module()
class SharingRPNHead(LevelIndexedForward, RPNHead):
    """mmdet's RPNHead with configurable sharing across pyramid levels.

    ``level_sharing``: ``'shared'`` (default, mmdet's RPNHead: ``rpn_conv``,
    ``rpn_cls``, ``rpn_reg`` used at every level, so RPNHead checkpoints load);
    ``'shared_tower'``: one ``rpn_conv``, per-level ``rpn_cls.{level}``,
    ``rpn_reg.{level}``; ``'per_level'``: everything per level (``rpn_conv.{level}``).
    The RPN already shares its conv between the objectness and box predictors.
    With ``T`` the parameters of ``rpn_conv``, ``P`` those of ``rpn_cls + rpn_reg`` and
    ``L`` levels: ``shared = T + P``; ``shared_tower = T + L P``; ``per_level = L (T + P)``.

    Args:
        in_channels: Channels of the input feature maps.
        level_sharing: ``'shared'``, ``'shared_tower'`` or ``'per_level'``.
        **kwargs: RPNHead / AnchorHead arguments (``num_convs=1``, ``feat_channels``,
            ``anchor_generator`` (its ``strides`` fix the number of levels), losses,
            ``train_cfg``, ``test_cfg``, ``init_cfg``).
    """

    def __init__(self, in_channels: int, level_sharing: str = "shared", **kwargs) -> None:
        self.level_sharing = check_choice(level_sharing, LEVEL_SHARING, "level_sharing")
        super().__init__(in_channels, **kwargs)

    @property
    def num_levels(self) -> int:
        """Pyramid levels, from the anchor generator's strides."""
        return self.prior_generator.num_levels

    def _init_layers(self) -> None:
        """Build RPNHead's layers once per copy and register them."""
        n_towers, n_preds = num_copies(self.level_sharing, self.num_levels)
        towers, cls_preds, reg_preds = [], [], []
        for copy_idx in range(max(n_towers, n_preds)):
            super()._init_layers()
            if copy_idx < n_towers:
                towers.append(self.rpn_conv)
            if copy_idx < n_preds:
                cls_preds.append(self.rpn_cls)
                reg_preds.append(self.rpn_reg)
        self.rpn_conv = pack(towers)
        self.rpn_cls = pack(cls_preds)
        self.rpn_reg = pack(reg_preds)

    def tower(self, level: int) -> nn.Module:
        """The ``rpn_conv`` used at ``level``."""
        return pick(self.rpn_conv, self.level_sharing == "per_level", level)

    def predictor(self, task: str, level: int) -> nn.Module:
        """``rpn_cls`` (task ``'cls'``) or ``rpn_reg`` (``'reg'``) used at ``level``."""
        return pick(getattr(self, f"rpn_{task}"), self.level_sharing != "shared", level)

    def forward_single(self, x: Tensor, level: int | None = None) -> tuple[Tensor, Tensor]:
        """Forward one level.

        Args:
            x: Feature map of the level.
            level: Index of the level; required unless ``level_sharing='shared'``.

        Returns:
            ``(rpn_cls_score, rpn_bbox_pred)`` for the level.
        """
        level = self.resolve_level(level)
        x = F.relu(self.tower(level)(x))
        return self.predictor("cls", level)(x), self.predictor("reg", level)(x)
