"""Source-task pre-training: checkpoint format, loading into detectors, accuracy, errors."""

from __future__ import annotations

import contextlib
import copy
import importlib.util
import io
import json
from pathlib import Path

import numpy as np
import pytest
import torch

from nasdet.errors import NasdetError
from nasdet.train import load_config
from nasdet.train.pretrain import CHECKPOINT_FORMAT, build_source_backbone, pretrain
from nasdet.utils.checkpoint import load_checkpoint_file
from tests.conftest import CONFIGS, REPO


@pytest.fixture(scope="module")
def cls_root(tmp_path_factory) -> Path:
    """12 classes x 4 train / 2 val images of 32 px."""
    from nasdet.data import ensure_dataset

    return ensure_dataset("classification", tmp_path_factory.mktemp("data") / "cls",
                          num_classes=12, image_size=32, num_train_per_class=4,
                          num_val_per_class=2, scale_range=(10, 20), seed=0, progress=False)


@pytest.fixture(scope="module")
def tool_run(cls_root, tmp_path_factory):
    """tools/pretrain.py on the tiny Faster R-CNN's backbone, 1 epoch: (checkpoint, stdout)."""
    spec = importlib.util.spec_from_file_location("tool_pretrain", REPO / "tools/pretrain.py")
    tool = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(tool)
    work = tmp_path_factory.mktemp("pretrain")
    buf = io.StringIO()
    with contextlib.redirect_stdout(buf):
        assert tool.main([str(CONFIGS / "tiny_faster_rcnn_synth.py"), "--data", str(cls_root),
                          "--epochs", "1", "--batch-size", "16", "--work-dir", str(work)]) == 0
    return work / "backbone.pth", buf.getvalue()


def _build(cfg):
    from mmdet.registry import MODELS
    from mmdet.utils import register_all_modules

    import nasdet.models  # noqa: F401

    register_all_modules(init_default_scope=True)
    return MODELS.build(copy.deepcopy(cfg))


def test_checkpoint_has_exactly_the_backbone_keys_and_plain_meta(tool_run):
    tool_run, out = tool_run  # the checkpoint and the tool's report
    assert "0 missing and 0 unexpected keys" in out and "val top-1 after 1 epochs" in out
    ckpt = load_checkpoint_file(tool_run)  # weights_only=True with the allowlist
    raw = torch.load(tool_run, weights_only=True)  # and without it: only plain types
    assert raw["meta"]["format"] == CHECKPOINT_FORMAT
    backbone_cfg = load_config(CONFIGS / "tiny_faster_rcnn_synth.py").model.backbone
    assert list(ckpt["state_dict"]) == list(_build(backbone_cfg).state_dict())
    meta = ckpt["meta"]
    assert len(meta["classes"]) == 12 and meta["epochs"] == 1 and len(meta["history"]) == 1
    assert 0.0 <= meta["val_top1"] <= 1.0 and meta["channel_order"] == "rgb"
    assert ckpt["classifier"]["weight"].shape == (12, 256)
    saved = json.loads((tool_run.parent / "pretrain_metrics.json").read_text())
    assert saved["val_top1"] == meta["val_top1"]


def test_detectors_load_it_with_no_missing_backbone_keys(tool_run):
    tool_run = tool_run[0]
    from nasdet.transfer import apply_transfer, check_backbone_checkpoint

    for name in ("tiny_faster_rcnn_synth.py", "tiny_retinanet_synth.py"):
        cfg = load_config(CONFIGS / name)
        report = check_backbone_checkpoint(cfg.model.backbone, tool_run)
        assert report.missing_keys == [] and report.unexpected_keys == []
        assert report.sliced_keys == []
        cfg = apply_transfer(cfg, "finetune", checkpoint=tool_run)
        model = _build(cfg.model)
        model.init_weights()
        want = load_checkpoint_file(tool_run)["state_dict"]
        got = model.backbone.state_dict()
        for key, value in want.items():
            torch.testing.assert_close(got[key], value, msg=key)
    # Plain mmdet config syntax, no strategy: the same weights arrive.
    cfg = load_config(CONFIGS / "tiny_retinanet_synth.py")
    cfg.model.backbone.init_cfg = dict(type="Pretrained", checkpoint=str(tool_run))
    model = _build(cfg.model)
    model.init_weights()
    torch.testing.assert_close(model.backbone.layer4[1].conv2.weight,
                               want["layer4.1.conv2.weight"])


