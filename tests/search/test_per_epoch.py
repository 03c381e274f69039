"""Per-epoch reports to Optuna's pruners, proxy rungs of their own, samplers/pruners by name."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import optuna
import pytest
import yaml

from nasdet.errors import NasdetError
from nasdet.search import load_search_config, run_search
from nasdet.search.trials import make_pruner, make_sampler, proxy_rung_prunes

FAST = {  # every candidate: 64-px images, 2-image batches, 4 training images
    "train_dataloader.batch_size": 2,
    "val_dataloader.batch_size": 4,
    "train_dataloader.dataset.indices": 4,
    "param_scheduler": [],
    "model.test_cfg.rcnn.score_thr": 0.0,  # detections from epoch 1: every epoch has AP
}


@pytest.fixture(scope="module")
def pretrained_space(tiny_space: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The tiny space without its scratch strategy (which trains 6x the epochs) and with
    budgets every candidate meets (no trial is rejected)."""
    data = yaml.safe_load(tiny_space.read_text())
    data["constraints"] = {"max_params": 1.0e9, "max_macs": 1.0e12}
    data["dimensions"]["transfer"]["choices"] = ["finetune", "freeze"]
    data["dimensions"].pop("scratch_head", None)
    for name in ("lr", "widths", "depths", "unique_blocks", "stem"):  # scratch's dimensions
        data["dimensions"].pop(name, None)
    path = tmp_path_factory.mktemp("space") / "pretrained.yaml"
    path.write_text(yaml.safe_dump(data, sort_keys=False))
    return path


def _yaml(tmp_path: Path, space: Path, **changes) -> Path:
    data = {"space": str(space), "n_trials": 2, "seed": 0, "sampler": {"type": "random"},
            "objectives": [{"metric": "ap50", "direction": "maximize"}],
            "stages": [{"type": "train", "epochs": 1}], **changes}
    path = tmp_path / "search.yaml"
    path.write_text(yaml.safe_dump(data, sort_keys=False))
    return path


def _study(work: Path) -> optuna.Study:
    return optuna.load_study(study_name="search", storage=f"sqlite:///{work / 'study.db'}")


def _history(trial: optuna.trial.FrozenTrial) -> list[dict]:
    """The trial's validations, as MetricsDumpHook wrote them (one entry per epoch)."""
    path = Path(trial.user_attrs["trial_dir"]) / "train" / "metrics.json"
    return json.loads(path.read_text())["history"]


def test_every_epoch_is_a_step_and_proxies_are_user_attrs(tmp_path, tiny_det_root,
                                                          pretrained_space):
    stages = [{"type": "complexity"},
              {"type": "proxy", "proxies": ["id_mean", "params"], "num_images": 2,
               "report": "id_mean"},
              {"type": "train", "name": "short", "epochs": 1, "report_every_epoch": True},
              {"type": "train", "name": "full", "epochs": 3, "report_every_epoch": True}]
    work = tmp_path / "work"
    run_search(_yaml(tmp_path, pretrained_space, stages=stages, pruner={"type": "none"}),
               work, data_root=tiny_det_root, cfg_options=FAST)
    trials = _study(work).trials
    assert [t.state.name for t in trials] == ["COMPLETE", "COMPLETE"]
    for t in trials:
        history = _history(t)
        # AP50 of each validation ({}: not a single detection, reported as 0).
        ap50 = [h["metrics"].get("coco/bbox_mAP_50", 0.0) for h in history]
        # One validation per epoch across both stages; each one is a step, and only they.
        assert [h["epoch"] for h in history] == [1, 2, 3]
        assert t.intermediate_values == {h["epoch"]: v for h, v in zip(history, ap50, strict=True)}
        metrics = t.user_attrs["metrics"]
        assert t.value == metrics["ap50"] == ap50[-1]
        assert metrics["short/ap50"] == ap50[0]
        assert metrics["epochs"] == 3
        # Proxy scores: metrics of their own.
        assert t.user_attrs["proxy/id_mean"] == metrics["proxy/id_mean"] > 0
        assert t.user_attrs["proxy/params"] == metrics["proxy/params"]


def test_default_reports_once_per_train_stage_at_its_epoch(tmp_path, tiny_det_root,
                                                           pretrained_space):
    stages = [{"type": "train", "name": "short", "epochs": 1},
              {"type": "train", "name": "full", "epochs": 2}]
    work = tmp_path / "work"
    run_search(_yaml(tmp_path, pretrained_space, stages=stages, n_trials=1,
                     pruner={"type": "none"}), work, data_root=tiny_det_root, cfg_options=FAST)
    (t,) = _study(work).trials
    history = _history(t)  # validation at each stage's end only, as before
    assert [h["epoch"] for h in history] == [1, 2]
    assert t.intermediate_values == {1: t.user_attrs["metrics"]["short/ap50"],
                                     2: t.user_attrs["metrics"]["full/ap50"]}


