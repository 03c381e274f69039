"""The Ray Tune driver on a local Ray: trials, rows, ASHA rungs, failures, bad addresses."""

from __future__ import annotations

import json
import socket
import time
from pathlib import Path
from typing import Any

import pytest
import yaml

from nasdet.errors import NasdetError
from nasdet.search import load_search_config
from nasdet.search.ray_driver import RaySearch, fidelities
from nasdet.space import SearchSpace
from tests.conftest import REPO

# Every candidate reads the tests' 64-px data as it is (no synthetic spec to regenerate).
FAST = {"synthetic_data": None, "train_dataloader.dataset.indices": 4,
        "train_dataloader.batch_size": 2}


MAX_PARAMS = 3.88e6


def write_space(tmp_path: Path) -> Path:
    """A small space of the tiny detector: FPN, RPN and box-head widths, 30 candidates.

    From 3.08 M to 4.54 M parameters: the budget rejects about a third of them.
    """
    space = {
        "name": "ray_tiny",
        "base": str(REPO / "configs/tiny_faster_rcnn_synth.py"),
        "input_size": [64, 64],
        "constraints": {"max_params": MAX_PARAMS},
        "dimensions": {
            "fpn_width": {"target": "neck.out_channels", "kind": "int", "low": 32,
                          "high": 96, "step": 16},
            "rpn_width": {"target": "rpn_head.feat_channels", "kind": "int", "low": 32,
                          "high": 96, "step": 32},
            "fc_width": {"target": "roi_head.bbox_head.fc_out_channels",
                         "choices": [128, 256]},
        },
    }
    path = tmp_path / "space.yaml"
    path.write_text(yaml.safe_dump(space, sort_keys=False))
    return path


def write_search(tmp_path: Path, **changes: Any) -> Path:
    """Cheap stages: complexity, then two proxy stages (two ASHA-scored stages)."""
    data = {
        "space": str(write_space(tmp_path)), "n_trials": 4, "seed": 0,
        "sampler": {"type": "random"},
        "objectives": [{"metric": "proxy/macs", "direction": "minimize"}],
        "stages": [{"type": "complexity"},
                   {"type": "proxy", "name": "size", "proxies": ["params"], "num_images": 2},
                   {"type": "proxy", "name": "cost", "proxies": ["macs"], "num_images": 2}],
        **changes,
    }
    path = tmp_path / "search.yaml"
    path.write_text(yaml.safe_dump(data, sort_keys=False))
    return path


def test_scored_stages_are_asha_rungs(tmp_path):
    cfg = load_search_config(write_search(tmp_path, stages=[
        {"type": "complexity"},
        {"type": "proxy", "proxies": ["params"], "num_images": 2},
        {"type": "train", "name": "short", "epochs": 1},
        {"type": "train", "name": "full", "epochs": 2},
    ], objectives=[{"metric": "ap50", "direction": "maximize"}]))
    # Hand-computed: complexity has no score; proxy, short, full are rungs 1, rf, rf^2.
    assert fidelities(cfg, 2) == (0.0, 1.0, 2.0, 4.0)
    assert fidelities(cfg, 3) == (0.0, 1.0, 3.0, 9.0)
    pareto = load_search_config(write_search(tmp_path, objectives=[
        {"metric": "proxy/macs", "direction": "minimize"},
        {"metric": "params", "direction": "minimize"}]))
    assert fidelities(pareto, 2) == (0.0, 1.0, 2.0)


def test_unreachable_address_is_one_quick_error(tmp_path, tiny_det_root):
    import ray

    with socket.socket() as s:  # a port nothing listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    cfg = load_search_config(write_search(tmp_path))
    search = RaySearch(cfg, tmp_path / "work", address=f"127.0.0.1:{port}",
                       data_root=tiny_det_root)
    start = time.perf_counter()
    with pytest.raises(NasdetError, match="--address") as info:
        search.run()
    assert time.perf_counter() - start < 10
    assert f"127.0.0.1:{port}" in str(info.value)
    assert not ray.is_initialized()
    assert not (tmp_path / "work" / "trials").exists()  # no trial started
    with pytest.raises(NasdetError, match="HOST:PORT"):
        RaySearch(cfg, tmp_path / "work", address="nohostport",
                  data_root=tiny_det_root).run()


