"""Transfer strategies as config transformations, and comparing them on one detector.

A strategy is a function of a base config (:data:`STRATEGIES`) whose every edit is one
MMDetection applies itself: ``init_cfg=dict(type='Pretrained')``, ``frozen_stages``,
``norm_eval``, norm layers, optimizer and scheduler keys, registered wrapper models.
``configs/transfer/<name>.py`` is the strategy written in full on the tiny detector (a
plain mmengine config that trains as it stands with MMDetection's own tools), with a
``transfer`` record of its parameters; :func:`apply_transfer` writes the same keys on
any other base (the search space's transfer dimension, the comparison). The record is
never re-applied; :func:`schedule_factor` reads its schedule rule, and
:func:`set_training_length` is the one place where a requested length meets it.
Precedence: base < strategy < searched values < the user's options.

Built-in strategies (parameters and defaults are in the fragments and in
:data:`STRATEGIES`):

``scratch``
    mmdet's from-scratch recipe (``configs/scratch/``, He et al. "Rethinking ImageNet
    Pre-training"): GroupNorm in the backbone, the neck and the box head
    (``Shared4Conv1FCBBoxHead`` for two-stage detectors, the conv towers of single-stage
    heads), no frozen stages, ``norm_eval=False``, no pretrained weights, no weight decay
    on norm layers, and the schedule stretched by ``schedule_factor`` (6 by default,
    mmdet's "6x": epochs, milestones and epoch-based scheduler bounds scale; iteration
    warm-ups do not).
``finetune``
    Parameter transfer: backbone ``init_cfg=dict(type='Pretrained', checkpoint=...)``,
    stem and first stage frozen, BatchNorm statistics frozen (``norm_eval=True``), as
    mmdet's standard configs.
``freeze``
    ``finetune`` with the stem and the first ``k`` stages frozen.
``feature_transfer``
    The detector trained with a frozen pretrained teacher backbone whose features it
    learns to reproduce through 1x1 adapters (:class:`~nasdet.models.transfer.FeatureTransferDetector`).
``l2sp``
    ``finetune`` plus the L2-SP penalty towards the pretrained backbone
    (:class:`~nasdet.models.transfer.L2SPDetector`); weight decay is switched off on the
    backbone and kept (as ``beta``) on the new layers.
``reinit_top``
    ``finetune`` with the top ``k`` backbone stages re-initialised after loading
    (:class:`~nasdet.models.transfer.ReinitDetector`).

Example:
    >>> from nasdet.train import load_config
    >>> from nasdet.train.transfer import apply_transfer
    >>> cfg = load_config('configs/tiny_faster_rcnn_synth.py')  # doctest: +SKIP
    >>> cfg = apply_transfer(cfg, 'freeze', checkpoint='backbone.pth', k=2)  # doctest: +SKIP
    >>> cfg.model.backbone.frozen_stages  # doctest: +SKIP
    2
"""

from __future__ import annotations

import ast
import copy
import csv
import functools
import inspect
import io
import json
import logging
import math
import re
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from mmengine.config import Config, ConfigDict
from mmengine.logging import print_log

from nasdet.errors import NasdetError
from nasdet.models.transfer.loading import check_state_fills, is_url, read_state_dict
from nasdet.train.runner import train
from nasdet.utils.io import atomic_write, atomic_write_json, atomic_write_text
from nasdet.utils.resources import data_root

if TYPE_CHECKING:
    from nasdet.models.utils import SlicedLoadResult

#: Where the built-in strategy fragments live.
TRANSFER_CONFIG_DIR = data_root() / "configs" / "transfer"  # shipped (nasdet/.mim when installed)

#: Model types that wrap a detector config under ``detector``.
WRAPPER_TYPES = ("FeatureTransferDetector", "L2SPDetector", "ReinitDetector")

#: Norm layers the scratch strategy can put in place of BatchNorm.
SCRATCH_NORMS = ("FlexGN", "GN", "SyncBN", "BN")


# ============================================================================ helpers
def _cd(d: dict) -> ConfigDict:
    return ConfigDict(copy.deepcopy(dict(d)))


def detector_cfg(model: dict) -> dict:
    """The innermost detector config under transfer wrappers (``model.detector...``).

    Args:
        model: ``cfg.model``.

    Returns:
        The dict holding ``backbone`` (the same object, so edits apply to the config).
    """
    while isinstance(model, dict) and (
        model.get("type") in WRAPPER_TYPES or ("detector" in model and "backbone" not in model)
    ):
        model = model["detector"]
    return model


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


def _module_class(type_name: Any) -> type | None:
    from mmdet.registry import MODELS

    import nasdet.models  # noqa: F401  (registers nasdet's modules)

    register_detection_modules()
    if not isinstance(type_name, str):
        return type_name if inspect.isclass(type_name) else None
    return MODELS.get(type_name)


_mmdet_registered = False


