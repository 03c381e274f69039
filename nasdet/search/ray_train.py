"""A trial's train stages as a Ray Train ``TorchTrainer``: several DDP workers per trial.

With ``workers_per_trial`` N > 1 the Ray driver's trials keep running in Tune function
trainables (reserving no CPU or GPU of their own: the trial's driver, its cheap stages
and its reports), while each train stage is a ``TorchTrainer`` of N workers holding the
CPUs/GPUs (``ScalingConfig``; ``placement_strategy`` ``PACK``, ``SPREAD`` or
``STRICT_SPREAD`` across nodes). Ray sets up one process group (gloo on CPUs, NCCL on
GPUs); in each worker mmengine's Runner is built from the stage's dumped config with
``launcher='pytorch'``, so it uses distributed samplers (each worker iterates over
1/N of the images) and the DDP wrapper. The batch per worker is the config's, and the
learning rate is scaled as mmdet's ``auto_scale_lr`` does (``enable=True``,
``base_batch_size`` = the single-process batch: lr x N). The stage's config
(``<trial_dir>/train_<stage>.py``) records it: ``launcher``, ``auto_scale_lr`` and
``ray_train`` (workers, resources, ``base_lr``, ``scaled_lr``).

Rank 0 alone writes the run's files (mmengine's checkpoints and logs, ``metrics.json``,
the eigenspectrum history, whose covariances are all-reduced across workers, and
``train/ddp.json``: per worker its rank, node, and the images it iterated over) and
hands each epoch's metrics and checkpoint to the trial's driver through a queue; the
driver reports them to Tune (``tune.report`` with a ``tune.Checkpoint``) while rank 0
waits, exactly as a single-process trial does, so ASHA's rungs and Tune's retries and
restores (``tune.get_checkpoint()``, then ``resume='auto'`` in every worker) are
unchanged. Ray Train's own ``TuneReportCallback`` is not used: it forwards metrics and a
checkpoint path, not a ``tune.Checkpoint`` of the trial's state. A worker or node lost
fails the ``TorchTrainer`` (Ray Train retries nothing) and so the trial, which Tune
retries (``FailureConfig.max_failures``) from its last epoch.
"""

from __future__ import annotations

import copy
import os
import threading
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from mmengine.hooks import Hook

from nasdet.errors import NasdetError

#: Ray Train's placement strategies for a trial's workers.
PLACEMENTS = ("PACK", "SPREAD", "STRICT_SPREAD", "STRICT_PACK")
#: What rank 0 records about the worker group, in the stage's train dir.
DDP_FILE = "ddp.json"
#: The worker group's placement group, recorded by rank 0 in the trial's directory while
#: a stage runs (see :func:`release_stale_worker_group`).
WORKER_GROUP_FILE = "ray_train_group.json"


@dataclass(frozen=True)
class WorkerScaling:
    """How many Ray Train workers a trial's train stages use, and what each holds.

    Args:
        num_workers: Workers (DDP processes) per trial; 1: the stage runs in the trial.
        cpus_per_worker: CPUs each worker reserves.
        gpus_per_worker: GPUs each worker reserves (> 0: NCCL, else gloo).
        placement_strategy: Ray placement of the workers (``PACK``, ``SPREAD``,
            ``STRICT_SPREAD``: one per node, ``STRICT_PACK``).
    """

    num_workers: int = 1
    cpus_per_worker: float = 1
    gpus_per_worker: float = 0
    placement_strategy: str = "PACK"

    def __post_init__(self) -> None:
        if self.num_workers < 1:
            raise NasdetError("must be at least 1", key="--workers-per-trial")
        if self.cpus_per_worker < 0 or self.gpus_per_worker < 0 or \
                self.cpus_per_worker + self.gpus_per_worker <= 0:
            raise NasdetError("each worker needs some CPUs or GPUs", key="--cpus-per-worker")
        if self.placement_strategy not in PLACEMENTS:
            raise NasdetError(f"unknown placement {self.placement_strategy!r}; choose one of "
                              f"{', '.join(PLACEMENTS)}", key="--placement")

    @property
    def distributed(self) -> bool:
        """Whether train stages run as a ``TorchTrainer`` (more than one worker)."""
        return self.num_workers > 1

    @property
    def backend(self) -> str:
        """The process group's backend: NCCL with GPUs, else gloo."""
        return "nccl" if self.gpus_per_worker > 0 else "gloo"


