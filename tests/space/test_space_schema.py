"""Loading a space file: every user error is one NasdetError naming the file and key."""

from __future__ import annotations

import copy
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from nasdet.errors import NasdetError
from nasdet.space import SearchSpace
from tests.space.conftest import TINY_FRCNN, TINY_RETINA

FPN = {"target": "neck.out_channels", "kind": "int", "low": 32, "high": 64, "step": 16}
WIDTHS = {
    "target": "backbone.widths",
    "kind": "int",
    "low": [16, 32, 64, 128],
    "high": [32, 64, 128, 256],
    "step": [8, 16, 32, 64],
}


def space(base: Path = TINY_FRCNN, **dims: Any) -> dict[str, Any]:
    return {
        "name": "t",
        "base": str(base),
        "input_size": [128, 128],
        "dimensions": dims or {"fpn": dict(FPN)},
    }


def _set(path: str, value: Any) -> Callable[[dict], None]:
    def edit(data: dict) -> None:
        node = data
        *parents, leaf = path.split("/")
        for p in parents:
            node = node[p]
        node[leaf] = value

    return edit


def _dims(**dims: Any) -> Callable[[dict], None]:
    return _set("dimensions", dims)


# (edit of a valid space, expected key, words in the message)
CASES = [
    (_set("budget", 1), "budget", "unknown key"),
    (_set("dimensions/fpn/lowest", 1), "dimensions.fpn.lowest", "unknown key"),
    (_set("dimensions/fpn/low", 80), "dimensions.fpn.high", "above high"),
    (_set("dimensions/fpn/high", 70), "dimensions.fpn.high", "whole number of steps"),
    (_set("dimensions/fpn/kind", "float"), "dimensions.fpn.kind", "takes kind"),
    (_set("dimensions/fpn/kind", "integer"), "dimensions.fpn.kind", "expected one of"),
    (
        _dims(fpn={**FPN, "low": 36, "high": 68}),
        "dimensions.fpn.low",
        "not a multiple of the divisor 8",
    ),
    (
        _dims(fpn={**FPN, "high": 56, "step": 12}),
        "dimensions.fpn.step",
        "not a multiple of the divisor",
    ),
    (
        _dims(fpn={"target": "neck.out_channels", "choices": [32, 36]}),
        "dimensions.fpn.choices",
        "width 36 is not a multiple of the divisor 8",
    ),
    (
        _dims(w={**WIDTHS, "low": [12, 32, 64, 128], "high": [28, 64, 128, 256]}),
        "dimensions.w.low",
        "12 is not a multiple",
    ),
    (_dims(w={**WIDTHS, "low": [16, 32, 64]}), "dimensions.w.low", "expected 4 entries"),
    (_dims(w={**WIDTHS, "per_stage": False}), "dimensions.w.low", "per_stage: true"),
    (
        _dims(u={"target": "backbone.unique_blocks", "kind": "int", "low": 2, "high": 3}),
        "dimensions.u.high",
        "unique_blocks 3 cannot build with depth 2",
    ),
    (
        _dims(
            d={"target": "backbone.depths", "kind": "int", "low": 1, "high": 3},
            u={"target": "backbone.unique_blocks", "choices": [2, None]},
        ),
        "dimensions.u.choices",
        "cannot build with depth 1",
    ),
    (
        _dims(d={"target": "backbone.depths", "kind": "int", "low": 0, "high": 3}),
        "dimensions.d.low",
        "at least 1",
    ),
    (
        _dims(x={"target": "backbone.channels", "choices": [1]}),
        "dimensions.x.target",
        "unknown target",
    ),
    (
        _dims(h={"target": "bbox_head.feat_channels", "choices": [32]}),
        "dimensions.h.target",
        "no model.bbox_head",
    ),
    (
        _dims(s={"target": "neck.output_sharing", "choices": ["separate", "everything"]}),
        "dimensions.s.choices",
        "must be one of",
    ),
    (
        _dims(s={"target": "neck.output_sharing", "choices": ["shared"], "per_stage": True}),
        "dimensions.s.per_stage",
        "per-stage",
    ),
    (
        _dims(
            m={"target": "backbone.width_multipliers", "kind": "float", "low": 0.5, "high": 1.0},
            w=dict(WIDTHS),
        ),
        "dimensions.w.target",
        "not both",
    ),
    (
        _dims(m={"target": "backbone.width_multipliers", "kind": "float", "low": 0.0, "high": 1.0}),
        "dimensions.m.low",
        "positive",
    ),
    (
        _dims(
            lr={
                "cfg_key": "optim_wrapper.optimiser.lr",
                "kind": "logfloat",
                "low": 0.01,
                "high": 0.1,
            }
        ),
        "dimensions.lr.cfg_key",
        "not in the base config",
    ),
    (
        _dims(
            lr={
                "cfg_key": "optim_wrapper.optimizer.lr",
                "kind": "logfloat",
                "low": 0.0,
                "high": 0.1,
            }
        ),
        "dimensions.lr.low",
        "positive",
    ),
    (
        _dims(c={"cfg_key": "model.neck.out_channels", "choices": [32]}),
        "dimensions.c.cfg_key",
        "use target: neck.out_channels",
    ),
    (
        _dims(
            a={"target": "neck.out_channels", "choices": [32]},
            b={"target": "neck.out_channels", "choices": [64]},
        ),
        "dimensions.b.target",
        "'a' already sets",
    ),
    (
        _dims(
            fpn=dict(FPN),
            a={"cfg_key": "optim_wrapper.optimizer.lr", "choices": [0.1], "condition": {"fpn": [32, 48]}},
            b={"cfg_key": "optim_wrapper.optimizer.lr", "choices": [0.2], "condition": {"fpn": [48, 64]}},
        ),
        "dimensions.b.cfg_key",
        "exclude each other",
    ),
    (
        _dims(
            fpn=dict(FPN),
            s={"target": "neck.output_sharing", "choices": ["shared"], "condition": {"nope": 1}},
        ),
        "dimensions.s.condition.nope",
        "names no dimension",
    ),
    (
        _dims(
            s={"target": "neck.output_sharing", "choices": ["shared"], "condition": {"fpn": 32}},
            fpn=dict(FPN),
        ),
        "dimensions.s.condition.fpn",
        "must be defined before",
    ),
    (
        _dims(
            fpn=dict(FPN),
            s={"target": "neck.output_sharing", "choices": ["shared"], "condition": {"fpn": 40}},
        ),
        "dimensions.s.condition.fpn",
        "can never be 40",
    ),
    (
        _dims(
            w=dict(WIDTHS),
            s={"target": "neck.output_sharing", "choices": ["shared"], "condition": {"w": 16}},
        ),
        "dimensions.s.condition.w",
        "one value per stage",
    ),
    (_dims(**{"a.b": dict(FPN)}), "dimensions.a.b", "identifiers"),
    (
        _dims(p={"target": "transfer.k", "choices": [1]}),
        "dimensions.p.target",
        "need a dimension with target: transfer",
    ),
    (
        _dims(ls={"target": "rpn_head.level_sharing", "choices": ["shared", "per_level"]}),
        None,
        None,
    ),  # valid: num_outs 5 == 5 anchor strides (checked below with base_options)
    (_set("base", "configs/nope.py"), "base", "base config not found"),
    (_set("input_size", [100, 128]), "input_size", "pad_size_divisor (32)"),
    (_set("input_size", [128, 128, 3]), "input_size", "expected [H, W]"),
    (_set("constraints", {"max_flops": 1}), "constraints.max_flops", "unknown key"),
    (_set("constraints", {"max_params": -5}), "constraints.max_params", "positive"),
    (_set("constraints", {"max_macs": "lots"}), "constraints.max_macs", "expected a number"),
    (_set("dimensions", {}), "dimensions", "at least one dimension"),
    (
        _dims(e={"cfg_key": "model.backbone.expansion", "choices": [1.0, -1.0]}),
        "dimensions",
        "high corner",
    ),
]