def register_detection_modules() -> None:
    """Register mmdet's modules (without setting a default scope) once per process."""
    global _mmdet_registered
    if not _mmdet_registered:
        from mmdet.utils import register_all_modules

        register_all_modules(init_default_scope=False)
        _mmdet_registered = True


def _accepts(type_name: Any, arg: str) -> bool:
    """Whether the registered class ``type_name`` takes ``arg`` in some ``__init__`` of its MRO."""
    cls = _module_class(type_name)
    if cls is None:
        return False
    for klass in cls.__mro__:
        init = klass.__dict__.get("__init__")
        if init is not None and arg in inspect.signature(init).parameters:
            return True
    return False


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
    cls = _module_class(t)
    if cls is not None and _accepts(t, "num_stages"):
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


def _base_checkpoint_hint(cfg: Config) -> str:
    try:
        init = detector_cfg(cfg.model)["backbone"].get("init_cfg")
    except (KeyError, TypeError, AttributeError):
        return ""
    if isinstance(init, dict) and init.get("type") == "Pretrained":
        return (
            f" (the base config's backbone names {init.get('checkpoint')}; pass it as "
            "checkpoint= to use it)"
        )
    return ""


def _pretrained_entries(cfg: Config) -> list[dict]:
    bb = detector_cfg(cfg.get("model") or {}).get("backbone") if cfg.get("model") else None
    init = bb.get("init_cfg") if isinstance(bb, dict) else None
    entries = init if isinstance(init, (list, tuple)) else [init]
    return [e for e in entries if isinstance(e, dict) and e.get("type") == "Pretrained"]


def pretrained_checkpoint(cfg: Config) -> str | None:
    """The pretrained weights a config starts from, as MMDetection reads them.

    The backbone's ``init_cfg=dict(type='Pretrained', checkpoint=...)`` (under transfer
    wrappers too), else a feature-transfer teacher's ``teacher_checkpoint``.

    Args:
        cfg: The config.

    Returns:
        The checkpoint path or URL, None if the config starts from scratch.
    """
    entries = _pretrained_entries(cfg)
    if entries:
        return str(entries[0]["checkpoint"])
    model = cfg.get("model")
    while isinstance(model, dict):
        if model.get("teacher_checkpoint"):
            return str(model["teacher_checkpoint"])
        model = model.get("detector")
    return None


def set_pretrained_checkpoint(cfg: Config, checkpoint: str | Path) -> Config:
    """Point every pretrained entry of ``cfg`` (backbone, teacher, record) at ``checkpoint``.

    Args:
        cfg: Config to edit in place.
        checkpoint: Path or URL.

    Returns:
        The same config.

    Raises:
        NasdetError: the config loads no pretrained weights.
    """
    found = False
    for entry in _pretrained_entries(cfg):
        entry["checkpoint"] = str(checkpoint)
        found = True
    model = cfg.get("model")
    while isinstance(model, dict):
        if model.get("teacher_checkpoint"):
            model["teacher_checkpoint"] = str(checkpoint)
            found = True
        model = model.get("detector")
    if not found:
        raise NasdetError(
            "the config loads no pretrained weights (no backbone init_cfg of type "
            "'Pretrained', no teacher_checkpoint)",
            file=cfg.filename,
            key="model.backbone.init_cfg",
        )
    if isinstance(cfg.get("transfer"), dict) and cfg.transfer.get("checkpoint"):
        cfg.transfer["checkpoint"] = str(checkpoint)
    return cfg


# ============================================================================ schedule
def set_schedule_length(cfg: Config, length: int) -> Config:
    """Set the training length, scaling epoch-based scheduler bounds proportionally.

    ``train_cfg.max_epochs`` (or ``max_iters`` for iteration-based loops) becomes
    ``length``; ``val_interval`` follows if it was the whole run; every epoch-based
    entry of ``param_scheduler`` (``by_epoch=True``, mmengine's default) has ``begin``,
    ``end``, ``milestones`` and ``T_max`` multiplied by ``length / old`` (rounded, at
    least 1 apart); iteration-based entries (warm-ups) keep their lengths.

    Args:
        cfg: Config to edit in place.
        length: New number of epochs (or iterations).

    Returns:
        The same config.
    """
    tc = cfg.get("train_cfg")
    if not tc:
        raise NasdetError("config has no train_cfg", file=cfg.filename, key="train_cfg")
    by_epoch = "max_epochs" in tc or tc.get("type", "EpochBasedTrainLoop") in (
        "EpochBasedTrainLoop",
    )
    key = "max_epochs" if by_epoch else "max_iters"
    old = tc.get(key)
    if not isinstance(old, int) or old < 1:
        raise NasdetError(
            f"cannot scale the schedule: {key}={old!r}", file=cfg.filename, key=f"train_cfg.{key}"
        )
    if not isinstance(length, int) or length < 1:
        raise NasdetError(f"must be a positive integer, got {length!r}", key="epochs")
    factor = length / old
    tc[key] = length
    if tc.get("val_interval", 1) >= old:
        tc["val_interval"] = length
    scheds = cfg.get("param_scheduler")
    items = scheds if isinstance(scheds, (list, tuple)) else [scheds] if scheds else []
    for s in items:
        if s.get("by_epoch", True) != by_epoch:
            continue
        for k in ("begin", "end", "T_max"):
            v = s.get(k)
            if isinstance(v, (int, float)) and v < 1e8:  # 1e8+: "until the end" sentinels
                s[k] = max(0 if k == "begin" else 1, round(v * factor))
        if s.get("milestones"):
            s["milestones"] = [max(1, round(m * factor)) for m in s["milestones"]]
    return cfg