def ddp_stage_config(cfg: Any, scaling: WorkerScaling,
                     user_options: Sequence[Mapping[str, Any] | None] = ()) -> dict[str, Any]:
    """Make a train stage's config a ``num_workers``-process DDP run; what changed.

    ``launcher='pytorch'``, the backend, and mmdet's ``auto_scale_lr`` with the
    single-process batch as ``base_batch_size`` (mmengine's Runner scales the lr by
    ``world_size * batch / base_batch_size``); the record goes to ``cfg.ray_train``.
    The backend is the one the user's options name (``env_cfg.dist_cfg.backend`` in
    ``user_options``: the search's ``cfg_options``, then the stage's; the last wins), else
    NCCL with GPUs and gloo without (the ``nccl`` every MMDetection runtime inherits is
    not the user's choice). It is written to ``env_cfg.dist_cfg.backend``.

    Raises:
        NasdetError: ``nccl`` named for workers without GPUs.
    """
    from nasdet.train.launch import user_backend

    backend = scaling.backend
    for options in user_options:
        backend = user_backend(options) or backend
    if backend == "nccl" and not scaling.gpus_per_worker:
        raise NasdetError("env_cfg.dist_cfg.backend=nccl needs GPUs per worker; set "
                          "--gpus-per-worker or use gloo", key="cfg_options")
    batch = int(cfg.train_dataloader.batch_size)
    base_lr = float(cfg.optim_wrapper.optimizer.lr)
    cfg.launcher = "pytorch"
    env_cfg = dict(cfg.get("env_cfg") or {})
    env_cfg["dist_cfg"] = {**dict(env_cfg.get("dist_cfg") or {}), "backend": backend}
    cfg.env_cfg = env_cfg
    cfg.auto_scale_lr = dict(enable=True, base_batch_size=batch)
    record = {"num_workers": scaling.num_workers, "cpus_per_worker": scaling.cpus_per_worker,
              "gpus_per_worker": scaling.gpus_per_worker,
              "placement_strategy": scaling.placement_strategy, "backend": backend,
              "batch_per_worker": batch, "base_batch_size": batch, "base_lr": base_lr,
              "scaled_lr": base_lr * scaling.num_workers}
    cfg.ray_train = record
    return record


def release_stale_worker_group(trial_dir: Path) -> str | None:
    """Remove the placement group an earlier attempt of this trial left behind; its id.

    Ray Train's controller owns its workers' placement group, and a detached cleaner
    removes the group when the controller dies; but the cleaner asks Ray's state API,
    which the dashboard serves, and without one (nasdet's private Ray, a cluster started
    with ``--include-dashboard=false``, Ray without ``ray[default]``) the group outlives
    its controller. When the trial's driver was lost with its node, Ray reschedules the
    group onto the remaining nodes, where it holds the CPUs/GPUs the retry needs, and the
    retry waits for them forever. Tune never runs two attempts of a trial at once, so a
    group still recorded when an attempt starts belongs to a dead one.
    """
    import json

    from ray._raylet import PlacementGroupID
    from ray.util.placement_group import (
        PlacementGroup,
        placement_group_table,
        remove_placement_group,
    )

    path = Path(trial_dir) / WORKER_GROUP_FILE
    try:
        group = str(json.loads(path.read_text())["placement_group_id"])
        pg = PlacementGroup(PlacementGroupID.from_hex(group))
    except (OSError, ValueError, KeyError, TypeError):
        return None
    removed = None
    if placement_group_table(pg).get("state") not in (None, "REMOVED"):
        remove_placement_group(pg)
        removed = group
    path.unlink(missing_ok=True)
    return removed


def _record_worker_group(trial_dir: Path) -> None:
    """Rank 0: note the worker group's placement group for :func:`release_stale_worker_group`."""
    from ray.util.placement_group import get_current_placement_group

    from nasdet.utils.io import atomic_write_json

    pg = get_current_placement_group()
    if pg is not None:
        atomic_write_json(Path(trial_dir) / WORKER_GROUP_FILE,
                          {"placement_group_id": pg.id.hex(), "pid": os.getpid()})