def test_a_pruner_stops_trials_after_their_first_epoch(tmp_path, tiny_det_root,
                                                       pretrained_space):
    # AP50 is a fraction in [0, 1]: a lower bound of 2 prunes at the first report.
    stages = [{"type": "complexity"},
              {"type": "train", "name": "full", "epochs": 3, "report_every_epoch": True}]
    work = tmp_path / "work"
    run_search(_yaml(tmp_path, pretrained_space, stages=stages,
                     pruner={"type": "ThresholdPruner", "lower": 2.0}),
               work, data_root=tiny_det_root, cfg_options=FAST)
    trials = _study(work).trials
    assert [t.state.name for t in trials] == ["PRUNED", "PRUNED"]
    for t in trials:
        history = _history(t)
        assert [h["epoch"] for h in history] == [1]  # epochs 2 and 3 never trained
        assert t.intermediate_values == {1: history[0]["metrics"].get("coco/bbox_mAP_50", 0.0)}
        assert t.user_attrs["pruned_at_epoch"] == 1 and t.user_attrs["pruned_after"] == "full"
        assert not list((Path(t.user_attrs["trial_dir"]) / "train").glob("*.pth"))


def test_proxy_rung_median_rule():
    class Cfg:  # the attributes proxy_rung_prunes reads
        multi_objective = False
        pruner = {"type": "median", "n_startup_trials": 2}
        objectives = (type("O", (), {"direction": "maximize"})(),)

    cfg = Cfg()
    assert not proxy_rung_prunes(cfg, 0.0, [5.0])  # fewer complete trials than start-up
    assert np.median([1.0, 4.0, 9.0]) == 4.0
    assert proxy_rung_prunes(cfg, 3.9, [1.0, 4.0, 9.0])
    assert not proxy_rung_prunes(cfg, 4.0, [1.0, 4.0, 9.0])
    cfg.objectives = (type("O", (), {"direction": "minimize"})(),)
    assert proxy_rung_prunes(cfg, 4.1, [1.0, 4.0, 9.0])
    assert not proxy_rung_prunes(cfg, 3.9, [1.0, 4.0, 9.0])
    cfg.pruner = {"type": "none"}
    assert not proxy_rung_prunes(cfg, 100.0, [1.0, 4.0, 9.0])


def test_samplers_and_pruners_by_class_name_with_arguments(tmp_path, tiny_space):
    cfg = load_search_config(_yaml(
        tmp_path, tiny_space, sampler={"type": "GPSampler", "n_startup_trials": 5},
        pruner={"type": "HyperbandPruner", "min_resource": 1, "max_resource": 6}))
    sampler, pruner = make_sampler(cfg), make_pruner(cfg)
    assert isinstance(sampler, optuna.samplers.GPSampler) and sampler._n_startup_trials == 5
    assert isinstance(pruner, optuna.pruners.HyperbandPruner)
    assert (pruner._min_resource, pruner._max_resource) == (1, 6)
    cma = make_sampler(load_search_config(_yaml(tmp_path, tiny_space,
                                                sampler={"type": "CmaEsSampler"})))
    assert isinstance(cma, optuna.samplers.CmaEsSampler)
    # A named class that takes a seed gets the config's: the same draws as Optuna's own.
    cfg = load_search_config(_yaml(tmp_path, tiny_space, seed=7,
                                   sampler={"type": "RandomSampler"}))

    def draws(s: optuna.samplers.BaseSampler) -> list[float]:
        study = optuna.create_study(sampler=s)
        study.optimize(lambda t: t.suggest_float("x", 0, 1), n_trials=3)
        return [t.params["x"] for t in study.trials]

    assert draws(make_sampler(cfg)) == draws(optuna.samplers.RandomSampler(seed=7))
    assert draws(make_sampler(cfg, stream=(3, 1234))) != draws(
        optuna.samplers.RandomSampler(seed=7))  # a resumed worker seeds apart
    # The short aliases keep nasdet's defaults.
    tpe = make_sampler(load_search_config(_yaml(tmp_path, tiny_space, sampler={"type": "tpe"})))
    assert isinstance(tpe, optuna.samplers.TPESampler) and tpe._n_startup_trials == 4
    median = make_pruner(load_search_config(_yaml(tmp_path, tiny_space)))
    assert isinstance(median, optuna.pruners.MedianPruner) and median._n_startup_trials == 2


@pytest.mark.parametrize(("section", "value", "key", "match"), [
    ("sampler", {"type": "NoSuchSampler"}, "sampler.type", "GPSampler"),
    ("sampler", {"type": "GPSampler", "n_startup": 5}, "sampler.n_startup",
     "not an argument of optuna.samplers.GPSampler"),
    ("pruner", {"type": "BasePruner"}, "pruner.type", "HyperbandPruner"),
    ("pruner", {"type": "HyperbandPruner", "min_rsrc": 1}, "pruner.min_rsrc",
     "not an argument of optuna.pruners.HyperbandPruner"),
    ("sampler", {"seed": 1}, "sampler", "'type'"),
])
def test_unknown_sampler_or_pruner_names_file_and_key(tmp_path, tiny_space, section, value,
                                                      key, match):
    path = _yaml(tmp_path, tiny_space, **{section: value})
    with pytest.raises(NasdetError, match=match) as info:
        load_search_config(path)
    assert info.value.key == key and info.value.file == str(path.absolute())
    assert str(info.value).startswith(f"{path.absolute()}: {key}: ")


