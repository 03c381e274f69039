"""Data-parallel scaling without Ray, measured in one run on this machine.

    python benchmarks/ddp_scaling.py [--iters 30] [--batch 4] [--no-ray] [--out results.json]

(a) Training throughput of the tiny detector (``configs/tiny_faster_rcnn_synth.py``,
    synthetic 128 px images, ``--batch`` images per process) for ``--iters`` iterations
    of ``IterBasedTrainLoop``, launched as ``torchrun --nproc_per_node W tools/train.py
    CONFIG --launcher pytorch`` with W = 1 and W = 2 (CPU, gloo, one intra-op thread per
    process): images/s = iters x batch x W / seconds, where seconds is rank 0's wall
    clock of its training iterations (``metrics.json`` ``train_time``: forward, backward,
    gradient all-reduce and optimiser step; data loading and start-up excluded). The
    speed-up is images/s(2) / images/s(1); linear scaling is 2.
(a') The same training as a trial's train stage on Ray Train workers, as
    ``--workers-per-trial W`` runs it (``nasdet.search.ray_train.train_stage``: a
    ``TorchTrainer`` of W gloo workers with one CPU each on a private local Ray), W = 1
    and W = 2; images/s from rank 0's ``metrics.json`` as in (a), so Ray's start-up and
    the worker group's set-up are excluded and reported apart (``stage_seconds``).
(b) The covariance all-reduce of one spectrum measurement, as ``EigenspectrumHook``
    makes it (``backbone_stages`` + ``fpn``, 16 val images, batch 1): two gloo processes
    each measure their 8 images; the reduction (``_sync_entries`` and
    ``StreamingCovariance.all_reduce`` of every layer) is timed apart from the
    measurement itself (forward passes and eigendecompositions), median of repeats.

Both are ratios measured in the same run; the load average is printed, since the
machine may be shared. On a GPU node (the tool picks nccl when CUDA is present) a run
would need to show: a speed-up close to the number of GPUs at a per-GPU batch that fills
each device (tiny 128 px batches are launch-bound and would show little), the gradient
all-reduce hidden behind the backward pass, and the spectrum all-reduce (C x C float64
per layer, under a megabyte here) a negligible fraction of the measurement.
"""

from __future__ import annotations

import argparse
import json
import os
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

TINY_CONFIG = REPO / "configs" / "tiny_faster_rcnn_synth.py"
GPU_NOTE = (
    "A GPU run would need to show: images/s speed-up near the GPU count with a per-GPU "
    "batch that fills each device, the nccl gradient all-reduce overlapped with the "
    "backward pass, and the spectrum all-reduce (C x C float64 per layer) a negligible "
    "fraction of the measurement.")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _torchrun(nproc: int, args: list[str], log: Path) -> None:
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(REPO)}
    env.pop("LOCAL_RANK", None)
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nnodes", "1",
           "--nproc_per_node", str(nproc), "--master-addr", "127.0.0.1",
           "--master-port", str(_free_port()), *args]
    with open(log, "w") as out:
        proc = subprocess.run(cmd, cwd=REPO, env=env, stdout=out, stderr=subprocess.STDOUT)
    if proc.returncode:
        sys.exit(f"error: {' '.join(cmd)} failed (exit {proc.returncode}); see {log}")


def _config(root: Path, work: Path, iters: int, batch: int, *, train_only: bool = True) -> Any:
    from nasdet.data.roots import set_data_root
    from nasdet.train import load_config

    cfg = load_config(TINY_CONFIG, work_dir=work, cfg_options={
        "train_dataloader.batch_size": batch,
        "default_hooks.logger.interval": 10,
        "param_scheduler": [],
        "visualizer.vis_backends": [dict(type="LocalVisBackend")],
    })
    set_data_root(cfg, root)
    cfg.pop("synthetic_data")
    cfg.train_cfg = dict(type="IterBasedTrainLoop", max_iters=iters, val_interval=iters + 1)
    if train_only:
        for key in ("val_cfg", "val_dataloader", "val_evaluator"):
            cfg[key] = None
    cfg.default_hooks.checkpoint = None  # nothing written but the metrics and logs
    cfg.log_processor = dict(type="LogProcessor", window_size=10, by_epoch=False)
    return cfg