def schedule_factor(cfg: Config) -> float:
    """The schedule rule of the strategies ``cfg`` records: how many times a length.

    A tool that sets the length of a run (a search stage's ``epochs``, ``--epochs`` of
    the study and of the comparison) asks for epochs of the *base* recipe; a strategy
    whose recipe trains longer multiplies them (``scratch``: ``schedule_factor``, mmdet's
    "6x"). Strategies applied on top of one another (``transfer.previous``) multiply.

    Args:
        cfg: A config, with or without a ``transfer`` record.

    Returns:
        The multiplier (1.0 without a record or for strategies that keep the length).
    """
    factor = 1.0
    record = cfg.get("transfer")
    while isinstance(record, dict):
        spec = STRATEGIES.get(record.get("type"))
        if spec is not None and spec.schedule_key:
            value = record.get(spec.schedule_key, spec.defaults()[spec.schedule_key])
            factor *= float(value)
        record = record.get("previous")
    return factor


def set_training_length(cfg: Config, epochs: int) -> int:
    """Train ``epochs`` epochs of the base recipe, scaled by the config's schedule rule.

    The one place where a requested length meets a strategy: the run gets
    ``max(1, round(epochs * schedule_factor(cfg)))`` epochs (or iterations) and the
    scheduler is rescaled with it (:func:`set_schedule_length`).

    Args:
        cfg: Config to edit in place.
        epochs: Length in epochs of the base recipe.

    Returns:
        The length set.

    Example:
        >>> cfg = Config(dict(train_cfg=dict(max_epochs=16), transfer=dict(type='scratch',
        ...     schedule_factor=6.0), param_scheduler=[dict(type='MultiStepLR', end=16,
        ...     milestones=[12, 15])]))
        >>> set_training_length(cfg, 2), cfg.param_scheduler[0].milestones
        (12, [9, 11])
    """
    if isinstance(epochs, bool) or not isinstance(epochs, int) or epochs < 1:
        raise NasdetError(f"must be a positive integer, got {epochs!r}", key="epochs")
    length = max(1, round(epochs * schedule_factor(cfg)))
    set_schedule_length(cfg, length)
    return length


def scale_schedule(cfg: Config, factor: float) -> Config:
    """Multiply the schedule length by ``factor`` (see :func:`set_schedule_length`).

    Args:
        cfg: Config to edit in place.
        factor: Positive multiplier; the new length is ``max(1, round(old * factor))``.

    Returns:
        The same config.
    """
    if not factor > 0:
        raise NasdetError(f"must be positive, got {factor!r}", key="schedule_factor")
    tc = cfg.get("train_cfg") or {}
    old = tc.get("max_epochs", tc.get("max_iters"))
    if not isinstance(old, int):
        raise NasdetError(
            "cannot scale the schedule: no integer max_epochs/max_iters",
            file=cfg.filename,
            key="train_cfg",
        )
    return set_schedule_length(cfg, max(1, round(old * factor)))


# ============================================================================ strategies
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
    if _accepts(bb.get("type"), "zero_init_residual"):
        bb["zero_init_residual"] = False
    neck = det.get("neck")
    if isinstance(neck, dict) and _accepts(neck.get("type"), "norm_cfg"):
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
                if isinstance(m, dict) and _accepts(m.get("type"), "norm_cfg"):
                    m["norm_cfg"] = _cd(norm_cfg)
        bh = det.get("bbox_head")
        if isinstance(bh, dict) and _accepts(bh.get("type"), "norm_cfg"):
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


# ============================================================================ apply
def _fragment_path(strategy: str | Path) -> Path:
    text = str(strategy)
    if _is_fragment_file(text):
        path = Path(text)
        if not path.is_file():
            raise NasdetError("transfer fragment not found", file=path, key="strategy")
        return path
    path = TRANSFER_CONFIG_DIR / f"{text}.py"
    if not path.is_file():
        raise NasdetError(
            f"unknown transfer strategy {text!r}; expected one of {list_strategies()} or a "
            "configs/transfer/*.py file",
            key="strategy",
        )
    return path


