"""mmdet ResNet options (base_channels, stem_channels, num_stages, ResNeXt) as FlexResNet.

The reference is mmdet's own ``ResNet``/``ResNeXt`` built from the same dict: the
converted FlexResNet must have the same parameter count, the same state-dict keys (in
order) and shapes, and, loaded strictly with the reference's (randomised) weights and
buffers, the same outputs. Both networks run the same convolutions, norms and additions
in the same order on the same CPU kernels, so the outputs are compared bit for bit.
"""

from __future__ import annotations

from typing import Any

import pytest
import torch
from mmdet.registry import MODELS
from mmdet.utils import register_all_modules
from torch import nn

import nasdet.models  # noqa: F401  (registers FlexResNet)
from nasdet.errors import NasdetError
from nasdet.models import FlexResNet
from nasdet.space import SearchSpace
from nasdet.space.targets import backbone_layout, resnet_to_flex
from tests.space.conftest import TINY_FRCNN

register_all_modules(init_default_scope=False)


def _shapes(module: nn.Module) -> list[tuple[str, tuple[int, ...]]]:
    return [(k, tuple(v.shape)) for k, v in module.state_dict().items()]


def _randomise(module: nn.Module, seed: int) -> None:
    """Random weights and BN statistics, so an unloaded tensor would change the output."""
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, t in module.state_dict().items():
            if not t.is_floating_point():
                continue
            values = torch.rand(t.shape, generator=gen)
            if name.endswith("running_var"):
                t.copy_(0.5 + values)  # positive variances
            else:
                t.copy_(0.2 * values - 0.1)


def _assert_equivalent(resnet: dict[str, Any], *, size: int = 64) -> FlexResNet:
    """Build ``resnet`` with mmdet and its conversion with nasdet; compare everything."""
    ref = MODELS.build(dict(resnet))
    flex_cfg = resnet_to_flex(resnet, file="base.py")
    net = MODELS.build(flex_cfg)
    assert isinstance(net, FlexResNet)
    ref.eval()  # mmdet's ResNet.train() returns None
    net.eval()
    assert sum(p.numel() for p in net.parameters()) == sum(p.numel() for p in ref.parameters())
    assert _shapes(net) == _shapes(ref)
    _randomise(ref, seed=0)
    net.load_state_dict(ref.state_dict(), strict=True)
    x = torch.rand(
        2, resnet.get("in_channels", 3), size, size, generator=torch.Generator().manual_seed(1)
    )
    with torch.no_grad():
        mine, theirs = net(x), ref(x)
    assert len(mine) == len(theirs)
    for a, b in zip(mine, theirs, strict=True):
        assert a.shape == b.shape
        assert torch.equal(a, b), (a - b).abs().max()
    # the neck width nasdet derives without building equals what mmdet's ResNet returns
    assert FlexResNet.stage_channels_for(**flex_cfg) == tuple(t.shape[1] for t in theirs)
    return net


