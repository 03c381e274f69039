"""RetinaNet head whose towers and predictors may be shared across levels and tasks."""

from __future__ import annotations

import copy

from mmdet.models.dense_heads import RetinaHead
from mmdet.registry import MODELS
from mmengine.model import initialize
from torch import Tensor, nn

from nasdet.models.dense_heads.level_sharing import (
    LEVEL_SHARING,
    LevelIndexedForward,
    check_choice,
    num_copies,
    pack,
    pick,
)

CLS_REG_SHARING = ("separate", "shared")


@MODELS.register_module()
class SharingRetinaHead(LevelIndexedForward, RetinaHead):
    """mmdet's RetinaHead with configurable parameter sharing.

    ``level_sharing`` (see :data:`~nasdet.models.dense_heads.level_sharing.LEVEL_SHARING`):

    * ``'shared'`` (default, mmdet's RetinaHead): one tower per task and one
      ``retina_cls``/``retina_reg`` for every level; the module names and shapes are
      RetinaHead's, so its checkpoints load.
    * ``'shared_tower'``: the towers are shared; ``retina_cls``/``retina_reg`` become
      ``nn.ModuleList`` s with one conv per level.
    * ``'per_level'``: towers and predictors per level (``cls_convs.{level}.{i}``,
      ``retina_cls.{level}``).

    ``cls_reg_sharing``: ``'separate'`` (default) keeps a classification tower
    (``cls_convs``) and a regression tower (``reg_convs``); ``'shared'`` builds one
    tower (``shared_convs``) that feeds both predictors.

    Sharing is by module identity: a shared tower is one module applied at every
    level, so its Parameters are counted once. With ``T`` the parameters of one tower
    (``stacked_convs`` 3x3 convs), ``P`` those of one predictor pair, ``L`` levels and
    ``m`` = 2 towers (separate) or 1 (shared):
    ``shared = m T + P``; ``shared_tower = m T + L P``; ``per_level = L (m T + P)``.

    The ``bias_prob`` override of ``init_cfg`` for ``retina_cls`` is applied to each
    per-level ``retina_cls`` conv as well.

    Args:
        num_classes: Number of object classes.
        in_channels: Channels of the input feature maps.
        level_sharing: ``'shared'``, ``'shared_tower'`` or ``'per_level'``.
        cls_reg_sharing: ``'separate'`` or ``'shared'``.
        **kwargs: RetinaHead / AnchorHead arguments (``stacked_convs=4``,
            ``feat_channels=256``, ``anchor_generator`` (its ``strides`` fix the number of
            levels), ``norm_cfg``, losses, ``train_cfg``, ``test_cfg``, ``init_cfg``).
    """

    def __init__(
        self,
        num_classes: int,
        in_channels: int,
        level_sharing: str = "shared",
        cls_reg_sharing: str = "separate",
        **kwargs,
    ) -> None:
        self.level_sharing = check_choice(level_sharing, LEVEL_SHARING, "level_sharing")
        self.cls_reg_sharing = check_choice(cls_reg_sharing, CLS_REG_SHARING, "cls_reg_sharing")
        super().__init__(num_classes, in_channels, **kwargs)

    @property
    def num_levels(self) -> int:
        """Pyramid levels, from the anchor generator's strides."""
        return self.prior_generator.num_levels

    def _init_layers(self) -> None:
        """Build RetinaHead's layers once per tower / predictor copy and register them."""
        n_towers, n_preds = num_copies(self.level_sharing, self.num_levels)
        cls_towers, reg_towers, cls_preds, reg_preds = [], [], [], []
        for copy_idx in range(max(n_towers, n_preds)):
            super()._init_layers()
            if copy_idx < n_towers:
                cls_towers.append(self.cls_convs)
                reg_towers.append(self.reg_convs)
            if copy_idx < n_preds:
                cls_preds.append(self.retina_cls)
                reg_preds.append(self.retina_reg)
        if self.cls_reg_sharing == "shared":
            del self.cls_convs
            del self.reg_convs
            self.shared_convs = pack(cls_towers)
        else:
            self.cls_convs = pack(cls_towers)
            self.reg_convs = pack(reg_towers)
        self.retina_cls = pack(cls_preds)
        self.retina_reg = pack(reg_preds)

    def tower(self, task: str, level: int) -> nn.ModuleList:
        """The conv tower used for ``task`` (``'cls'`` or ``'reg'``) at ``level``."""
        name = "shared_convs" if self.cls_reg_sharing == "shared" else f"{task}_convs"
        return pick(getattr(self, name), self.level_sharing == "per_level", level)

    def predictor(self, task: str, level: int) -> nn.Module:
        """The final conv for ``task`` (``'cls'`` or ``'reg'``) at ``level``."""
        return pick(getattr(self, f"retina_{task}"), self.level_sharing != "shared", level)

    def forward_single(self, x: Tensor, level: int | None = None) -> tuple[Tensor, Tensor]:
        """Forward one level.

        Args:
            x: Feature map of the level.
            level: Index of the level; required unless ``level_sharing='shared'``.

        Returns:
            ``(cls_score, bbox_pred)`` for the level.
        """
        level = self.resolve_level(level)
        cls_feat = x
        for conv in self.tower("cls", level):
            cls_feat = conv(cls_feat)
        if self.cls_reg_sharing == "shared":
            reg_feat = cls_feat
        else:
            reg_feat = x
            for conv in self.tower("reg", level):
                reg_feat = conv(reg_feat)
        return self.predictor("cls", level)(cls_feat), self.predictor("reg", level)(reg_feat)

    def init_weights(self) -> None:
        """mmengine init, then per-level copies of ``override`` entries naming a list."""
        super().init_weights()
        cfgs = self.init_cfg if isinstance(self.init_cfg, list) else [self.init_cfg]
        cfgs = [c for c in cfgs if c]
        if any(c.get("type") == "Pretrained" for c in cfgs):
            return
        for cfg in cfgs:
            overrides = cfg.get("override") or []
            for override in overrides if isinstance(overrides, list) else [overrides]:
                target = getattr(self, override.get("name", ""), None)
                if not isinstance(target, nn.ModuleList):
                    continue
                sub = {k: v for k, v in copy.deepcopy(dict(override)).items() if k != "name"}
                if "type" not in sub:
                    sub = {
                        k: v
                        for k, v in copy.deepcopy(dict(cfg)).items()
                        if k not in ("override", "layer")
                    }
                for module in target:
                    initialize(module, dict(sub, layer=type(module).__name__))
