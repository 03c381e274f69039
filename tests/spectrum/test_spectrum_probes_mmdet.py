"""SpectrumProbe presets on detectors built from MMDetection's own configs (random init).

ResNet-18 backbones and 128-px inputs keep this fast; the stage widths, pyramid levels
and head layers are those of the real configs.
"""

from __future__ import annotations

import functools
import math
import re
from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn

from nasdet.spectrum import PRESETS, SpectrumProbe, select_modules
from tests.spectrum._bounds import assert_covariance_within, covariance_bound

pytest.importorskip("mmdet")

DETECTORS = {
    "faster_rcnn": "faster_rcnn/faster-rcnn_r50_fpn_1x_coco.py",
    "retinanet": "retinanet/retinanet_r50_fpn_1x_coco.py",
    "fcos": "fcos/fcos_r50-caffe_fpn_gn-head_1x_coco.py",
    "mask_rcnn": "mask_rcnn/mask-rcnn_r50_fpn_1x_coco.py",
}
SIZE = 128
STAGE_CHANNELS = [64, 128, 256, 512]  # ResNet-18
MAX_ROIS = 16




@functools.cache
def _build_detector(kind: str) -> nn.Module:
    import mmdet
    from mmdet.registry import MODELS
    from mmdet.utils import register_all_modules
    from mmengine import Config

    register_all_modules()
    # mmdet's own config file by path: "mmdet::..." names the same file, but mmengine
    # resolves that prefix through pkg_resources, which setuptools >= 81 no longer ships.
    configs = Path(mmdet.__file__).parent / ".mim" / "configs"
    cfg = Config.fromfile(str(configs / DETECTORS[kind]))
    model_cfg = cfg.model
    model_cfg.backbone.depth = 18
    model_cfg.backbone.init_cfg = None
    model_cfg.neck.in_channels = STAGE_CHANNELS
    if "rpn" in model_cfg.test_cfg:  # fewer proposals keep the RoI heads fast
        model_cfg.test_cfg.rpn.nms_pre = 200
        model_cfg.test_cfg.rpn.max_per_img = MAX_ROIS
    torch.manual_seed(0)
    model = MODELS.build(model_cfg)
    model.eval()
    return model


def _data_samples() -> list:
    from mmdet.structures import DetDataSample

    shape = (SIZE, SIZE)
    meta = dict(
        img_shape=shape,
        ori_shape=shape,
        pad_shape=shape,
        batch_input_shape=shape,
        scale_factor=(1.0, 1.0),
    )
    return [DetDataSample(metainfo=meta)]


def _level_positions(strides: list[int]) -> list[int]:
    return [math.ceil(SIZE / s) ** 2 for s in strides]


def _check_cov(got: torch.Tensor, fmap: torch.Tensor) -> None:
    """Assert ``got`` is np.cov of the map's samples within the fp32 rounding bound."""
    x = fmap.movedim(1, -1).reshape(-1, fmap.shape[1]).double().numpy()
    assert_covariance_within(got, np.cov(x, rowvar=False), covariance_bound(x))


def _flatten(obj: object) -> list[torch.Tensor]:
    if isinstance(obj, torch.Tensor):
        return [obj]
    if isinstance(obj, (list, tuple)):
        return [t for item in obj for t in _flatten(item)]
    return []


