"""The pre-training study end to end on a tiny dataset: runs, spectra, derived widths, report."""

from __future__ import annotations

import json
import shutil
from dataclasses import replace
from pathlib import Path

import pytest

from nasdet.errors import NasdetError
from nasdet.study.pretraining import StudyOptions, run_pretraining_study
from tests.conftest import shrink_config


@pytest.fixture(scope="module")
def cls_root(tmp_path_factory) -> Path:
    from nasdet.data import ensure_dataset

    return ensure_dataset("classification", tmp_path_factory.mktemp("data") / "cls",
                          num_classes=4, image_size=32, num_train_per_class=4,
                          num_val_per_class=2, scale_range=(10, 20), seed=0, progress=False)


def _study_configs(tmp: Path, root: Path) -> tuple[Path, Path]:
    """Shrunk I and S configs written in full with their transfer records, as configs/study/."""
    import torch
    from mmdet.registry import MODELS

    from nasdet.models.utils.build import register_detection_modules
    from nasdet.transfer import apply_transfer
    from nasdet.utils.config import set_pretrained_checkpoint

    base = shrink_config("tiny_faster_rcnn_synth.py", root, tmp / "work")
    # apply_transfer checks the checkpoint against the backbone: give it one that fits,
    # then point I at a file that does not exist (the study pre-trains it).
    register_detection_modules()
    fits = tmp / "fits.pth"
    torch.save(MODELS.build(dict(base.model.backbone, init_cfg=None)).state_dict(), fits)
    i_cfg = set_pretrained_checkpoint(
        apply_transfer(base, "finetune", checkpoint=str(fits), frozen_stages=1),
        tmp / "missing.pth")
    fits.unlink()
    s_cfg = apply_transfer(base, "scratch", norm="FlexGN", gn_head=False, schedule_factor=2.0)
    bb = i_cfg.model.backbone
    assert bb.init_cfg == dict(type="Pretrained", checkpoint=str(tmp / "missing.pth"))
    assert bb.frozen_stages == 1 and bb.norm_eval is True and "fragment" in i_cfg.transfer
    assert s_cfg.train_cfg.max_epochs == 2 * base.train_cfg.max_epochs
    paths = []
    for name, cfg in (("I", i_cfg), ("S", s_cfg)):
        path = tmp / f"{name}.py"
        path.write_text(cfg.dump())
        paths.append(path)
    return paths[0], paths[1]


@pytest.fixture(scope="module")
def study(tiny_det_root, cls_root, tmp_path_factory):
    tmp = tmp_path_factory.mktemp("study")
    i_cfg, s_cfg = _study_configs(tmp, tiny_det_root)
    opts = StudyOptions(i_config=i_cfg, s_config=s_cfg, work_dir=tmp / "out", seeds=(0, 1),
                        epochs=1, pretrain_epochs=1, pretrain_data=str(cls_root),
                        num_images=2, derive_metric="params", derive_budget=1.0)
    summary = run_pretraining_study(opts, report_dir=tmp / "docs", progress=False)
    return opts, summary, tmp


def test_every_run_trained_with_its_schedule_and_hook(study):
    opts, summary, _ = study
    runs = {(r["model"], r["seed"]): r for r in summary["runs"]}
    assert set(runs) == {(m, s) for m in ("I", "S", "D") for s in (0, 1)}
    assert runs[("I", 0)]["epochs"] == 1 and runs[("S", 0)]["epochs"] == 2  # S: 2x I
    assert runs[("D", 0)]["epochs"] == 2
    for r in runs.values():
        hist = json.loads(Path(r["history"]).read_text())
        # before training + after every epoch
        assert len(hist["entries"]) == r["epochs"] + 1
        assert any(n.startswith("backbone.layer") for n in hist["entries"][-1]["layers"])
        assert 0.0 <= r["ap"] <= 1.0
    # I started from the backbone pre-trained here (its config's checkpoint was missing).
    assert summary["checkpoint"].endswith("pretrain/backbone.pth")
    assert summary["pretrain"]["epochs"] == 1 and summary["pretrain"]["classes"] == 4