def load_fragment(strategy: str | Path) -> tuple[Path, dict[str, Any], dict[str, Any]]:
    """Read a strategy fragment.

    Args:
        strategy: A built-in name or a fragment file.

    Two kinds of file. A *full config* (it has a ``model``: the shipped
    ``configs/transfer/*.py``, which inherit the tiny detector and train as they stand
    with MMDetection's own tools) is the strategy applied to its base; only its
    ``transfer`` record (``type`` and parameters) carries over to another base, since
    every key the strategy writes is a parameter of the strategy. A *partial fragment*
    (no ``model``: ``transfer = dict(type=..., **params)`` plus keys merged as they
    stand, e.g. an ``optim_wrapper``) is an input of :func:`apply_transfer` only.

    Args:
        strategy: A built-in name or a fragment file.

    Returns:
        ``(path, transfer, rest)``: the file, its ``transfer`` dict (``type`` and
        parameters, ``fragment`` dropped) and the keys to merge into the detector config
        (none for a full config).
    """
    path = _fragment_path(strategy)
    try:
        frag = Config.fromfile(str(path))
    except Exception as exc:  # mmengine raises several types for a broken config
        raise NasdetError(f"cannot read fragment: {type(exc).__name__}: {exc}", file=path) from None
    data = frag.to_dict()
    transfer = dict(data.pop("transfer", None) or {})
    transfer.pop("fragment", None)
    if "model" in data:
        data = {}
    return path, transfer, data


def _is_fragment_file(strategy: str | Path) -> bool:
    text = str(strategy)
    return text.endswith(".py") or "/" in text or Path(text).is_file()


def _shown_path(path: Path) -> str:
    """``path`` relative to the repository when it is inside (as the shipped configs say)."""
    root = TRANSFER_CONFIG_DIR.parents[1]
    try:
        return str(path.resolve().relative_to(root))
    except ValueError:
        return str(path)


def _check_checkpoint(checkpoint: str, name: str) -> None:
    if is_url(checkpoint):
        return  # torchvision:// etc.: mmengine's CheckpointLoader fetches it at init
    if not Path(checkpoint).is_file():
        raise NasdetError(
            f"checkpoint file not found (strategy '{name}')", file=checkpoint, key="checkpoint"
        )


@functools.lru_cache(maxsize=2)
def _cached_state(path: str, _mtime_ns: int, _size: int, prefix: str | None) -> dict:
    # Searches apply a strategy to many candidates with one checkpoint: read it once
    # (the key includes mtime and size, so a rewritten file is read again).
    return read_state_dict(path, prefix=prefix, key="checkpoint")


def check_backbone_checkpoint(
    backbone: dict, checkpoint: str | Path, *, prefix: str | None = None
) -> SlicedLoadResult:
    """Load ``checkpoint`` into a freshly built ``backbone`` and report what matched.

    The check a detector's ``init_cfg=dict(type='Pretrained', ...)`` would otherwise
    only log at the start of training: wider checkpoints are sliced for
    ``FlexResNet``; other shape differences, or a checkpoint that would leave the
    backbone mostly random (:func:`~nasdet.models.transfer.loading.check_state_fills`),
    raise. Missing and unexpected keys are logged.

    Args:
        backbone: Backbone config (``init_cfg`` is ignored).
        checkpoint: Local file (URLs are not fetched here).
        prefix: Key prefix to take and strip.

    Returns:
        The :class:`~nasdet.models.utils.SlicedLoadResult`.

    Raises:
        NasdetError: Unreadable file, too few matching weights, or unsliceable shapes.
    """
    from mmdet.registry import MODELS

    from nasdet.models.utils import load_sliced_state_dict

    _module_class(backbone.get("type"))  # registers mmdet and nasdet
    if not Path(checkpoint).is_file():
        raise NasdetError("checkpoint file not found", file=checkpoint, key="checkpoint")
    stat = Path(checkpoint).stat()
    state = _cached_state(str(Path(checkpoint).resolve()), stat.st_mtime_ns, stat.st_size, prefix)
    cfg = dict(copy.deepcopy(dict(backbone)))
    cfg["init_cfg"] = None
    cfg.pop("pretrained", None)
    net = MODELS.build(cfg)
    # The rule FlexResNet's init applies: refuse a checkpoint leaving the backbone mostly
    # random (none of its weights, other kernels, under half of its elements).
    check_state_fills(net, state, source=checkpoint, key="checkpoint")
    result = load_sliced_state_dict(
        net, state, strict_shapes=cfg.get("type") != "FlexResNet", source=checkpoint
    )
    missing = [k for k in result.missing_keys if not k.endswith("num_batches_tracked")]
    for label, keys in (("missing", missing), ("unexpected", result.unexpected_keys)):
        if keys:
            print_log(
                f"{checkpoint}: {len(keys)} {label} backbone keys: {', '.join(keys[:6])}"
                f"{' ...' if len(keys) > 6 else ''}",
                logger="current",
                level=logging.WARNING,
            )
    return result