@pytest.mark.parametrize("kind", list(DETECTORS))
def test_presets_on_mmdet_detectors(kind: str) -> None:
    model = _build_detector(kind)
    x = torch.randn(1, 3, SIZE, SIZE, generator=torch.Generator().manual_seed(2))
    two_stage = kind in ("faster_rcnn", "mask_rcnn")
    heads = ["rpn_head", "roi_head"] if two_stage else ["dense_head"]
    with torch.no_grad():
        if kind in ("faster_rcnn", "retinanet"):
            plain = model(x, _data_samples(), mode="tensor")
        with SpectrumProbe(model, ["backbone_stages", "fpn", *heads]) as probe:
            probed = model(x, _data_samples(), mode="tensor")
    if kind in ("faster_rcnn", "retinanet"):
        for a, b in zip(_flatten(plain), _flatten(probed), strict=True):
            assert torch.equal(a, b), "probing changed the detector's outputs"
    res = probe.results()

    # One entry per backbone stage, with the stage's width and stride.
    strides = [4, 8, 16, 32]
    for i, (channels, count) in enumerate(
        zip(STAGE_CHANNELS, _level_positions(strides), strict=True)
    ):
        entry = res[f"backbone.layer{i + 1}"]
        assert (entry.channels, entry.count) == (channels, count), entry.name
    # One entry per FPN level (two-stage: P2-P6, one-stage: P3-P7).
    neck_strides = [4, 8, 16, 32, 64] if two_stage else [8, 16, 32, 64, 128]
    for i, count in enumerate(_level_positions(neck_strides)):
        entry = res[f"neck.{i}"]
        assert (entry.channels, entry.count) == (256, count), entry.name
    assert len([k for k in res if re.fullmatch(r"neck\.\d+", k)]) == 5
    all_levels = sum(_level_positions(neck_strides))
    if two_stage:
        # The RPN conv runs once per level: one entry, all levels pooled.
        rpn = res["rpn_head.rpn_conv"]
        assert (rpn.channels, rpn.count) == (256, all_levels)
        rois = res["roi_head.bbox_head.shared_fcs.0"].count
        assert 0 < rois <= MAX_ROIS
        for fc in ("0", "1"):
            entry = res[f"roi_head.bbox_head.shared_fcs.{fc}"]
            assert (entry.channels, entry.count) == (1024, rois)  # (N, C) rows = RoIs
        if kind == "mask_rcnn":
            for j in range(4):
                entry = res[f"roi_head.mask_head.convs.{j}"]
                assert (entry.channels, entry.count) == (256, rois * 14 * 14)
    else:
        for tower in ("cls_convs", "reg_convs"):
            for j in range(4):
                entry = res[f"bbox_head.{tower}.{j}"]
                assert (entry.channels, entry.count) == (256, all_levels)
    for entry in res.values():
        assert all(math.isfinite(v) for v in entry.measures.values()), entry.name
        if entry.count >= 2:
            assert 0 < entry.measures["id_dof"] <= entry.channels, entry.name
        else:  # the 1x1 top level of a one-stage pyramid: one sample, no covariance
            assert entry.measures["id_dof"] == 0.0, entry.name

    # The hooked tensors are the ones the model computes: check one stage and one level.
    with torch.no_grad():
        stages = model.backbone(x)
        levels = model.neck(stages)
    accs = probe.accumulators
    _check_cov(accs["backbone.layer2"].covariance(), stages[1])
    _check_cov(accs["neck.1"].covariance(), levels[1])


def test_convs_and_res_blocks_presets_on_a_detector() -> None:
    model = _build_detector("retinanet")
    convs = [n for n, m in model.named_modules() if isinstance(m, nn.Conv2d)]
    with torch.no_grad(), SpectrumProbe(model, "convs", stride=2) as probe:
        model(torch.randn(1, 3, 64, 64), mode="tensor")
    # Every conv ran and got an accumulator (results() would add ~40 eigendecompositions).
    assert sorted(probe.accumulators) == sorted(convs)
    assert "backbone.conv1" in probe.accumulators
    assert probe.accumulators["backbone.conv1"].count == 16 * 16  # 64 px, stride 2, stride 2
    blocks = list(select_modules(model, "res_blocks"))
    assert blocks == [f"backbone.layer{s}.{b}" for s in range(1, 5) for b in range(2)]
    assert {
        "backbone_stages",
        "res_blocks",
        "convs",
        "fpn",
        "rpn_head",
        "roi_head",
        "dense_head",
    } <= set(PRESETS)