@pytest.mark.parametrize(("edit", "key", "words"), CASES, ids=[f"{c[1]}:{c[2]}" for c in CASES])
def test_invalid_space_names_file_and_key(write_space, edit, key, words):
    data = space()
    edit(data)
    path = write_space(data)
    if key is None:
        SearchSpace.from_yaml(path)  # the valid case of the table loads
        return
    with pytest.raises(NasdetError) as info:
        SearchSpace.from_yaml(path)
    err = info.value
    assert err.file == str(path)
    assert err.key == key
    assert words in err.message


def test_level_sharing_needs_a_feature_map_per_anchor_stride(write_space):
    data = space(ls={"target": "rpn_head.level_sharing", "choices": ["shared", "per_level"]})
    data["base_options"] = {"model.neck.num_outs": 4}  # 5 anchor strides, 4 maps
    path = write_space(data)
    with pytest.raises(NasdetError) as info:
        SearchSpace.from_yaml(path)
    assert (info.value.file, info.value.key) == (str(path), "dimensions.ls.choices")
    assert "num_outs is 4" in info.value.message
    data["dimensions"]["ls"]["choices"] = ["shared"]  # one module for all levels: fine
    SearchSpace.from_yaml(write_space(data))


def test_yaml_syntax_error_and_missing_file(tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text("name: x\ndimensions: [a, b\n")
    with pytest.raises(NasdetError) as info:
        SearchSpace.from_yaml(bad)
    assert info.value.file == str(bad) and "not valid YAML" in info.value.message
    with pytest.raises(NasdetError, match="search space file not found"):
        SearchSpace.from_yaml(tmp_path / "missing.yaml")
    top = tmp_path / "list.yaml"
    top.write_text("- 1\n")
    with pytest.raises(NasdetError, match="expected a mapping"):
        SearchSpace.from_yaml(top)


def test_numbers_written_without_a_dot_are_numbers(write_space):
    # PyYAML reads 4e6 (no dot) as a string; the schema takes it as the number.
    data = space()
    data["constraints"] = {"max_params": "4e6", "max_macs_ratio": 1}
    loaded = SearchSpace.from_yaml(write_space(data))
    assert loaded.constraints.max_params == 4_000_000.0
    assert loaded.constraints.max_macs_ratio == 1.0
    assert loaded.input_size == (128, 128)


def test_base_resolves_next_to_the_yaml_then_in_the_repo(write_space, micro_config):
    data = space()
    data["base"] = micro_config.name  # next to the YAML (both in tmp_path)
    data["input_size"] = 32
    data["dimensions"] = {"fpn": {"target": "neck.out_channels", "choices": [8, 16]}}
    assert SearchSpace.from_yaml(write_space(data)).base_path == str(micro_config)
    data = space()
    data["base"] = "configs/tiny_retinanet_synth.py"  # repo-root relative
    assert SearchSpace.from_yaml(write_space(data)).base_path == str(TINY_RETINA)


def test_mmdet_scope_base(write_space):
    data = space()
    data["base"] = "mmdet::retinanet/retinanet_r50_fpn_1x_coco.py"
    data["input_size"] = [800, 1344]
    data["dimensions"] = {
        "fpn": {"target": "neck.out_channels", "choices": [128, 256]},
        "head": {"target": "bbox_head.level_sharing", "choices": ["shared", "shared_tower"]},
    }
    loaded = SearchSpace.from_yaml(write_space(data))
    cfg = loaded.candidate({"fpn": 128, "head": "shared_tower"}).to_config(transfer=False)
    assert cfg.model.neck.out_channels == cfg.model.bbox_head.in_channels == 128
    assert cfg.model.bbox_head.type == "SharingRetinaHead"
    assert "nasdet.models" in cfg.custom_imports.imports


def test_valid_space_reports_its_dimensions(write_space):
    data = space(
        w=dict(WIDTHS),
        fpn=dict(FPN),
        s={
            "target": "neck.output_sharing",
            "choices": ["separate", "shared"],
            "condition": {"fpn": [48, 64]},
        },
    )
    loaded = SearchSpace.from_yaml(write_space(data))
    assert loaded.param_names == ("w.0", "w.1", "w.2", "w.3", "fpn", "s")
    assert [d.name for d in loaded.dimensions] == ["w", "fpn", "s"]
    assert loaded.dimensions[0].divisor == 8  # the backbone's divisor by default
    text = loaded.describe()
    assert "w: backbone.widths int [16, 32] step 8 x4 stages" in text
    assert "if {'fpn': (48, 64)}" in text
    # the loaded base is not changed by loading or applying
    assert copy.deepcopy(loaded.base_config()).model.neck.type == "FPN"


def test_one_key_per_condition_branch(write_space):
    """Two dimensions set one key when their conditions exclude each other."""
    import optuna

    lr = "optim_wrapper.optimizer.lr"
    data = space(
        fpn=dict(FPN),
        lr_small={"cfg_key": lr, "choices": [0.1], "condition": {"fpn": [32]}},
        lr_wide={"cfg_key": lr, "choices": [0.2, 0.3], "condition": {"fpn": [48, 64]}},
    )
    sp = SearchSpace.from_yaml(write_space(data))
    seen = {}
    for trial in range(12):
        study = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=trial))
        cand = sp.suggest(study.ask())
        active = {k for k in cand.params if k.startswith("lr")}
        assert len(active) == 1, cand.params
        value = cand.params[active.pop()]
        cfg = cand.to_config(transfer=False)
        assert cfg.optim_wrapper.optimizer.lr == value
        seen[cand.params["fpn"]] = value
    assert seen.get(32) in (None, 0.1) and all(v in (0.2, 0.3) for f, v in seen.items() if f != 32)
    assert len(seen) >= 2