def train_stage(cfg: Any, stage_name: str, trial_dir: Path, scaling: WorkerScaling,
                user_options: Sequence[Mapping[str, Any] | None] = ()) -> dict[str, Any]:
    """Run one train stage (``cfg``: its full config) on a ``TorchTrainer``.

    Call inside a Tune trial with the evaluator's trial reporter installed: every epoch
    report and checkpoint of rank 0 reaches it here, in the trial's thread.

    Args:
        cfg: The stage's config (work dir ``<trial_dir>/train``); edited as
            :func:`ddp_stage_config` says and dumped to ``<trial_dir>/train_<stage>.py``.
        stage_name: The stage's name.
        trial_dir: The trial's directory.
        scaling: The worker group.
        user_options: The user's config options, to tell their backend from the config's.

    Returns:
        The last validation metrics (as :func:`nasdet.train.train` returns them).
    """
    import ray
    from ray.train import FailureConfig, RunConfig, ScalingConfig
    from ray.train.torch import TorchConfig, TorchTrainer
    from ray.util.queue import Queue
    from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

    from nasdet.train.runner import read_metrics

    cfg = copy.deepcopy(cfg)
    record = ddp_stage_config(cfg, scaling, user_options)
    path = Path(trial_dir) / f"train_{stage_name}.py"
    cfg.dump(str(path))
    # The queues live (and die) with the trial's driver, on its node.
    here = NodeAffinitySchedulingStrategy(ray.get_runtime_context().get_node_id(), soft=False)
    options = {"num_cpus": 0, "scheduling_strategy": here}
    events, acks = Queue(actor_options=options), Queue(actor_options=options)
    resources = {"CPU": scaling.cpus_per_worker}
    if scaling.gpus_per_worker:
        resources["GPU"] = scaling.gpus_per_worker
    trainer = TorchTrainer(
        _worker,
        train_loop_config={"config": str(path), "events": events, "acks": acks,
                           "log": str(Path(trial_dir) / "trial.log"),
                           "trial_dir": str(trial_dir)},
        torch_config=TorchConfig(backend=record["backend"]),
        scaling_config=ScalingConfig(
            num_workers=scaling.num_workers, use_gpu=scaling.gpus_per_worker > 0,
            resources_per_worker=resources,
            placement_strategy=scaling.placement_strategy),
        run_config=RunConfig(name=f"train_{stage_name}",
                             storage_path=str(Path(trial_dir) / "ray_train"),
                             failure_config=FailureConfig(max_failures=0)))
    outcome: dict[str, BaseException] = {}

    def fit() -> None:
        try:
            trainer.fit()
        except BaseException as exc:  # noqa: BLE001 - re-raised in the trial's thread
            outcome["error"] = exc

    thread = threading.Thread(target=fit, name=f"train_{stage_name}", daemon=True)
    thread.start()
    try:
        _forward(events, acks, thread, outcome)
    finally:
        thread.join()
        for queue in (events, acks):
            queue.shutdown()
        # fit() returned: the controller removed its group (a dead driver leaves the note).
        (Path(trial_dir) / WORKER_GROUP_FILE).unlink(missing_ok=True)
    if "stopped" in outcome:
        raise outcome["stopped"]
    if "error" in outcome:
        error = outcome["error"]
        if lost_workers(error):
            raise LostWorkers(f"train stage {stage_name!r}: a worker or its node was lost: "
                              f"{str(error).splitlines()[-1] if str(error) else error!r}"
                              ) from error
        raise error
    return read_metrics(cfg.work_dir, "val")


class LostWorkers(RuntimeError):
    """A train stage's worker group lost a process or node (not an error of the trial):
    Tune retries the trial from its last epoch checkpoint."""


#: What the surviving ranks' gloo/NCCL calls raise when a peer process is gone.
_PEER_GONE = ("Connection closed by peer", "Connection reset by peer", "Broken pipe",
              "remote process exited", "Connection refused")


def lost_workers(error: BaseException) -> bool:
    """Whether a ``TorchTrainer.fit`` error means a lost worker or node, not a bug.

    Ray Train's controller errors count, and a worker group's failures when one of them
    is Ray's own (a failed health check or startup, an actor or node that died) or all
    are collectives whose peer is gone (``torch.distributed`` errors, gloo's "connection
    closed/reset by peer": the survivors of a lost rank often fail so before Ray notices
    the loss). A worker's own exception beside collective errors is the trial's error
    (its peers then fail in their collectives too).
    """
    from ray.exceptions import RayError, RayTaskError
    from ray.train import ControllerError, WorkerGroupError
    from ray.train.v2._internal.exceptions import RayTrainError, UserExceptionWithTraceback

    if isinstance(error, ControllerError):
        return True
    if not isinstance(error, WorkerGroupError):
        return False
    failures = [f._base_exc if isinstance(f, UserExceptionWithTraceback) else f
                for f in error.worker_failures.values()]
    if any(isinstance(f, (RayError, RayTrainError)) and not isinstance(f, RayTaskError)
           for f in failures):
        return True  # Ray's own error: a health check, an actor's or a node's death
    return bool(failures) and all(
        _is_dist_error(f) or any(m in str(f) for m in _PEER_GONE) for f in failures)


