"""Transfer strategies as config transformations that MMDetection itself honours.

A strategy is a function of a base config (:data:`STRATEGIES`, defined in
:mod:`nasdet.transfer.strategies`) whose every edit is one MMDetection applies itself:
``init_cfg=dict(type='Pretrained')``, ``frozen_stages``, ``norm_eval``, norm layers,
optimizer and scheduler keys, registered wrapper models. ``configs/transfer/<name>.py``
is the strategy written in full on the tiny detector (a plain mmengine config that
trains as it stands with MMDetection's own tools), with a ``transfer`` record of its
parameters; :func:`apply_transfer` writes the same keys on any other base (the search
space's transfer dimension, the comparison study in
:mod:`nasdet.study.transfer_comparison`). The record is never re-applied;
:func:`schedule_factor` reads its schedule rule, and :func:`set_training_length` is the
one place where a requested length meets it. Precedence: base < strategy < searched
values < the user's options.

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
    >>> from nasdet.transfer import apply_transfer
    >>> cfg = load_config('configs/tiny_faster_rcnn_synth.py')  # doctest: +SKIP
    >>> cfg = apply_transfer(cfg, 'freeze', checkpoint='backbone.pth', k=2)  # doctest: +SKIP
    >>> cfg.model.backbone.frozen_stages  # doctest: +SKIP
    2
"""

from nasdet.transfer.apply import (
    TRANSFER_CONFIG_DIR,
    apply_transfer,
    check_backbone_checkpoint,
    load_fragment,
    parse_strategy_spec,
    strategy_needs_checkpoint,
)
from nasdet.transfer.schedule import schedule_factor, set_training_length
from nasdet.transfer.strategies import (
    SCRATCH_NORMS,
    STRATEGIES,
    Strategy,
    list_strategies,
    num_backbone_stages,
)

__all__ = [
    "SCRATCH_NORMS",
    "STRATEGIES",
    "TRANSFER_CONFIG_DIR",
    "Strategy",
    "apply_transfer",
    "check_backbone_checkpoint",
    "list_strategies",
    "load_fragment",
    "num_backbone_stages",
    "parse_strategy_spec",
    "schedule_factor",
    "set_training_length",
    "strategy_needs_checkpoint",
]
