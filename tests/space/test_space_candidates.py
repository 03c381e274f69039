"""Define-by-run suggestion, rebuilding candidates, keys, configs and standalone dumps."""

from __future__ import annotations

import hashlib
import json
from typing import Any

import optuna
import pytest
import torch
from mmengine.config import Config

from nasdet.errors import NasdetError
from nasdet.space import SearchSpace
from tests.space.conftest import SPACES, TINY_FRCNN

optuna.logging.set_verbosity(optuna.logging.WARNING)


@pytest.fixture(scope="module")
def tiny() -> SearchSpace:
    return SearchSpace.from_yaml(SPACES / "tiny_synth.yaml")


@pytest.fixture(scope="module")
def retina() -> SearchSpace:
    return SearchSpace.from_yaml(SPACES / "tiny_retinanet_synth.yaml")


class RecordingTrial:
    """Only the three suggest methods; answers the low end, or the high end."""

    def __init__(self, end: int = 0):
        self.end = end
        self.calls: dict[str, tuple] = {}

    def suggest_int(self, name, low, high, *, step=1):
        self.calls[name] = ("int", low, high, step)
        return (low, high)[self.end]

    def suggest_float(self, name, low, high, *, step=None, log=False):
        self.calls[name] = ("float", low, high, step, log)
        return (low, high)[self.end]

    def suggest_categorical(self, name, choices):
        self.calls[name] = ("categorical", tuple(choices))
        return list(choices)[-self.end]


def test_suggest_asks_the_trial_define_by_run(tiny):
    low = RecordingTrial(end=0)
    cand = tiny.suggest(low)
    assert low.calls["widths.0"] == ("int", 16, 32, 8)
    assert low.calls["widths.3"] == ("int", 128, 256, 64)
    assert low.calls["depths.2"] == ("int", 2, 3, 1)
    assert low.calls["unique_blocks.1"] == ("categorical", (2, None))
    assert low.calls["transfer"] == ("categorical", ("scratch", "finetune", "freeze"))
    # one lr range per strategy: scratch's, or the transfer strategies' (lower)
    assert low.calls["lr"] == ("float", 0.03, 0.08, None, True) and "lr_transfer" not in low.calls
    # the conditional dimension is asked only when its condition holds
    assert cand.params["transfer"] == "scratch" and "scratch_head" in low.calls
    high = RecordingTrial(end=1)
    cand_high = tiny.suggest(high)
    assert cand_high.params["transfer"] == "freeze"
    assert "scratch_head" not in high.calls and "scratch_head" not in cand_high.params
    assert high.calls["lr_transfer"] == ("float", 0.005, 0.03, None, True)
    assert "lr" not in high.calls
    assert list(cand.params) == list(low.calls)  # file order, one param per call


def test_conditional_dimension_in_random_samples(retina):
    study = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=3))
    seen = set()
    for _ in range(30):
        cand = retina.suggest(study.ask())
        tied = cand.params["unique_blocks"] == 2
        assert ("tie_norm" in cand.params) == tied
        seen.add(tied)
        assert isinstance(cand.params["width_mult"], float)
        assert cand.params["width_mult"] in (0.5, 0.75, 1.0, 1.25, 1.5)
        assert isinstance(cand.params["stacked_convs"], int)
        assert 0.005 <= cand.params["lr"] <= 0.02
    assert seen == {True, False}


def test_fixed_trial_and_stored_params_rebuild_the_candidate(tiny):
    study = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=1))
    for _ in range(10):
        trial = study.ask()
        cand = tiny.suggest(trial)
        assert trial.params == dict(cand.params)  # what Optuna stores is the candidate
        stored = json.loads(json.dumps(cand.params))
        fixed = tiny.suggest(optuna.trial.FixedTrial(stored))
        again = tiny.candidate(stored)
        assert fixed == cand == again and fixed.key == cand.key == again.key
        assert fixed.to_config(transfer=False).model == cand.to_config(transfer=False).model