# --------------------------------------------------------------------------- equivalence
@pytest.mark.parametrize(
    "depth, base, widths",
    [
        # hand-computed: base * 2**i * expansion (1 basic, 4 bottleneck)
        (18, 32, (32, 64, 128, 256)),
        (18, 64, (64, 128, 256, 512)),
        (50, 32, (128, 256, 512, 1024)),
        (50, 64, (256, 512, 1024, 2048)),
    ],
)
def test_base_channels_match_mmdet_resnet(depth, base, widths):
    resnet = dict(type="ResNet", depth=depth, base_channels=base, init_cfg=None)
    net = _assert_equivalent(resnet)
    assert net.widths == widths
    assert net.stem_channels == base  # mmdet: stem_channels defaults to base_channels
    expansion = 4 if depth == 50 else 1
    assert net.mid_widths == tuple(w // expansion for w in widths)


@pytest.mark.parametrize(
    "resnet",
    [
        dict(depth=18, base_channels=32, stem_channels=48),
        dict(depth=50, base_channels=64, stem_channels=32),
        dict(depth=50, base_channels=32, stem_channels=None),
        # base not a multiple of 8: mid widths must not be rounded up to 8s
        dict(
            depth=18,
            base_channels=20,
            num_stages=3,
            out_indices=(0, 1, 2),
            strides=(1, 2, 2),
            dilations=(1, 1, 1),
        ),
        dict(
            depth=50,
            base_channels=12,
            num_stages=2,
            out_indices=(1,),
            strides=(1, 2),
            dilations=(1, 1),
        ),
        dict(depth=34, base_channels=16, style="caffe", out_indices=(1, 3)),
        dict(depth=18, base_channels=32, norm_cfg=dict(type="GN", num_groups=4)),
    ],
)
def test_interacting_options_match_mmdet_resnet(resnet):
    _assert_equivalent(dict(type="ResNet", init_cfg=None, **resnet))


@pytest.mark.parametrize("base", [32, 64])
def test_resnext_with_one_group_matches_mmdet_resnext(base):
    resnext = dict(
        type="ResNeXt", depth=50, groups=1, base_width=4, base_channels=base, init_cfg=None
    )
    net = _assert_equivalent(resnext)
    assert net.mid_widths == (base, 2 * base, 4 * base, 8 * base)


def test_divisor_is_lowered_only_when_the_base_needs_it():
    assert "divisor" not in resnet_to_flex(dict(type="ResNet", depth=18, base_channels=32))
    assert resnet_to_flex(dict(type="ResNet", depth=18, base_channels=20))["divisor"] == 4
    assert resnet_to_flex(dict(type="ResNet", depth=18, base_channels=6))["divisor"] == 2
    # the default base keeps the dict as short as before: no widths, no stem
    assert resnet_to_flex(dict(type="ResNet", depth=50)) == {"type": "FlexResNet", "depth": 50}


# --------------------------------------------------------------------------- refused
@pytest.mark.parametrize(
    "resnet, key, reason",
    [
        (dict(type="ResNet", depth=50, deep_stem=True), "deep_stem", "7x7 stem"),
        (dict(type="ResNet", depth=50, avg_down=True), "avg_down", "AvgPool"),
        (
            dict(
                type="ResNet",
                depth=50,
                dcn=dict(type="DCN", deform_groups=1),
                stage_with_dcn=(False, True, True, True),
            ),
            "dcn",
            "deformable",
        ),
        (
            dict(
                type="ResNet",
                depth=50,
                plugins=[
                    dict(
                        cfg=dict(type="ContextBlock", ratio=1.0 / 16),
                        stages=(False, True, True, True),
                        position="after_conv3",
                    )
                ],
            ),
            "plugins",
            "plugin",
        ),
        (dict(type="ResNeXt", depth=50, groups=32, base_width=4), "groups", "grouped"),
        (dict(type="ResNetV1d", depth=50), "type", "deep_stem=True, avg_down=True"),
    ],
)
def test_refused_options_name_the_option_and_the_reason(resnet, key, reason):
    ref = MODELS.build(dict(resnet))  # a valid mmdet backbone ...
    with pytest.raises(NasdetError) as info:  # ... that FlexResNet cannot express
        resnet_to_flex(resnet, file="base.py")
    err = info.value
    assert err.file == "base.py" and err.key == f"model.backbone.{key}"
    assert "no FlexResNet counterpart" in err.message and reason in err.message
    assert "\n" not in str(err)
    names = set(ref.state_dict())
    if key in ("deep_stem", "type"):
        assert "stem.0.weight" in names and "conv1.weight" not in names
    if key in ("avg_down", "type"):
        assert "layer1.0.downsample.1.weight" in names and "layer1.0.downsample.2.weight" in names
    if key == "groups":
        conv2 = ref.layer1[0].conv2
        assert conv2.groups == 32 and conv2.weight.shape[1] == conv2.in_channels // 32


@pytest.mark.parametrize(
    "resnet, key",
    [
        (dict(type="ResNet", depth=50, base_channels=0), "base_channels"),
        (dict(type="ResNet", depth=50, stem_channels=32.0), "stem_channels"),
        (dict(type="ResNet", depth=50, num_stages=5), "num_stages"),
        (dict(type="ResNeXt", depth=18), "depth"),
        (dict(type="ResNet", depth=50, groups=2), "groups"),  # ResNet takes no groups
    ],
)
def test_bad_values_are_one_line_errors(resnet, key):
    with pytest.raises(NasdetError) as info:
        resnet_to_flex(resnet, file="base.py")
    assert info.value.key == f"model.backbone.{key}" and "\n" not in str(info.value)


# --------------------------------------------------------------------------- through a space
def test_space_over_a_base_channels_resnet_searches_its_real_widths(tmp_path):
    base = tmp_path / "base.py"
    base.write_text(
        f"_base_ = [{str(TINY_FRCNN)!r}]\n"
        "model = dict(backbone=dict(_delete_=True, type='ResNet', depth=18, base_channels=32,\n"
        "             out_indices=(0, 1, 2, 3), norm_cfg=dict(type='BN'), norm_eval=False,\n"
        "             init_cfg=None))\n"
    )
    space_file = tmp_path / "space.yaml"
    space_file.write_text(
        f"base: {base}\ninput_size: 128\ndimensions:\n"
        "  m:\n    target: backbone.width_multipliers\n    kind: categorical\n"
        "    choices: [0.5, 1.0]\n    per_stage: false\n"
    )
    space = SearchSpace.from_yaml(space_file)
    layout = backbone_layout(space.base_config().model.backbone, file=base)
    assert (layout.widths, layout.stem, layout.divisor) == ((32, 64, 128, 256), 32, 8)
    same = space.candidate({"m": 1.0}).to_config(transfer=False)
    assert same.model.neck.in_channels == [32, 64, 128, 256]
    mine = MODELS.build(dict(same.model.backbone))
    theirs = MODELS.build(dict(space.base_config().model.backbone))
    assert _shapes(mine) == _shapes(theirs)
    half = space.candidate({"m": 0.5}).to_config(transfer=False)
    assert list(half.model.backbone.widths) == [16, 32, 64, 128]
    assert half.model.backbone.stem_channels == 32  # the base's stem, as for FlexResNet bases
    assert half.model.neck.in_channels == [16, 32, 64, 128]
