"""Trials that survive a killed driver, a killed worker: they continue from their last epoch.

The kill-and-resume cases print one row each of the table the docs show
(``case | trials finished before | after | epochs retrained``): run with ``-s`` to see
them. Epochs trained by each run of a trial are read from mmengine's own per-run log
(``train/<timestamp>/vis_data/scalars.json``: one training entry per epoch), not from
nasdet's bookkeeping.
"""

from __future__ import annotations

import contextlib
import io
import json
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

import optuna
import pytest
import yaml

from nasdet.search import load_search_config
from nasdet.search.retry import RetryInterrupted, take_over_interrupted, worker_record
from nasdet.search.trials import (
    RETRIED_FROM_ATTR,
    WORKER_ATTR,
    counts_towards_n_trials,
    interrupted,
)
from tests.conftest import REPO

EPOCHS = 6
# 16 training images in batches of 2: 8 iterations (a second or two) per epoch, so a
# kill lands inside an epoch; the tests' 64-px data as it is.
FAST = {"synthetic_data": None, "train_dataloader.dataset.indices": 16,
        "train_dataloader.batch_size": 2, "val_dataloader.batch_size": 4,
        "param_scheduler": []}


def table_row(case: str, before: int, after: int, retrained: int) -> None:
    print(f"\n| {case} | {before} | {after} | {retrained} |")


def write_search(tmp_path: Path, **changes: Any) -> Path:
    """The tiny detector with three widths searched, no budget; one train stage."""
    space = {
        "name": "survival", "base": str(REPO / "configs/tiny_faster_rcnn_synth.py"),
        "input_size": [64, 64], "constraints": {"max_params": 1.0e9},
        "dimensions": {
            "fpn_width": {"target": "neck.out_channels", "kind": "int", "low": 32,
                          "high": 64, "step": 32},
            "rpn_width": {"target": "rpn_head.feat_channels", "kind": "int", "low": 32,
                          "high": 64, "step": 32},
            "fc_width": {"target": "roi_head.bbox_head.fc_out_channels",
                         "choices": [128, 256]},
        },
    }
    (tmp_path / "space.yaml").write_text(yaml.safe_dump(space, sort_keys=False))
    data = {"space": str(tmp_path / "space.yaml"), "n_trials": 2, "seed": 0,
            "sampler": {"type": "random"}, "pruner": {"type": "none"},
            "objectives": [{"metric": "ap50", "direction": "maximize"}],
            "stages": [{"type": "complexity"},
                       {"type": "train", "name": "full", "epochs": EPOCHS}], **changes}
    path = tmp_path / "search.yaml"
    path.write_text(yaml.safe_dump(data, sort_keys=False))
    return path


def epochs_per_run(train_dir: Path) -> list[list[int]]:
    """The epochs each run of a train dir trained, in run order (mmengine's own log)."""
    runs = []
    for scalars in sorted(train_dir.glob("*/vis_data/scalars.json")):
        entries = [json.loads(line) for line in scalars.read_text().splitlines() if line]
        runs.append([int(e["epoch"]) for e in entries if "loss" in e])
    return runs


def latest_checkpoint_epoch(train_dir: Path) -> int:
    """The epoch of the checkpoint ``last_checkpoint`` names (what a resume starts from)."""
    name = Path((train_dir / "last_checkpoint").read_text().strip()).name
    return int(name.removeprefix("epoch_").removesuffix(".pth"))


# ------------------------------------------------------------------------------ rules
def _process_record(proc: subprocess.Popen, work_dir: Path) -> dict[str, Any]:
    """A worker record of ``proc`` (another process of this machine)."""
    record = worker_record(work_dir)
    stat = Path(f"/proc/{proc.pid}/stat").read_text()
    record.update(pid=proc.pid, started=int(stat.rsplit(")", 1)[1].split()[19]))
    return record


