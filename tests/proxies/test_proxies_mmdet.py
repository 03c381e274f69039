"""The MMDetection adapter and every baseline proxy on small Faster R-CNN and RetinaNet.

The detectors come from mmdet's own configs, shrunk to ResNet-18, 64-channel FPN and
at most 64 proposals so that each proxy takes well under a second on a CPU.
"""

from __future__ import annotations

import math
from pathlib import Path

import pytest
import torch

pytest.importorskip("mmdet")

from mmengine.structures import InstanceData  # noqa: E402

from nasdet.errors import NasdetError  # noqa: E402
from nasdet.models.utils.macs import count_macs, model_complexity, roi_counts  # noqa: E402
from nasdet.proxies import (  # noqa: E402
    MACs,
    MMDetAdapter,
    compute_proxies,
    registered_proxies,
)

BASELINES = ["params", "macs", "grad_norm", "snip", "synflow", "naswot", "zen", "maedet"]
WIDTH = 64


def _small_detector(config: str) -> torch.nn.Module:
    import mmdet
    from mmdet.registry import MODELS
    from mmdet.utils import register_all_modules
    from mmengine import Config

    register_all_modules()
    # the file that the 'mmdet::' prefix names (mmengine's get_config needs pkg_resources)
    model = Config.fromfile(Path(mmdet.__file__).parent / ".mim" / "configs" / config).model
    model.backbone.update(depth=18, init_cfg=None)
    model.neck.update(in_channels=[64, 128, 256, 512], out_channels=WIDTH)
    if model.type == "FasterRCNN":
        model.rpn_head.update(in_channels=WIDTH, feat_channels=WIDTH)
        model.roi_head.bbox_roi_extractor.out_channels = WIDTH
        model.roi_head.bbox_head.update(in_channels=WIDTH, fc_out_channels=128)
        model.train_cfg.rpn_proposal.update(nms_pre=200, max_per_img=64)
        model.train_cfg.rcnn.sampler.num = 32
        model.test_cfg.rpn.update(nms_pre=200, max_per_img=64)
    else:
        model.bbox_head.update(in_channels=WIDTH, feat_channels=WIDTH)
    torch.manual_seed(0)
    return MODELS.build(model)


def _data_batch() -> dict:
    from mmdet.structures import DetDataSample

    gen = torch.Generator().manual_seed(0)
    inputs, samples = [], []
    for h, w in [(96, 128), (128, 112)]:
        inputs.append(torch.randint(0, 256, (3, h, w), dtype=torch.uint8, generator=gen))
        sample = DetDataSample(metainfo=dict(img_shape=(h, w), ori_shape=(h, w),
                                             scale_factor=(1.0, 1.0)))
        sample.gt_instances = InstanceData(
            bboxes=torch.tensor([[10.0, 12.0, 60.0, 70.0], [40.0, 30.0, 90.0, 88.0]]),
            labels=torch.tensor([1, 3]),
        )
        samples.append(sample)
    return dict(inputs=inputs, data_samples=samples)


@pytest.fixture(scope="module", params=["faster_rcnn/faster-rcnn_r50_fpn_1x_coco.py",
                                        "retinanet/retinanet_r50_fpn_1x_coco.py"],
                ids=["faster_rcnn", "retinanet"])
def detector(request):
    model = _small_detector(request.param)
    return model, MMDetAdapter(model, _data_batch())


def test_adapter_preprocesses_and_exposes_loss_features_and_stages(detector):
    model, adapter = detector
    x = adapter.inputs()
    assert x.dtype == torch.float32 and x.shape[:2] == (2, 3)
    assert x.shape[2] % 32 == 0 and x.shape[3] % 32 == 0       # padded by the preprocessor
    loss = adapter.loss(model, x)
    assert loss.dim() == 0 and torch.isfinite(loss) and loss.requires_grad
    torch.manual_seed(0)
    first = adapter.loss(model, x)
    torch.manual_seed(0)
    losses = model.loss(x, adapter.data_samples)
    by_hand = sum(v.mean() if torch.is_tensor(v) else sum(t.mean() for t in v)
                  for k, v in losses.items() if "loss" in k)
    assert float(first) == pytest.approx(float(by_hand), rel=1e-6)
    stages = adapter.stage_features(model, x)
    assert [s.shape[1] for s in stages] == [64, 128, 256, 512]
    assert all(f.shape[1] == WIDTH for f in adapter.features(model, x))
    with pytest.raises(NasdetError, match="batch of 2"):
        adapter.loss(model, x[:1])


def test_every_baseline_is_finite_and_leaves_the_detector_unchanged(detector):
    model, adapter = detector
    model.train()
    state = {k: v.clone() for k, v in model.state_dict().items()}
    flags = [m.training for m in model.modules()]
    results = compute_proxies(model, adapter, BASELINES)
    for r in results:
        assert r.ok, f"{r.name}: {r.error}"
        assert math.isfinite(r.value)
    values = {r.name: r.value for r in results}
    assert values["params"] == sum(p.numel() for p in model.parameters() if p.requires_grad)
    assert values["synflow"] > 0 and values["grad_norm"] > 0 and values["snip"] > 0
    for key, value in model.state_dict().items():
        assert torch.equal(value, state[key]), key
    assert [m.training for m in model.modules()] == flags
    assert all(p.grad is None for p in model.parameters())
    assert set(BASELINES) <= set(registered_proxies())


def test_macs_count_backbone_convolutions_by_hand(detector):
    model, adapter = detector
    x = adapter.inputs()
    _, _, h, w = x.shape
    conv1 = model.backbone.conv1
    stem = (h // 2) * (w // 2) * 64 * 3 * 7 * 7
    model.eval()
    assert count_macs(conv1, x) == 2 * stem
    per_image = MACs().score(model, adapter)
    backbone = count_macs(model.backbone, x) / 2
    assert per_image > backbone > stem


def test_macs_proxy_is_the_spaces_count_at_the_probe_size(detector):
    """One MAC counter: the proxy equals model_complexity at the padded probe size."""
    model, adapter = detector
    h, w = adapter.inputs().shape[-2:]
    rois, mask_rois = roi_counts(model)
    expected = model_complexity(model, (h, w), rois=rois, mask_rois=mask_rois).macs
    assert MACs().score(model, adapter) == expected
    if getattr(model, "roi_head", None) is not None:
        assert rois == model.test_cfg["rpn"]["max_per_img"] and rois > 0
