"""The Optuna driver end to end on the tiny space and the 64-px synthetic data."""

from __future__ import annotations

import csv
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import optuna
import pytest
import yaml

from nasdet.errors import NasdetError
from nasdet.search import OptunaSearch, load_search_config, run_search
from tests.conftest import REPO

FAST = {  # every candidate: 64-px images, 2-image batches
    "train_dataloader.batch_size": 2,
    "val_dataloader.batch_size": 4,
    "train_dataloader.dataset.indices": 4,
    "param_scheduler": [],
}


def _search_yaml(tmp_path: Path, space: Path, **changes) -> Path:
    data = {
        "space": str(space),
        "n_trials": 3,
        "seed": 0,
        "sampler": {"type": "random"},
        "objectives": [{"metric": "ap50", "direction": "maximize"}],
        "stages": [
            {"type": "complexity"},
            {"type": "proxy", "proxies": ["id_mean", "params"], "num_images": 2},
            {"type": "train", "name": "short", "epochs": 1},
        ],
        **changes,
    }
    path = tmp_path / "search.yaml"
    path.write_text(yaml.safe_dump(data))
    return path


def test_search_runs_trials_writes_results_and_report(tmp_path, tiny_det_root, tiny_space):
    result = run_search(
        _search_yaml(tmp_path, tiny_space),
        tmp_path / "work",
        data_root=tiny_det_root,
        cfg_options=FAST,
    )
    rows = result["rows"]
    assert len(rows) == 3 and {r["state"] for r in rows} <= {"COMPLETE", "PRUNED"}
    done = [r for r in rows if r["state"] == "COMPLETE"]
    assert done, rows
    for r in done:
        trial = Path(r["trial_dir"])
        assert trial.is_absolute()
        assert {"candidate.py", "params.json", "metrics.json", "spectrum.json"} <= {
            p.name for p in trial.iterdir()
        }
        metrics = json.loads((trial / "metrics.json").read_text())["metrics"]
        assert 0.0 <= metrics["ap50"] <= 1.0 and metrics["params"] > 0
        assert metrics["proxy/params"] == pytest.approx(metrics["params"], rel=0.05)
        assert not list((trial / "train").glob("*.pth"))  # checkpoints not kept by default
    report = result["report"]
    assert report.is_file() and (report.parent / "history.png").is_file()
    with open(report.parent / "trials.csv") as f:
        assert len(list(csv.DictReader(f))) == 3
    study = optuna.load_study(
        study_name="search", storage=f"sqlite:///{tmp_path / 'work' / 'study.db'}"
    )
    assert len(study.trials) == 3


def test_existing_study_needs_resume_and_resume_needs_study(tmp_path, tiny_det_root, tiny_space):
    cfg = load_search_config(
        _search_yaml(
            tmp_path,
            tiny_space,
            n_trials=1,
            stages=[{"type": "complexity"}],
            objectives=[{"metric": "params", "direction": "minimize"}],
        )
    )
    with pytest.raises(NasdetError, match="no study 'search' to resume"):
        OptunaSearch(cfg, tmp_path / "w", resume=True).run()
    OptunaSearch(cfg, tmp_path / "w").run()
    with pytest.raises(NasdetError, match="already exists"):
        OptunaSearch(cfg, tmp_path / "w").run()
    study = OptunaSearch(cfg, tmp_path / "w", resume=True).run()
    assert len(study.trials) == 1  # n_trials already reached: nothing more to run


def test_failing_trials_are_recorded_and_the_search_goes_on(tmp_path, tiny_det_root, tiny_space):
    result = run_search(
        _search_yaml(tmp_path, tiny_space, n_trials=3),
        tmp_path / "work",
        data_root=tiny_det_root,
        cfg_options={**FAST, "model.roi_head.bbox_head.num_classes": -1},
    )
    # Every candidate either breaks (recorded with its reason) or is rejected over budget
    # before it is built; all 3 trials run.
    rows = result["rows"]
    assert len(rows) == 3 and {r["state"] for r in rows} <= {"FAIL", "PRUNED"}
    failed = [r for r in rows if r["state"] == "FAIL"]
    assert failed and all("negative dimension" in r["fail_reason"] for r in failed)
    assert all(r.get("rejected") for r in rows if r["state"] == "PRUNED")
    assert "Failed and rejected trials" in result["report"].read_text()


def test_bad_storage_url_is_one_clear_error(tmp_path, tiny_space):
    cfg = load_search_config(_search_yaml(tmp_path, tiny_space))
    with pytest.raises(NasdetError, match="--storage"):
        OptunaSearch(cfg, tmp_path / "w", storage="postgresql://nobody@127.0.0.1:1/none").run()


def test_journal_storage(tmp_path, tiny_det_root, tiny_space):
    cfg = load_search_config(
        _search_yaml(
            tmp_path,
            tiny_space,
            n_trials=2,
            stages=[{"type": "complexity"}],
            objectives=[{"metric": "macs", "direction": "minimize"}],
        )
    )
    study = OptunaSearch(cfg, tmp_path / "w", storage=str(tmp_path / "journal.log")).run()
    states = [t.state.name for t in study.trials]  # PRUNED: rejected over budget
    assert len(states) == 2 and "COMPLETE" in states and set(states) <= {"COMPLETE", "PRUNED"}
    reloaded = optuna.load_study(
        study_name="search",
        storage=optuna.storages.JournalStorage(
            optuna.storages.journal.JournalFileBackend(str(tmp_path / "journal.log"))))
    assert [t.state for t in reloaded.trials] == [t.state for t in study.trials]