def test_a_resumed_driver_takes_over_dead_workers_trials_only(tmp_path):
    storage = optuna.storages.RDBStorage(f"sqlite:///{tmp_path / 'study.db'}",
                                         heartbeat_interval=10, grace_period=30)
    study = optuna.create_study(storage=storage, study_name="s")
    dead = subprocess.Popen(["sleep", "30"])
    live = subprocess.Popen(["sleep", "30"])
    try:
        dead_record = _process_record(dead, tmp_path)
        live_record = _process_record(live, tmp_path)
        dead.kill()
        dead.wait()
        reused = {**live_record, "started": live_record["started"] - 1}  # pid reused
        elsewhere = {**dead_record, "machine": "other-host|boot|pid:[1]"}
        records = {"dead": dead_record, "live": live_record, "reused": reused,
                   "elsewhere": elsewhere}
        numbers = {}
        for name, record in records.items():
            trial = study.ask({"x": optuna.distributions.FloatDistribution(0, 1)})
            trial.set_user_attr(WORKER_ATTR, record)
            trial.set_user_attr("trial_dir", str(tmp_path / name))
            trial.set_user_attr("metrics", {"ap50": 0.5})  # not carried over
            trial.report(0.25, 1)
            storage.record_heartbeat(trial._trial_id)  # every heartbeat is fresh
            numbers[name] = trial.number
        removed: list[str] = []
        retried = take_over_interrupted(study, RetryInterrupted(2, removed.append),
                                        heartbeat=True)
        # Gone: the dead process and the reused pid; alive or unknown: left RUNNING.
        assert retried == [numbers["dead"], numbers["reused"]]
        trials = study.get_trials()
        states = {name: trials[n].state.name for name, n in numbers.items()}
        assert states == {"dead": "FAIL", "live": "RUNNING", "reused": "FAIL",
                          "elsewhere": "RUNNING"}
        assert not counts_towards_n_trials(trials[numbers["dead"]])
        retries = trials[len(records):]
        assert [t.state.name for t in retries] == ["WAITING", "WAITING"]
        for retry, name in zip(retries, ("dead", "reused"), strict=True):
            old = trials[numbers[name]]
            assert retry.params == old.params
            assert retry.user_attrs == {"trial_dir": str(tmp_path / name),
                                        RETRIED_FROM_ATTR: old.number}
            assert retry.intermediate_values == {1: 0.25}
            assert retry.system_attrs["retry_history"] == [old.number]
        # A second resume takes nothing more: the failed trials have their retries.
        assert take_over_interrupted(study, RetryInterrupted(2), heartbeat=True) == []
        assert removed == []
        # The third cut-off of one trial is not retried: checkpoints go.
        retry = RetryInterrupted(2, removed.append)
        frozen = trials[numbers["dead"]]
        frozen.system_attrs = {"retry_history": [0, 4]}
        assert not retry(study, frozen)
        assert removed == [str(tmp_path / "dead")]
    finally:
        live.kill()
        live.wait()


def test_ray_trial_checkpoint_round_trip(tmp_path):
    from nasdet.search.ray_trial import restore_checkpoint, trial_checkpoint

    trial = tmp_path / "trial"
    (trial / "train").mkdir(parents=True)
    (trial / "params.json").write_text(json.dumps({"x": 1}))
    (trial / "metrics.json").write_text(json.dumps({"metrics": {"params": 5.0},
                                                    "stages_done": 1}))
    (trial / "trial.log").write_text("noise")
    (trial / "train" / "epoch_1.pth").write_bytes(b"one")
    (trial / "train" / "epoch_2.pth").write_bytes(b"two")
    (trial / "train" / "metrics.json").write_text("{}")
    with trial_checkpoint(trial, trial / "train" / "epoch_2.pth") as ckpt:
        stored = tmp_path / "storage"
        ckpt.to_directory(str(stored))  # what Tune's copy into its storage holds
    assert not list(trial.glob(".checkpoint_*"))  # the temporary folder is gone
    assert sorted(str(p.relative_to(stored)) for p in stored.rglob("*") if p.is_file()) == [
        "metrics.json", "params.json", "train/epoch_2.pth", "train/metrics.json"]
    from ray import tune

    other = tmp_path / "other_node" / "trial"
    (other / "train").mkdir(parents=True)
    (other / "train" / "epoch_3.pth").write_bytes(b"stale")
    assert restore_checkpoint(tune.Checkpoint.from_directory(str(stored)), other) == 1
    assert sorted(p.name for p in (other / "train").glob("*.pth")) == ["epoch_2.pth"]
    assert (other / "train" / "epoch_2.pth").read_bytes() == b"two"
    assert (other / "train" / "last_checkpoint").read_text() == str(
        other / "train" / "epoch_2.pth")
    with trial_checkpoint(trial, None) as nothing:
        assert nothing is None