def test_candidate_refuses_params_the_space_cannot_give(tiny):
    params = dict(tiny.default_candidate().params)
    cases = [
        ({**params, "width": 3}, "width", "not a parameter"),
        ({**params, "widths.0": 20}, "widths.0", "not a value"),  # off the step grid
        ({**params, "lr": 0.5}, "lr", "not a value"),
        ({**{k: v for k, v in params.items() if k != "lr"}, "transfer": "freeze",
          "lr_transfer": 0.01}, "widths.0", "inactive"),  # the backbone is scratch's
        ({**params, "lr": 0.02}, "lr", "not a value"),  # the transfer strategies' range
        ({k: v for k, v in params.items() if k != "stem"}, "stem", "missing"),
    ]
    for bad, key, words in cases:
        with pytest.raises(NasdetError) as info:
            tiny.candidate(bad)
        assert info.value.key == key and words in info.value.message
        assert info.value.file == str(SPACES / "tiny_synth.yaml")


def test_key_is_a_hash_of_space_name_and_params(tiny, retina):
    cand = tiny.default_candidate()
    text = json.dumps(
        {"space": "tiny_synth", "params": dict(cand.params)}, sort_keys=True, separators=(",", ":")
    )
    assert cand.key == hashlib.sha256(text.encode()).hexdigest()[:12]
    reordered = tiny.candidate(dict(reversed(list(cand.params.items()))))
    assert reordered.key == cand.key
    other = tiny.candidate({**cand.params, "stem": 32})
    assert other.key != cand.key
    assert retina.default_candidate().key != cand.key


def test_config_follows_widths_and_swaps_in_sharing_modules(tiny):
    params = dict(tiny.default_candidate().params)
    params.update(
        {
            "widths.0": 24,
            "widths.1": 48,
            "widths.2": 96,
            "widths.3": 192,
            "depths.0": 3,
            "depths.3": 3,
            "unique_blocks.0": 2,
            "unique_blocks.3": None,
            "stem": 16,
            "fpn_width": 80,
            "fpn_sharing": "shared",
            "rpn_width": 96,
            "rpn_sharing": "per_level",
            "fc_width": 384,
            "lr": 0.04,
        }
    )
    cfg = tiny.candidate(params).to_config(transfer=False)
    m = cfg.model
    assert m.backbone.type == "FlexResNet" and "depth" not in m.backbone
    assert (m.backbone.block, m.backbone.depths) == ("basic", [3, 2, 2, 3])
    assert m.backbone.widths == [24, 48, 96, 192] and m.backbone.stem_channels == 16
    assert m.backbone.unique_blocks == [2, 2, 2, None]
    assert m.neck.in_channels == [24, 48, 96, 192]
    assert (m.neck.type, m.neck.output_sharing, m.neck.out_channels) == ("SharingFPN", "shared", 80)
    assert m.rpn_head.in_channels == m.roi_head.bbox_roi_extractor.out_channels == 80
    assert m.roi_head.bbox_head.in_channels == 80
    assert (m.rpn_head.type, m.rpn_head.level_sharing, m.rpn_head.feat_channels) == (
        "SharingRPNHead",
        "per_level",
        96,
    )
    assert m.roi_head.bbox_head.fc_out_channels == 384
    assert cfg.optim_wrapper.optimizer.lr == 0.04
    assert cfg.nasdet_candidate.params == params
    # the space's base is untouched
    base = tiny.base_config().model
    assert (base.neck.type, base.backbone.depth, base.rpn_head.in_channels) == ("FPN", 18, 64)


def test_width_multipliers_round_to_the_divisor(retina, write_space):
    params = dict(retina.default_candidate().params)
    for mult, widths in (
        (0.75, [24, 48, 96, 192]),
        (1.25, [40, 80, 160, 320]),
        (0.5, [16, 32, 64, 128]),
    ):
        cfg = retina.candidate({**params, "width_mult": mult}).to_config()
        assert cfg.model.backbone.widths == widths
        assert cfg.model.neck.in_channels == widths
        assert cfg.model.backbone.stem_channels == 32  # the base's own stem
    # a base that itself uses multipliers: its derived stem (64 * 0.5) is kept
    path = write_space(
        {
            "base": str(TINY_FRCNN),
            "input_size": 128,
            "base_options": {
                "model.backbone.widths": None,
                "model.backbone.stem_channels": None,
                "model.backbone.width_multipliers": 0.5,
            },
            "dimensions": {
                "m": {
                    "target": "backbone.width_multipliers",
                    "kind": "float",
                    "low": 1.0,
                    "high": 1.5,
                    "step": 0.5,
                    "divisor": 16,
                }
            },
        }
    )
    space = SearchSpace.from_yaml(path)
    bb = (
        space.candidate({"m.0": 1.5, "m.1": 1.0, "m.2": 1.5, "m.3": 1.0}).to_config().model.backbone
    )
    assert bb.widths == [48, 64, 192, 256]  # 32*1.5, 64, 128*1.5, 256 (multiples of 16)
    assert bb.stem_channels == 32 and "width_multipliers" not in bb


