"""Feature transfer: a student detector learns to reproduce a frozen teacher's features."""

from __future__ import annotations

import logging
from collections.abc import Sequence

import torch
import torch.nn.functional as F
from mmdet.registry import MODELS
from mmengine.logging import print_log
from torch import Tensor, nn

from nasdet.errors import NasdetError
from nasdet.models.transfer.wrapper import DetectorWrapper
from nasdet.models.utils.sliced_state_dict import load_sliced_state_dict
from nasdet.utils.checkpoint import read_state_dict

LOSS_TYPES = ("mse", "normalized_mse")


def feature_transfer_loss(prediction: Tensor, target: Tensor, loss_type: str = "mse") -> Tensor:
    """Distance between an adapted student feature map and the teacher's.

    Args:
        prediction: Adapter output, ``(N, C, H, W)``.
        target: Teacher feature map of the same shape.
        loss_type: ``'mse'``: ``mean((p - t)^2)`` over all elements;
            ``'normalized_mse'``: the same divided by ``mean(t^2)``, i.e. the squared
            error relative to the teacher's mean energy, so levels whose features have
            different magnitudes weigh alike and a zero prediction scores exactly 1.

    Returns:
        A scalar tensor.

    Example:
        >>> p, t = torch.zeros(1, 2, 1, 1), torch.full((1, 2, 1, 1), 2.0)
        >>> float(feature_transfer_loss(p, t)), float(feature_transfer_loss(p, t, "normalized_mse"))
        (4.0, 1.0)
    """
    err = (prediction - target).pow(2).mean()
    if loss_type == "normalized_mse":
        err = err / target.detach().pow(2).mean().clamp_min(1e-12)
    return err


