"""ID-guided widths: config checks, proposals from trained trials, and the drivers running them."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import optuna
import pytest
import yaml

from nasdet.errors import NasdetError
from nasdet.search import OptunaSearch, load_search_config, run_search
from nasdet.search.trials import trial_rows
from nasdet.space import SearchSpace
from tests.conftest import CONFIGS

FAST = {  # every candidate: 4 training images in 2-image batches, no LR schedule
    "train_dataloader.batch_size": 2,
    "val_dataloader.batch_size": 4,
    "train_dataloader.dataset.indices": 4,
    "param_scheduler": [],
}
WIDTHS = {"target": "backbone.widths", "kind": "int", "low": [16, 32, 64, 128],
          "high": [32, 64, 128, 256], "step": [8, 16, 32, 64], "divisor": 8}
# The widest backbone at depth 1, 32-channel FPN: 1.78 M parameters (0.85 M at the narrowest
# widths).
WIDEST = {"widths.0": 32, "widths.1": 64, "widths.2": 128, "widths.3": 256, "depths": 1,
          "fpn_width": 32}


def write_space(tmp_path: Path, **widths: Any) -> Path:
    """The tiny detector at 64 px: stage widths (the tiny_synth grid), one depth, FPN width."""
    space = {
        "name": "id_tiny",
        "base": str(CONFIGS / "tiny_faster_rcnn_synth.py"),
        "input_size": [64, 64],
        "dimensions": {
            "widths": {**WIDTHS, **widths},
            "depths": {"target": "backbone.depths", "kind": "int", "low": 1, "high": 2,
                       "per_stage": False},
            "fpn_width": {"target": "neck.out_channels", "kind": "int", "low": 32,
                          "high": 64, "step": 32},
        },
    }
    path = tmp_path / "space.yaml"
    path.write_text(yaml.safe_dump(space, sort_keys=False))
    return path


def write_search(tmp_path: Path, space: Path | None = None, **changes: Any) -> Path:
    data = {
        "space": str(space or write_space(tmp_path)),
        "n_trials": 2,
        "seed": 0,
        "sampler": {"type": "random"},
        "pruner": {"type": "none"},
        "objectives": [{"metric": "ap50", "direction": "maximize"}],
        "stages": [{"type": "complexity"}, {"type": "train", "name": "full", "epochs": 1}],
        "id_guided": {"metric": "params", "budget": 0.9, "num_images": 4},
        **changes,
    }
    path = tmp_path / "search.yaml"
    path.write_text(yaml.safe_dump(data, sort_keys=False))
    return path


# ------------------------------------------------------------------------------ config
def test_id_guided_config_defaults(tmp_path):
    cfg = load_search_config(write_search(tmp_path, id_guided={}))
    assert cfg.id_guided == {"dimension": "widths", "metric": "macs", "budget": 1.0,
                             "after": "full", "num_images": 16}
    assert load_search_config(write_search(tmp_path, id_guided=None)).id_guided is None


@pytest.mark.parametrize(("id_guided", "key", "message"), [
    ("yes", "id_guided", "must be a mapping"),
    ({"colour": "red"}, r"id_guided\.colour", "unknown key"),
    ({"metric": "flops"}, r"id_guided\.metric", "must be one of"),
    ({"budget": 0}, r"id_guided\.budget", "positive number"),
    ({"budget": "half"}, r"id_guided\.budget", "positive number"),
    ({"budget": True}, r"id_guided\.budget", "positive number"),
    ({"num_images": 0}, r"id_guided\.num_images", "positive integer"),
    ({"num_images": 2.5}, r"id_guided\.num_images", "positive integer"),
    ({"after": "complexity"}, r"id_guided\.after", "is a complexity stage"),
    ({"after": "nowhere"}, r"id_guided\.after", "not a stage"),
    ({"dimension": "nowhere"}, r"id_guided\.dimension", "not a dimension"),
    ({"dimension": "fpn_width"}, r"id_guided\.dimension", "target backbone.widths"),
    ({"dimension": "depths"}, r"id_guided\.dimension", "target backbone.widths"),
])
def test_bad_id_guided_names_file_and_key(tmp_path, id_guided, key, message):
    path = write_search(tmp_path, id_guided=id_guided)
    with pytest.raises(NasdetError, match=message) as err:
        load_search_config(path)
    assert err.value.file == str(path.absolute())
    assert re.fullmatch(key, err.value.key)


def test_id_guided_needs_a_train_stage_and_a_per_stage_widths_dimension(tmp_path):
    no_train = write_search(tmp_path, stages=[{"type": "complexity"}],
                            objectives=[{"metric": "params", "direction": "minimize"}])
    with pytest.raises(NasdetError, match="needs a train stage") as err:
        load_search_config(no_train)
    assert err.value.key == "id_guided"
    one_value = write_space(tmp_path, low=16, high=32, step=16, per_stage=False)
    with pytest.raises(NasdetError, match="one value") as err:
        load_search_config(write_search(tmp_path, space=one_value))
    assert err.value.key == "id_guided.dimension"


# ------------------------------------------------------------------------------ optuna
@pytest.mark.slow
def test_proposal_is_on_the_grid_within_budget_and_runs_as_a_later_trial(
    tmp_path, tiny_det_root
):
    path = write_search(tmp_path)
    work = tmp_path / "work"
    cfg = load_search_config(path)
    # Trial 0 is the widest backbone, so 0.9 x its parameters forces other widths.
    OptunaSearch(cfg, work).open_study().enqueue_trial(WIDEST)
    result = run_search(path, work, resume=True, data_root=tiny_det_root, cfg_options=FAST)
    study = optuna.load_study(study_name="search", storage=f"sqlite:///{work / 'study.db'}")
    trials = study.trials
    assert [t.state.name for t in trials] == ["COMPLETE", "COMPLETE"]
    assert trials[0].params == WIDEST

    record = json.loads((work / "trials/0000/id_widths.json").read_text())
    assert record["proposed"] and record["reason"] is None, record
    assert record["stage_layers"] == [f"backbone.layer{i}" for i in range(1, 5)]
    assert all(v > 0 for v in record["stage_ids"])
    assert record["old_widths"] == [32, 64, 128, 256] and record["source_params"] == WIDEST
    space = SearchSpace.from_yaml(cfg.space_path)
    dim = space.dimensions[0]
    for stage, width in enumerate(record["widths"]):
        assert width in dim.stage_values_set(stage)
    assert record["params"] == {**WIDEST, **dim.params_of(record["widths"])}
    source = space.complexity(space.candidate(WIDEST)).params
    proposed = space.complexity(space.candidate(record["params"])).params
    assert record["cost"] == proposed and proposed <= 0.9 * source
    assert record["cost_ratio"] == pytest.approx(proposed / source)

    # Run as trial 1, the source named; trial 1's own proposal would be a third trial.
    assert trials[1].params == record["params"]
    assert trials[1].user_attrs["id_guided_from"] == 0
    rows = result["rows"]
    assert "id_guided_from" not in rows[0] and rows[1]["id_guided_from"] == 0
    assert rows[0]["id_guided/proposed"] == 1.0
    assert "## ID-guided trials" in result["report"].read_text()
    assert not study.get_trials(states=(optuna.trial.TrialState.WAITING,))

    # Resumed with room for a third trial: trial 1's proposal (cheaper than trial 1,
    # so new) is enqueued by the resumed driver and run.
    again = OptunaSearch(load_search_config(path, n_trials=3), work, resume=True,
                         data_root=tiny_det_root, cfg_options=FAST).run()
    second = json.loads((work / "trials/0001/id_widths.json").read_text())
    last = again.trials[-1]
    assert len(again.trials) == 3 and last.state.name == "COMPLETE"
    if second["proposed"]:
        assert last.params == second["params"] and last.user_attrs["id_guided_from"] == 1
    else:  # the budget could not be met from trial 1: a sampled trial
        assert "budget" in second["reason"] and "id_guided_from" not in last.user_attrs


@pytest.mark.slow
def test_a_budget_no_widths_meet_is_recorded_and_the_search_goes_on(tmp_path, tiny_det_root):
    # Any candidate of the space with its narrowest widths keeps at least 0.37 of its
    # parameters: 0.3 x its own is out of reach.
    path = write_search(tmp_path, id_guided={"metric": "params", "budget": 0.3,
                                             "num_images": 4})
    work = tmp_path / "work"
    study = OptunaSearch(load_search_config(path), work, data_root=tiny_det_root,
                         cfg_options=FAST).run()
    assert [t.state.name for t in study.trials] == ["COMPLETE", "COMPLETE"]
    for t in study.trials:
        record = json.loads((Path(t.user_attrs["trial_dir"]) / "id_widths.json").read_text())
        assert not record["proposed"] and record["params"] is None
        assert "no width assignment meets the budget" in record["reason"]
        assert record["stage_ids"] and record["budget_cost"] < record["source_cost"]
        assert t.user_attrs["metrics"]["id_guided/proposed"] == 0.0
        assert "id_guided_from" not in t.user_attrs
    rows = trial_rows(study, load_search_config(path))
    assert all("id_guided_from" not in r for r in rows)


# ------------------------------------------------------------------------------ ray
def test_ray_searcher_enqueues_a_proposal_once(tmp_path):
    from nasdet.search.ray_tune import SpaceSampler, StageAwareOptunaSearch
    from nasdet.search.ray_tune import result_row as _row

    space = write_space(tmp_path)
    searcher = StageAwareOptunaSearch(
        2, id_guided=True, space=SpaceSampler(space),
        sampler=optuna.samplers.RandomSampler(seed=0), metric="ap50", mode="max")
    first = searcher.suggest("a")
    assert "id_guided_from" not in first
    proposal = {**first, "widths.0": 16 if first["widths.0"] != 16 else 24}
    trial_dir = tmp_path / "trials" / "a"
    trial_dir.mkdir(parents=True)
    (trial_dir / "id_widths.json").write_text(json.dumps({"proposed": True,
                                                          "params": proposal}))
    done = {"stages_done": 2, "ap50": 0.5, "trial_dir": str(trial_dir)}
    searcher.on_trial_complete("a", done)
    second = searcher.suggest("b")
    assert second == {**proposal, "id_guided_from": "a"}
    # The same proposal again (from b's own directory) is not run twice.
    searcher.on_trial_complete("b", {**done, "trial_dir": str(trial_dir)})
    assert "id_guided_from" not in searcher.suggest("c")
    states = [t.state.name for t in searcher._ot_study.trials]
    assert states == ["COMPLETE", "COMPLETE", "RUNNING"]
    cfg = load_search_config(write_search(tmp_path, space=space))
    row = _row("b", second, done, None, cfg, tag="2_x")
    assert row["id_guided_from"] == "a" and "param/id_guided_from" not in row


@pytest.mark.slow
def test_ray_search_runs_a_proposal_as_a_later_trial(tmp_path, tiny_det_root):
    import ray

    from nasdet.search.ray_driver import RaySearch

    cfg = load_search_config(write_search(tmp_path))
    search = RaySearch(cfg, tmp_path / "work", data_root=tiny_det_root, cfg_options=FAST,
                       max_concurrent=1)  # trial 1 is asked for once trial 0 is done
    search.run()
    assert not ray.is_initialized()
    rows = search.rows()
    assert [r["state"] for r in rows] == ["COMPLETE", "COMPLETE"]
    record = json.loads((Path(rows[0]["trial_dir"]) / "id_widths.json").read_text())
    assert record["proposed"], record  # a sampled candidate, not the narrowest: 0.9 fits
    params = {k.removeprefix("param/"): v for k, v in rows[1].items() if k.startswith("param/")}
    assert params == record["params"] and rows[1]["id_guided_from"] == 0
    assert "id_guided_from" not in rows[0]
    assert json.loads((Path(rows[1]["trial_dir"]) / "params.json").read_text()) == params