def apply_transfer(
    cfg: Config, strategy: str | Path, *, checkpoint: str | Path | None = None, **params: Any
) -> Config:
    """Combine a base detector config with a transfer strategy.

    The strategy named by the fragment's ``transfer.type`` edits a copy of ``cfg`` with
    the fragment's parameters overridden by ``params`` (a partial fragment's other keys
    are merged first, see :func:`load_fragment`). Every edit is one that MMDetection
    applies itself (``init_cfg=dict(type='Pretrained')``, ``frozen_stages``,
    ``norm_eval``, norm layers, optimizer and scheduler keys, registered wrapper models),
    so the result trains the same under ``Runner.from_cfg(Config.fromfile(dumped))`` as
    under nasdet's tools: ``configs/transfer/<name>.py`` is this function's output on
    the tiny detector, written out. The result records ``transfer=dict(type,
    checkpoint, fragment, **params)``, a record that nothing re-applies (it names the
    strategy in tables and gives :func:`schedule_factor` its rule), and imports
    ``nasdet.models`` through ``custom_imports``.

    Precedence: ``cfg`` < the strategy. Keys a user sets on top (``--cfg-options``,
    searched values) are merged after this function by its callers.

    All checks run here, before any training: unknown strategy or parameter, a missing
    checkpoint for a strategy that needs one, a local checkpoint that does not exist or
    does not fit the backbone (``torchvision://`` and other URLs are fetched by
    mmengine's loader when the model is initialised).

    Args:
        cfg: Base detector config (left unchanged).
        strategy: Built-in name (see :func:`list_strategies`) or a fragment file.
        checkpoint: Pretrained backbone weights (path or URL); ignored by ``scratch``.
            A fragment may name one in ``transfer.checkpoint``.
        **params: Strategy parameters (see the fragments / :data:`STRATEGIES`).

    Returns:
        The combined config.

    Raises:
        NasdetError: Naming the strategy, option, file or key at fault.
    """
    path, transfer, rest = load_fragment(strategy)
    name = transfer.pop("type", None)
    if name not in STRATEGIES:
        raise NasdetError(
            f"transfer.type must be one of {list_strategies()}, got {name!r}",
            file=path,
            key="transfer.type",
        )
    spec = STRATEGIES[name]
    # A built-in name asks for the strategy; the checkpoint its shipped config names
    # belongs to that example run. A file of one's own may name its checkpoint.
    named = transfer.pop("checkpoint", None) if _is_fragment_file(strategy) else None
    transfer.pop("checkpoint", None)
    if checkpoint is None:
        checkpoint = named
    known = spec.defaults()
    merged = {**known, **transfer, **params}
    for key in merged:
        if key not in known:
            raise NasdetError(
                f"strategy '{name}' has no parameter {key!r}; expected one of {sorted(known)}",
                file=path,
                key=key,
            )
    if spec.needs_checkpoint:
        if not checkpoint:
            raise NasdetError(
                f"strategy '{name}' needs a pretrained backbone checkpoint: pass "
                f"checkpoint=PATH (--checkpoint){_base_checkpoint_hint(cfg)}",
                key="checkpoint",
            )
        _check_checkpoint(str(checkpoint), name)
    out = copy.deepcopy(cfg)
    if rest:
        out.merge_from_dict(rest)
    spec.apply(out, str(checkpoint) if checkpoint else None, **merged)
    # A partial fragment's own keys say more than the strategy's defaults (a fragment's
    # lr over the fine-tuning 0.02); its `model` keys went in before wrapping.
    after = {k: v for k, v in rest.items() if k != "model"}
    if after:
        out.merge_from_dict(copy.deepcopy(after))
    if spec.needs_checkpoint and not is_url(str(checkpoint)):
        # The teacher has the base backbone's architecture; the student may be
        # another's only in norm layers, so checking the teacher covers both.
        check_backbone_checkpoint(
            out.model.teacher if name == "feature_transfer" else _backbone(out, name),
            checkpoint,
            prefix=merged.get("prefix"),
        )
    imports = dict(out.get("custom_imports") or {})
    modules = list(imports.get("imports") or [])
    if "nasdet.models" not in modules:
        out.custom_imports = ConfigDict(
            imports=[*modules, "nasdet.models"],
            allow_failed_imports=imports.get("allow_failed_imports", False),
        )
    record = dict(
        type=name,
        checkpoint=str(checkpoint) if checkpoint and spec.needs_checkpoint else None,
        fragment=_shown_path(path),
        **{k: list(v) if isinstance(v, tuple) else v for k, v in merged.items()},
    )
    previous = out.get("transfer")
    if previous:
        record["previous"] = previous
    out.transfer = ConfigDict(record)
    return out