def bench_training(root: Path, tmp: Path, iters: int, batch: int) -> dict[str, Any]:
    """Images/s of ``iters`` training iterations with 1 and 2 torchrun workers."""
    out: dict[str, Any] = {}
    for world in (1, 2):
        work = tmp / f"train_w{world}"
        cfg = _config(root, work, iters, batch)
        path = tmp / f"tiny_w{world}.py"
        cfg.dump(str(path))
        _torchrun(world, [str(REPO / "tools" / "train.py"), str(path), "--launcher",
                          "pytorch", "--work-dir", str(work)], tmp / f"train_w{world}.log")
        metrics = json.loads((work / "metrics.json").read_text())
        assert metrics["world_size"] == world and metrics["iter"] == iters, metrics
        seconds = sum(t["seconds"] for t in metrics["train_time"])
        out[f"world{world}"] = {"seconds": seconds, "images": iters * batch * world,
                                "images_per_s": iters * batch * world / seconds}
    out["speedup_2_vs_1"] = out["world2"]["images_per_s"] / out["world1"]["images_per_s"]
    return out


def bench_ray_train(root: Path, tmp: Path, iters: int, batch: int) -> dict[str, Any]:
    """Images/s of the same iterations as one trial's train stage on 1 and 2 Ray Train
    workers."""
    import ray

    from nasdet.search.ray_train import WorkerScaling, train_stage
    from nasdet.utils.output import output_to
    from nasdet.utils.ray_cluster import connect_ray

    out: dict[str, Any] = {}
    with output_to(tmp / "ray_init.log"):  # Ray's own start-up lines
        started = connect_ray(None)
    try:
        for world in (1, 2):
            trial_dir = tmp / f"ray_w{world}"
            work = trial_dir / "train"
            work.mkdir(parents=True)
            cfg = _config(root, work, iters, batch)
            t0 = time.perf_counter()
            with output_to(trial_dir / "driver.log"):
                train_stage(cfg, "bench", trial_dir, WorkerScaling(world, cpus_per_worker=1))
            stage_seconds = time.perf_counter() - t0
            metrics = json.loads((work / "metrics.json").read_text())
            assert metrics["world_size"] == world and metrics["iter"] == iters, metrics
            seconds = sum(t["seconds"] for t in metrics["train_time"])
            out[f"world{world}"] = {"seconds": seconds, "images": iters * batch * world,
                                    "images_per_s": iters * batch * world / seconds,
                                    "stage_seconds": stage_seconds}
    finally:
        if started:
            ray.shutdown()
    out["speedup_2_vs_1"] = out["world2"]["images_per_s"] / out["world1"]["images_per_s"]
    return out


# ----------------------------------------------------------------------------- spectrum
def spectrum_worker(root: Path, out_dir: Path, repeats: int) -> None:
    """One torchrun process of (b): time the measurement and the all-reduce apart."""
    import torch
    import torch.distributed as dist

    from nasdet.models.utils.build import build_detector
    from nasdet.spectrum import SpectrumProbe, StreamingCovariance
    from nasdet.spectrum.detector import (
        _sync_entries,
        build_probe_dataset,
        iter_probe_batches,
        measure_spectra,
    )

    torch.set_num_threads(1)
    dist.init_process_group("gloo", init_method="env://")
    rank, world = dist.get_rank(), dist.get_world_size()
    cfg = _config(root, out_dir / "spectrum_work", 1, 1, train_only=False)
    model = build_detector(cfg).eval()
    dataset = build_probe_dataset(cfg, "val")
    layers, num_images = ["backbone_stages", "fpn"], 16
    mine = list(range(rank, num_images, world))  # as EigenspectrumHook shares the images
    measure = []
    for _ in range(repeats):
        dist.barrier()
        t0 = time.perf_counter()
        measure_spectra(model, iter_probe_batches(dataset, mine, 1), layers=layers,
                        full_forward=False, all_reduce=False)
        measure.append(time.perf_counter() - t0)
    with torch.no_grad(), SpectrumProbe(model, layers) as probe:
        for batch in iter_probe_batches(dataset, mine, 1):
            model.extract_feat(model.data_preprocessor(batch, False)["inputs"])
    states = {name: acc.state_dict() for name, acc in probe.accumulators.items()}
    reduce = []
    for _ in range(repeats):
        accs = {}
        for name, state in states.items():
            accs[name] = StreamingCovariance(state["num_features"])
            accs[name].load_state_dict(state)
        dist.barrier()
        t0 = time.perf_counter()
        _sync_entries(accs, torch.device("cpu"))
        for name in sorted(accs):
            accs[name].all_reduce()
        reduce.append(time.perf_counter() - t0)
    nbytes = sum(8 * (s["num_features"] ** 2 + 3 * s["num_features"] + 1)
                 for s in states.values())
    if rank == 0:
        (out_dir / "spectrum.json").write_text(json.dumps({
            "measure_s": statistics.median(measure), "all_reduce_s": statistics.median(reduce),
            "layers": len(states), "images_per_rank": len(mine), "bytes_reduced": nbytes}))
    dist.destroy_process_group()


