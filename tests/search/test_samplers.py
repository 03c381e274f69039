"""The shipped search configs' samplers (TPE, NSGA-II) through the Optuna driver.

Each search keeps the shipped YAML's ``sampler`` (and ``pruner``) section as it is and
shrinks the rest (the tiny test space, 64-px images, cheap stages). A replay with
Optuna's own sampler, built from the YAML's numbers and fed the same results in the same
order, must propose exactly the candidates the driver ran: the driver really samples with
what the config names, past its random start-up trials.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import optuna
import pytest
import yaml

from nasdet.search import OptunaSearch, load_search_config, run_search
from tests.conftest import CONFIGS

FAST = {
    "train_dataloader.batch_size": 2,
    "val_dataloader.batch_size": 4,
    "train_dataloader.dataset.indices": 4,
    "param_scheduler": [],
}


def _shipped(name: str, tmp_path: Path, space: Path, **changes) -> Path:
    """The shipped search config ``name`` with the test space, no pre-training, ``changes``."""
    data = yaml.safe_load((CONFIGS / "search" / name).read_text())
    data.pop("pretrain", None)
    data.pop("cfg_options", None)  # sized for the 512-image dataset; FAST replaces them
    data.update(space=str(space), **changes)
    path = tmp_path / name
    path.write_text(yaml.safe_dump(data, sort_keys=False))
    return path


def _replay(config_path: Path, work: Path, sampler: optuna.samplers.BaseSampler,
            directions: list[str]) -> None:
    """Re-run the driver's study with ``sampler``, telling it the recorded outcomes."""
    recorded = optuna.load_study(study_name=config_path.stem,
                                 storage=f"sqlite:///{work / 'study.db'}").trials
    space = OptunaSearch(load_search_config(config_path), work / "replay").evaluator.space
    replay = optuna.create_study(directions=directions, sampler=sampler)
    for old in recorded:
        if "fixed_params" in old.system_attrs:  # a candidate the config's `enqueue` names
            replay.enqueue_trial(old.system_attrs["fixed_params"])
        trial = replay.ask()
        space.suggest(trial)
        assert trial.params == old.params, f"trial {old.number} differs from the replay"
        for step, value in sorted(old.intermediate_values.items()):
            trial.report(value, step)
        if old.state == optuna.trial.TrialState.COMPLETE:
            replay.tell(trial, old.values if len(directions) > 1 else old.value)
        else:
            replay.tell(trial, state=old.state)


def test_tpe_with_median_pruning_as_shipped(tmp_path, tiny_det_root, tiny_space):
    shipped = yaml.safe_load((CONFIGS / "search/tiny_synth.yaml").read_text())
    assert shipped["sampler"] == {"type": "tpe", "n_startup_trials": 4}
    # 7 trials: 4 start-up trials (random, or enqueued by the config), then 3 sampled by
    # TPE from their results.
    path = _shipped("tiny_synth.yaml", tmp_path, tiny_space, n_trials=7,
                    objectives=[{"metric": "proxy/id_mean", "direction": "maximize"}],
                    stages=[{"type": "complexity"},
                            {"type": "proxy", "proxies": ["id_mean", "params"],
                             "num_images": 2, "report": "id_mean"}])
    work = tmp_path / "work"
    result = run_search(path, work, data_root=tiny_det_root, cfg_options=FAST)
    study = optuna.load_study(study_name=path.stem, storage=f"sqlite:///{work / 'study.db'}")
    assert len(study.trials) == 7
    assert len(result["rows"]) == 7
    done = [t for t in study.trials if t.state.name == "COMPLETE"]
    assert done and all(t.value == t.user_attrs["metrics"]["proxy/id_mean"] for t in done)
    # Proxy scores are metrics of their own, not steps of the AP curve; the proxy rung
    # prunes by the median rule (3 start-up scores): a trial is pruned exactly when its
    # score is below the median of every earlier trial's score, pruned ones included.
    scored = [t for t in study.trials if not t.user_attrs.get("rejected")]
    assert scored and not any(t.intermediate_values for t in scored)
    assert all(t.user_attrs["proxy/id_mean"] == t.user_attrs["metrics"]["proxy/id_mean"]
               for t in scored)
    for t in scored:
        before = [o.user_attrs["proxy/id_mean"] for o in scored if o.number < t.number]
        below = len(before) >= 3 and t.user_attrs["proxy/id_mean"] < float(np.median(before))
        assert (t.state.name == "PRUNED") == below, (t.number, before)
    _replay(path, work, optuna.samplers.TPESampler(
        seed=shipped["seed"], n_startup_trials=4, multivariate=True, group=True,
        constant_liar=True), ["maximize"])
    # ... and a random sampler with the same seed would not have proposed the same.
    with pytest.raises(AssertionError, match="differs from the replay"):
        _replay(path, work, optuna.samplers.RandomSampler(seed=shipped["seed"] + 1),
                ["maximize"])