# ============================================================================ compare
#: Columns of the comparison table, with their units.
COMPARE_COLUMNS: dict[str, str] = {
    "strategy": "label of the run (strategy spec as given)",
    "type": "transfer strategy",
    "params": "strategy parameters (JSON)",
    "bbox_mAP": "COCO box AP@[0.5:0.95] on the val split, fraction in [0, 1] (pycocotools); "
    "empty if the detector produced no detections",
    "bbox_mAP_50": "COCO box AP@0.5, fraction in [0, 1]",
    "train_seconds": "wall-clock seconds of training plus its validation epochs",
    "params_trainable": "distinct scalar parameters with requires_grad=True at the start "
    "(frozen stages excluded; a feature-transfer teacher is not part of the model)",
    "params_total": "distinct scalar parameters of the trained model",
    "epochs": "training epochs of this run",
    "seed": "random seed",
    "work_dir": "directory with the run's logs, checkpoints and config.py",
}


def parse_strategy_spec(text: str) -> tuple[str, str, dict[str, Any]]:
    """Split ``NAME[:key=value,...]`` (or a fragment path) into label, strategy, params.

    Values are Python literals when they parse as one (``k=2``, ``levels=[0,1]``,
    ``beta=None``), strings otherwise.

    Args:
        text: e.g. ``'freeze:k=2'``, ``'configs/transfer/l2sp.py:alpha=0.1'``.

    Returns:
        ``(label, strategy, params)``; the label is ``text`` with a path reduced to its
        stem and characters other than letters, digits, ``_.=-`` replaced by ``_``.

    Example:
        >>> parse_strategy_spec("freeze:k=2,norm_eval=False")
        ('freeze_k=2_norm_eval=False', 'freeze', {'k': 2, 'norm_eval': False})
    """
    name, _, rest = text.partition(":") if not re.match(r"^[A-Za-z]:\\", text) else (text, "", "")
    params: dict[str, Any] = {}
    for item in _split_top_level(rest):
        key, eq, value = item.partition("=")
        if not eq or not key.strip():
            raise NasdetError(f"expected key=value, got {item!r}", key=text)
        try:
            params[key.strip()] = ast.literal_eval(value.strip())
        except (ValueError, SyntaxError):
            params[key.strip()] = value.strip()
    stem = Path(name).stem if name.endswith(".py") else name
    label = re.sub(r"[^A-Za-z0-9_.=-]+", "_", stem + ("_" + rest if rest else "")).strip("_")
    return label, name, params


def _split_top_level(text: str) -> list[str]:
    out, depth, cur = [], 0, ""
    for ch in text:
        depth += ch in "[({"
        depth -= ch in "])}"
        if ch == "," and depth == 0:
            out.append(cur)
            cur = ""
        else:
            cur += ch
    if cur.strip():
        out.append(cur)
    return [s for s in (p.strip() for p in out) if s]


def strategy_needs_checkpoint(strategy: str | Path) -> bool:
    """Whether the strategy (name or fragment) starts from pretrained weights."""
    _, transfer, _ = load_fragment(strategy)
    spec = STRATEGIES.get(transfer.get("type"))
    named = transfer.get("checkpoint") if _is_fragment_file(strategy) else None
    return bool(spec and spec.needs_checkpoint and not named)


def count_model_parameters(cfg: Config) -> tuple[int, int]:
    """Build ``cfg.model`` and count its distinct (trainable, total) scalar parameters.

    Args:
        cfg: A config whose ``custom_imports`` can be imported.

    Returns:
        ``(trainable, total)`` as :func:`nasdet.models.count_parameters` counts them.
    """
    from mmdet.registry import MODELS
    from mmengine.registry import init_default_scope
    from mmengine.utils import import_modules_from_strings

    from nasdet.models.utils import count_parameters

    if cfg.get("custom_imports"):
        import_modules_from_strings(**cfg.custom_imports)
    register_detection_modules()
    init_default_scope(cfg.get("default_scope", "mmdet"))
    model = MODELS.build(copy.deepcopy(cfg.model))
    return count_parameters(model, trainable_only=True), count_parameters(model)


def _read_rows(path: Path) -> list[dict[str, Any]]:
    if not path.is_file():
        return []
    try:
        return list(json.loads(path.read_text()).get("rows", []))
    except (json.JSONDecodeError, AttributeError):
        raise NasdetError(
            "cannot read the comparison results (delete it to start over)",
            file=path,
            key="--resume",
        ) from None