def _is_dist_error(exc: BaseException) -> bool:
    import torch.distributed as dist

    return isinstance(exc, getattr(dist, "DistError", ()))


def _forward(events: Any, acks: Any, thread: threading.Thread,
             outcome: dict[str, BaseException]) -> None:
    """Hand rank 0's epoch reports and checkpoints to the installed trial reporter."""
    from ray.util.queue import Empty

    from nasdet.hooks.trial_report import current_checkpoint_reporter, current_reporter

    while True:
        try:
            kind, epoch, value = events.get(timeout=0.5)
        except Empty:
            if thread.is_alive():
                continue
            return
        stop = False
        try:
            if kind == "epoch" and (fn := current_reporter()) is not None:
                fn(int(epoch), dict(value))
            elif kind == "saved" and (saved := current_checkpoint_reporter()) is not None:
                saved(int(epoch), Path(value))
        except Exception as exc:  # the trial stops here: so do the workers
            outcome["stopped"] = exc
            stop = True
        acks.put(stop)


def _worker(config: dict[str, Any]) -> None:
    """One Ray Train worker: mmengine's Runner on the stage's config, in Ray's group."""
    import ray.train
    import torch
    from mmengine.config import Config

    from nasdet.hooks.trial_report import trial_reporter
    from nasdet.train.runner import build_runner
    from nasdet.utils.output import output_to

    rank = ray.train.get_context().get_world_rank()
    cfg = Config.fromfile(config["config"])
    if torch.cuda.is_available():  # the device Ray gave this worker, not LOCAL_RANK's
        wrapper = dict(cfg.get("model_wrapper_cfg") or {})
        wrapper.setdefault("type", "MMDistributedDataParallel")
        wrapper["device_ids"] = [torch.cuda.current_device()]
        cfg.model_wrapper_cfg = wrapper
    main = rank == 0
    if main:
        _record_worker_group(Path(config["trial_dir"]))
    events, acks = config["events"], config["acks"]

    def send(kind: str, epoch: int, value: Any) -> None:
        events.put((kind, epoch, value))
        if acks.get():
            raise RuntimeError("the trial stopped this run")

    reporting = trial_reporter(lambda e, m: send("epoch", e, m),
                               saved=lambda e, p: send("saved", e, str(p))) if main \
        else trial_reporter(None)
    seen = _Seen()
    with output_to(config["log"] if main else os.devnull), reporting:
        runner = build_runner(cfg, resume="auto", progress=False)
        runner.register_hook(seen, priority="LOWEST")
        runner.train()
    _record(cfg, rank, seen)


def _record(cfg: Any, rank: int, seen: _Seen) -> None:
    """Gather every worker's node and images on rank 0; it writes ``train/ddp.json``."""
    import ray
    import torch.distributed as dist

    from nasdet.utils.io import atomic_write_json

    mine = {"rank": rank, "node_id": ray.get_runtime_context().get_node_id(),
            "pid": os.getpid(), "images_per_epoch": seen.images,
            "img_ids": seen.img_ids}
    every: list[Any] = [None] * dist.get_world_size()
    dist.all_gather_object(every, mine)
    if rank == 0:
        atomic_write_json(Path(cfg.work_dir) / DDP_FILE, {
            "world_size": dist.get_world_size(), "backend": dist.get_backend(),
            "ray_train": dict(cfg.get("ray_train") or {}),
            "lr": seen.lr, "workers": every,
            "units": "images_per_epoch: training images a worker iterated over in each "
                     "epoch of this run (count), img_ids: which, per epoch; lr: the optimizer's initial lr after "
                     "auto_scale_lr"})


class _Seen(Hook):
    """Count the training images this process iterates over, per epoch."""

    priority = "LOWEST"

    def __init__(self) -> None:
        self.images: list[int] = []
        self.img_ids: list[list[int]] = []
        self.lr: float | None = None

    def before_train_epoch(self, runner: Any) -> None:
        self.images.append(0)
        self.img_ids.append([])
        group = runner.optim_wrapper.optimizer.param_groups[0]
        self.lr = float(group.get("initial_lr", group["lr"]))

    def after_train_iter(self, runner: Any, batch_idx: int, data_batch: Any = None,
                         outputs: Any = None) -> None:
        samples = (data_batch or {}).get("data_samples") or []
        self.images[-1] += len(samples)
        for sample in samples:
            if "img_id" in sample.metainfo:
                self.img_ids[-1].append(int(sample.metainfo["img_id"]))
