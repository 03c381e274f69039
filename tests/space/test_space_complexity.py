"""Parameters and MACs against hand counts and forward hooks; budgets; the cache."""

from __future__ import annotations

import json
import math

import pytest
import torch
import yaml
from torch import nn

import nasdet.space.complexity as complexity_mod
from nasdet.errors import NasdetError
from nasdet.models.utils.build import build_detector
from nasdet.models.utils.macs import fixed_rois
from nasdet.space import SearchSpace
from tests.space.conftest import SPACES


def conv_params(cin: int, cout: int, k: int, bias: bool) -> int:
    return k * k * cin * cout + (cout if bias else 0)


def conv_macs(cin: int, cout: int, k: int, positions: int) -> int:
    return positions * cout * cin * k * k


def micro_expected(fpn_shared: bool, towers_shared: bool) -> tuple[int, int]:
    """Hand count of the micro RetinaNet (tests/space/conftest.py) at 32x32."""
    bn = 2  # weight and bias per channel (running statistics are buffers)
    params = conv_params(3, 8, 7, False) + bn * 8  # stem
    params += 2 * (conv_params(8, 8, 3, False) + bn * 8)  # layer1: one basic block
    params += conv_params(8, 16, 3, False) + conv_params(16, 16, 3, False) + 2 * bn * 16
    params += conv_params(8, 16, 1, False) + bn * 16  # layer2's downsample
    params += conv_params(8, 8, 1, True) + conv_params(16, 8, 1, True)  # FPN laterals
    params += (1 if fpn_shared else 2) * conv_params(8, 8, 3, True)  # FPN outputs
    towers = 1 if towers_shared else 2
    params += towers * conv_params(8, 8, 3, True)
    params += conv_params(8, 3, 3, True) + conv_params(8, 4, 3, True)  # 1 anchor, 3 classes
    # MACs: stem at 16x16, stage 1 at 8x8 (after max pooling), stage 2 at 4x4
    macs = conv_macs(3, 8, 7, 16 * 16) + 2 * conv_macs(8, 8, 3, 64)
    macs += conv_macs(8, 16, 3, 16) + conv_macs(16, 16, 3, 16) + conv_macs(8, 16, 1, 16)
    macs += conv_macs(8, 8, 1, 64) + conv_macs(16, 8, 1, 16)
    macs += conv_macs(8, 8, 3, 64) + conv_macs(8, 8, 3, 16)  # sharing does not change MACs
    for positions in (64, 16):
        macs += towers * conv_macs(8, 8, 3, positions)
        macs += conv_macs(8, 3, 3, positions) + conv_macs(8, 4, 3, positions)
    return params, macs


@pytest.fixture()
def micro_space(write_space, micro_config):
    def make(**extra):
        return SearchSpace.from_yaml(
            write_space(
                {
                    "name": "micro",
                    "base": str(micro_config),
                    "input_size": 32,
                    **extra,
                    "dimensions": {
                        "fpn_sharing": {
                            "target": "neck.output_sharing",
                            "choices": ["separate", "shared"],
                        },
                        "towers": {
                            "target": "bbox_head.cls_reg_sharing",
                            "choices": ["separate", "shared"],
                        },
                    },
                }
            )
        )

    return make


def test_micro_detector_matches_the_hand_count(micro_space):
    space = micro_space()
    for fpn in ("separate", "shared"):
        for towers in ("separate", "shared"):
            cand = space.candidate({"fpn_sharing": fpn, "towers": towers})
            got = cand.complexity()
            params, macs = micro_expected(fpn == "shared", towers == "shared")
            assert (got.params, got.macs) == (params, macs), (fpn, towers)
            assert got.input_size == (32, 32) and got.rois == 0
            assert (got["params"], got["macs"]) == (params, macs)
            assert complexity_mod.Complexity.from_dict(got.to_dict()) == got
    assert micro_expected(False, False) == (9_111, 616_832)  # the sums, written out