def test_report_every_epoch_must_be_a_boolean(tmp_path, tiny_space):
    path = _yaml(tmp_path, tiny_space, stages=[
        {"type": "train", "epochs": 1, "report_every_epoch": "yes"}])
    with pytest.raises(NasdetError) as info:
        load_search_config(path)
    assert info.value.key == "stages[0].report_every_epoch"


def test_ray_asha_rungs_are_epochs_and_proxies_a_rung_of_their_own():
    from types import SimpleNamespace

    from nasdet.search.ray_tune import EpochASHAScheduler

    asha = EpochASHAScheduler(n_stages=3, time_attr="epoch", metric="score", mode="max",
                              grace_period=1, max_t=4, reduction_factor=2,
                              stop_last_trials=False)
    a, b, c = (SimpleNamespace(trial_id=name) for name in "abc")
    for t in (a, b, c):
        asha.on_trial_add(None, t)
    nan = float("nan")

    def proxy(t, value, stages_done=1):
        return asha.on_trial_result(None, t, {"stage_name": "proxy", "proxy_score": value,
                                              "score": nan, "epoch": 0,
                                              "stages_done": stages_done})

    def epoch(t, e, value):
        return asha.on_trial_result(None, t, {"stage_name": "full", "proxy_score": nan,
                                              "score": value, "epoch": e, "stages_done": 1})

    # Proxy rung, ASHA's rule with rf 2: below the median of the scores recorded before.
    assert proxy(a, 5.0) == "CONTINUE"  # nothing recorded yet
    assert proxy(b, 3.0) == "STOP"      # median of [5] is 5
    assert proxy(c, 6.0) == "CONTINUE"  # median of [5, 3] is 4
    # Epoch rungs 1 and 2 (grace 1, rf 2, max_t 4): the proxy scores are not on them.
    assert epoch(a, 1, 0.5) == "CONTINUE"
    assert epoch(c, 1, 0.2) == "STOP"   # below a's 0.5 at epoch 1
    assert epoch(a, 2, 0.1) == "CONTINUE"  # first at rung 2
    # A proxy stage that is the trial's last is its end, not a rung.
    d = SimpleNamespace(trial_id="d")
    asha.on_trial_add(None, d)
    assert proxy(d, -100.0, stages_done=3) == "CONTINUE"
    # The stage's n_startup_trials: its rung waits for that many scores.
    late = EpochASHAScheduler(n_stages=3, time_attr="epoch", metric="score", mode="max",
                              grace_period=1, max_t=4, reduction_factor=2,
                              stop_last_trials=False, startup={"proxy": 2})
    for t, value, verdict in ((a, 5.0, "CONTINUE"), (b, 3.0, "CONTINUE"), (c, 3.5, "STOP")):
        late.on_trial_add(None, t)
        assert late.on_trial_result(None, t, {"stage_name": "proxy", "proxy_score": value,
                                              "score": nan, "epoch": 0,
                                              "stages_done": 1}) == verdict


@pytest.mark.slow
def test_ray_trials_report_every_epoch(tmp_path, tiny_det_root, pretrained_space):
    from nasdet.search.ray_driver import RaySearch

    stages = [{"type": "proxy", "proxies": ["params"], "num_images": 2, "report": None},
              {"type": "train", "name": "full", "epochs": 2, "report_every_epoch": True}]
    cfg = load_search_config(_yaml(tmp_path, pretrained_space, stages=stages))
    search = RaySearch(cfg, tmp_path / "work", data_root=tiny_det_root, cfg_options=FAST,
                       max_concurrent=1)
    assert search.early_stopping  # ASHA rungs at epochs 1 and 2
    search.run()
    trials = _study(tmp_path / "work").trials
    assert len(trials) == 2 and trials[0].state.name == "COMPLETE"  # nothing to compare
    for t in trials:
        history = {h["epoch"]: h["metrics"].get("coco/bbox_mAP_50", 0.0) for h in _history(t)}
        assert t.user_attrs["proxy/params"] > 0
        if t.state.name == "COMPLETE":  # every epoch is a step, and only they
            assert t.intermediate_values == history and sorted(history) == [1, 2]
        else:  # stopped by ASHA at the epoch-1 rung (epoch 2 may have run meanwhile);
            # Tune hands the searcher no result that made the scheduler stop a trial, so
            # the stopping epoch itself may be missing from its intermediate values.
            assert t.state.name == "PRUNED" and 1 in history
            assert t.intermediate_values.items() <= history.items()
