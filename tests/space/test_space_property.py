"""Property test: random points of every shipped space build, and tiny ones train a step.

The R50 space builds ``NASDET_R50_SPACE_SAMPLES`` random points (default 50); each
ResNet-50 detector takes a few tenths of a second to build on one CPU thread.
"""

from __future__ import annotations

import copy
import math
import os

import optuna
import pytest
import torch

from nasdet.models import FlexResNet
from nasdet.models.utils.build import build_detector
from nasdet.space import SearchSpace
from tests.space.conftest import SPACES

optuna.logging.set_verbosity(optuna.logging.WARNING)
R50_SAMPLES = int(os.environ.get("NASDET_R50_SPACE_SAMPLES", "50"))


def random_candidates(space: SearchSpace, n: int, seed: int = 0):
    study = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=seed))
    return [space.suggest(study.ask()) for _ in range(n)]


def check_built(cfg, model) -> None:
    """The built modules have the widths the config asked for."""
    bb = cfg.model.backbone
    n = model.backbone.num_stages
    widths = FlexResNet.stage_channels_for(**{**bb, "out_indices": tuple(range(n))})
    for i in range(n):
        first = model.backbone.stage_blocks(i)[0]
        last_conv = first.conv3 if hasattr(first, "conv3") else first.conv2
        assert last_conv.out_channels == widths[i]
    assert [conv.conv.in_channels for conv in model.neck.lateral_convs] == list(widths)
    width = cfg.model.neck.out_channels
    assert all(conv.conv.out_channels == width for conv in model.neck.lateral_convs)
    if bb.get("unique_blocks"):
        for i, k in enumerate(bb.unique_blocks):
            blocks = model.backbone.stage_blocks(i)
            assert len({id(b) for b in blocks}) == (k or len(blocks))


@pytest.mark.parametrize("name", ["tiny_synth", "tiny_retinanet_synth"])
def test_fifty_random_points_build(name):
    space = SearchSpace.from_yaml(SPACES / f"{name}.yaml")
    for cand in random_candidates(space, 50):
        cfg = cand.to_config(transfer=False)
        check_built(cfg, build_detector(cfg))


@pytest.mark.slow
def test_random_points_of_the_r50_space_build():
    space = SearchSpace.from_yaml(SPACES / "r50_fpn_coco.yaml")
    for cand in random_candidates(space, R50_SAMPLES):
        cfg = cand.to_config(transfer=False)
        cfg.model.backbone.init_cfg = None  # building never loads weights; be explicit
        check_built(cfg, build_detector(cfg))


def test_tiny_candidates_train_one_iteration(tiny_det_root, tmp_path):
    from mmengine.optim import OptimWrapper
    from mmengine.runner import Runner

    from tests.conftest import shrink_config

    base = shrink_config(
        "tiny_faster_rcnn_synth.py",
        tiny_det_root,
        tmp_path / "work",
        **{"train_dataloader.batch_size": 2},
    )
    from mmdet.utils import register_all_modules

    register_all_modules(init_default_scope=True)
    batch = next(iter(Runner.build_dataloader(base.train_dataloader, seed=0)))
    space = SearchSpace.from_yaml(SPACES / "tiny_synth.yaml")
    for cand in random_candidates(space, 4, seed=7):
        torch.manual_seed(0)
        cfg = cand.apply(base, transfer=False)
        assert cfg.train_dataloader.dataset.data_root == str(tiny_det_root) + "/"
        model = build_detector(cfg)
        model.init_weights()
        model.train()
        optim = OptimWrapper(torch.optim.SGD(model.parameters(), lr=1e-3, momentum=0.9))
        before = [p.detach().clone() for p in model.parameters()]
        losses = model.train_step(copy.deepcopy(batch), optim)
        assert {"loss_rpn_cls", "loss_rpn_bbox", "loss_cls", "loss_bbox"} <= set(losses)
        assert all(math.isfinite(float(v)) for v in losses.values())
        changed = sum(
            not torch.equal(b, p) for b, p in zip(before, model.parameters(), strict=True)
        )
        assert changed > len(before) // 2, cand.key
