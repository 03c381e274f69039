"""A copy of the shipped tiny space whose transfer strategies load a test checkpoint."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
import yaml

from tests.conftest import CONFIGS, REPO


@pytest.fixture(scope="session")
def tiny_space(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """``search_spaces/tiny_synth.yaml`` with a randomly initialised base backbone as the
    'pre-trained' checkpoint (the tests exercise loading, not what was learnt)."""
    from mmdet.registry import MODELS
    from mmengine.config import Config

    import nasdet.models  # noqa: F401

    tmp = tmp_path_factory.mktemp("space")
    backbone = MODELS.build(Config.fromfile(CONFIGS / "tiny_faster_rcnn_synth.py").model.backbone)
    ckpt = tmp / "backbone.pth"
    torch.save({"state_dict": backbone.state_dict(), "meta": {}}, ckpt)
    data = yaml.safe_load((REPO / "search_spaces/tiny_synth.yaml").read_text())
    data["base"] = str(CONFIGS / "tiny_faster_rcnn_synth.py")
    data["dimensions"]["transfer"]["checkpoint"] = str(ckpt)
    path = tmp / "tiny_synth.yaml"
    path.write_text(yaml.safe_dump(data, sort_keys=False))
    return path