def bench_spectrum(root: Path, tmp: Path, repeats: int) -> dict[str, Any]:
    _torchrun(2, [__file__, "--spectrum-worker", str(tmp), "--data", str(root),
                  "--repeats", str(repeats)], tmp / "spectrum.log")
    out = json.loads((tmp / "spectrum.json").read_text())
    out["all_reduce_vs_measure"] = out["all_reduce_s"] / out["measure_s"]
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--iters", type=int, default=30, help="training iterations per run")
    parser.add_argument("--batch", type=int, default=4, help="images per process and step")
    parser.add_argument("--repeats", type=int, default=5, help="spectrum timing repeats")
    parser.add_argument("--no-ray", action="store_true",
                        help="skip (a'), the Ray Train workers")
    parser.add_argument("--out", help="write the figures as JSON to this path")
    parser.add_argument("--spectrum-worker", help=argparse.SUPPRESS)
    parser.add_argument("--data", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.spectrum_worker:
        spectrum_worker(Path(args.data), Path(args.spectrum_worker), args.repeats)
        return 0

    from nasdet.data import ensure_dataset

    with tempfile.TemporaryDirectory(prefix="ddp-scaling-") as name:
        tmp = Path(name)
        root = ensure_dataset("detection", tmp / "det", num_classes=4, image_size=128,
                              num_train=64, num_val=16, seed=0, progress=False)
        load = os.getloadavg()
        train = bench_training(root, tmp, args.iters, args.batch)
        ray_train = None if args.no_ray else bench_ray_train(root, tmp, args.iters, args.batch)
        spectrum = bench_spectrum(root, tmp, args.repeats)
    w1, w2 = train["world1"], train["world2"]
    print(f"load average before: {load[0]:.2f}  cores: {os.cpu_count()}  (CPU, gloo, "
          "1 thread per process)")
    print(f"(a) tiny detector, {args.iters} iterations x {args.batch} images per process")
    print(f"    1 worker : {w1['images_per_s']:7.2f} images/s ({w1['seconds']:.1f} s)")
    print(f"    2 workers: {w2['images_per_s']:7.2f} images/s ({w2['seconds']:.1f} s)")
    print(f"    speed-up 2 vs 1: {train['speedup_2_vs_1']:.2f} (linear: 2)")
    if ray_train is not None:
        r1, r2 = ray_train["world1"], ray_train["world2"]
        print("(a') the same as a trial's train stage on Ray Train workers (gloo, 1 CPU each)")
        print(f"    1 worker : {r1['images_per_s']:7.2f} images/s ({r1['seconds']:.1f} s; "
              f"stage with set-up {r1['stage_seconds']:.1f} s)")
        print(f"    2 workers: {r2['images_per_s']:7.2f} images/s ({r2['seconds']:.1f} s; "
              f"stage with set-up {r2['stage_seconds']:.1f} s)")
        print(f"    speed-up 2 vs 1: {ray_train['speedup_2_vs_1']:.2f} (linear: 2); Ray "
              f"Train vs torchrun at 2 workers: "
              f"{r2['images_per_s'] / w2['images_per_s']:.2f}")
    print(f"(b) spectrum of {spectrum['layers']} layers, {spectrum['images_per_rank']} "
          f"images per process, {spectrum['bytes_reduced'] / 1e6:.2f} MB reduced")
    print(f"    measurement {spectrum['measure_s'] * 1e3:.1f} ms, all-reduce "
          f"{spectrum['all_reduce_s'] * 1e3:.2f} ms: ratio "
          f"{spectrum['all_reduce_vs_measure']:.4f}")
    print(GPU_NOTE)
    if args.out:
        from nasdet.utils.io import atomic_write_json

        atomic_write_json(args.out, {
            "training": train, "ray_train": ray_train, "spectrum": spectrum, "load_average": load[0],
            "iters": args.iters, "batch_per_process": args.batch,
            "units": "images_per_s: training images per second over all processes "
                     "(rank 0's iteration wall clock); seconds: wall clock; bytes: float64 "
                     "state of the reduced accumulators",
            "gpu_note": GPU_NOTE})
        print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
