"""What a config says is what trains: precedence of base, strategy, searched values and
the user's options, and the I config trained alike by nasdet and by a plain mmengine run.

Precedence everywhere: base < strategy < searched values < the user's ``--cfg-options``
(or a search's / stage's ``cfg_options``). Run with ``-s`` to see the tables.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

import pytest
import torch
import yaml
from mmengine.config import Config
from mmengine.hooks import Hook
from mmengine.registry import HOOKS

from nasdet.errors import NasdetError
from nasdet.train import load_config
from tests.conftest import CONFIGS, shrink_config

TINY = CONFIGS / "tiny_faster_rcnn_synth.py"


def _get(cfg: Any, key: str) -> Any:
    node = cfg
    for part in key.split("."):
        node = node[int(part)] if isinstance(node, (list, tuple)) else node[part]
    return node


def _print_table(title: str, rows: list[tuple]) -> None:
    head = ("key", "base", "strategy", "searched", "override", "result")
    lines = [head, *[tuple("-" if v is None else str(v) for v in r) for r in rows]]
    widths = [max(len(line[i]) for line in lines) for i in range(len(head))]
    print(f"\n{title}")
    for line in lines:
        print("  ".join(c.ljust(w) for c, w in zip(line, widths, strict=True)))


@pytest.fixture(scope="module")
def backbone_ckpt(tmp_path_factory) -> Path:
    """The tiny backbone, freshly initialised (seed 123, not the runs' seed), as a checkpoint."""
    from mmdet.registry import MODELS

    import nasdet.models  # noqa: F401
    from nasdet.models.utils.build import register_detection_modules

    register_detection_modules()
    torch.manual_seed(123)
    net = MODELS.build(dict(Config.fromfile(str(TINY)).model.backbone))
    net.init_weights()
    path = tmp_path_factory.mktemp("ckpt") / "backbone.pth"
    torch.save({"state_dict": net.state_dict(), "meta": {}}, path)
    return path


# ---------------------------------------------------------------------------- load_config
def test_precedence_under_load_config(capsys):
    i_path, s_path = CONFIGS / "study/tiny_faster_rcnn_I.py", CONFIGS / "study/tiny_faster_rcnn_S.py"
    cases = [  # key, config file, override
        ("optim_wrapper.optimizer.lr", i_path, 0.005),
        ("model.backbone.frozen_stages", i_path, 3),
        ("train_cfg.max_epochs", s_path, 20),
        ("param_scheduler.1.milestones", s_path, [10, 18]),
    ]
    base = Config.fromfile(str(TINY))
    rows = []
    for key, path, override in cases:
        plain = load_config(path)
        over = load_config(path, cfg_options={key: override})
        rows.append((key, _get(base, key), _get(plain, key), None, override, _get(over, key)))
        # The loader adds nothing: what it trains is what Config.fromfile (mmdet) reads.
        assert _get(plain, key) == _get(Config.fromfile(str(path)), key)
    with capsys.disabled():
        _print_table("load_config(study config, cfg_options={key: override})", rows)
    want = [  # (base, strategy, result): hand-written from the configs
        (0.06, 0.02, 0.005), (-1, 1, 3), (16, 32, 20), ([12, 15], [24, 30], [10, 18])]
    assert [(r[1], r[2], r[5]) for r in rows] == want


def test_a_transfer_declaration_or_option_is_refused_not_ignored(tmp_path):
    path = tmp_path / "declared.py"
    path.write_text(f"_base_ = '{TINY}'\ntransfer = dict(type='finetune', checkpoint='x.pth')\n")
    with pytest.raises(NasdetError, match="MMDetection's tools/train.py would ignore it") as err:
        load_config(path)
    assert err.value.file == str(path) and err.value.key == "transfer"
    with pytest.raises(NasdetError, match="is not applied") as err:
        load_config(CONFIGS / "study/tiny_faster_rcnn_S.py",
                    cfg_options={"transfer.schedule_factor": 0.5})
    assert err.value.key == "transfer.schedule_factor"


def test_a_user_option_reaches_the_wrapped_detector(backbone_ckpt):
    from nasdet.transfer import apply_transfer

    cfg = apply_transfer(Config.fromfile(str(TINY)), "l2sp", checkpoint=backbone_ckpt)
    from nasdet.train.config import merge_cfg_options

    merge_cfg_options(cfg, {"model.backbone.frozen_stages": 2, "model.alpha": 0.5})
    assert cfg.model.detector.backbone.frozen_stages == 2 and "backbone" not in cfg.model
    assert cfg.model.alpha == 0.5


# ---------------------------------------------------------------------------- space / evaluator
def _space_and_search(tmp_path: Path, ckpt: Path, *, strategy: str, extra_dims: dict,
                      cfg_options: dict, stage_options: dict | None = None) -> Path:
    space = {
        "name": "precedence",
        "base": str(TINY),
        "input_size": [128, 128],
        "dimensions": {
            "transfer": {"target": "transfer", "choices": [strategy], "checkpoint": str(ckpt)},
            **extra_dims,
        },
    }
    tmp_path.mkdir(parents=True, exist_ok=True)
    (tmp_path / "space.yaml").write_text(yaml.safe_dump(space, sort_keys=False))
    stage = {"type": "train", "name": "short", "epochs": 2}
    if stage_options:
        stage["cfg_options"] = stage_options
    search = {"space": "space.yaml", "n_trials": 1, "objectives": [{"metric": "ap50"}],
              "stages": [stage], "cfg_options": cfg_options}
    path = tmp_path / "search.yaml"
    path.write_text(yaml.safe_dump(search, sort_keys=False))
    return path


def _trained_config(search_path: Path, params: dict, trial_dir: Path, monkeypatch) -> Config:
    """The config the evaluator's train stage hands to nasdet.train.train (not trained)."""
    import nasdet.train
    from nasdet.search import TrialEvaluator, load_search_config

    seen: list[Config] = []
    monkeypatch.setattr(nasdet.train, "train", lambda cfg, **kw: seen.append(cfg) or {})
    evaluator = TrialEvaluator(load_search_config(search_path))
    candidate = evaluator.space.candidate(params)
    evaluator._train(evaluator.candidate_config(candidate), evaluator.config.stages[0], trial_dir)
    assert len(seen) == 1
    return seen[0]


def test_precedence_under_the_space_and_the_evaluator(tmp_path, backbone_ckpt, monkeypatch,
                                                      capsys):
    dims = {
        "lr": {"cfg_key": "optim_wrapper.optimizer.lr", "choices": [0.04]},
        "frozen": {"target": "transfer.frozen_stages", "choices": [2]},
    }
    rows = []
    base = Config.fromfile(str(TINY))
    params = {"transfer": "finetune", "lr": 0.04, "frozen": 2}
    # Without user options: the searched values win over the strategy's.
    search = _space_and_search(tmp_path / "a", backbone_ckpt, strategy="finetune",
                               extra_dims=dims, cfg_options={})
    searched = _trained_config(search, params, tmp_path / "a" / "trial", monkeypatch)
    # With them: the user's win over everything.
    search = _space_and_search(tmp_path / "b", backbone_ckpt, strategy="finetune",
                               extra_dims=dims, cfg_options={
                                   "optim_wrapper.optimizer.lr": 0.005,
                                   "model.backbone.frozen_stages": 3})
    over = _trained_config(search, params, tmp_path / "b" / "trial", monkeypatch)
    for key, value in (("optim_wrapper.optimizer.lr", 0.005), ("model.backbone.frozen_stages", 3)):
        rows.append((key, _get(base, key), {"optim_wrapper.optimizer.lr": 0.02}.get(key, 1),
                     _get(searched, key), value, _get(over, key)))

    # Schedule: a scratch candidate (schedule_factor 6) in a 2-epoch stage trains 12
    # epochs, the LR steps rescaled from the base's [12, 15] of 16 epochs; a stage's
    # cfg_options win over the rescaled milestones.
    search = _space_and_search(tmp_path / "c", backbone_ckpt, strategy="scratch",
                               extra_dims={}, cfg_options={})
    scratch = _trained_config(search, {"transfer": "scratch"}, tmp_path / "c" / "trial",
                              monkeypatch)
    search = _space_and_search(tmp_path / "d", backbone_ckpt, strategy="scratch",
                               extra_dims={}, cfg_options={},
                               stage_options={"param_scheduler.1.milestones": [7]})
    staged = _trained_config(search, {"transfer": "scratch"}, tmp_path / "d" / "trial",
                             monkeypatch)
    rows.append(("train_cfg.max_epochs", 16, 96, "stage: 2", None, scratch.train_cfg.max_epochs))
    rows.append(("param_scheduler.1.milestones", [12, 15], [72, 90], "stage: 2", None,
                 scratch.param_scheduler[1].milestones))
    rows.append(("param_scheduler.1.milestones", [12, 15], [72, 90], "stage: 2", [7],
                 staged.param_scheduler[1].milestones))
    with capsys.disabled():
        _print_table("search space + evaluator train stage (epochs: 2)", rows)

    assert searched.optim_wrapper.optimizer.lr == 0.04  # searched > strategy (0.02) > base
    assert searched.model.backbone.frozen_stages == 2
    assert over.optim_wrapper.optimizer.lr == 0.005 and over.model.backbone.frozen_stages == 3
    assert searched.train_cfg.max_epochs == 2  # finetune keeps the base length
    # 2 epochs x 6 = 12; milestones round(12 * 12/16) = 9, round(15 * 12/16) = 11.
    assert scratch.train_cfg.max_epochs == 12 and scratch.train_cfg.val_interval == 12
    assert scratch.param_scheduler[1].milestones == [9, 11]
    assert scratch.param_scheduler[1].end == 12 and scratch.param_scheduler[0].end == 100
    # every epoch is checkpointed (a killed trial continues from its last epoch), two kept
    assert scratch.default_hooks.checkpoint.interval == 1
    assert scratch.default_hooks.checkpoint.max_keep_ckpts == 2
    assert staged.param_scheduler[1].milestones == [7] and staged.train_cfg.max_epochs == 12


def test_the_study_and_comparison_use_the_same_schedule_rule():
    from nasdet.transfer import apply_transfer, set_training_length

    s_cfg = load_config(CONFIGS / "study/tiny_faster_rcnn_S.py")
    assert set_training_length(s_cfg, 8) == 16  # schedule_factor 2
    assert s_cfg.param_scheduler[1].milestones == [12, 15]  # [24, 30] x 16/32
    scratch = apply_transfer(Config.fromfile(str(TINY)), "scratch", schedule_factor=0.5)
    assert scratch.train_cfg.max_epochs == 8
    assert set_training_length(scratch, 4) == 2


# ---------------------------------------------------------------------------- nasdet vs plain mmengine
@HOOKS.register_module(force=True)
class _FirstStepProbe(Hook):
    """Writes a checksum of the weights before the first iteration and the first losses."""

    def __init__(self, out: str) -> None:
        self.out = out
        self.record: dict[str, Any] = {}

    def before_train(self, runner) -> None:
        digest = hashlib.sha256()
        state = runner.model.state_dict()
        for name in sorted(state):
            digest.update(name.encode())
            digest.update(state[name].detach().cpu().contiguous().numpy().tobytes())
        self.record["sha256"] = digest.hexdigest()
        model = runner.model
        self.record["conv1"] = model.backbone.layer2[0].conv1.weight.detach().clone()
        self.record["frozen"] = [p.requires_grad for p in model.backbone.layer1.parameters()]
        self.record["lr"] = runner.optim_wrapper.get_lr()["lr"][0]

    def after_train_iter(self, runner, batch_idx, data_batch=None, outputs=None) -> None:
        if runner.iter == 0:
            self.record["loss"] = {k: float(v) for k, v in outputs.items()}
            torch.save(self.record, self.out)


def test_i_config_trains_the_same_under_nasdet_and_plain_mmengine(
        tiny_det_root, backbone_ckpt, tmp_path, capsys):
    from mmengine.runner import Runner

    from nasdet.train import train

    cfg = shrink_config("study/tiny_faster_rcnn_I.py", tiny_det_root, tmp_path / "unused",
                        **{"model.backbone.init_cfg.checkpoint": str(backbone_ckpt)})
    runs = {}
    for label in ("nasdet", "mmengine"):
        run = cfg.copy()
        run.work_dir = str(tmp_path / label)
        run.custom_hooks = [dict(type="_FirstStepProbe", out=str(tmp_path / f"{label}.pt"))]
        path = tmp_path / f"{label}.py"
        path.write_text(run.dump())
        if label == "nasdet":
            train(load_config(path))
        else:  # mmdet's tools/train.py: Config.fromfile (custom_imports) + Runner.from_cfg
            Runner.from_cfg(Config.fromfile(str(path))).train()
        runs[label] = torch.load(tmp_path / f"{label}.pt", weights_only=True)
    a, b = runs["nasdet"], runs["mmengine"]
    with capsys.disabled():
        print("\nI config, 1 epoch on 16 images, seed 0:")
        for label, r in runs.items():
            print(f"  {label:9s} state_dict sha256 {r['sha256']}\n"
                  f"            loss@iter1 {r['loss']['loss']:.6f} "
                  f"{json.dumps({k: round(v, 6) for k, v in r['loss'].items()})}")
    # The pretrained backbone is loaded (an independent reference: the checkpoint file),
    # the stem and stage 1 are frozen, and the fine-tuning lr applies, in both.
    want = torch.load(backbone_ckpt, weights_only=True)["state_dict"]["layer2.0.conv1.weight"]
    for r in (a, b):
        torch.testing.assert_close(r["conv1"], want, rtol=0, atol=0)
        assert r["frozen"] and not any(r["frozen"])
        assert r["lr"] == pytest.approx(0.02)
    assert a["sha256"] == b["sha256"]
    # Same weights, data order and seeds in one process: the same operations, so the
    # same float32 losses bit for bit.
    assert a["loss"] == b["loss"]
