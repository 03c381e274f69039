"""The built-in transfer strategies: each one edits a config as MMDetection reads it.

See :mod:`nasdet.transfer` for what each strategy does.
"""

from __future__ import annotations

import copy
import inspect
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from mmengine.config import Config, ConfigDict

from nasdet.errors import NasdetError
from nasdet.models.utils.build import accepts, module_class
from nasdet.utils.config import detector_cfg
from nasdet.utils.schedule import scale_schedule

#: Norm layers the scratch strategy can put in place of BatchNorm.
SCRATCH_NORMS = ("FlexGN", "GN", "SyncBN", "BN")


def _cd(d: dict) -> ConfigDict:
    return ConfigDict(copy.deepcopy(dict(d)))


def _backbone(cfg: Config, strategy: str) -> dict:
    det = detector_cfg(cfg.model)
    bb = det.get("backbone") if isinstance(det, dict) else None
    if not isinstance(bb, dict):
        raise NasdetError(
            f"strategy '{strategy}' edits the backbone, but the model has no backbone dict",
            file=cfg.filename,
            key="model.backbone",
        )
    return bb


def num_backbone_stages(backbone: dict) -> int | None:
    """Residual stages of a ResNet-like backbone config (None if not derivable).

    Args:
        backbone: ``FlexResNet`` (``depths`` or ``depth``) or mmdet ``ResNet``-family
            (``num_stages``, default 4) config.
    """
    t = backbone.get("type")
    if t == "FlexResNet":
        if backbone.get("depths"):
            return len(backbone["depths"])
        return 4 if backbone.get("depth") else None
    cls = module_class(t)
    if cls is not None and accepts(t, "num_stages"):
        return int(backbone.get("num_stages", 4))
    return None


def _set_pretrained(bb: dict, checkpoint: str, prefix: str | None) -> None:
    init = dict(type="Pretrained", checkpoint=str(checkpoint))
    if prefix:
        init["prefix"] = prefix
    bb["init_cfg"] = _cd(init)
    if "pretrained" in bb:
        bb["pretrained"] = None


def _set_from_scratch(bb: dict) -> None:
    bb["init_cfg"] = None
    if "pretrained" in bb:
        bb["pretrained"] = None
    bb["frozen_stages"] = -1
    bb["norm_eval"] = False


def _strip_pretrained(bb: dict) -> None:
    """Drop any ``Pretrained`` entry from a backbone ``init_cfg``."""
    init = bb.get("init_cfg")
    if isinstance(init, dict) and init.get("type") == "Pretrained":
        bb["init_cfg"] = None
    elif isinstance(init, (list, tuple)):
        rest = [c for c in init if c.get("type") != "Pretrained"]
        bb["init_cfg"] = rest or None


def scratch(
    cfg: Config,
    checkpoint: str | None = None,
    *,
    norm: str = "FlexGN",
    num_groups: int = 32,
    gn_head: bool = True,
    schedule_factor: float = 6.0,
) -> None:
    """From scratch with mmdet's recipe (``configs/scratch/``).

    Args:
        cfg: Config to edit in place.
        checkpoint: Unused.
        norm: ``'FlexGN'`` (GroupNorm with at most ``num_groups`` groups, the largest
            count dividing each width: identical to ``GN`` on multiples of 32),
            ``'GN'`` (mmdet's exact layer), ``'SyncBN'`` or ``'BN'`` (BatchNorm in
            train mode). Goes into the backbone, the neck and (``gn_head``) the box head.
        num_groups: GroupNorm groups (32 as in mmdet).
        gn_head: Two-stage: box head becomes ``Shared4Conv1FCBBoxHead`` with norm (mask
            heads get the norm too); single-stage: the head's conv towers get the norm.
            This changes the head's architecture, as mmdet's recipe does; ``False``
            keeps the base heads.
        schedule_factor: Multiplier of the schedule length (mmdet's scratch: 6x).
    """
    if norm not in SCRATCH_NORMS:
        raise NasdetError(f"must be one of {SCRATCH_NORMS}, got {norm!r}", key="norm")
    norm_cfg: dict = dict(type=norm, requires_grad=True)
    if norm in ("FlexGN", "GN"):
        norm_cfg["num_groups"] = int(num_groups)
    det = detector_cfg(cfg.model)
    bb = _backbone(cfg, "scratch")
    bb["norm_cfg"] = _cd(norm_cfg)
    _set_from_scratch(bb)
    if accepts(bb.get("type"), "zero_init_residual"):
        bb["zero_init_residual"] = False
    neck = det.get("neck")
    if isinstance(neck, dict) and accepts(neck.get("type"), "norm_cfg"):
        neck["norm_cfg"] = _cd(norm_cfg)
    cfg.merge_from_dict({"optim_wrapper.paramwise_cfg.norm_decay_mult": 0.0})
    if gn_head:
        roi = det.get("roi_head")
        if isinstance(roi, dict):
            heads = roi.get("bbox_head")
            for bh in heads if isinstance(heads, (list, tuple)) else [heads]:
                if isinstance(bh, dict) and bh.get("type") in (
                    "Shared2FCBBoxHead",
                    "Shared4Conv1FCBBoxHead",
                ):
                    bh["type"] = "Shared4Conv1FCBBoxHead"
                    bh["conv_out_channels"] = bh.get("in_channels", 256)
                    bh["norm_cfg"] = _cd(norm_cfg)
            mh = roi.get("mask_head")
            for m in mh if isinstance(mh, (list, tuple)) else [mh]:
                if isinstance(m, dict) and accepts(m.get("type"), "norm_cfg"):
                    m["norm_cfg"] = _cd(norm_cfg)
        bh = det.get("bbox_head")
        if isinstance(bh, dict) and accepts(bh.get("type"), "norm_cfg"):
            bh["norm_cfg"] = _cd(norm_cfg)
    scale_schedule(cfg, schedule_factor)


