"""Fixtures for nasdet.models tests: tiny detection batches and mmdet base configs."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch


def _make_batch(
    num_images: int = 2, size: int = 64, num_classes: int = 3, num_boxes: int = 3, seed: int = 0
) -> dict:
    from mmdet.structures import DetDataSample
    from mmengine.structures import InstanceData

    gen = torch.Generator().manual_seed(seed)
    inputs, samples = [], []
    for i in range(num_images):
        inputs.append(torch.randint(0, 256, (3, size, size), dtype=torch.uint8, generator=gen))
        sample = DetDataSample(
            metainfo=dict(
                img_id=i, img_shape=(size, size), ori_shape=(size, size), scale_factor=(1.0, 1.0)
            )
        )
        xy = torch.rand(num_boxes, 2, generator=gen) * (size / 2)
        wh = torch.rand(num_boxes, 2, generator=gen) * (size / 3) + 8
        gt = InstanceData()
        gt.bboxes = torch.cat([xy, (xy + wh).clamp(max=size - 1)], dim=1)
        gt.labels = torch.randint(0, num_classes, (num_boxes,), generator=gen)
        sample.gt_instances = gt
        samples.append(sample)
    return dict(inputs=inputs, data_samples=samples)



@pytest.fixture()
def det_batch():
    """Factory for a batch of uint8 images with random ground-truth boxes."""
    return _make_batch


@pytest.fixture(scope="session")
def mmdet_base_model_cfg():
    """Loader of mmdet's own ``configs/_base_/models/*.py`` model dicts."""
    import mmdet
    from mmengine.config import Config

    root = Path(mmdet.__file__).parent / ".mim" / "configs" / "_base_" / "models"

    def load(name: str):
        return Config.fromfile(root / name).model  # a ConfigDict, as the Runner gets it

    return load