def test_reported_accuracy_matches_an_independent_evaluation(tool_run, cls_root):
    tool_run = tool_run[0]
    from PIL import Image

    ckpt = load_checkpoint_file(tool_run)
    meta = ckpt["meta"]
    backbone_cfg = load_config(CONFIGS / "tiny_faster_rcnn_synth.py").model.backbone
    net = _build(backbone_cfg)
    net.load_state_dict(ckpt["state_dict"])
    net.eval()
    mean = torch.tensor(meta["mean"]).view(3, 1, 1)
    std = torch.tensor(meta["std"]).view(3, 1, 1)
    correct = total = 0
    with torch.no_grad():
        for label, name in enumerate(meta["classes"]):
            for path in sorted((cls_root / "val" / name).glob("*.png")):
                rgb = np.asarray(Image.open(path).convert("RGB"))
                img = torch.from_numpy(rgb.copy()).permute(2, 0, 1).float()
                feat = net(((img - mean) / std)[None])[-1].mean(dim=(2, 3))
                logits = feat @ ckpt["classifier"]["weight"].T + ckpt["classifier"]["bias"]
                correct += int(logits.argmax(1).item() == label)
                total += 1
    assert total == 24
    assert meta["val_top1"] == pytest.approx(correct / total)


def test_torchvision_resnet_checkpoint_fits_mmdet_resnet(cls_root, tmp_path):
    from nasdet.transfer import check_backbone_checkpoint

    res = pretrain("resnet18", data=cls_root, epochs=1, batch_size=24,
                   work_dir=tmp_path, progress=False)
    assert res.checkpoint == tmp_path / "backbone.pth" and len(res.history) == 1
    report = check_backbone_checkpoint(dict(type="ResNet", depth=18), res.checkpoint)
    assert report.missing_keys == [] and report.unexpected_keys == []
    report = check_backbone_checkpoint(dict(type="FlexResNet", depth=18), res.checkpoint)
    assert report.missing_keys == [] and report.unexpected_keys == []


def test_caffe_style_preprocessing_is_followed():
    cfg = load_config(CONFIGS / "tiny_faster_rcnn_synth.py")
    cfg.model.data_preprocessor.bgr_to_rgb = False
    cfg.model.data_preprocessor.mean = [103.53, 116.28, 123.675]
    cfg.model.data_preprocessor.std = [1.0, 1.0, 1.0]
    net, info = build_source_backbone(cfg)
    assert info["channel_order"] == "bgr" and info["std"] == [1.0, 1.0, 1.0]
    assert net.training and not net.norm_eval and net.frozen_stages == -1
    assert net.out_indices == (3,)


def test_pretrain_errors(tmp_path, cls_root):
    (tmp_path / "only_train" / "train" / "a").mkdir(parents=True)
    with pytest.raises(NasdetError, match=r"only_train: --data: no val/ folder"):
        pretrain("resnet18", data=tmp_path / "only_train", epochs=1, work_dir=tmp_path)
    with pytest.raises(NasdetError, match="--data: dataset folder not found"):
        pretrain("resnet18", data=tmp_path / "nowhere", epochs=1, work_dir=tmp_path)
    with pytest.raises(NasdetError, match="unknown torchvision backbone"):
        pretrain("resnet7", data=cls_root, epochs=1, work_dir=tmp_path)
    with pytest.raises(NasdetError, match="--epochs"):
        pretrain("resnet18", data=cls_root, epochs=0, work_dir=tmp_path)
    assert not (tmp_path / "backbone.pth").exists()