def test_two_stage_macs_match_forward_hooks(tiny_space_default):
    space, cand = tiny_space_default
    got = cand.complexity()
    model = build_detector(cand.to_config(transfer=False)).eval()
    counted = {"conv": 0, "linear": 0}

    def conv_hook(m, inp, out):
        counted["conv"] += out.numel() * (m.in_channels // m.groups) * math.prod(m.kernel_size)

    def linear_hook(m, inp, out):
        counted["linear"] += out.numel() * m.in_features

    for m in model.modules():
        if isinstance(m, nn.Conv2d):
            m.register_forward_hook(conv_hook)
        elif isinstance(m, nn.Linear):
            m.register_forward_hook(linear_hook)
    with torch.no_grad():
        feats = model.extract_feat(torch.zeros(1, 3, 128, 128))
        model.rpn_head(feats)
        model.roi_head._bbox_forward(feats, fixed_rois(300, (128, 128)))
    assert got.macs == counted["conv"] + counted["linear"]
    fc = cand.params["fc_width"]
    c = cand.params["fpn_width"]
    # Shared2FCBBoxHead on 300 RoIs of 7x7xC: fc1, fc2, 5 class scores, 4x4 box deltas
    assert counted["linear"] == 300 * (c * 49 * fc + fc * fc + fc * 5 + fc * 16)
    assert got.rois == 300
    assert got.params == sum(p.numel() for p in model.parameters())  # each tensor once


@pytest.fixture(scope="module")
def tiny_space_default(tmp_path_factory):
    # The tiny space with its backbone dimensions active for every strategy, counted as
    # fine-tuned: the detector as sampled (scratch would add GroupNorm to the neck).
    data = yaml.safe_load((SPACES / "tiny_synth.yaml").read_text())
    data["base"] = str(SPACES / data["base"])
    for name in ("widths", "depths", "unique_blocks", "stem"):
        data["dimensions"][name].pop("condition")
    path = tmp_path_factory.mktemp("space") / "tiny_any_backbone.yaml"
    path.write_text(yaml.safe_dump(data, sort_keys=False))
    space = SearchSpace.from_yaml(path)
    params = dict(space.default_candidate().params)
    params.update(
        {
            "fpn_width": 64,
            "rpn_width": 64,
            "fc_width": 256,
            "depths.1": 3,
            "unique_blocks.1": None,
            "widths.1": 64,
            "transfer": "finetune",
            "lr_transfer": 0.02,
        }
    )
    params.pop("scratch_head")
    params.pop("lr")
    return space, space.candidate(params)


def test_sharing_saves_the_expected_parameters(tiny_space_default):
    space, ref = tiny_space_default
    params = dict(ref.params)
    assert (params["fpn_sharing"], params["rpn_sharing"]) == ("separate", "shared")
    c = f = 64
    base = ref.complexity().params

    def saved(**change):
        return base - space.candidate({**params, **change}).complexity().params

    # FPN: 4 backbone levels share one 3x3 output conv
    assert saved(fpn_sharing="shared") == 3 * conv_params(c, c, 3, True)
    # RPN over 5 levels, 3 anchors: T = rpn_conv, P = rpn_cls + rpn_reg
    t, p = conv_params(c, f, 3, True), conv_params(f, 3, 1, True) + conv_params(f, 12, 1, True)
    assert saved(rpn_sharing="shared_tower") == -4 * p
    assert saved(rpn_sharing="per_level") == -4 * (t + p)
    # stage 1 (width 64, depth 3) tied to 2 distinct blocks: one basic block less
    block = 2 * conv_params(64, 64, 3, False) + 2 * 2 * 64
    assert saved(**{"unique_blocks.1": 2}) == block


def test_retina_cls_reg_sharing_saves_one_tower():
    space = SearchSpace.from_yaml(SPACES / "tiny_retinanet_synth.yaml")
    params = {
        **space.default_candidate().params,
        "fpn_width": 64,
        "head_width": 32,
        "stacked_convs": 3,
    }
    sep = space.candidate(params).complexity().params
    shared = space.candidate({**params, "cls_reg_sharing": "shared"}).complexity().params
    assert sep - shared == conv_params(64, 32, 3, True) + 2 * conv_params(32, 32, 3, True)


def test_constraints_reject_with_the_numbers(micro_space):
    params, _ = micro_expected(False, False)
    shared_params, _ = micro_expected(True, False)
    space = micro_space(constraints={"max_params": params - 1})
    ok, reason = space.candidate(
        {"fpn_sharing": "separate", "towers": "separate"}
    ).check_constraints()
    assert not ok and reason == f"params {params:,} > max_params {params - 1:,}"
    ok, reason = space.check_constraints(
        space.candidate({"fpn_sharing": "shared", "towers": "separate"})
    )
    assert ok and f"params {shared_params:,}" in reason
    ratio = micro_space(constraints={"max_params_ratio": 0.99, "max_macs_ratio": 1.0})
    ok, reason = ratio.candidate(
        {"fpn_sharing": "separate", "towers": "separate"}
    ).check_constraints()  # the base itself
    assert not ok and reason == (
        f"params {params:,} > max_params_ratio 0.99 x base {params:,} = {0.99 * params:,.0f}"
    )
    assert "MACs" not in reason  # equal MACs are within a 1.0 ratio
    free = micro_space()
    assert free.default_candidate().check_constraints() == (True, "no constraints")


def test_cache_file_serves_later_loads(micro_space, tmp_path, monkeypatch):
    cache = tmp_path / "cache" / "complexity.json"
    space = micro_space()
    space.cache = complexity_mod.ComplexityCache(cache, space=space)
    cand = space.candidate({"fpn_sharing": "shared", "towers": "shared"})
    first = cand.complexity()
    data = json.loads(cache.read_text())
    assert data["space"] == "micro" and "macs_unit" in data
    assert data["entries"][cand.key]["complexity"]["params"] == first.params
    assert data["entries"][cand.key]["params"] == dict(cand.params)
    assert [p.name for p in cache.parent.iterdir()] == ["complexity.json"]

    def no_build(*args, **kwargs):
        raise AssertionError("measured again instead of using the cache")

    monkeypatch.setattr(complexity_mod, "config_complexity", no_build)
    again = SearchSpace.from_yaml(space.file, cache_file=cache)
    assert again.candidate(dict(cand.params)).complexity() == first
    # another version of the space (other constraints) does not trust the file
    changed = micro_space(constraints={"max_params": 1e9})
    changed.cache = complexity_mod.ComplexityCache(cache, space=changed)
    with pytest.raises(NasdetError, match="measured again"):  # reported with the candidate
        changed.candidate(dict(cand.params)).complexity()


def test_unreadable_cache_is_one_error(micro_space, tmp_path):
    cache = tmp_path / "c.json"
    cache.write_text("{not json")
    space = micro_space()
    with pytest.raises(NasdetError) as info:
        complexity_mod.ComplexityCache(cache, space=space)
    assert info.value.file == str(cache) and "unreadable" in info.value.message
