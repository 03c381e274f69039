"""Transfer wrappers: feature transfer, L2-SP, re-initialisation, FlexGN, key compatibility."""

from __future__ import annotations

import copy
from pathlib import Path

import numpy as np
import pytest
import torch
from torch.nn.modules.batchnorm import _BatchNorm

from nasdet.errors import NasdetError
from tests.conftest import CONFIGS


def _build(model_cfg):
    from mmdet.registry import MODELS
    from mmdet.utils import register_all_modules

    import nasdet.models  # noqa: F401

    register_all_modules(init_default_scope=True)
    return MODELS.build(copy.deepcopy(model_cfg))


@pytest.fixture(scope="module")
def base_cfgs():
    from nasdet.train import load_config

    return {name: load_config(CONFIGS / name)
            for name in ("tiny_faster_rcnn_synth.py", "tiny_retinanet_synth.py")}


@pytest.fixture(scope="module")
def backbone_ckpt(tmp_path_factory, base_cfgs) -> Path:
    """A tiny FlexResNet checkpoint whose every tensor differs from a fresh init."""
    torch.manual_seed(123)
    net = _build(base_cfgs["tiny_faster_rcnn_synth.py"].model.backbone)
    net.init_weights()
    with torch.no_grad():  # features of a sane scale, every tensor off its initial value
        for name, t in net.state_dict().items():
            if not t.is_floating_point():
                continue
            if name.endswith(("running_var", ".weight")) and t.dim() == 1:
                t.uniform_(0.5, 1.5)  # BN scale and variance
            elif t.dim() == 1:
                t.uniform_(-0.1, 0.1)  # BN shift and mean
            else:
                t.add_(torch.randn_like(t) * 0.01)
    path = tmp_path_factory.mktemp("ckpt") / "backbone.pth"
    torch.save({"state_dict": net.state_dict(), "meta": {"note": "test"}}, path)
    return path


def _apply(base_cfgs, name, strategy, ckpt, **params):
    from nasdet.transfer import apply_transfer

    return apply_transfer(base_cfgs[name], strategy, checkpoint=str(ckpt), **params)


def _ckpt_state(path):
    from nasdet.utils.checkpoint import load_checkpoint_file

    return load_checkpoint_file(path)["state_dict"]


# ---------------------------------------------------------------------------- all strategies
@pytest.mark.parametrize("name", ["tiny_faster_rcnn_synth.py", "tiny_retinanet_synth.py"])
@pytest.mark.parametrize(
    "strategy,extra_loss",
    [("scratch", None), ("finetune", None), ("freeze", None),
     ("feature_transfer", "loss_feat_transfer"), ("l2sp", "loss_l2sp"), ("reinit_top", None)])
def test_every_strategy_builds_and_trains_a_step(base_cfgs, backbone_ckpt, det_batch, name,
                                                 strategy, extra_loss):
    cfg = _apply(base_cfgs, name, strategy, backbone_ckpt)
    model = _build(cfg.model)
    model.init_weights()
    model.train()
    data = model.data_preprocessor(det_batch(num_classes=4), True)
    losses = model(**data, mode="loss")
    if extra_loss:
        assert extra_loss in losses
    total, _ = model.parse_losses(losses)
    assert torch.isfinite(total)
    total.backward()
    assert all(p.grad is not None for p in model.neck.parameters())
    layer4 = model.backbone.layer4[0].conv1.weight
    assert (layer4.grad is None) == (strategy == "freeze")  # freeze: k=4 by default