def test_spectra_cover_pretrained_i_and_s(study):
    _, summary, _ = study
    labels = [c["label"] for c in summary["spectrum"]["checkpoints"]]
    assert labels == ["I pre-trained", "I", "S init", "S"]
    pre, trained = summary["spectrum"]["checkpoints"][:2]
    # The pre-trained backbone is what fine-tuning started from, not what it ended with.
    assert pre["layers"]["backbone.layer4"]["measures"]["id_dof"] != \
        trained["layers"]["backbone.layer4"]["measures"]["id_dof"]


def test_derived_widths_meet_the_budget_and_were_trained(study):
    _, summary, _ = study
    d = summary["derived"]
    assert d["cost"] <= d["budget"] * d["original_cost"]
    assert all(w % 8 == 0 for w in d["widths"])
    assert summary["complexity"]["D"]["params"] == d["cost"]
    from nasdet.train import load_config

    cfg = load_config(d["config"])
    assert list(cfg.model.backbone.widths) == list(d["widths"])
    assert cfg.model.backbone.norm_cfg.type == "FlexGN"  # S's recipe, S's norm


def test_report_is_written_twice_with_its_figures(study):
    _, summary, tmp = study
    for out in (Path(summary["options"]["work_dir"]) / "report", tmp / "docs"):
        text = (out / "report.md").read_text()
        assert "| I (fine-tuned" in text and "What the numbers say" in text
        for png in ("ap.png", "eigenspectra.png", "id_per_layer.png", "id_dynamics_I.png",
                    "id_dynamics_S.png", "id_dynamics_D.png"):
            assert (out / png).stat().st_size > 1000


def test_a_second_run_trains_nothing(study, capsys):
    opts, summary, _ = study
    again = run_pretraining_study(opts, progress=False)
    assert "[study] training" not in capsys.readouterr().out
    assert [r["ap"] for r in again["runs"]] == [r["ap"] for r in summary["runs"]]


def test_bad_options_fail_before_training(tmp_path, tiny_det_root):
    i_cfg, s_cfg = _study_configs(tmp_path, tiny_det_root)
    with pytest.raises(NasdetError, match="transfer"):
        run_pretraining_study(StudyOptions(i_config=s_cfg, s_config=s_cfg,
                                           work_dir=tmp_path / "x"))
    with pytest.raises(NasdetError) as err:
        run_pretraining_study(StudyOptions(i_config=i_cfg, s_config=s_cfg, work_dir=tmp_path,
                                           seeds=(0, 0)))
    assert err.value.key == "--seeds"
    with pytest.raises(NasdetError) as err:
        run_pretraining_study(StudyOptions(i_config=i_cfg, s_config=s_cfg, work_dir=tmp_path,
                                           checkpoint=str(tmp_path / "nope.pth")))
    assert err.value.key == "--checkpoint"
    with pytest.raises(NasdetError) as err:
        run_pretraining_study(StudyOptions(i_config=i_cfg, s_config=s_cfg, work_dir=tmp_path,
                                           layers=("fpn",)))
    assert err.value.key == "--layers"
    assert not (tmp_path / "runs").exists()


def test_a_resumed_study_keeps_its_source_backbone(study, capsys):
    """The config's checkpoint appearing later must not switch later seeds to it."""
    opts, summary, tmp = study
    own = summary["checkpoint"]
    late = tmp / "missing.pth"  # the I config's checkpoint, absent when the study began
    shutil.copyfile(own, late)
    try:
        again = run_pretraining_study(opts, progress=False)
        assert again["checkpoint"] == own
        assert "[study] training" not in capsys.readouterr().out
        with pytest.raises(NasdetError, match="I_seed0 of this study was fine-tuned") as err:
            run_pretraining_study(replace(opts, checkpoint=str(late)), progress=False)
        assert err.value.key == "--checkpoint"
    finally:
        late.unlink()
