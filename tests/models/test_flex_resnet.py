"""FlexResNet: widths, depths, equivalence with mmdet's ResNet, weight tying, sliced loading."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from nasdet.errors import NasdetError
from nasdet.models import (
    FlexResNet,
    TiedBlock,
    count_parameters,
    load_sliced_state_dict,
    make_divisible,
    tied_source_index,
)


def _shapes(module: nn.Module) -> dict[str, tuple[int, ...]]:
    return {k: tuple(v.shape) for k, v in module.state_dict().items()}


def _n_params(module: nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())


# --------------------------------------------------------------------------- make_divisible
@pytest.mark.parametrize(
    "value, divisor, expected",
    [
        (24, 8, 24),  # already a multiple
        (64 * 0.75, 8, 48),
        (100, 8, 104),  # 100 + 4 = 104 -> 13 * 8
        (99, 8, 96),  # 103 // 8 = 12 -> 96 >= 0.9 * 99
        (10, 8, 16),  # rounds to 8, but 8 < 9 -> +8
        (3, 8, 8),  # never below the divisor
        (70, 16, 64),  # 78 // 16 = 4 -> 64 >= 63
        (1.5, 1, 2),
    ],
)
def test_make_divisible_hand_cases(value, divisor, expected):
    assert make_divisible(value, divisor) == expected


def test_make_divisible_min_value_and_errors():
    assert make_divisible(3, 8, min_value=16) == 16
    with pytest.raises(NasdetError):
        make_divisible(0, 8)
    with pytest.raises(NasdetError, match="divisor"):
        make_divisible(32, 0)


# --------------------------------------------------------------------------- shapes
@pytest.mark.parametrize(
    "kwargs, widths, mids, stem",
    [
        (
            dict(block="basic", depths=(1, 2, 1, 1), widths=(16, 24, 40, 64)),
            (16, 24, 40, 64),
            (16, 24, 40, 64),
            64,
        ),
        (
            dict(
                block="bottleneck",
                depths=(2, 1, 3, 1),
                widths=(32, 48, 64, 96),
                mid_widths=(8, 16, 16, 24),
                stem_channels=24,
            ),
            (32, 48, 64, 96),
            (8, 16, 16, 24),
            24,
        ),
        # multipliers: 256*0.25=64, 512*0.25=128, ...; mid = width / 4; stem = 64*0.25
        (dict(depth=50, width_multipliers=0.25), (64, 128, 256, 512), (16, 32, 64, 128), 16),
        # per-stage multipliers with rounding to 8: 64*.3=19.2->24 (16<17.3), 128*.5=64,
        # 256*.7=179.2->176, 512*.9=460.8->464; stem 64*.3=19.2->24
        (
            dict(depth=18, width_multipliers=(0.3, 0.5, 0.7, 0.9)),
            (24, 64, 176, 464),
            (24, 64, 176, 464),
            24,
        ),
        # expansion 2 on bottleneck: mid = width / 2
        (
            dict(
                block="bottleneck",
                depths=(1, 1, 1),
                widths=(32, 64, 128),
                expansion=2,
                out_indices=(0, 1, 2),
            ),
            (32, 64, 128),
            (16, 32, 64),
            64,
        ),
    ],
)
def test_widths_and_output_shapes(kwargs, widths, mids, stem):
    net = FlexResNet(**kwargs).eval()
    n = len(widths)
    assert net.widths == widths and net.mid_widths == mids and net.stem_channels == stem
    assert net.stage_channels == widths
    outs = net(torch.rand(2, 3, 64, 64))
    assert [tuple(o.shape) for o in outs] == [
        (2, w, 16 // 2**i, 16 // 2**i) for i, w in enumerate(widths)
    ][:n]
    assert net.conv1.weight.shape == (stem, 3, 7, 7)
    for i, (w, m) in enumerate(zip(widths, mids, strict=True)):
        first = getattr(net, f"layer{i + 1}")[0]
        assert first.conv1.weight.shape[0] == m
        assert first.norms()[-1].num_features == w
        assert len(getattr(net, f"layer{i + 1}")) == net.depths[i]


@pytest.mark.parametrize(
    "cfg",
    [
        dict(type="FlexResNet", depth=50, out_indices=(1, 2, 3)),
        dict(depth=18, width_multipliers=(0.3, 0.5, 0.7, 0.9), out_indices=(0, 3)),
        dict(block="bottleneck", depths=(1, 2), widths=(40, 72), out_indices=(0, 1)),
    ],
)
def test_stage_channels_for_matches_built_network(cfg):
    built = FlexResNet(**{k: v for k, v in cfg.items() if k != "type"})
    assert FlexResNet.stage_channels_for(**cfg) == built.stage_channels
    with pytest.raises(NasdetError):
        FlexResNet.stage_channels_for(**{**cfg, "out_indices": (7,)})


def test_out_indices_select_stages():
    net = FlexResNet(depth=18, width_multipliers=0.25, out_indices=(1, 3)).eval()
    outs = net(torch.rand(1, 3, 64, 64))
    assert net.stage_channels == (32, 128)
    assert [o.shape[1] for o in outs] == [32, 128]


@pytest.mark.parametrize(
    "kwargs, key",
    [
        (dict(depth=18, block="basic"), "depth"),
        (dict(depth=19), "depth"),
        (dict(block="basic", depths=(2, 2), widths=(8, 16, 32), out_indices=(0, 1)), "widths"),
        (dict(depth=18, widths=(8, 16, 32, 64), width_multipliers=0.5), "width_multipliers"),
        (dict(depth=18, out_indices=(4,)), "out_indices"),
        (dict(depth=18, unique_blocks=(2, 2, 3, 2)), "unique_blocks[2]"),
        (dict(depth=50, unique_blocks=(1, 4, 6, 3)), "unique_blocks[0]"),
    ],
)
def test_config_errors_name_the_key(kwargs, key):
    with pytest.raises(NasdetError) as info:
        FlexResNet(**kwargs)
    assert info.value.key == key


# --------------------------------------------------------------------------- vs mmdet ResNet
@pytest.mark.parametrize("depth", [18, 50])
def test_standard_widths_match_mmdet_resnet(depth):
    from mmdet.models.backbones import ResNet

    ref, net = ResNet(depth=depth), FlexResNet(depth=depth)
    ref.eval()  # mmdet's ResNet.train() returns None
    net.eval()
    assert _n_params(net) == _n_params(ref)
    assert _shapes(net) == _shapes(ref)
    assert list(net.state_dict()) == list(ref.state_dict())
    if depth != 18:
        return
    # Same function: loading mmdet's weights strictly gives the same features.
    with torch.no_grad():
        for p in ref.parameters():
            p.uniform_(-0.1, 0.1)
    net.load_state_dict(ref.state_dict(), strict=True)
    x = torch.rand(1, 3, 64, 64)
    with torch.no_grad():
        for a, b in zip(net(x), ref(x), strict=True):
            torch.testing.assert_close(a, b)


def test_group_norm_names_match_mmdet_resnet():
    from mmdet.models.backbones import ResNet

    gn = dict(type="GN", num_groups=8, requires_grad=True)
    assert _shapes(FlexResNet(depth=18, norm_cfg=gn)) == _shapes(ResNet(depth=18, norm_cfg=gn))
    assert "layer1.0.gn1.weight" in FlexResNet(depth=18, norm_cfg=gn).state_dict()


def test_frozen_stages_and_norm_eval():
    net = FlexResNet(depth=18, width_multipliers=0.25, frozen_stages=1, norm_eval=False)
    net.train()
    assert not any(p.requires_grad for p in net.conv1.parameters())
    assert not any(p.requires_grad for p in net.layer1.parameters())
    assert all(p.requires_grad for p in net.layer2.parameters())
    assert not net.layer1[0].bn1.training and net.layer2[0].bn1.training
    net2 = FlexResNet(depth=18, width_multipliers=0.25, norm_eval=True).train()
    assert not any(m.training for m in net2.modules() if isinstance(m, nn.BatchNorm2d))
    assert net2.layer1[0].conv1.training


def test_zero_init_residual():
    net = FlexResNet(
        block="basic",
        depths=(3, 1, 1, 1),
        widths=(16, 16, 32, 32),
        unique_blocks=(2, 1, 1, 1),
        tie_norm=False,
    )
    net.init_weights()
    assert torch.all(net.layer1[0].bn2.weight == 0)
    assert torch.all(net.layer1[2].bn2.weight == 0)  # tied position, own norm
    assert torch.all(net.layer1[0].bn1.weight == 1)


# --------------------------------------------------------------------------- weight tying
def test_tied_source_index_rule():
    assert [tied_source_index(j, 3) for j in range(7)] == [0, 1, 2, 1, 2, 1, 2]
    assert [tied_source_index(j, 2) for j in range(5)] == [0, 1, 1, 1, 1]
    assert [tied_source_index(j, 4) for j in range(4)] == [0, 1, 2, 3]


def _basic_block_params(c: int) -> int:
    # two 3x3 convs c->c without bias, two BN with weight and bias
    return 2 * 9 * c * c + 2 * 2 * c


def test_tied_basic_blocks_save_exactly_the_hand_count():
    depths, widths, unique = (2, 4, 6, 3), (16, 32, 64, 128), (2, 2, 3, 2)
    untied = FlexResNet(block="basic", depths=depths, widths=widths)
    tied = FlexResNet(block="basic", depths=depths, widths=widths, unique_blocks=unique)
    saved = sum(
        (d - k) * _basic_block_params(c) for d, k, c in zip(depths, unique, widths, strict=True)
    )
    assert saved == 2 * 18560 + 3 * 73984 + 1 * 295424
    assert _n_params(untied) - _n_params(tied) == saved
    assert count_parameters(tied) == _n_params(tied)
    blocks = tied.stage_blocks(2)
    assert blocks[3] is blocks[1] and blocks[5] is blocks[1] and blocks[4] is blocks[2]
    assert blocks[1] is not blocks[2]
    assert tied.layer3[3].source is tied.layer3[1]
    assert tied.layer3[3].source.conv1.weight is tied.layer3[1].conv1.weight
    # state_dict holds each tensor once: tied positions own nothing
    assert not any(k.startswith("layer3.3.") for k in tied.state_dict())
    assert sum(
        v.numel()
        for k, v in tied.state_dict().items()
        if "running" not in k and "num_batches" not in k
    ) == _n_params(tied)


def test_tied_bottleneck_with_own_norms_saves_only_convs():
    depths, widths, mids, unique = (3, 4), (32, 64), (8, 16), (2, 2)
    common = dict(
        block="bottleneck", depths=depths, widths=widths, mid_widths=mids, out_indices=(0, 1)
    )
    untied = FlexResNet(**common)
    tied = FlexResNet(**common, unique_blocks=unique, tie_norm=False)
    # identity bottleneck convs: C*m + 9*m*m + m*C (no bias)
    saved = sum(
        (d - k) * (c * m + 9 * m * m + m * c)
        for d, k, c, m in zip(depths, unique, widths, mids, strict=True)
    )
    assert saved == 1 * 1088 + 2 * 4352
    assert _n_params(untied) - _n_params(tied) == saved
    pos3 = tied.layer2[3]
    assert isinstance(pos3, TiedBlock) and pos3.source is tied.layer2[1]
    assert pos3.bn1 is not tied.layer2[1].bn1
    assert "layer2.3.bn3.weight" in tied.state_dict()
    assert "layer2.3.conv1.weight" not in tied.state_dict()


@pytest.mark.parametrize("tie_norm", [True, False])
def test_tied_forward_equals_untied_copy(tie_norm):
    """A tied net computes what an untied net with copied weights computes."""
    common = dict(
        block="bottleneck", depths=(2, 5), widths=(32, 64), mid_widths=(8, 16), out_indices=(0, 1)
    )
    tied = FlexResNet(**common, unique_blocks=(2, 3), tie_norm=tie_norm).eval()
    with torch.no_grad():
        for t in tied.state_dict().values():
            if t.is_floating_point() and t.ndim == 1:
                t.uniform_(0.5, 1.0)
            elif t.is_floating_point():
                t.normal_(0, 0.1)
    untied = FlexResNet(**common).eval()
    src_sd = tied.state_dict()
    sd = dict(src_sd)
    for j in range(3, 5):
        src = tied_source_index(j, 3)
        for name in untied.layer2[j].state_dict():
            own = f"layer2.{j}.{name}"
            sd[own] = src_sd[own] if own in src_sd else src_sd[f"layer2.{src}.{name}"]
    untied.load_state_dict(sd, strict=True)
    x = torch.rand(2, 3, 64, 64)
    with torch.no_grad():
        for a, b in zip(tied(x), untied(x), strict=True):
            torch.testing.assert_close(a, b)


def test_hooks_on_tied_positions():
    net = FlexResNet(
        block="basic", depths=(1, 6), widths=(8, 16), out_indices=(1,), unique_blocks=(1, 3)
    ).eval()
    calls = {"pos3": 0, "conv": 0}
    net.layer2[3].register_forward_hook(lambda *a: calls.__setitem__("pos3", calls["pos3"] + 1))
    net.layer2[1].conv1.register_forward_hook(
        lambda *a: calls.__setitem__("conv", calls["conv"] + 1)
    )
    net(torch.rand(1, 3, 32, 32))
    assert calls == {"pos3": 1, "conv": 3}  # positions 1, 3, 5 run layer2.1's conv1


def test_tied_gradients_accumulate_over_uses():
    """A shared weight's gradient is the sum of what each of its uses receives."""
    common = dict(block="basic", depths=(1, 4), widths=(8, 8), out_indices=(1,),
                  norm_eval=False)
    torch.manual_seed(0)
    tied = FlexResNet(**common, unique_blocks=(1, 2)).train()  # layer2.1 runs at 1, 2, 3
    untied = FlexResNet(**common).train()
    src_sd = tied.state_dict()
    sd = dict(src_sd)
    for j in range(2, 4):
        assert tied_source_index(j, 2) == 1
        for name in untied.layer2[j].state_dict():
            own = f"layer2.{j}.{name}"
            sd[own] = src_sd[own] if own in src_sd else src_sd[f"layer2.1.{name}"]
    untied.load_state_dict({k: v.clone() for k, v in sd.items()}, strict=True)
    x = torch.rand(2, 3, 32, 32, generator=torch.Generator().manual_seed(1))
    tied(x)[0].square().sum().backward()
    untied(x)[0].square().sum().backward()
    assert len(list(tied.parameters())) == len({id(p) for p in tied.parameters()})

    shared = [n for n, _ in tied.layer2[1].named_parameters()
              if f"layer2.2.{n}" not in src_sd]
    assert {"conv1.weight", "conv2.weight"} <= set(shared)
    for name in shared:
        got = tied.layer2[1].get_parameter(name).grad
        uses = [untied.layer2[j].get_parameter(name).grad for j in (1, 2, 3)]
        assert all(g is not None and g.abs().max() > 0 for g in uses), name
        # The uses' gradients are the same kernels on the same values; only the order
        # of adding the 3 of them may differ: |error| <= gamma_3 * sum |g_j|, u = 2^-24.
        u = 2.0**-24
        tol = 3 * u / (1 - 3 * u) * torch.stack(uses).abs().sum(0)
        assert torch.all((got - sum(uses)).abs() <= tol), name
        # Not just the last (or first) use: each use contributes a distinct gradient.
        assert not torch.all((got - uses[-1]).abs() <= tol), name
        assert not torch.all((got - uses[0]).abs() <= tol), name


