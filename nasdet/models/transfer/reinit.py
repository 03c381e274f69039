"""Re-initialise chosen parts of a detector after its pretrained weights are loaded."""

from __future__ import annotations

from collections.abc import Sequence

from mmdet.registry import MODELS
from torch import nn
from torch.nn.modules.batchnorm import _BatchNorm

from nasdet.errors import NasdetError
from nasdet.models.transfer.wrapper import DetectorWrapper


def reinit_module(module: nn.Module) -> None:
    """Give ``module`` a fresh from-scratch initialisation, in place.

    Convolutions and linear layers: Kaiming normal (``fan_out``, ReLU gain), bias 0
    (the initialisation of torchvision's and mmdet's ResNets). Norm layers: scale 1,
    shift 0, and BatchNorm running statistics reset (mean 0, variance 1, count 0).

    Args:
        module: Any module; all its submodules are re-initialised.
    """
    for m in module.modules():
        if isinstance(m, (nn.Conv2d, nn.Linear)):
            nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
            if m.bias is not None:
                nn.init.zeros_(m.bias)
        elif isinstance(m, (_BatchNorm, nn.GroupNorm)):
            if getattr(m, "weight", None) is not None:
                nn.init.ones_(m.weight)
                nn.init.zeros_(m.bias)
            if isinstance(m, _BatchNorm):
                m.reset_running_stats()


@MODELS.register_module()
class ReinitDetector(DetectorWrapper):
    """Load pretrained weights, then re-initialise the top stages of the backbone.

    After the detector's ``init_weights`` (which loads the pretrained backbone), the
    last ``top_stages`` residual stages (``backbone.res_layers[-k:]``, i.e.
    ``layer4``, ``layer3``, ... of a ResNet) and any extra ``modules`` are
    re-initialised by :func:`reinit_module`. Their BatchNorm layers train in batch-stats
    mode even when the backbone has ``norm_eval=True`` (their reset statistics must be
    re-estimated), unless ``train_norms=False``.

    Args:
        detector: Detector config.
        top_stages: How many top backbone stages to re-initialise (``k``).
        modules: Further submodule names to re-initialise (e.g. ``'neck'``).
        train_norms: Keep the re-initialised BatchNorms in training mode.
        data_preprocessor: See :class:`DetectorWrapper`.
        init_cfg: See :class:`DetectorWrapper`.
    """

    def __init__(
        self,
        detector: dict,
        top_stages: int = 1,
        modules: Sequence[str] = (),
        train_norms: bool = True,
        data_preprocessor: dict | None = None,
        init_cfg: dict | None = None,
    ) -> None:
        super().__init__(detector, data_preprocessor=data_preprocessor, init_cfg=init_cfg)
        names = []
        if top_stages:
            layers = list(getattr(self.backbone, "res_layers", []) or [])
            if not layers:
                raise NasdetError(
                    f"{type(self.backbone).__name__} has no res_layers; name the modules "
                    "to re-initialise instead",
                    key="model.top_stages",
                )
            if not 1 <= top_stages <= len(layers):
                raise NasdetError(
                    f"must be in [1, {len(layers)}] (stages of the backbone), got {top_stages}",
                    key="model.top_stages",
                )
            names += [f"backbone.{n}" for n in layers[-top_stages:]]
        names += [n for n in modules if n not in names]
        if not names:
            raise NasdetError("nothing to re-initialise", key="model.top_stages")
        for name in names:
            try:
                module = self.get_submodule(name)
            except AttributeError:
                raise NasdetError(f"no submodule {name!r}", key="model.modules") from None
            if any(not p.requires_grad for p in module.parameters()):
                raise NasdetError(
                    f"{name} is frozen (requires_grad=False); re-initialising it would leave "
                    "random weights that never train: lower frozen_stages",
                    key="model.top_stages",
                )
        self.reinit_names = tuple(names)
        self.train_norms = train_norms
        self.train(self.training)

    def init_wrapper_weights(self) -> None:
        """Re-initialise the chosen modules (after the pretrained weights are loaded)."""
        for name in self.reinit_names:
            reinit_module(self.get_submodule(name))

    def train(self, mode: bool = True) -> ReinitDetector:
        """Set the mode; re-initialised BatchNorms train even under ``norm_eval``."""
        super().train(mode)
        if mode and self.train_norms:
            for name in self.reinit_names:
                for m in self.get_submodule(name).modules():
                    if isinstance(m, _BatchNorm):
                        m.train()
        return self