def finetune(
    cfg: Config,
    checkpoint: str | None = None,
    *,
    frozen_stages: int = 1,
    norm_eval: bool = True,
    prefix: str | None = None,
    lr: float | None = 0.02,
) -> None:
    """Parameter transfer: start the backbone from ``checkpoint``.

    Args:
        cfg: Config to edit in place.
        checkpoint: Backbone weights (path or ``torchvision://...``).
        frozen_stages: Stem and stages ``1..frozen_stages`` frozen (-1: nothing).
        norm_eval: Keep BatchNorm statistics frozen (eval mode) while training.
        prefix: Take the backbone's keys under this prefix of the checkpoint (e.g.
            ``'backbone.'`` for a detector checkpoint); None for a backbone checkpoint.
        lr: The optimizer's learning rate (None: the base's). mmdet's fine-tuning lr for
            batch 16; a base tuned for training from scratch may use more (the tiny
            detectors' 0.06), at which a detector started from pretrained weights
            diverges (measured: loss_cls ~40, AP 0.000 after 8 epochs; 0.02: AP 0.115).
    """
    bb = _backbone(cfg, "finetune")
    _check_frozen_stages(bb, frozen_stages, "frozen_stages")
    _set_pretrained(bb, checkpoint, prefix)
    bb["frozen_stages"] = int(frozen_stages)
    bb["norm_eval"] = bool(norm_eval)
    _set_lr(cfg, lr)


def _set_lr(cfg: Config, lr: float | None) -> None:
    if lr is None:
        return
    if isinstance(lr, bool) or not isinstance(lr, (int, float)) or not lr > 0:
        raise NasdetError(f"must be a positive number or None, got {lr!r}", key="lr")
    cfg.merge_from_dict({"optim_wrapper.optimizer.lr": float(lr)})


def _check_frozen_stages(bb: dict, k: int, key: str) -> None:
    n = num_backbone_stages(bb)
    if isinstance(k, bool) or not isinstance(k, int) or k < -1 or (n is not None and k > n):
        bound = f"[-1, {n}]" if n is not None else ">= -1"
        raise NasdetError(f"must be an integer in {bound}, got {k!r}", key=key)


def freeze(
    cfg: Config,
    checkpoint: str | None = None,
    *,
    k: int = 4,
    norm_eval: bool = True,
    prefix: str | None = None,
    lr: float | None = 0.02,
) -> None:
    """``finetune`` with the stem and the first ``k`` stages frozen.

    Args:
        cfg: Config to edit in place.
        checkpoint: Backbone weights.
        k: Frozen stages (``frozen_stages=k``); 4 freezes a whole ResNet (a fixed
            feature extractor), 0 only the stem.
        norm_eval: Keep BatchNorm statistics frozen.
        prefix: See :func:`finetune`.
        lr: See :func:`finetune`.
    """
    finetune(cfg, checkpoint, frozen_stages=k, norm_eval=norm_eval, prefix=prefix, lr=lr)


def _lift_preprocessor(old_model: dict) -> dict:
    dp = old_model.get("data_preprocessor") if isinstance(old_model, dict) else None
    return {"data_preprocessor": _cd(dp)} if isinstance(dp, dict) else {}