# --------------------------------------------------------------------------- sliced loading
@pytest.fixture(scope="module")
def resnet18_state():
    from mmdet.models.backbones import ResNet

    torch.manual_seed(0)
    ref = ResNet(depth=18)
    with torch.no_grad():
        for t in ref.state_dict().values():
            if t.is_floating_point():
                t.normal_()
    return {k: v.clone() for k, v in ref.state_dict().items()}


def test_sliced_loading_copies_leading_slices(resnet18_state):
    net = FlexResNet(depth=18, width_multipliers=0.5)
    result = load_sliced_state_dict(net, resnet18_state)
    assert result.missing_keys == [] and result.unexpected_keys == []
    sd = net.state_dict()
    torch.testing.assert_close(sd["conv1.weight"], resnet18_state["conv1.weight"][:32])
    torch.testing.assert_close(
        sd["layer2.0.conv1.weight"], resnet18_state["layer2.0.conv1.weight"][:64, :32]
    )
    torch.testing.assert_close(
        sd["layer3.0.downsample.0.weight"],
        resnet18_state["layer3.0.downsample.0.weight"][:128, :64],
    )
    torch.testing.assert_close(
        sd["layer4.1.bn2.running_var"], resnet18_state["layer4.1.bn2.running_var"][:256]
    )
    assert "layer4.1.bn2.running_var" in result.sliced_keys
    assert "layer1.0.bn1.num_batches_tracked" not in result.sliced_keys
    assert len(result.sliced_keys) == sum(
        1 for k, v in sd.items() if v.shape != resnet18_state[k].shape
    )