def test_newest_checkpoint_finds_a_stored_one_tune_never_registered(tmp_path):
    import torch
    from ray import tune

    from nasdet.search.ray_trial import newest_checkpoint

    stored = tmp_path / "trial_abc"

    def folder(index: int, stages_done: int, epoch: int, *, damaged: bool = False) -> Path:
        path = stored / f"checkpoint_{index:06d}"
        (path / "train").mkdir(parents=True)
        (path / "metrics.json").write_text(json.dumps({"stages_done": stages_done}))
        weights = path / "train" / f"epoch_{epoch}.pth"
        torch.save({"state_dict": {"w": torch.arange(1000.0)}}, weights)
        if damaged:  # cut off while it was copied
            weights.write_bytes(weights.read_bytes()[: weights.stat().st_size // 2])
        return path

    def picked(registered: Path | None) -> Path | None:
        ckpt = newest_checkpoint(tune.Checkpoint.from_directory(str(registered))
                                 if registered else None, stored)
        return Path(ckpt.path) if ckpt is not None else None

    assert picked(None) is None and newest_checkpoint(None, None) is None
    first = folder(0, 1, 1)
    assert picked(None) == first  # stored, never registered: the retry continues from it
    assert picked(first) == first
    # A retry from an unregistered checkpoint writes its indices from 0 again: progress
    # decides, not the index.
    later = folder(4, 1, 5)
    assert picked(first) == later
    newer = stored / "checkpoint_000000"
    (newer / "train" / "epoch_1.pth").rename(newer / "train" / "epoch_7.pth")
    assert picked(None) == newer
    assert picked(later) == newer
    folder(5, 2, 9, damaged=True)  # furthest, but its weights are incomplete
    assert picked(later) == newer
    (stored / "checkpoint_000006").mkdir()  # a copy that had not begun
    assert picked(None) == newer
    # A checkpoint of the first stage (no stage done: no metrics.json yet) counts.
    first_stage = tmp_path / "first_stage"
    stored = first_stage
    (folder(0, 0, 2) / "metrics.json").unlink()
    assert picked(None) == first_stage / "checkpoint_000000"
    (first_stage / "checkpoint_000000" / "metrics.json").write_text("{damaged")
    assert picked(None) is None


# ------------------------------------------------------------------------------ optuna
@pytest.mark.slow
def test_sigkilled_optuna_search_resumed_at_once_continues_the_trial(tmp_path, tiny_det_root):
    search = write_search(tmp_path, stages=[
        {"type": "complexity"},
        {"type": "train", "name": "full", "epochs": EPOCHS, "report_every_epoch": True}])
    work = tmp_path / "work"
    cmd = [sys.executable, str(REPO / "tools/search.py"), str(search), "--work-dir",
           str(work), "--data-root", str(tiny_det_root), "--cfg-options",
           *[f"{k}={json.dumps(v) if isinstance(v, list) else v}" for k, v in FAST.items()]]
    proc = subprocess.Popen(cmd, cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                            text=True, start_new_session=True)
    train = work / "trials" / "0000" / "train"
    deadline = time.time() + 300
    # mmengine names a checkpoint in last_checkpoint once its file is complete
    while time.time() < deadline and proc.poll() is None and not (train / "last_checkpoint").exists():
        time.sleep(0.05)
    os.killpg(proc.pid, signal.SIGKILL)  # mid-epoch 2 (or later), at once
    out = proc.communicate()[0]
    assert (train / "last_checkpoint").exists(), out[-3000:]
    resumed_from = latest_checkpoint_epoch(train)
    first_run = epochs_per_run(train)[0]
    storage = f"sqlite:///{work / 'study.db'}"
    killed = optuna.load_study(study_name="search", storage=storage).trials[0]
    assert killed.state.name == "RUNNING"  # its heartbeat is seconds old

    resumed = subprocess.run([*cmd, "--resume"], cwd=REPO, capture_output=True, text=True,
                             timeout=600)
    assert resumed.returncode == 0, resumed.stdout[-3000:] + resumed.stderr[-3000:]
    assert "retrying interrupted trial(s) [0]" in resumed.stdout
    trials = optuna.load_study(study_name="search", storage=storage).trials
    assert not [t for t in trials if t.state.name in ("RUNNING", "WAITING")]
    assert sum(counts_towards_n_trials(t) for t in trials) == 2  # n_trials
    assert interrupted(trials[0]) and len(trials) == 3
    retry = trials[1]
    assert retry.state.name == "COMPLETE" and retry.user_attrs[RETRIED_FROM_ATTR] == 0
    assert retry.params == killed.params
    assert retry.user_attrs["trial_dir"] == killed.user_attrs["trial_dir"]
    runs = epochs_per_run(train)
    assert len(runs) == 2 and runs[0] == first_run
    # Only the epochs after the checkpoint trained again, and the run reached the end.
    assert runs[1] == list(range(resumed_from + 1, EPOCHS + 1))
    retrained = len(set(runs[0]) & set(runs[1]))
    assert retrained == len([e for e in first_run if e > resumed_from]) <= 1
    # Every epoch is a step of the retried trial: the killed run's, then its own (an epoch
    # checkpointed but cut off before its validation is validated first on resume).
    history = json.loads((train / "metrics.json").read_text())["history"]
    assert [h["epoch"] for h in history] == list(range(1, EPOCHS + 1))
    assert set(retry.intermediate_values) == set(range(1, EPOCHS + 1))
    # (no detection at all: {} recorded, reported as 0)
    assert retry.intermediate_values[EPOCHS] == history[-1]["metrics"].get("coco/bbox_mAP_50", 0.0)
    assert {k: retry.intermediate_values[k] for k in killed.intermediate_values} == \
        killed.intermediate_values
    assert not list(train.glob("*.pth"))  # the trial ended: checkpoints removed
    table_row("optuna: driver SIGKILLed mid-epoch, `--resume` at once", 0, 2, retrained)


# ------------------------------------------------------------------------------ ray
def _holders(path: Path) -> list[int]:
    """Processes that have ``path`` open (the trial's worker writes its log there)."""
    pids = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit() or int(entry) == os.getpid():
            continue
        with contextlib.suppress(OSError):
            for fd in os.listdir(f"/proc/{entry}/fd"):
                with contextlib.suppress(OSError):
                    if os.readlink(f"/proc/{entry}/fd/{fd}") == str(path):
                        pids.append(int(entry))
                        break
    return pids


def _run_with_a_kill(search: Any, work: Path, lines: io.StringIO,
                     pick: Any) -> tuple[dict[str, Any], list[list[int]]]:
    """Run a one-trial Ray search; once a Tune checkpoint is stored, SIGKILL the pids
    ``pick(checkpoint file, trial dir)`` names (none: wait). After the checks every such
    case shares (a kill, the trial retried and complete), what was killed and the epochs
    each run of its train dir trained."""
    killed: dict[str, Any] = {}

    def kill() -> None:
        deadline = time.time() + 300
        while time.time() < deadline:
            time.sleep(0.05)
            for saved in (work / "ray_results" / "search").glob("*/checkpoint_*/train/*.pth"):
                trial_dir = work / "trials" / saved.parents[2].name.removeprefix("trial_")
                pids = pick(saved, trial_dir)
                if pids:
                    killed.update(pids=pids, epoch=int(saved.stem.split("_")[1]),
                                  trial_dir=trial_dir)
                    for pid in pids:
                        os.kill(pid, signal.SIGKILL)
                    return

    killer = threading.Thread(target=kill, daemon=True)
    killer.start()
    grid = search.run()
    killer.join(timeout=5)
    assert killed, lines.getvalue()
    assert grid.num_errors == 0 and "interrupted" in lines.getvalue(), lines.getvalue()
    (row,) = search.rows()
    assert row["state"] == "COMPLETE" and row["epochs"] == EPOCHS
    runs = epochs_per_run(killed["trial_dir"] / "train")
    assert len(runs) == 2, runs
    return killed, runs


@pytest.mark.slow
def test_ray_trial_whose_worker_is_killed_is_retried_from_its_last_epoch(tmp_path,
                                                                          tiny_det_root):
    from nasdet.search.ray_driver import RaySearch

    cfg = load_search_config(write_search(tmp_path, n_trials=1, max_failures=1))
    work = tmp_path / "work"
    search = RaySearch(cfg, work, data_root=tiny_det_root, cfg_options=FAST,
                       max_concurrent=1, out=(lines := io.StringIO()))

    def after_epoch_2(saved: Path, trial_dir: Path) -> list[int]:
        # Once epoch 2's checkpoint is in Tune's storage, epoch 1's is complete there.
        return _holders(trial_dir / "trial.log") if int(saved.stem.split("_")[1]) >= 2 else []

    killed, runs = _run_with_a_kill(search, work, lines, after_epoch_2)
    # The retried run trained only the epochs after the checkpoint it restored (epoch
    # 2's, or epoch 1's if the kill cut epoch 2's copy into Tune's storage short).
    restored = runs[1][0] - 1
    assert killed["epoch"] - 1 <= restored <= killed["epoch"], (runs, killed)
    assert runs[1] == list(range(restored + 1, EPOCHS + 1)), runs
    retrained = len(set(runs[0]) & set(runs[1]))
    assert 1 not in runs[1] and retrained <= 2, runs
    # The trial ended: its checkpoints are gone, here and in Tune's storage.
    assert not list((killed["trial_dir"] / "train").glob("*.pth"))
    assert not list((work / "ray_results" / "search").glob("*/checkpoint_*"))
    study = search.load_study()
    assert [t.state.name for t in study.trials] == ["COMPLETE"]  # one trial, not two
    table_row("ray: the trial's worker SIGKILLed mid-epoch (Tune retry)", 0, 1, retrained)


@pytest.mark.slow
def test_ddp_trial_whose_driver_is_killed_is_retried_from_its_last_epoch(tmp_path,
                                                                         tiny_det_root):
    """The trial's own process (its Tune actor, the Train controller's owner) SIGKILLed
    mid-epoch: its workers die with it, and the retry must get their CPUs back (the
    worker group's placement group outlives a dead controller without a dashboard)."""
    from nasdet.search.ray_driver import RaySearch
    from nasdet.search.ray_trial import _progress

    cfg = load_search_config(write_search(tmp_path, n_trials=1, max_failures=1))
    work = tmp_path / "work"
    search = RaySearch(cfg, work, data_root=tiny_det_root, cfg_options=FAST,
                       max_concurrent=1, workers_per_trial=2, cpus_per_worker=1,
                       out=(lines := io.StringIO()))

    def the_trials_driver(saved: Path, trial_dir: Path) -> list[int]:
        if _progress(saved.parents[1]) is None:  # still being copied
            return []
        # The trial's actor and rank 0 write its log; the actor is not a worker.
        return [pid for pid in _holders(trial_dir / "trial.log")
                if b"RayTrainWorker" not in _cmdline(pid)]

    killed, runs = _run_with_a_kill(search, work, lines, the_trials_driver)
    # The retry continued from the complete stored checkpoint the kill came after, even
    # when Tune had not registered it yet.
    restored = runs[1][0] - 1
    assert restored >= killed["epoch"], (runs, killed)
    assert runs[1] == list(range(restored + 1, EPOCHS + 1)), runs
    retrained = len(set(runs[0]) & set(runs[1]))
    assert retrained <= 1, runs
    ddp = json.loads((killed["trial_dir"] / "train" / "ddp.json").read_text())
    assert ddp["world_size"] == 2
    table_row("ray: a DDP trial's own process SIGKILLed mid-epoch (Tune retry)", 0, 1,
              retrained)


def _cmdline(pid: int) -> bytes:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return b""


RAY_DRIVER = """
import sys
from nasdet.search import load_search_config
from nasdet.search.ray_driver import RaySearch
cfg = load_search_config(sys.argv[1])
RaySearch(cfg, sys.argv[2], max_concurrent=1, data_root=sys.argv[3],
          cfg_options={cfg_options}).run()
"""


@pytest.mark.slow
def test_sigkilled_ray_driver_resumed_continues_the_trial(tmp_path, tiny_det_root):
    from nasdet.search.ray_driver import RaySearch

    search_yaml = write_search(tmp_path, n_trials=1)
    work = tmp_path / "work"
    with open(tmp_path / "driver.log", "w") as log:
        proc = subprocess.Popen(
            [sys.executable, "-c", RAY_DRIVER.format(cfg_options=repr(FAST)),
             str(search_yaml), str(work), str(tiny_det_root)],
            cwd=REPO, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
        # Tune snapshots its experiment every 2 s: a checkpoint registered 3 s ago is in it.
        deadline, seen = time.time() + 300, None
        while time.time() < deadline and proc.poll() is None:
            time.sleep(0.1)
            saved = list((work / "ray_results" / "search").glob("*/checkpoint_*/train/*.pth"))
            if saved and int(saved[0].stem.split("_")[1]) >= 2 and seen is None:
                seen = time.time()
            if seen is not None and time.time() - seen > 3:
                break
        os.killpg(proc.pid, signal.SIGKILL)  # the driver and its private Ray
        proc.wait()
    (trial_dir,) = (work / "trials").iterdir()
    # A Ray worker notices its raylet is gone within a second or two: wait until the
    # trial's log stops growing before taking what the first run trained.
    first_run, still = epochs_per_run(trial_dir / "train")[0], time.time()
    while time.time() - still < 3 and time.time() < deadline + 60:
        time.sleep(0.5)
        now = epochs_per_run(trial_dir / "train")[0]
        if now != first_run:
            first_run, still = now, time.time()
    assert seen is not None and first_run[-1] < EPOCHS, (tmp_path / "driver.log").read_text()

    search = RaySearch(load_search_config(search_yaml), work, resume=True,
                       data_root=tiny_det_root, cfg_options=FAST, out=io.StringIO())
    search.run()
    (row,) = search.rows()
    assert row["state"] == "COMPLETE" and row["epochs"] == EPOCHS
    runs = epochs_per_run(trial_dir / "train")
    assert len(runs) == 2 and runs[0] == first_run, runs
    restored = runs[1][0] - 1
    assert restored >= 1 and runs[1] == list(range(restored + 1, EPOCHS + 1)), runs
    retrained = len(set(runs[0]) & set(runs[1]))
    assert retrained <= 2, runs
    assert not list((trial_dir / "train").glob("*.pth"))
    table_row("ray: driver SIGKILLed mid-epoch, `--resume`", 0, 1, retrained)
