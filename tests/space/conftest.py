"""Fixtures for nasdet.space tests: space files written from dicts, a micro detector."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.conftest import CONFIGS, REPO

SPACES = REPO / "search_spaces"
TINY_FRCNN = CONFIGS / "tiny_faster_rcnn_synth.py"
TINY_RETINA = CONFIGS / "tiny_retinanet_synth.py"

# A RetinaNet small enough to count by hand: two basic-block stages of one block
# (widths 8, 16, stem 8), a 2-level FPN of width 8 without extra convs, one-conv towers
# of width 8, one anchor per position, 3 classes. Levels at strides 4 and 8.
MICRO_RETINANET = """
default_scope = 'mmdet'
custom_imports = dict(imports=['nasdet.models'], allow_failed_imports=False)
model = dict(
    type='RetinaNet',
    data_preprocessor=dict(type='DetDataPreprocessor', mean=[0.0, 0.0, 0.0],
                           std=[1.0, 1.0, 1.0], bgr_to_rgb=False, pad_size_divisor=32),
    backbone=dict(type='FlexResNet', block='basic', depths=[1, 1], widths=[8, 16],
                  stem_channels=8, out_indices=(0, 1), norm_cfg=dict(type='BN'),
                  norm_eval=False, init_cfg=None),
    neck=dict(type='FPN', in_channels=[8, 16], out_channels=8, num_outs=2),
    bbox_head=dict(
        type='RetinaHead', num_classes=3, in_channels=8, stacked_convs=1, feat_channels=8,
        anchor_generator=dict(type='AnchorGenerator', octave_base_scale=4,
                              scales_per_octave=1, ratios=[1.0], strides=[4, 8]),
        bbox_coder=dict(type='DeltaXYWHBBoxCoder', target_means=[0.0] * 4,
                        target_stds=[1.0] * 4),
        loss_cls=dict(type='FocalLoss', use_sigmoid=True, gamma=2.0, alpha=0.25,
                      loss_weight=1.0),
        loss_bbox=dict(type='L1Loss', loss_weight=1.0)),
    train_cfg=dict(assigner=dict(type='MaxIoUAssigner', pos_iou_thr=0.5, neg_iou_thr=0.4,
                                 min_pos_iou=0, ignore_iof_thr=-1),
                   sampler=dict(type='PseudoSampler'), allowed_border=-1, pos_weight=-1,
                   debug=False),
    test_cfg=dict(nms_pre=100, min_bbox_size=0, score_thr=0.05,
                  nms=dict(type='nms', iou_threshold=0.5), max_per_img=10))
optim_wrapper = dict(type='OptimWrapper', optimizer=dict(type='SGD', lr=0.01, momentum=0.9))
"""


@pytest.fixture()
def write_space(tmp_path: Path) -> Callable[..., Path]:
    """``write_space(data, name='space.yaml')``: dump a dict as a YAML space file."""

    def write(data: dict[str, Any], name: str = "space.yaml") -> Path:
        path = tmp_path / name
        path.write_text(yaml.safe_dump(data, sort_keys=False))
        return path

    return write


@pytest.fixture()
def micro_config(tmp_path: Path) -> Path:
    """The hand-countable RetinaNet config as a file."""
    path = tmp_path / "micro_retinanet.py"
    path.write_text(MICRO_RETINANET)
    return path