def test_sliced_loading_refuses_wider_target(resnet18_state):
    net = FlexResNet(depth=18, widths=(64, 128, 256, 1024))
    before = {k: v.clone() for k, v in net.state_dict().items()}
    with pytest.raises(NasdetError) as info:
        load_sliced_state_dict(net, resnet18_state, source="r18.pth")
    assert info.value.key == "layer4.0.conv1.weight"
    assert "(1024, 256, 3, 3)" in str(info.value) and "(512, 256, 3, 3)" in str(info.value)
    assert info.value.file == "r18.pth"
    for k, v in net.state_dict().items():  # nothing half-written
        assert torch.equal(v, before[k])


def test_strict_shapes_refuses_any_mismatch(resnet18_state):
    with pytest.raises(NasdetError, match="strict_shapes"):
        load_sliced_state_dict(
            FlexResNet(depth=18, width_multipliers=0.5), resnet18_state, strict_shapes=True
        )
    res = load_sliced_state_dict(FlexResNet(depth=18), resnet18_state, strict_shapes=True)
    assert res.sliced_keys == []


def test_tied_net_loads_first_use_and_reports_unexpected(resnet18_state):
    net = FlexResNet(
        block="basic", depths=(3, 2, 2, 2), widths=(64, 128, 256, 512), unique_blocks=(2, 2, 2, 2)
    )
    state = dict(resnet18_state)
    for name in ("conv1.weight", "bn1.weight"):  # fake a third block in layer1
        state[f"layer1.2.{name}"] = state[f"layer1.1.{name}"] + 1
    res = load_sliced_state_dict(net, state)
    assert res.unexpected_keys == ["layer1.2.conv1.weight", "layer1.2.bn1.weight"]
    assert torch.equal(net.layer1[1].conv1.weight, resnet18_state["layer1.1.conv1.weight"])