@MODELS.register_module()
class FeatureTransferDetector(DetectorWrapper):
    """Train a detector while distilling a frozen pretrained backbone's features into it.

    The student is any mmdet detector (``detector``). The teacher is a backbone
    (``teacher``, e.g. the same ResNet) loaded from ``teacher_checkpoint``; it is kept
    in eval mode with ``requires_grad=False``, runs under ``torch.no_grad()``, and is
    held outside the module tree: it has no entry in ``state_dict()`` (checkpoints
    hold the student and the adapters only), none in ``parameters()`` (so it is never
    in the optimizer, which mmengine otherwise fills with frozen parameters too) and is
    moved with the model by ``.to()``/``.cuda()``.

    During ``loss`` the student's backbone outputs are captured and, for each selected
    level ``l``, a 1x1 conv adapter maps the student's channels to the teacher's;
    ``loss_feat_transfer = loss_weight * mean_l d(adapter_l(S_l), T_l)`` with ``d``
    from :func:`feature_transfer_loss` is added to the detector's losses. Adapter
    outputs are resized bilinearly to the teacher's size if the strides differ. The
    adapters start at zero (see :meth:`init_wrapper_weights`).
    Prediction uses the student only.

    Args:
        detector: Student detector config.
        teacher: Teacher backbone config; its output tuple must line up with the
            student backbone's (same number of returned stages), so give it the
            student's ``out_indices``. Its ``init_cfg`` is ignored.
        teacher_checkpoint: Weights of the teacher (path, or ``torchvision://...``).
            Every teacher weight must be in it (a wider checkpoint is sliced).
        teacher_prefix: Take the teacher's keys under this prefix (e.g. ``'backbone.'``
            for a detector checkpoint).
        levels: Positions in the backbone output tuple to transfer (default: all).
        loss_weight: Multiplier of the feature loss.
        loss_type: ``'normalized_mse'`` (default) or ``'mse'``.
        probe_size: Side of the zero image used once at construction to read the
            channels of both backbones.
        data_preprocessor: See :class:`DetectorWrapper`.
        init_cfg: See :class:`DetectorWrapper`.
    """

    def __init__(
        self,
        detector: dict,
        teacher: dict,
        teacher_checkpoint: str | None = None,
        teacher_prefix: str | None = None,
        levels: Sequence[int] | None = None,
        loss_weight: float = 1.0,
        loss_type: str = "normalized_mse",
        probe_size: int = 64,
        data_preprocessor: dict | None = None,
        init_cfg: dict | None = None,
    ) -> None:
        super().__init__(detector, data_preprocessor=data_preprocessor, init_cfg=init_cfg)
        if loss_type not in LOSS_TYPES:
            raise NasdetError(f"must be one of {LOSS_TYPES}, got {loss_type!r}", key="loss_type")
        if "backbone" not in self._modules:
            raise NasdetError("the student detector has no backbone", key="model.detector")
        self.loss_weight = float(loss_weight)
        self.loss_type = loss_type
        self.teacher_checkpoint = teacher_checkpoint
        teacher_net = self._build_teacher(teacher, teacher_checkpoint, teacher_prefix)
        object.__setattr__(self, "_teacher", teacher_net)

        student_ch, teacher_ch = self._probe_channels(probe_size)
        if len(student_ch) != len(teacher_ch):
            raise NasdetError(
                f"the student backbone returns {len(student_ch)} feature maps, the teacher "
                f"{len(teacher_ch)}; give the teacher the student's out_indices",
                key="model.teacher.out_indices",
            )
        n = len(student_ch)
        self.levels = tuple(range(n)) if levels is None else tuple(levels)
        if not self.levels or any(not 0 <= lvl < n for lvl in self.levels):
            raise NasdetError(
                f"entries must be positions in the backbone's {n} outputs, got {self.levels}",
                key="model.levels",
            )
        self._check_own_name("feat_adapters")
        self.feat_adapters = nn.ModuleList(
            nn.Conv2d(student_ch[lvl], teacher_ch[lvl], 1) for lvl in self.levels
        )
        self.init_wrapper_weights()

    def init_wrapper_weights(self) -> None:
        """Zero the adapters: the loss starts at ``loss_weight`` (normalised MSE of a zero
        prediction is 1) whatever the student's feature scale, and the student receives
        the transfer gradient as soon as the adapters have moved off zero."""
        for adapter in self.feat_adapters:
            nn.init.zeros_(adapter.weight)
            nn.init.zeros_(adapter.bias)

    # ------------------------------------------------------------------ teacher
    @staticmethod
    def _build_teacher(cfg: dict, checkpoint: str | None, prefix: str | None) -> nn.Module:
        if not checkpoint:
            raise NasdetError(
                "feature transfer needs the teacher's pretrained weights",
                key="model.teacher_checkpoint",
            )
        cfg = dict(cfg)
        cfg["init_cfg"] = None
        net = MODELS.build(cfg)
        state = read_state_dict(checkpoint, prefix=prefix, key="model.teacher_checkpoint")
        result = load_sliced_state_dict(net, state, source=checkpoint)
        missing = [k for k in result.missing_keys if not k.endswith("num_batches_tracked")]
        if missing:
            raise NasdetError(
                f"the checkpoint lacks {len(missing)} of the teacher's weights (first: "
                f"{missing[0]}); is the teacher config the checkpoint's architecture?",
                file=checkpoint,
                key="model.teacher",
            )
        if result.unexpected_keys:
            print_log(
                f"teacher {checkpoint}: {len(result.unexpected_keys)} unused keys "
                f"({', '.join(result.unexpected_keys[:4])} ...)",
                logger="current",
                level=logging.INFO,
            )
        net.eval()
        net.requires_grad_(False)
        return net

    @property
    def teacher(self) -> nn.Module:
        """The frozen teacher backbone (not a registered submodule)."""
        return self._teacher

    def _probe_channels(self, size: int) -> tuple[list[int], list[int]]:
        was_training = self.backbone.training
        x = torch.zeros(1, 3, size, size)
        try:
            self.backbone.eval()
            with torch.no_grad():
                student = self.backbone(x)
                teacher = self._teacher(x)
        finally:
            self.backbone.train(was_training)
        return [f.shape[1] for f in student], [f.shape[1] for f in teacher]

    def _apply(self, fn, recurse: bool = True):  # keep the teacher with the model
        super()._apply(fn, recurse)
        teacher = self.__dict__.get("_teacher")
        if teacher is not None:
            teacher._apply(fn)
        return self

    def train(self, mode: bool = True) -> FeatureTransferDetector:
        """Set the student's mode; the teacher stays in eval mode."""
        super().train(mode)
        self._teacher.eval()
        return self

    # ------------------------------------------------------------------ loss
    def feature_loss(self, student: Sequence[Tensor], teacher: Sequence[Tensor]) -> Tensor:
        """``loss_weight`` times the mean over levels of the adapted feature distance.

        Args:
            student: The student backbone's outputs.
            teacher: The teacher backbone's outputs (no gradient).

        Returns:
            The weighted scalar loss.
        """
        terms = []
        for adapter, lvl in zip(self.feat_adapters, self.levels, strict=True):
            pred, target = adapter(student[lvl]), teacher[lvl]
            if pred.shape[-2:] != target.shape[-2:]:
                pred = F.interpolate(
                    pred, size=target.shape[-2:], mode="bilinear", align_corners=False
                )
            terms.append(feature_transfer_loss(pred, target, self.loss_type))
        return self.loss_weight * torch.stack(terms).mean()

    def loss(self, batch_inputs: Tensor, batch_data_samples: list) -> dict:
        """The detector's losses plus ``loss_feat_transfer``."""
        captured: list = []
        handle = self.backbone.register_forward_hook(
            lambda _m, _i, out: captured.append(out) if not captured else None
        )
        try:
            losses = super().loss(batch_inputs, batch_data_samples)
        finally:
            handle.remove()
        if not captured:
            raise RuntimeError("the detector's loss did not run its backbone")
        with torch.no_grad():
            teacher_feats = self._teacher(batch_inputs)
        losses["loss_feat_transfer"] = self.feature_loss(captured[0], teacher_feats)
        return losses