def feature_transfer(
    cfg: Config,
    checkpoint: str | None = None,
    *,
    levels: Sequence[int] | None = None,
    loss_weight: float = 1.0,
    loss_type: str = "normalized_mse",
    student_init: str = "scratch",
    teacher: dict | None = None,
    prefix: str | None = None,
    lr: float | None = None,
) -> None:
    """Wrap the detector in a ``FeatureTransferDetector`` with a frozen pretrained teacher.

    Args:
        cfg: Config to edit in place.
        checkpoint: The teacher's weights (and the student's with
            ``student_init='pretrained'``).
        levels: Positions in the backbone's output tuple to transfer (None: all).
        loss_weight: Weight of ``loss_feat_transfer``.
        loss_type: ``'normalized_mse'`` (squared error over the teacher's mean energy)
            or ``'mse'``.
        student_init: ``'scratch'`` (no pretrained weights, nothing frozen, BN in train
            mode) or ``'pretrained'`` (as :func:`finetune` with its defaults).
        teacher: Teacher backbone config; by default the base config's backbone. A dict
            with the same ``type`` is merged onto it (``dict(widths=[...])`` for a wider
            teacher), one with another ``type`` replaces it. ``out_indices`` is always
            the student's.
        prefix: Key prefix of the backbone in ``checkpoint`` (see :func:`finetune`).
        lr: The optimizer's learning rate; None keeps the base's (the default student
            trains from scratch, at the base's from-scratch lr: on the tiny detector, 8
            epochs, lr 0.02 gave AP 0.027). With ``student_init='pretrained'`` use the
            fine-tuning lr, 0.02.
    """
    from nasdet.models.transfer import LOSS_TYPES

    if student_init not in ("scratch", "pretrained"):
        raise NasdetError(
            f"must be 'scratch' or 'pretrained', got {student_init!r}", key="student_init"
        )
    if loss_type not in LOSS_TYPES:
        raise NasdetError(f"must be one of {LOSS_TYPES}, got {loss_type!r}", key="loss_type")
    bb = _backbone(cfg, "feature_transfer")
    teacher_cfg = _cd(bb)
    if teacher:
        if teacher.get("type", teacher_cfg["type"]) != teacher_cfg["type"]:
            teacher_cfg = _cd(teacher)
        else:
            merged = Config(dict(t=teacher_cfg))
            merged.merge_from_dict({"t": dict(teacher)})
            teacher_cfg = _cd(merged.t)
    teacher_cfg["init_cfg"] = None
    if "pretrained" in teacher_cfg:
        teacher_cfg["pretrained"] = None
    if "out_indices" in bb:
        teacher_cfg["out_indices"] = bb["out_indices"]
    if "frozen_stages" in teacher_cfg:
        teacher_cfg["frozen_stages"] = -1
    if student_init == "pretrained":
        finetune(cfg, checkpoint, prefix=prefix, lr=None)
    else:
        _strip_pretrained(bb)
        _set_from_scratch(bb)
    old = cfg.model
    cfg.model = ConfigDict(
        type="FeatureTransferDetector",
        detector=old,
        teacher=teacher_cfg,
        teacher_checkpoint=str(checkpoint),
        teacher_prefix=prefix,
        levels=list(levels) if levels is not None else None,
        loss_weight=float(loss_weight),
        loss_type=loss_type,
        **_lift_preprocessor(old),
    )
    _set_lr(cfg, lr)