def test_pretrained_init_cfg_slices(tmp_path, resnet18_state):
    from mmdet.registry import MODELS

    path = tmp_path / "det.pth"
    torch.save({"state_dict": {f"backbone.{k}": v for k, v in resnet18_state.items()}}, path)
    net = MODELS.build(
        dict(
            type="FlexResNet",
            depth=18,
            width_multipliers=0.25,
            init_cfg=dict(type="Pretrained", checkpoint=str(path), prefix="backbone."),
        )
    )
    net.init_weights()
    torch.testing.assert_close(
        net.layer3[1].conv2.weight, resnet18_state["layer3.1.conv2.weight"][:64, :64]
    )
    missing = MODELS.build(
        dict(
            type="FlexResNet",
            depth=18,
            init_cfg=dict(type="Pretrained", checkpoint=str(tmp_path / "nope.pth")),
        )
    )
    with pytest.raises(NasdetError, match="not found"):
        missing.init_weights()


# --------------------------------------------------------------------------- pretrained checks
def _small_net(**init) -> FlexResNet:
    """Basic blocks (1, 1), widths (8, 16), stem 8: 6200 weight elements by hand.

    stem 8*3*7*7 + 4*8 = 1208; layer1 2*(8*8*9 + 4*8) = 1216; layer2 16*8*9 + 16*16*9
    + 16*8 (downsample) + 3*4*16 (three norms) = 3776.
    """
    return FlexResNet(block="basic", depths=(1, 1), widths=(8, 16), stem_channels=8,
                      out_indices=(1,), **init)