# ---------------------------------------------------------------------------- scratch
@pytest.mark.parametrize("name", ["tiny_faster_rcnn_synth.py", "tiny_retinanet_synth.py"])
def test_scratch_replaces_every_batchnorm_with_group_norm(base_cfgs, name):
    from nasdet.models.transfer import FlexGroupNorm

    cfg = _apply(base_cfgs, name, "scratch", None)
    model = _build(cfg.model)
    assert not any(isinstance(m, _BatchNorm) for m in model.modules())
    gns = [m for m in model.modules() if isinstance(m, FlexGroupNorm)]
    # backbone: stem + 2 blocks x 2 norms x 4 stages + 3 downsample norms = 20
    assert sum(1 for n, m in model.named_modules()
               if n.startswith("backbone.") and isinstance(m, FlexGroupNorm)) == 20
    assert all(m.num_groups == 32 for m in gns)  # tiny widths are multiples of 32
    neck_norms = [m for n, m in model.named_modules()
                  if n.startswith("neck.") and isinstance(m, FlexGroupNorm)]
    # one per lateral and output conv (RetinaNet's P6 conv on C5 included)
    assert len(neck_norms) == len(model.neck.lateral_convs) + len(model.neck.fpn_convs)
    assert len(neck_norms) == (8 if hasattr(model, "roi_head") else 9)
    head = "roi_head." if hasattr(model, "roi_head") else "bbox_head."
    assert any(n.startswith(head) for n, m in model.named_modules()
               if isinstance(m, FlexGroupNorm))
    if hasattr(model, "roi_head"):
        assert type(model.roi_head.bbox_head).__name__ == "Shared4Conv1FCBBoxHead"
        assert len(model.roi_head.bbox_head.shared_convs) == 4
    assert cfg.model.backbone.frozen_stages == -1 and cfg.model.backbone.norm_eval is False
    assert cfg.model.backbone.init_cfg is None
    assert cfg.optim_wrapper.paramwise_cfg.norm_decay_mult == 0.0
    assert cfg.train_cfg.max_epochs == 96  # the base's 16 epochs x 6


def test_flex_group_norm_matches_group_norm_with_the_largest_fitting_group_count():
    from mmcv.cnn import build_norm_layer

    from nasdet.models.transfer import FlexGroupNorm, divisor_at_most

    assert [divisor_at_most(c, 32) for c in (32, 48, 40, 56, 7, 96)] == [32, 24, 20, 28, 7, 32]
    name, layer = build_norm_layer(dict(type="FlexGN", num_groups=32), 48, postfix=1)
    assert name == "gn1" and isinstance(layer, FlexGroupNorm) and layer.num_groups == 24
    x = torch.randn(2, 48, 5, 5)
    with torch.no_grad():
        layer.weight.uniform_()
        layer.bias.uniform_()
    ref = torch.nn.functional.group_norm(x, 24, layer.weight, layer.bias, 1e-5)
    torch.testing.assert_close(layer(x), ref)
    # Hand check of one group: channels 0-1 of sample 0 standardised together.
    g = x[0, :2].double().numpy()
    expected = (g - g.mean()) / np.sqrt(g.var() + 1e-5)
    got = ((layer(x)[0, :2] - layer.bias[:2, None, None]) / layer.weight[:2, None, None])
    np.testing.assert_allclose(got.detach().double().numpy(), expected, rtol=1e-4, atol=1e-4)


# ---------------------------------------------------------------------------- finetune/freeze
def test_finetune_loads_every_backbone_tensor_and_freezes_stem_and_stage1(
        base_cfgs, backbone_ckpt):
    cfg = _apply(base_cfgs, "tiny_faster_rcnn_synth.py", "finetune", backbone_ckpt)
    assert cfg.model.backbone.init_cfg == dict(type="Pretrained", checkpoint=str(backbone_ckpt))
    model = _build(cfg.model)
    model.init_weights()
    want = _ckpt_state(backbone_ckpt)
    got = model.backbone.state_dict()
    assert got.keys() == want.keys()
    for k in want:
        torch.testing.assert_close(got[k], want[k], msg=k)
    model.train()
    assert all(not m.training for m in model.backbone.modules() if isinstance(m, _BatchNorm))
    frozen = {n.split(".")[0] for n, p in model.backbone.named_parameters() if not p.requires_grad}
    assert frozen == {"conv1", "bn1", "layer1"}


@pytest.mark.parametrize("k", [0, 2, 4])
def test_freeze_first_k_stages(base_cfgs, backbone_ckpt, k):
    cfg = _apply(base_cfgs, "tiny_retinanet_synth.py", "freeze", backbone_ckpt, k=k)
    assert cfg.model.backbone.frozen_stages == k
    model = _build(cfg.model)
    model.train()
    for name, p in model.backbone.named_parameters():
        top = name.split(".")[0]
        stage = int(top[5:]) if top.startswith("layer") else 0  # stem counts as stage 0
        assert p.requires_grad == (stage > k), name
    assert all(p.requires_grad for p in model.neck.parameters())