def test_r50_space_turns_resnet_into_a_flexresnet_of_the_same_layout():
    from mmdet.registry import MODELS
    from mmdet.utils import register_all_modules

    register_all_modules(init_default_scope=False)
    space = SearchSpace.from_yaml(SPACES / "r50_fpn_coco.yaml")
    full = {f"width_mult.{i}": 1.0 for i in range(4)}
    full.update({f"unique_blocks.{i}": d for i, d in enumerate((3, 4, 6, 3))})
    full.update(
        {
            "tie_norm": True,
            "fpn_width": 256,
            "fpn_sharing": "separate",
            "rpn_sharing": "shared",
            "fc_width": 1024,
            "transfer": "finetune",
        }
    )
    cfg = space.candidate(full).to_config(transfer=False)
    flex = cfg.model.backbone
    assert flex.type == "FlexResNet" and "num_stages" not in flex
    assert flex.init_cfg == {"type": "Pretrained", "checkpoint": "torchvision://resnet50"}
    assert cfg.model.neck.in_channels == [256, 512, 1024, 2048]
    resnet = dict(space.base_config().model.backbone, init_cfg=None)
    mine = MODELS.build(dict(flex, init_cfg=None)).state_dict()
    theirs = MODELS.build(resnet).state_dict()
    assert {k: tuple(v.shape) for k, v in mine.items()} == {
        k: tuple(v.shape) for k, v in theirs.items()
    }
    half = space.candidate({**full, **{f"width_mult.{i}": 0.5 for i in range(4)}})
    bb = half.to_config(transfer=False).model.backbone
    assert bb.widths == [128, 256, 512, 1024]
    assert half.to_config(transfer=False).model.neck.in_channels == [128, 256, 512, 1024]


def test_dump_is_standalone_and_reloads_equal(tiny, tmp_path):
    cand = tiny.candidate({**tiny.default_candidate().params, "fpn_width": 48})
    path = cand.dump(tmp_path / "out" / f"{cand.key}.py", transfer=False)
    text = path.read_text()
    assert "_base_" not in text and "nasdet_candidate" in text
    assert sorted(p.name for p in path.parent.iterdir()) == [path.name]  # no temp files
    loaded = Config.fromfile(str(path))
    assert loaded.model.to_dict() == cand.to_config(transfer=False).model.to_dict()
    assert tiny.candidate(loaded.nasdet_candidate.params).key == cand.key
    assert loaded.nasdet_candidate.key == cand.key
    with pytest.raises(NasdetError, match="use a .py file"):
        cand.dump(tmp_path / "x.yaml")


@pytest.mark.slow
def test_dumped_candidate_retrains(retina, tiny_det_root, tmp_path):
    from nasdet.train import train
    from tests.conftest import shrink_config

    cand = retina.candidate(
        {
            **retina.default_candidate().params,
            "fpn_width": 48,
            "level_sharing": "shared_tower",
            "cls_reg_sharing": "shared",
        }
    )
    path = cand.dump(tmp_path / "cand.py")
    cfg = shrink_config(
        str(path), tiny_det_root, tmp_path / "work", **{"model.test_cfg.score_thr": 0.0}
    )
    metrics = train(cfg)
    assert "coco/bbox_mAP" in metrics
    assert (tmp_path / "work" / "epoch_1.pth").is_file()