def _snapshot(net: nn.Module) -> dict[str, torch.Tensor]:
    return {k: v.clone() for k, v in net.state_dict().items()}


def _unchanged(net: nn.Module, before: dict[str, torch.Tensor]) -> bool:
    return all(torch.equal(v, before[k]) for k, v in net.state_dict().items())


def test_pretrained_checkpoint_without_a_matching_weight_is_refused(tmp_path):
    net = _small_net()
    assert sum(v.numel() for k, v in net.state_dict().items()
               if not k.endswith("num_batches_tracked")) == 1208 + 1216 + 3776
    before = _snapshot(net)
    other = tmp_path / "classifier.pth"
    torch.save({"state_dict": {"fc.weight": torch.zeros(2, 2)}}, other)
    with pytest.raises(NasdetError, match="none of the backbone's weights") as err:
        net.load_pretrained(str(other))
    assert err.value.file == str(other) and err.value.key == "init_cfg.checkpoint"
    assert "\n" not in str(err.value) and _unchanged(net, before)
    # A detector checkpoint read without its prefix: the message says which prefix.
    det = tmp_path / "detector.pth"
    torch.save({"state_dict": {f"backbone.{k}": v for k, v in before.items()}}, det)
    with pytest.raises(NasdetError, match=r"prefix='backbone\.'") as err:
        net.load_pretrained(str(det))
    assert err.value.key == "init_cfg.checkpoint"
    net.load_pretrained(str(det), prefix="backbone.")  # with it, everything loads
    with pytest.raises(NasdetError, match="no key starts with prefix") as err:
        net.load_pretrained(str(det), prefix="neck.")
    assert err.value.key == "init_cfg.prefix"