def write_comparison(work_dir: Path, rows: list[dict[str, Any]], *, base: str) -> None:
    """Atomically write ``results.json``, ``results.csv`` and ``ap_per_strategy.png``.

    Args:
        work_dir: The comparison's directory.
        rows: One dict per finished strategy (keys: :data:`COMPARE_COLUMNS`).
        base: The base config, recorded in the JSON.
    """
    atomic_write_json(
        work_dir / "results.json",
        {
            "base": base,
            "units": COMPARE_COLUMNS,
            "rows": rows,
        },
    )
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=list(COMPARE_COLUMNS), extrasaction="ignore")
    writer.writeheader()
    for row in rows:
        writer.writerow({k: "" if row.get(k) is None else row.get(k) for k in COMPARE_COLUMNS})
    atomic_write_text(work_dir / "results.csv", buf.getvalue())
    plot_comparison(rows, work_dir / "ap_per_strategy.png", title=f"Transfer strategies on {base}")


def plot_comparison(rows: list[dict[str, Any]], path: Path, *, title: str) -> Path:
    """Bar plot of box AP and AP@0.5 per strategy (PNG, written atomically).

    Args:
        rows: Comparison rows.
        path: Output file.
        title: Plot title.

    Returns:
        ``path``.
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    labels = [r["strategy"] for r in rows]
    ap = [r.get("bbox_mAP") for r in rows]
    ap50 = [r.get("bbox_mAP_50") for r in rows]
    fig, ax = plt.subplots(figsize=(max(5.0, 1.3 * len(rows) + 2), 4.0))
    xs = range(len(rows))
    width = 0.38
    for offset, values, name in ((-width / 2, ap, "AP@[0.5:0.95]"), (width / 2, ap50, "AP@0.5")):
        heights = [v if v is not None else 0.0 for v in values]
        bars = ax.bar([x + offset for x in xs], heights, width, label=name)
        for bar, v in zip(bars, values, strict=True):
            ax.annotate(
                "n/a" if v is None else f"{v:.3f}",
                (bar.get_x() + bar.get_width() / 2, bar.get_height()),
                ha="center",
                va="bottom",
                fontsize=8,
            )
    ax.set_xticks(list(xs))
    ax.set_xticklabels(labels, rotation=20, ha="right")
    ax.set_xlabel("transfer strategy")
    ax.set_ylabel("COCO box AP on val (fraction)")
    ax.set_title(title, fontsize=10)
    ax.legend()
    fig.tight_layout()
    atomic_write(path, lambda p: fig.savefig(p, format="png", dpi=120))
    plt.close(fig)
    return path


def format_table(rows: list[dict[str, Any]]) -> str:
    """The comparison as an aligned text table."""
    head = ["strategy", "bbox_mAP", "mAP@0.5", "train s", "trainable", "total"]
    lines = [head]
    for r in rows:
        lines.append(
            [
                r["strategy"],
                "n/a" if r.get("bbox_mAP") is None else f"{r['bbox_mAP']:.4f}",
                "n/a" if r.get("bbox_mAP_50") is None else f"{r['bbox_mAP_50']:.4f}",
                f"{r['train_seconds']:.1f}",
                f"{r['params_trainable']:,}",
                f"{r['params_total']:,}",
            ]
        )
    widths = [max(len(line[i]) for line in lines) for i in range(len(head))]
    text = [
        "  ".join(
            c.ljust(w) if i == 0 else c.rjust(w)
            for i, (c, w) in enumerate(zip(line, widths, strict=True))
        )
        for line in lines
    ]
    # mmdet's CocoMetric returns nothing when the detector made no detection at all.
    text += [
        f"n/a ({r['strategy']}): no box metric, the detector made no detection on the "
        f"validation images (a diverged training?); its log: {r.get('work_dir', '?')}"
        for r in rows
        if r.get("bbox_mAP") is None
    ]
    return "\n".join(text)


def _metric(metrics: dict[str, Any], key: str) -> float | None:
    v = metrics.get(key)
    if v is None or (isinstance(v, float) and (math.isnan(v) or v < 0)):
        return None
    return float(v)


def compare_transfer(
    base: str | Path,
    strategies: Sequence[str],
    *,
    checkpoint: str | Path | None = None,
    epochs: int | None = None,
    work_dir: str | Path | None = None,
    cfg_options: dict[str, Any] | None = None,
    resume: bool = False,
    seed: int | None = None,
    pretrain_if_missing: bool = False,
    pretrain_options: dict[str, Any] | None = None,
    base_cfg: Config | None = None,
) -> list[dict[str, Any]]:
    """Train each strategy on the same base config and seed, and tabulate the results.

    Every strategy is applied (and its model built to count parameters) before any
    training, so a bad option fails at once. Then each run trains through
    :func:`nasdet.train.train` in ``<work_dir>/<label>/`` (its combined config dumped as
    ``config.py`` there, retrainable with ``tools/train.py``). After each run
    ``results.json``, ``results.csv`` and ``ap_per_strategy.png`` are rewritten
    atomically, so a killed comparison keeps its finished rows; with ``resume`` the
    labels already in ``results.json`` are skipped.

    Args:
        base: Base detector config file.
        strategies: Specs as :func:`parse_strategy_spec` reads them.
        checkpoint: Pretrained backbone weights for the strategies that need them.
        epochs: Training epochs of the base (scheduler scaled; ``scratch`` multiplies
            it by its ``schedule_factor``, see :func:`set_training_length`).
        work_dir: Output directory (default ``work_dirs/compare_transfer/<base stem>``).
        cfg_options: ``--cfg-options``: applied to the base and again to each
            strategy's config, so they win over what a strategy writes.
        resume: Skip strategies with a row in ``results.json``.
        seed: Random seed of every run (default: the base config's, else 0).
        pretrain_if_missing: Without ``checkpoint``, pre-train the base's backbone on
            the synthetic classification source task (see
            :func:`nasdet.train.pretrain.pretrain`) into ``<work_dir>/pretrain/`` (reused
            when it exists) instead of raising.
        pretrain_options: Keyword arguments for that pre-training (``epochs``, ...).
        base_cfg: An already loaded base config to use instead of reading ``base``
            (``cfg_options``/``work_dir`` are not applied to it).

    Returns:
        All rows of the table (finished earlier ones included when resuming).
    """
    from nasdet.train.config import load_config, merge_cfg_options

    base = str(base)
    given_cfg = base_cfg is not None
    if base_cfg is None:
        base_cfg = load_config(base, cfg_options=cfg_options)
    else:
        base_cfg = copy.deepcopy(base_cfg)
    out_dir = Path(work_dir or Path("work_dirs") / "compare_transfer" / Path(base).stem).absolute()
    if epochs is not None:
        set_training_length(base_cfg, epochs)  # strategies then apply their own rule
    if seed is None:
        seed = int((base_cfg.get("randomness") or {}).get("seed") or 0)
    base_cfg.randomness = ConfigDict({**dict(base_cfg.get("randomness") or {}), "seed": seed})

    specs = [parse_strategy_spec(s) for s in strategies]
    labels = [label for label, _, _ in specs]
    if not specs:
        raise NasdetError("give at least one strategy", key="STRATEGY")
    dup = {x for x in labels if labels.count(x) > 1}
    if dup:
        raise NasdetError(f"strategy given twice: {sorted(dup)}", key="STRATEGY")
    needing = [label for label, strat, _ in specs if strategy_needs_checkpoint(strat)]
    if needing and not checkpoint:
        if not pretrain_if_missing:
            raise NasdetError(
                f"strategy '{needing[0]}' needs a pretrained backbone: pass --checkpoint PATH, "
                "or --pretrain-if-missing to pre-train one on the synthetic source task",
                key="--checkpoint",
            )
        from nasdet.train.pretrain import pretrain

        target = out_dir / "pretrain" / "backbone.pth"
        if not target.is_file():
            pretrain(base_cfg, work_dir=target.parent, **(pretrain_options or {}))
        checkpoint = str(target)

    # Pre-flight: every combined config is built before the first run trains.
    plans = []
    for label, strat, params in specs:
        cfg = apply_transfer(base_cfg, strat, checkpoint=checkpoint, **params)
        if cfg_options and not given_cfg:
            merge_cfg_options(cfg, cfg_options)  # the user's options win over the strategy
        cfg.work_dir = str(out_dir / label)
        trainable, total = count_model_parameters(cfg)
        plans.append((label, cfg, trainable, total))

    rows = _read_rows(out_dir / "results.json") if resume else []
    done = {r["strategy"] for r in rows}
    for label, cfg, trainable, total in plans:
        if label in done:
            print_log(
                f"compare_transfer: {label} already finished, skipped (--resume)", logger="current"
            )
            continue
        run_dir = Path(cfg.work_dir)
        run_dir.mkdir(parents=True, exist_ok=True)
        cfg.dump(str(run_dir / "config.py"))
        start = time.perf_counter()
        metrics = train(cfg)
        seconds = time.perf_counter() - start
        transfer = dict(cfg.transfer)
        transfer.pop("previous", None)
        row = {
            "strategy": label,
            "type": transfer.pop("type"),
            "params": json.dumps(
                {k: v for k, v in transfer.items() if k not in ("fragment", "checkpoint")},
                default=str,
            ),
            "bbox_mAP": _metric(metrics, "coco/bbox_mAP"),
            "bbox_mAP_50": _metric(metrics, "coco/bbox_mAP_50"),
            "train_seconds": round(seconds, 3),
            "params_trainable": trainable,
            "params_total": total,
            "epochs": cfg.train_cfg.get("max_epochs", cfg.train_cfg.get("max_iters")),
            "seed": seed,
            "work_dir": str(run_dir),
            "checkpoint": transfer.get("checkpoint"),
        }
        rows = [r for r in rows if r["strategy"] != label] + [row]
        write_comparison(out_dir, rows, base=base)
    if rows:
        write_comparison(out_dir, rows, base=base)
    return rows