# ---------------------------------------------------------------------------- transfer
@pytest.fixture()
def transfer_space(write_space, tmp_path) -> Any:
    from nasdet.models.utils.build import build_detector

    base = SearchSpace.from_yaml(
        write_space(
            {
                "base": str(TINY_FRCNN),
                "input_size": 128,
                "dimensions": {"fpn": {"target": "neck.out_channels", "choices": [64]}},
            }
        )
    )
    ckpt = tmp_path / "backbone.pth"
    torch.save(build_detector(base.base_config()).backbone.state_dict(), ckpt)

    def make(**extra: Any) -> SearchSpace:
        dims = {
            "w0": {
                "target": "backbone.widths",
                "kind": "int",
                "low": [16, 64, 128, 256],
                "high": [32, 64, 128, 256],
                "step": 16,
            },
            "strategy": {
                "target": "transfer",
                "checkpoint": str(ckpt),
                "choices": ["scratch", "finetune", "freeze"],
            },
            "k": {"target": "transfer.k", "choices": [1, 4], "condition": {"strategy": "freeze"}},
        }
        for name, spec in extra.items():
            dims[name] = {**dims.get(name, {}), **spec} if spec else None
        dims = {k: v for k, v in dims.items() if v is not None}
        return SearchSpace.from_yaml(
            write_space({"base": str(TINY_FRCNN), "input_size": 128, "dimensions": dims})
        )

    return make, ckpt


def test_transfer_dimension_applies_the_strategy(transfer_space):
    make, ckpt = transfer_space
    space = make()
    free = {"w0.0": 16, "w0.1": 64, "w0.2": 128, "w0.3": 256}
    fine = space.candidate({**free, "strategy": "finetune"}).to_config()
    assert fine.model.backbone.init_cfg.checkpoint == str(ckpt)
    assert fine.model.backbone.widths == [16, 64, 128, 256]
    frozen = space.candidate({**free, "strategy": "freeze", "k": 4}).to_config()
    assert frozen.model.backbone.frozen_stages == 4
    scratch = space.candidate({**free, "strategy": "scratch"})
    cfg = scratch.to_config()
    assert cfg.model.backbone.init_cfg is None and "GN" in cfg.model.backbone.norm_cfg.type
    assert (
        space.candidate({**free, "strategy": "finetune"})
        .to_config(transfer=False)
        .model.backbone.init_cfg
        is None
    )  # the base's
    # the detector scratch deploys (GroupNorm, 4conv1fc box head) is what is counted
    from nasdet.models import count_parameters
    from nasdet.models.utils.build import build_detector

    assert cfg.model.roi_head.bbox_head.type == "Shared4Conv1FCBBoxHead"
    assert scratch.complexity().params == count_parameters(build_detector(cfg))
    fine_cand = space.candidate({**free, "strategy": "finetune"})
    assert fine_cand.complexity().params == count_parameters(
        build_detector(fine_cand.to_config(transfer=False))
    )


def test_searched_lr_beats_the_fine_tuning_fragment_lr(transfer_space):
    make, _ = transfer_space
    space = make(lr={"cfg_key": "optim_wrapper.optimizer.lr", "choices": [0.005, 0.05]})
    free = {"w0.0": 16, "w0.1": 64, "w0.2": 128, "w0.3": 256}
    for strategy in ("finetune", "scratch"):
        cfg = space.candidate({**free, "strategy": strategy, "lr": 0.05}).to_config()
        assert cfg.optim_wrapper.optimizer.lr == 0.05
    # Without a searched lr, the fine-tuning fragment's lr=0.02 replaces the base's 0.06.
    plain = make().candidate({**free, "strategy": "finetune"}).to_config()
    assert plain.optim_wrapper.optimizer.lr == 0.02


def test_transfer_errors_name_the_space_file(transfer_space, tmp_path):
    make, _ = transfer_space
    with pytest.raises(NasdetError) as info:
        make(strategy={"choices": ["scratch", "freeze", "distill"]})
    assert info.value.key == "dimensions.strategy.choices" and "distill" in info.value.message
    with pytest.raises(NasdetError) as info:
        make(k={"condition": None})  # k would be active with scratch, which has no k
    assert info.value.key == "dimensions.k.target" and "'scratch' has no parameter 'k'" in (
        info.value.message
    )
    # a candidate wider than the checkpoint cannot start from it: refused at load
    with pytest.raises(NasdetError) as info:
        make(w0={"high": [48, 64, 128, 256]})
    assert info.value.key == "dimensions.strategy" and "high corner" in info.value.message
    # no checkpoint: loads (scratch works), finetune candidates fail when applied
    space = make(strategy={"checkpoint": str(tmp_path / "missing.pth")})
    cand = space.candidate(
        {"w0.0": 16, "w0.1": 64, "w0.2": 128, "w0.3": 256, "strategy": "finetune"}
    )
    with pytest.raises(NasdetError) as info:
        cand.to_config()
    assert info.value.file == space._fname and info.value.key == "dimensions.strategy"
    assert "not found" in info.value.message