def l2sp(
    cfg: Config,
    checkpoint: str | None = None,
    *,
    alpha: float = 0.01,
    beta: float | None = None,
    frozen_stages: int = 1,
    norm_eval: bool = True,
    prefix: str | None = None,
    lr: float | None = 0.02,
) -> None:
    """``finetune`` plus L2-SP (Li, Grandvalet, Davoine, ICML 2018).

    ``Omega(w) = alpha/2 ||w_S - w_S^0||^2 + beta/2 ||w_new||^2`` with ``w_S`` the
    backbone (the part the checkpoint provides) and ``w_new`` the rest. As in the
    paper, it replaces weight decay: the backbone's decay is switched off
    (``paramwise_cfg.custom_keys['backbone.'] = dict(decay_mult=0)``) and the model adds
    ``loss_l2sp``; the new layers keep the optimizer's ``weight_decay``, which SGD
    applies as the gradient of ``beta/2 ||w_new||^2`` (with AdamW the decay is
    decoupled, not this gradient).

    Args:
        cfg: Config to edit in place.
        checkpoint: Backbone weights (the reference ``w_S^0``).
        alpha: Strength of the pull towards the pretrained weights. The paper selects
            alpha and beta per target task; tune both.
        beta: Weight decay of the new layers; None keeps the base config's.
        frozen_stages: As :func:`finetune` (frozen weights contribute nothing).
        norm_eval: As :func:`finetune`.
        prefix: As :func:`finetune`.
        lr: As :func:`finetune`.
    """
    if not alpha >= 0:
        raise NasdetError(f"must be >= 0, got {alpha!r}", key="alpha")
    finetune(cfg, checkpoint, frozen_stages=frozen_stages, norm_eval=norm_eval, prefix=prefix,
             lr=lr)
    paramwise = (cfg.get("optim_wrapper") or {}).get("paramwise_cfg") or {}
    custom = dict(paramwise.get("custom_keys") or {})
    rule = {**dict(custom.get("backbone", {})), **dict(custom.get("backbone.", {}))}
    rule["decay_mult"] = 0.0
    cfg.merge_from_dict({"optim_wrapper.paramwise_cfg.custom_keys": {"backbone.": rule}})
    if beta is not None:
        if not beta >= 0:
            raise NasdetError(f"must be >= 0, got {beta!r}", key="beta")
        cfg.merge_from_dict({"optim_wrapper.optimizer.weight_decay": float(beta)})
    old = cfg.model
    cfg.model = ConfigDict(
        type="L2SPDetector",
        detector=old,
        alpha=float(alpha),
        source="backbone",
        **_lift_preprocessor(old),
    )


def reinit_top(
    cfg: Config,
    checkpoint: str | None = None,
    *,
    k: int = 1,
    frozen_stages: int = 1,
    norm_eval: bool = True,
    prefix: str | None = None,
    lr: float | None = 0.02,
) -> None:
    """``finetune``, then re-initialise the top ``k`` backbone stages after loading.

    The re-initialised stages' BatchNorms train in batch-statistics mode (their
    statistics were reset) while the pretrained ones keep ``norm_eval``.

    Args:
        cfg: Config to edit in place.
        checkpoint: Backbone weights.
        k: Number of top stages to re-initialise (1: ``layer4`` of a ResNet).
        frozen_stages: As :func:`finetune`; must leave the top ``k`` stages trainable.
        norm_eval: As :func:`finetune`.
        prefix: As :func:`finetune`.
        lr: As :func:`finetune`.
    """
    finetune(cfg, checkpoint, frozen_stages=frozen_stages, norm_eval=norm_eval, prefix=prefix,
             lr=lr)
    n = num_backbone_stages(_backbone(cfg, "reinit_top"))
    if isinstance(k, bool) or not isinstance(k, int) or k < 1 or (n is not None and k > n):
        raise NasdetError(f"must be an integer in [1, {n or 'stages'}], got {k!r}", key="k")
    if n is not None and frozen_stages + k > n:
        raise NasdetError(
            f"frozen_stages={frozen_stages} freezes a stage that k={k} re-initialises "
            f"(the backbone has {n} stages)",
            key="k",
        )
    old = cfg.model
    cfg.model = ConfigDict(
        type="ReinitDetector", detector=old, top_stages=int(k), **_lift_preprocessor(old)
    )


@dataclass(frozen=True)
class Strategy:
    """A transfer strategy: its config function and whether it needs a checkpoint.

    Args:
        name: Registered name (the fragment's ``transfer.type``).
        apply: ``apply(cfg, checkpoint, **params)`` edits ``cfg`` in place.
        needs_checkpoint: Whether it starts from pretrained weights.
        schedule_key: The parameter that multiplies the schedule length (its schedule
            rule, see :func:`schedule_factor`); None: the length is the base's.
    """

    name: str
    apply: Callable[..., None]
    needs_checkpoint: bool
    schedule_key: str | None = None

    def defaults(self) -> dict[str, Any]:
        """The strategy's parameters and their defaults."""
        sig = inspect.signature(self.apply)
        return {n: p.default for n, p in sig.parameters.items() if p.kind is p.KEYWORD_ONLY}


#: The built-in strategies by name.
STRATEGIES: dict[str, Strategy] = {
    s.name: s
    for s in (
        Strategy("scratch", scratch, False, schedule_key="schedule_factor"),
        Strategy("finetune", finetune, True),
        Strategy("freeze", freeze, True),
        Strategy("feature_transfer", feature_transfer, True),
        Strategy("l2sp", l2sp, True),
        Strategy("reinit_top", reinit_top, True),
    )
}


def list_strategies() -> list[str]:
    """Names of the built-in strategies (each has ``configs/transfer/<name>.py``)."""
    return list(STRATEGIES)