# ---------------------------------------------------------------------------- reinit_top
def test_reinit_top_changes_only_the_top_stages(base_cfgs, backbone_ckpt):
    cfg = _apply(base_cfgs, "tiny_faster_rcnn_synth.py", "reinit_top", backbone_ckpt, k=2)
    model = _build(cfg.model)
    model.init_weights()
    want = _ckpt_state(backbone_ckpt)
    got = model.backbone.state_dict()
    for key, value in want.items():
        if key.endswith("num_batches_tracked"):
            continue
        if key.startswith(("layer3.", "layer4.")):
            assert not torch.equal(got[key], value), key
        else:
            torch.testing.assert_close(got[key], value, msg=key)
    bn = model.backbone.layer4[0].bn1
    assert torch.equal(bn.running_mean, torch.zeros_like(bn.running_mean))
    assert torch.equal(bn.running_var, torch.ones_like(bn.running_var))
    assert torch.equal(bn.weight.detach(), torch.ones_like(bn.weight))
    model.train()  # norm_eval=True for the pretrained stages, batch statistics for the new
    assert model.backbone.layer4[0].bn1.training and model.backbone.layer3[1].bn2.training
    assert not model.backbone.layer2[0].bn1.training and not model.backbone.bn1.training


def test_reinit_of_a_frozen_stage_is_refused(base_cfgs, backbone_ckpt):
    with pytest.raises(NasdetError, match="k"):
        _apply(base_cfgs, "tiny_faster_rcnn_synth.py", "reinit_top", backbone_ckpt, k=4)


# ---------------------------------------------------------------------------- feature transfer
@pytest.fixture()
def ft_model(base_cfgs, backbone_ckpt):
    cfg = _apply(base_cfgs, "tiny_faster_rcnn_synth.py", "feature_transfer", backbone_ckpt)
    model = _build(cfg.model)
    model.init_weights()
    return cfg, model


def test_feature_transfer_teacher_is_frozen_pretrained_and_outside_the_model(
        ft_model, backbone_ckpt, det_batch):
    from mmengine.optim import build_optim_wrapper

    cfg, model = ft_model
    teacher = model.teacher
    want = _ckpt_state(backbone_ckpt)
    for k, v in teacher.state_dict().items():
        torch.testing.assert_close(v, want[k], msg=k)
    teacher_ids = {id(p) for p in teacher.parameters()}
    assert teacher_ids and not teacher_ids & {id(p) for p in model.parameters()}
    assert not any(k.startswith("teacher") for k in model.state_dict())
    # Same keys as the plain detector, plus the adapters.
    plain = _build(cfg.model.detector)
    extra = set(model.state_dict()) - set(plain.state_dict())
    assert set(plain.state_dict()) <= set(model.state_dict())
    assert extra and all(k.startswith("feat_adapters.") for k in extra)

    optim = build_optim_wrapper(model, cfg.optim_wrapper)
    in_optim = {id(p) for g in optim.optimizer.param_groups for p in g["params"]}
    assert not teacher_ids & in_optim
    assert {id(p) for p in model.feat_adapters.parameters()} <= in_optim

    model.train()
    assert not teacher.training and all(not p.requires_grad for p in teacher.parameters())
    data = model.data_preprocessor(det_batch(num_classes=4), True)
    losses = model(**data, mode="loss")
    total, _ = model.parse_losses(losses)
    total.backward()
    assert all(p.grad is None for p in teacher.parameters())
    assert all(p.grad is not None and p.grad.abs().sum() > 0
               for p in model.feat_adapters.parameters())
    model.double()
    assert next(teacher.parameters()).dtype == torch.float64  # moves with the model


def test_feature_transfer_loss_values(ft_model, det_batch, backbone_ckpt, base_cfgs):
    cfg, model = ft_model
    model.train()
    data = model.data_preprocessor(det_batch(num_classes=4), True)
    # Zero-initialised adapters: every level's normalised MSE is exactly 1.
    losses = model(**data, mode="loss")
    assert float(losses["loss_feat_transfer"]) == pytest.approx(1.0, abs=1e-6)
    # Plain MSE of a zero prediction = mean over levels of mean(T^2), with T from an
    # independently built and loaded backbone.
    ref = _build(base_cfgs["tiny_faster_rcnn_synth.py"].model.backbone)
    ref.load_state_dict(_ckpt_state(backbone_ckpt))
    ref.eval()
    with torch.no_grad():
        feats = ref(data["inputs"])
    expected = np.mean([f.double().pow(2).mean().item() for f in feats])
    model.loss_type = "mse"
    model.loss_weight = 0.5
    losses = model(**data, mode="loss")
    assert float(losses["loss_feat_transfer"]) == pytest.approx(0.5 * expected, rel=1e-5)