@pytest.mark.slow
def test_killed_search_resumes_losing_at_most_the_trial_in_flight(
    tmp_path, tiny_det_root, tiny_space
):
    search = _search_yaml(tmp_path, tiny_space, n_trials=3)
    work = tmp_path / "work"
    env = {**os.environ, "NASDET_HEARTBEAT_SECONDS": "1", "NASDET_GRACE_SECONDS": "2"}
    cmd = [
        sys.executable,
        str(REPO / "tools/search.py"),
        str(search),
        "--work-dir",
        str(work),
        "--data-root",
        str(tiny_det_root),
        "--cfg-options",
        *[f"{k}={json.dumps(v) if isinstance(v, list) else v}" for k, v in FAST.items()],
    ]
    proc = subprocess.Popen(
        cmd,
        cwd=REPO,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        start_new_session=True,
    )
    storage = f"sqlite:///{work / 'study.db'}"
    deadline = time.time() + 600
    first = None
    while time.time() < deadline and proc.poll() is None:
        time.sleep(1)
        try:
            trials = optuna.load_study(study_name="search", storage=storage).trials
        except Exception:
            continue
        finished = [t for t in trials if t.state.is_finished()]
        if finished and any(t.state.name == "RUNNING" for t in trials):
            first = finished[0]
            break
    assert first is not None, proc.communicate()[0][-3000:]
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()
    time.sleep(3)  # past the grace period: the killed trial is stale

    resumed = subprocess.run(
        [*cmd, "--resume"], cwd=REPO, env=env, capture_output=True, text=True, timeout=900
    )
    assert resumed.returncode == 0, resumed.stdout[-3000:] + resumed.stderr[-3000:]
    trials = optuna.load_study(study_name="search", storage=storage).trials
    kept = trials[first.number]
    assert kept.state == first.state and kept.values == first.values
    # The killed trial is FAIL (interrupted) and re-run: 3 trials count, 4 exist.
    assert [t.state.name for t in trials].count("FAIL") == 1
    assert sum(t.state.name in ("COMPLETE", "PRUNED") for t in trials) == 3
    assert not [t for t in trials if t.state.name == "RUNNING"]


@pytest.mark.slow
def test_two_workers_share_one_study_and_n_trials(tmp_path, tiny_det_root, tiny_space):
    search = _search_yaml(tmp_path, tiny_space, n_trials=4)
    work = tmp_path / "work"
    cmd = [sys.executable, str(REPO / "tools/search.py"), str(search), "--work-dir", str(work),
           "--data-root", str(tiny_det_root), "--cfg-options",
           *[f"{k}={json.dumps(v) if isinstance(v, list) else v}" for k, v in FAST.items()]]
    first = subprocess.Popen(cmd, cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                             text=True)
    storage = f"sqlite:///{work / 'study.db'}"
    deadline = time.time() + 300
    while time.time() < deadline and first.poll() is None:  # the second joins a live study
        time.sleep(0.5)
        try:
            if optuna.load_study(study_name="search", storage=storage).trials:
                break
        except Exception:
            continue
    second = subprocess.run([*cmd, "--resume"], cwd=REPO, capture_output=True, text=True,
                            timeout=900)
    out_first = first.communicate(timeout=900)[0]
    assert first.returncode == 0 and second.returncode == 0, out_first[-2000:] + second.stdout[-2000:]
    trials = optuna.load_study(study_name="search", storage=storage).trials
    # n_trials is the study's: 4 in all (5 only if both workers start one at the same
    # instant), not 4 per worker.
    assert 4 <= len(trials) <= 5 and all(t.state.is_finished() for t in trials)
    # The joining worker samples its own candidates, not the first worker's again.
    assert len({json.dumps(t.params, sort_keys=True) for t in trials}) == len(trials)
    for out in (out_first, second.stdout):  # both workers ran trials
        assert "[search] trial" in out, out[-2000:]


def test_a_resumed_search_does_not_replay_the_first_candidates(tmp_path, tiny_space):
    path = _search_yaml(tmp_path, tiny_space, n_trials=3, stages=[{"type": "complexity"}],
                        objectives=[{"metric": "params", "direction": "minimize"}])

    def params(work: str, n_trials: int = 3, resume: bool = False) -> list[dict]:
        cfg = load_search_config(path, n_trials=n_trials)
        return [t.params for t in OptunaSearch(cfg, tmp_path / work, resume=resume).run().trials]

    first = params("w")
    assert params("fresh") == first  # a fresh search with the same seed is reproducible
    resumed = params("w", n_trials=6, resume=True)
    assert resumed[:3] == first
    # The resumed worker's sampler starts another stream: new candidates, not a replay.
    assert all(p not in first for p in resumed[3:]), resumed