@pytest.mark.parametrize("layers,percent,ok", [
    (("conv1.", "bn1.", "layer1."), 39, False),  # (1208 + 1216) / 6200 = 39.1%
    (("conv1.", "bn1.", "layer1.", "layer2.0.bn", "layer2.0.downsample."), 44, False),
    (("layer2.",), 61, True),  # 3776 / 6200 = 60.9%
    (("conv1.", "bn1.", "layer1.", "layer2.0.conv1."), 58, True),  # 3576 / 6200
])
def test_pretrained_checkpoint_filling_under_half_is_refused(tmp_path, layers, percent, ok):
    torch.manual_seed(0)
    source = {k: torch.randn(v.shape) if v.is_floating_point() else v
              for k, v in _small_net().state_dict().items()}
    path = tmp_path / "part.pth"
    torch.save({"state_dict": {k: v for k, v in source.items() if k.startswith(layers)}}, path)
    net = _small_net(init_cfg=dict(type="Pretrained", checkpoint=str(path)))
    if not ok:
        before = _snapshot(net)
        with pytest.raises(NasdetError, match=f"only {percent}% of FlexResNet's weight") as err:
            net.load_pretrained(str(path))
        assert err.value.file == str(path) and err.value.key == "init_cfg.checkpoint"
        assert _unchanged(net, before)
        return
    net.init_weights()
    for key, value in net.state_dict().items():
        if key.startswith(layers) and value.is_floating_point():
            assert torch.equal(value, source[key]), key
        elif value.is_floating_point():
            assert not torch.equal(value, source[key]), key  # kept its own initialisation


def test_pretrained_checkpoint_of_other_blocks_is_refused(tmp_path, resnet18_state):
    path = tmp_path / "r18.pth"
    torch.save({"state_dict": resnet18_state}, path)
    net = FlexResNet(depth=50)  # bottlenecks: layer1.0.conv1 is 1x1 where ResNet-18 has 3x3
    before = _snapshot(net)
    with pytest.raises(NasdetError, match=r"layer1\.0\.conv1\.weight: kernel \(3, 3\) in the "
                                          r"checkpoint vs \(1, 1\)") as err:
        net.load_pretrained(str(path))
    assert err.value.file == str(path) and err.value.key == "init_cfg.checkpoint"
    assert _unchanged(net, before)


def test_pretrained_checkpoint_narrower_than_the_backbone_names_the_option(
        tmp_path, resnet18_state):
    path = tmp_path / "r18.pth"
    torch.save({"state_dict": resnet18_state}, path)
    net = FlexResNet(depth=18, widths=(64, 128, 256, 1024))
    with pytest.raises(NasdetError, match=r"layer4\.0\.conv1\.weight: cannot slice") as err:
        net.load_pretrained(str(path))
    assert err.value.file == str(path) and err.value.key == "init_cfg.checkpoint"


def test_pretrained_checkpoint_is_read_by_the_safe_reader(tmp_path):
    text = tmp_path / "notes.pth"
    text.write_text("not weights\n")
    with pytest.raises(NasdetError, match="not a torch checkpoint") as err:
        _small_net().load_pretrained(str(text))
    assert err.value.file == str(text) and err.value.key == "init_cfg.checkpoint"
    import datetime

    bad = tmp_path / "pickled.pth"  # a class outside the allowlist: weights_only refuses it
    torch.save({"state_dict": {}, "meta": datetime.date(2020, 1, 1)}, bad)
    with pytest.raises(NasdetError, match="allowlist") as err:
        _small_net().load_pretrained(str(bad))
    assert err.value.key == "init_cfg.checkpoint"
