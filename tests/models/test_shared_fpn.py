"""SharingFPN: output-conv sharing, counts against hand formulas, equivalence with mmdet FPN."""

from __future__ import annotations

import pytest
import torch

from nasdet.errors import NasdetError
from nasdet.models import SharingFPN, count_parameters

IN, OUT, NUM_OUTS = [8, 16, 32], 16, 5


def _conv(cin: int, cout: int, k: int) -> int:
    return k * k * cin * cout + cout  # ConvModule without norm keeps its bias


def _inputs(seed: int = 0) -> list[torch.Tensor]:
    gen = torch.Generator().manual_seed(seed)
    return [torch.rand(2, c, 16 // 2**i, 16 // 2**i, generator=gen) for i, c in enumerate(IN)]


def _randomize(module: torch.nn.Module) -> None:
    torch.manual_seed(1)
    with torch.no_grad():
        for p in module.parameters():
            p.normal_(0, 0.2)


def test_parameter_counts_match_hand_formula():
    lateral = sum(_conv(c, OUT, 1) for c in IN)
    output = _conv(OUT, OUT, 3)
    extras = _conv(IN[-1], OUT, 3) + _conv(OUT, OUT, 3)  # on_input, then on the last output
    separate = SharingFPN(IN, OUT, NUM_OUTS, add_extra_convs="on_input")
    shared = SharingFPN(IN, OUT, NUM_OUTS, add_extra_convs="on_input", output_sharing="shared")
    assert count_parameters(separate) == lateral + len(IN) * output + extras == 14848
    assert count_parameters(shared) == lateral + output + extras == 10208
    assert count_parameters(separate) - count_parameters(shared) == (len(IN) - 1) * output
    assert shared.output_conv(0) is shared.output_conv(1) is shared.output_conv(2)
    assert shared.output_conv(3) is not shared.output_conv(4)
    assert shared.output_conv(3) is not shared.output_conv(0)


@pytest.mark.parametrize("extra", [False, "on_input", "on_output"])
def test_separate_is_mmdet_fpn(extra):
    from mmdet.models.necks import FPN

    ref = FPN(IN, OUT, NUM_OUTS, add_extra_convs=extra, relu_before_extra_convs=True)
    _randomize(ref)
    ours = SharingFPN(IN, OUT, NUM_OUTS, add_extra_convs=extra, relu_before_extra_convs=True)
    ours.load_state_dict(ref.state_dict(), strict=True)
    with torch.no_grad():
        for a, b in zip(ours(_inputs()), ref(_inputs()), strict=True):
            torch.testing.assert_close(a, b)


def test_shared_equals_fpn_with_copied_output_conv():
    """The shared FPN computes an mmdet FPN whose output convs all hold one weight."""
    from mmdet.models.necks import FPN

    shared = SharingFPN(IN, OUT, NUM_OUTS, add_extra_convs="on_input", output_sharing="shared")
    _randomize(shared)
    ref = FPN(IN, OUT, NUM_OUTS, add_extra_convs="on_input")
    sd = {k: v for k, v in shared.state_dict().items() if k.startswith("lateral_convs")}
    for level in range(NUM_OUTS):
        for name, value in shared.output_conv(level).state_dict().items():
            sd[f"fpn_convs.{level}.{name}"] = value
    ref.load_state_dict(sd, strict=True)
    with torch.no_grad():
        outs = shared(_inputs())
        for a, b in zip(outs, ref(_inputs()), strict=True):
            torch.testing.assert_close(a, b)
    assert [o.shape[-1] for o in outs] == [16, 8, 4, 2, 1]


def test_shared_gradient_collects_all_levels():
    shared = SharingFPN(IN, OUT, 3, output_sharing="shared")
    outs = shared(_inputs())
    outs[2].sum().backward()
    only_top = shared.fpn_convs[0].conv.weight.grad.clone()
    shared.zero_grad()
    sum(o.sum() for o in shared(_inputs())).backward()
    assert not torch.allclose(shared.fpn_convs[0].conv.weight.grad, only_top)


def test_errors():
    with pytest.raises(NasdetError) as info:
        SharingFPN(IN, OUT, NUM_OUTS, output_sharing="levels")
    assert info.value.key == "output_sharing"
    with pytest.raises(NasdetError, match="feature maps"):
        SharingFPN(IN, OUT, NUM_OUTS)(_inputs()[:2])