def test_feature_transfer_levels_and_errors(base_cfgs, backbone_ckpt):
    cfg = _apply(base_cfgs, "tiny_retinanet_synth.py", "feature_transfer", backbone_ckpt,
                 levels=[2, 3], student_init="pretrained")
    model = _build(cfg.model)
    assert [a.in_channels for a in model.feat_adapters] == [128, 256]
    assert cfg.model.detector.backbone.init_cfg.type == "Pretrained"
    bad = copy.deepcopy(cfg.model)
    bad.levels = [7]
    with pytest.raises(NasdetError, match="levels"):
        _build(bad)
    bad = copy.deepcopy(cfg.model)
    bad.teacher.out_indices = (3,)
    with pytest.raises(NasdetError, match="out_indices"):
        _build(bad)


# ---------------------------------------------------------------------------- L2-SP
def test_l2sp_is_zero_at_start_and_matches_hand_computation(base_cfgs, backbone_ckpt,
                                                            det_batch):
    cfg = _apply(base_cfgs, "tiny_faster_rcnn_synth.py", "l2sp", backbone_ckpt, alpha=0.3)
    model = _build(cfg.model)
    model.init_weights()
    model.train()
    data = model.data_preprocessor(det_batch(num_classes=4), True)
    losses = model(**data, mode="loss")
    assert float(losses["loss_l2sp"]) == 0.0 and float(model.l2sp_penalty()) == 0.0

    w = model.backbone.layer4[0].conv2.weight  # trainable
    frozen = model.backbone.conv1.weight  # stem: frozen_stages=1, excluded
    with torch.no_grad():
        w[0] += 0.5
        w[1, 0] -= 0.25
        frozen += 1.0
    n0, n1 = w[0].numel(), w[1, 0].numel()
    expected = 0.3 / 2 * (n0 * 0.5**2 + n1 * 0.25**2)
    losses = model(**data, mode="loss")
    assert float(losses["loss_l2sp"]) == pytest.approx(expected, rel=1e-6)
    # Its gradient is alpha * (w - w0).
    model.zero_grad()
    model.l2sp_penalty().backward()
    g = w.grad
    assert float(g[0].mean()) == pytest.approx(0.3 * 0.5) and float(g[2].abs().max()) == 0.0


def test_l2sp_captures_the_reference_lazily_and_replaces_backbone_weight_decay(
        base_cfgs, backbone_ckpt, det_batch):
    from mmengine.optim import build_optim_wrapper

    cfg = _apply(base_cfgs, "tiny_faster_rcnn_synth.py", "l2sp", backbone_ckpt, beta=0.002)
    model = _build(cfg.model)  # init_weights not called: reference taken at the first loss
    data = model.data_preprocessor(det_batch(num_classes=4), True)
    assert float(model(**data, mode="loss")["loss_l2sp"]) == 0.0
    optim = build_optim_wrapper(model, cfg.optim_wrapper)
    decay = {id(p): g["weight_decay"] for g in optim.optimizer.param_groups for p in g["params"]}
    assert all(decay[id(p)] == 0.0 for p in model.backbone.parameters() if p.requires_grad)
    assert all(decay[id(p)] == pytest.approx(0.002) for p in model.neck.parameters())
    assert not any(k.startswith("l2sp_reference") for k in model.state_dict())


def test_wrapped_models_keep_the_plain_detector_keys(base_cfgs, backbone_ckpt):
    cfg = _apply(base_cfgs, "tiny_faster_rcnn_synth.py", "l2sp", backbone_ckpt)
    wrapped = _build(cfg.model)
    plain = _build(base_cfgs["tiny_faster_rcnn_synth.py"].model)
    assert list(wrapped.state_dict()) == list(plain.state_dict())
    wrapped.load_state_dict(plain.state_dict(), strict=True)
    torch.testing.assert_close(wrapped.backbone.layer2[0].conv1.weight,
                               plain.backbone.layer2[0].conv1.weight)
    assert wrapped.with_neck and wrapped.with_rpn and wrapped.train_cfg is not None