@pytest.mark.slow
def test_search_on_local_ray_gives_rows_with_params_metrics_and_nodes(tmp_path, tiny_det_root):
    import ray

    cfg = load_search_config(write_search(tmp_path))
    search = RaySearch(cfg, tmp_path / "work", data_root=tiny_det_root, cfg_options=FAST)
    assert search.early_stopping
    grid = search.run()
    assert not ray.is_initialized()  # the driver stops the Ray it started
    assert search.ray_init_seconds > 0
    assert len(grid) == 4 and grid.num_errors == 0
    rows = search.rows()
    assert [r["trial"] for r in rows] == [0, 1, 2, 3]
    assert {r["state"] for r in rows} <= {"COMPLETE", "PRUNED"}
    assert any(r["state"] == "COMPLETE" for r in rows)
    space = SearchSpace.from_yaml(cfg.space_path)
    for r in rows:
        params = {k.removeprefix("param/"): v for k, v in r.items() if k.startswith("param/")}
        assert r["param/fpn_width"] in (32, 48, 64, 80, 96)
        assert r["param/rpn_width"] in (32, 64, 96) and r["param/fc_width"] in (128, 256)
        assert len(r["node_id"]) == 56  # a Ray node id (28 bytes, hex)
        over = space.complexity(space.candidate(params)).params > MAX_PARAMS
        assert ("rejected" in r) == over  # rejected exactly when over the budget
        if over:
            assert r["state"] == "PRUNED" and "max_params" in r["rejected"]
            continue
        trial_dir = Path(r["trial_dir"])
        assert trial_dir.is_absolute() and trial_dir.parent == tmp_path / "work" / "trials"
        stored = json.loads((trial_dir / "metrics.json").read_text())
        assert json.loads((trial_dir / "params.json").read_text()) == params
        # The row's metrics are the evaluator's own record of the trial.
        for key, value in stored["metrics"].items():
            assert r[key] == pytest.approx(value)
        # The params proxy counts the parameters the complexity stage counted.
        assert r["proxy/params"] == pytest.approx(r["params"], rel=0.05)
        if r["state"] == "COMPLETE":
            assert stored["stages_done"] == 3 and r["proxy/macs"] > 0
        else:  # stopped by ASHA at the first rung (the 'size' stage)
            assert r["pruned_after"] == "size" and "proxy/macs" not in r
    # The same name again needs --resume.
    with pytest.raises(NasdetError, match="--study-name"):
        RaySearch(cfg, tmp_path / "work", data_root=tiny_det_root).run()
    with pytest.raises(NasdetError, match="--resume"):
        RaySearch(cfg, tmp_path / "work", data_root=tiny_det_root, resume=True,
                  study_name="other").run()


@pytest.mark.slow
def test_raising_trials_are_recorded_with_their_reason(tmp_path, tiny_det_root):
    cfg = load_search_config(write_search(tmp_path, n_trials=2, stages=[
        {"type": "proxy", "proxies": ["macs"], "num_images": 2}]))
    search = RaySearch(cfg, tmp_path / "work", data_root=tiny_det_root, max_concurrent=1,
                       cfg_options={**FAST, "model.roi_head.bbox_head.num_classes": -1})
    grid = search.run()  # the search goes on after the first failure
    assert len(grid) == 2 and grid.num_errors == 2
    rows = search.rows()
    assert [r["state"] for r in rows] == ["FAIL", "FAIL"]
    for r in rows:
        assert r["fail_reason"] and ":" in r["fail_reason"]
        assert "param/fpn_width" in r


@pytest.mark.parametrize("metrics", [["proxy/macs"], ["proxy/macs", "proxy/params"]])
def test_optuna_is_told_objectives_only_by_trials_that_ran_every_stage(tmp_path, metrics):
    import optuna

    from nasdet.search.ray_tune import SpaceSampler, StageAwareOptunaSearch

    single = len(metrics) == 1
    searcher = StageAwareOptunaSearch(
        3, space=SpaceSampler(write_space(tmp_path)),
        sampler=optuna.samplers.RandomSampler(seed=0),
        metric=metrics[0] if single else metrics, mode="min" if single else ["min"] * 2)
    nan = float("nan")
    done = {"stages_done": 3, "proxy/macs": 5.0, "proxy/params": 7.0}
    for trial_id in ("complete", "stopped", "rejected", "raised"):
        params = searcher.suggest(trial_id)
        assert set(params) == {"fpn_width", "rpn_width", "fc_width"}
    searcher.on_trial_result("stopped", {"stages_done": 2, "proxy/params": 7.0,
                                         "proxy/macs": nan, "training_iteration": 2})
    searcher.on_trial_complete("complete", done)
    searcher.on_trial_complete("stopped", {"stages_done": 2, "proxy/params": 7.0,
                                           "proxy/macs": nan})
    searcher.on_trial_complete("rejected", {"stages_done": 0, "rejected": "too big",
                                            "proxy/macs": nan, "proxy/params": nan})
    searcher.on_trial_complete("raised", {**done, "stages_done": 1}, error=True)
    trials = searcher._ot_study.trials
    assert [t.state.name for t in trials] == ["COMPLETE", "PRUNED", "PRUNED", "FAIL"]
    assert trials[0].values == ([5.0] if single else [5.0, 7.0])
    assert trials[1].intermediate_values == {}  # NaN (no objective yet) is not reported