def test_snip_rung_as_shipped_counts_every_trial_that_reached_it(tmp_path, tiny_det_root,
                                                                 tiny_space):
    """The benchmark space's config: its sampler, pruner and rung as shipped (5 start-up
    scores), on a cheap objective instead of 16 epochs (its base is the other space's)."""
    shipped = yaml.safe_load((CONFIGS / "search/tiny_synth_arch.yaml").read_text())
    assert shipped["sampler"] == {"type": "tpe", "n_startup_trials": 5}
    rung = next(s for s in shipped["stages"] if s["type"] == "proxy")
    assert (rung["report"], rung["n_startup_trials"]) == ("snip", 5)
    path = _shipped("tiny_synth_arch.yaml", tmp_path, tiny_space, n_trials=9, enqueue=[],
                    objectives=[{"metric": "params", "direction": "maximize"}],
                    stages=[{"type": "complexity"}, {**rung, "num_images": 2}])
    work = tmp_path / "work"
    run_search(path, work, data_root=tiny_det_root, cfg_options=FAST)
    study = optuna.load_study(study_name=path.stem, storage=f"sqlite:///{work / 'study.db'}")
    scored = [t for t in study.trials if "proxy/snip" in t.user_attrs]
    assert len(scored) >= 7, [t.user_attrs for t in study.trials]
    pruned = 0
    for t in scored:
        before = [o.user_attrs["proxy/snip"] for o in scored if o.number < t.number]
        below = len(before) >= 5 and t.user_attrs["proxy/snip"] < float(np.median(before))
        assert (t.state.name == "PRUNED") == below, (t.number, before)
        pruned += below
    assert pruned, "the rung pruned nothing: the test says nothing about its rule"


def _pareto_front(trials: list[optuna.trial.FrozenTrial],
                  directions: list[str]) -> set[int]:
    """Numbers of the complete trials that no other complete trial dominates."""
    sign = [1.0 if d == "maximize" else -1.0 for d in directions]

    def score(t: optuna.trial.FrozenTrial) -> list[float]:
        return [s * v for s, v in zip(sign, t.values, strict=True)]

    def dominates(a: list[float], b: list[float]) -> bool:
        pairs = list(zip(a, b, strict=True))
        return all(x >= y for x, y in pairs) and any(x > y for x, y in pairs)

    done = [t for t in trials if t.state.name == "COMPLETE"]
    return {t.number for t in done if not any(dominates(score(o), score(t)) for o in done)}


def _pareto_yaml(tmp_path: Path, space: Path, **changes) -> tuple[Path, dict]:
    shipped = yaml.safe_load((CONFIGS / "search/tiny_synth_pareto.yaml").read_text())
    assert shipped["sampler"] == {"type": "nsga2", "population_size": 6}
    return _shipped("tiny_synth_pareto.yaml", tmp_path, space, **changes), shipped


def test_nsga2_breeds_a_second_generation(tmp_path, tiny_det_root, tiny_space):
    """NSGA-II as shipped (population 6) on cheap objectives: past its first generation."""
    directions = ["maximize", "minimize"]
    path, shipped = _pareto_yaml(
        tmp_path, tiny_space, n_trials=14, stages=[{"type": "complexity"}],
        objectives=[{"metric": "params", "direction": "maximize"},
                    {"metric": "macs", "direction": "minimize"}])
    work = tmp_path / "work"
    run_search(path, work, data_root=tiny_det_root, cfg_options=FAST)
    study = optuna.load_study(study_name=path.stem, storage=f"sqlite:///{work / 'study.db'}")
    assert len(study.trials) == 14 and study.metric_names == ["params", "macs"]
    generations = [t.system_attrs["NSGAIISampler:generation"] for t in study.trials]
    assert generations == sorted(generations) and generations[0] == 0
    assert max(generations) >= 1, "no trial bred from a first generation"
    assert {t.number for t in study.best_trials} == _pareto_front(study.trials, directions)
    _replay(path, work, optuna.samplers.NSGAIISampler(
        seed=shipped["seed"], population_size=6), directions)


@pytest.mark.slow
def test_pareto_search_as_shipped_records_both_objectives(tmp_path, tiny_det_root, tiny_space):
    """The shipped objectives (AP50 up, MACs down) from a real, 1-epoch training."""
    path, shipped = _pareto_yaml(tmp_path, tiny_space, n_trials=3,
                                 stages=[{"type": "complexity"},
                                         {"type": "train", "name": "full", "epochs": 1}])
    objectives = [(o["metric"], o["direction"]) for o in shipped["objectives"]]
    assert objectives == [("ap50", "maximize"), ("macs", "minimize")]
    work = tmp_path / "work"
    run_search(path, work, data_root=tiny_det_root,
               cfg_options={**FAST, "model.test_cfg.rcnn.score_thr": 0.0})
    study = optuna.load_study(study_name=path.stem, storage=f"sqlite:///{work / 'study.db'}")
    assert study.metric_names == ["ap50", "macs"]
    assert [d.name for d in study.directions] == ["MAXIMIZE", "MINIMIZE"]
    assert len(study.trials) == 3
    done = [t for t in study.trials if t.state.name == "COMPLETE"]
    assert done, [t.state.name for t in study.trials]
    for t in done:  # both objectives recorded, equal to what the trial measured
        metrics = t.user_attrs["metrics"]
        assert t.values == [metrics["ap50"], metrics["macs"]]
        assert 0.0 <= t.values[0] <= 1.0 and t.values[1] > 0
        assert t.values[0] == metrics["full/ap50"]
    front = _pareto_front(study.trials, ["maximize", "minimize"])
    assert {t.number for t in study.best_trials} == front and front
