"""Trials whose train stages run as Ray Train ``TorchTrainer``s of two DDP workers."""

from __future__ import annotations

import json
import time
from pathlib import Path

import pytest

from nasdet.errors import NasdetError
from nasdet.search import load_search_config
from nasdet.search.ray_driver import RaySearch
from nasdet.search.ray_train import WorkerScaling
from tests.search.test_ray_driver import FAST, write_search

#: One trial, one train stage of two epochs reported after every epoch.
TRAIN = {"n_trials": 1, "pruner": {"type": "none"},
         "objectives": [{"metric": "ap50", "direction": "maximize"}],
         "stages": [{"type": "complexity"},
                    {"type": "train", "name": "short", "epochs": 2,
                     "report_every_epoch": True}]}


def train_image_ids(config_file: Path) -> list[int]:
    """The training set's image ids as mmdet's dataset lists them (no sampler, no DDP)."""
    from mmdet.registry import DATASETS
    from mmdet.utils import register_all_modules
    from mmengine.config import Config

    register_all_modules(init_default_scope=True)
    cfg = Config.fromfile(config_file)
    dataset = DATASETS.build(cfg.train_dataloader.dataset)
    return [int(dataset.get_data_info(i)["img_id"]) for i in range(len(dataset))]


def check_ddp_trial(trial_dir: Path, workers: int = 2) -> dict:
    """What every multi-worker trial must show; returns its ``ddp.json`` record."""
    from mmengine.config import Config

    record = json.loads((trial_dir / "train" / "ddp.json").read_text())
    assert record["world_size"] == workers and record["backend"] == "gloo"
    assert sorted(w["rank"] for w in record["workers"]) == list(range(workers))
    # The stage's dumped config says what ran: DDP and mmdet's auto_scale_lr.
    stage = Config.fromfile(trial_dir / "train_short.py")
    single = Config.fromfile(trial_dir / "candidate.py")  # the one-process recipe
    batch = FAST["train_dataloader.batch_size"]
    assert stage.launcher == "pytorch" and stage.env_cfg.dist_cfg.backend == "gloo"
    assert stage.auto_scale_lr == {"enable": True, "base_batch_size": batch}
    assert stage.train_dataloader.batch_size == batch  # per worker
    base_lr = single.optim_wrapper.optimizer.lr
    assert stage.optim_wrapper.optimizer.lr == base_lr  # mmengine scales it at build time
    assert stage.ray_train.scaled_lr == pytest.approx(workers * base_lr, rel=1e-12)
    # The optimizer the workers trained with had the scaled lr (world * batch / base).
    assert record["lr"] == pytest.approx(workers * base_lr, rel=1e-12)
    # Each worker iterated over its own 1/N of the images, every epoch.
    ids = train_image_ids(trial_dir / "train_short.py")
    assert len(ids) == FAST["train_dataloader.dataset.indices"]
    for w in record["workers"]:
        assert w["images_per_epoch"] == [len(ids) // workers] * 2
    for epoch in range(2):  # the distributed sampler: a partition of the images
        seen = [w["img_ids"][epoch] for w in record["workers"]]
        assert sorted(sum(seen, [])) == sorted(ids)
    return record


@pytest.mark.slow
def test_two_worker_trial_trains_with_ddp_on_local_ray(tmp_path, tiny_det_root):
    import ray

    cfg = load_search_config(write_search(tmp_path, **TRAIN))
    work = tmp_path / "work"
    search = RaySearch(cfg, work, data_root=tiny_det_root, cfg_options=FAST,
                       workers_per_trial=2, cpus_per_worker=1)
    start = time.perf_counter()
    ray.init(num_cpus=2, include_dashboard=False, logging_level="WARNING")
    try:
        assert search._concurrency() == 1  # two workers of one CPU: one trial at a time
        grid = search.run()  # on the Ray this process started
    finally:
        ray.shutdown()
    seconds = time.perf_counter() - start
    assert grid.num_errors == 0, [r.error for r in grid]
    rows = search.rows()
    assert len(rows) == 1, rows
    row = rows[0]
    assert row["state"] == "COMPLETE" and row["epochs"] == 2
    trial_dir = Path(row["trial_dir"])
    check_ddp_trial(trial_dir)
    # Rank 0 alone wrote the run: one mmengine log dir, one metrics file, one log.
    train = trial_dir / "train"
    assert len([p for p in train.iterdir() if p.is_dir() and p.name[:2] == "20"]) == 1
    assert not [p for p in trial_dir.rglob("*rank1*")]
    history = json.loads((train / "metrics.json").read_text())
    assert history["world_size"] == 2
    # Both epochs reached Tune (and so Optuna) through the trial's driver.
    trial = search.load_study().trials[0]
    assert sorted(trial.intermediate_values) == [1, 2]
    print(f"two-worker trial: {seconds:.1f} s")


def test_workers_per_trial_is_refused_by_optuna_and_checked(tmp_path):
    from nasdet.search import run_search

    with pytest.raises(NasdetError, match="--backend ray") as info:
        run_search(write_search(tmp_path), tmp_path / "work", backend="optuna",
                   workers_per_trial=2)
    assert info.value.key == "--workers-per-trial"
    assert not (tmp_path / "work").exists()
    with pytest.raises(NasdetError, match="at least 1"):
        WorkerScaling(num_workers=0)
    with pytest.raises(NasdetError, match="STRICT_SPREAD"):
        WorkerScaling(num_workers=2, placement_strategy="ANYWHERE")
    assert WorkerScaling(2, gpus_per_worker=1).backend == "nccl"
    assert WorkerScaling(2).backend == "gloo" and not WorkerScaling().distributed


def test_ddp_stage_backend_is_the_users_else_follows_the_workers_devices():
    from mmengine.config import Config

    from nasdet.search.ray_train import ddp_stage_config

    def stage(**env_cfg):  # every MMDetection runtime inherits dist_cfg.backend='nccl'
        return Config(dict(train_dataloader=dict(batch_size=2),
                           optim_wrapper=dict(optimizer=dict(lr=0.05)),
                           env_cfg=dict(dist_cfg=dict(backend="nccl", timeout=600), **env_cfg)))

    cpu, gpu = WorkerScaling(2), WorkerScaling(2, gpus_per_worker=1)
    cfg = stage()
    record = ddp_stage_config(cfg, cpu)
    assert record["backend"] == "gloo" and cfg.env_cfg.dist_cfg.backend == "gloo"
    assert cfg.env_cfg.dist_cfg.timeout == 600 and cfg.launcher == "pytorch"
    assert record["scaled_lr"] == pytest.approx(0.1) and cfg.auto_scale_lr.base_batch_size == 2
    assert ddp_stage_config(stage(), gpu)["backend"] == "nccl"
    # The user's choice wins (the stage's over the search's), also against the devices.
    search_opts = {"env_cfg.dist_cfg.backend": "gloo"}
    cfg = stage()
    assert ddp_stage_config(cfg, gpu, (search_opts, None))["backend"] == "gloo"
    assert cfg.env_cfg.dist_cfg.backend == "gloo"
    stage_opts = {"env_cfg": {"dist_cfg": {"backend": "mpi"}}}
    assert ddp_stage_config(stage(), gpu, (search_opts, stage_opts))["backend"] == "mpi"
    with pytest.raises(NasdetError, match="nccl needs GPUs") as info:
        ddp_stage_config(stage(), cpu, ({"env_cfg.dist_cfg.backend": "nccl"},))
    assert info.value.key == "cfg_options"


def test_lost_workers_tells_a_lost_node_from_the_trials_own_error():
    import torch.distributed as dist
    from ray.exceptions import ActorDiedError
    from ray.train import ControllerError, WorkerGroupError

    from nasdet.search.ray_train import lost_workers

    def group(*failures: Exception) -> WorkerGroupError:
        return WorkerGroupError("snippets", dict(enumerate(failures)))

    gone = RuntimeError("[gloo/transport/tcp/pair.cc:545] Read error: Connection reset by "
                        "peer. This is typically caused by a remote worker hanging")
    # A node lost: its worker's actor died, the survivor's collective broke.
    assert lost_workers(group(gone, ActorDiedError()))
    assert lost_workers(group(gone, dist.DistNetworkError("store gone")))
    assert lost_workers(ControllerError(RuntimeError("controller lost")))
    # The trial's own error on one rank (its peer then fails in a collective, or the same).
    bad = NasdetError("dataset root does not exist", key="data_root")
    assert not lost_workers(group(bad, gone))
    assert not lost_workers(group(ValueError("boom"), ValueError("boom")))
    assert not lost_workers(ValueError("not from a trainer"))
