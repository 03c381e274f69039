"""Build (or extend) a tabular benchmark: sample architectures, score, train, record.

Each job is one (architecture, seed): every proxy at initialisation, then a training
to the budget with a validation and an ID measurement after every epoch. The job's
row is written when it ends; a killed job resumes from its last epoch checkpoint.

Architectures are a pure function of ``(sample_seed, arch_id)``, so a table extended
to more architectures on another machine draws the same first ones. Jobs are claimed
with ``flock`` on files in the work dir: any number of worker processes (on one
machine, or several sharing the work dir over a POSIX file system) take distinct jobs,
and a killed worker's claim is released with its process.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import platform
import shutil
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from nasdet.benchmark.proposals import PROPOSAL_IDS_FROM, read_proposals
from nasdet.benchmark.table import FORMAT, assemble, read_row, row_name, write_row
from nasdet.errors import NasdetError

#: Layers whose ID the table records: backbone stages and FPN levels.
ID_LAYERS = ("backbone_stages", "fpn")


@dataclass(frozen=True)
class BenchmarkPlan:
    """What a benchmark trains.

    Args:
        space: Search space YAML.
        num_archs: Architectures (ids ``0..num_archs-1``).
        repeats: Architectures ``0..repeats-1`` are also trained with seed ``seed + 1``.
        epochs: Training budget (epochs; validation after each).
        seed: Training seed of every first run.
        sample_seed: Seed of the architecture draws.
        probe_images: Training images the proxies see.
        spectrum_images: Training images of each ID measurement.
        cfg_options: Overrides for every architecture's config (the data, the budget).
        data_root: Dataset root (default: the base config's).
    """

    space: str
    num_archs: int
    repeats: int = 0
    epochs: int = 16
    seed: int = 0
    sample_seed: int = 0
    probe_images: int = 8
    spectrum_images: int = 16
    cfg_options: tuple[tuple[str, Any], ...] = ()
    data_root: str | None = None

    def __post_init__(self) -> None:
        if not 0 < self.num_archs <= PROPOSAL_IDS_FROM:
            raise NasdetError(f"must be in 1..{PROPOSAL_IDS_FROM} (ids from {PROPOSAL_IDS_FROM} "
                              f"on are the ID-guided proposals'), got {self.num_archs}",
                              key="--num-archs")

    def jobs(self) -> list[tuple[int, int]]:
        """``(arch_id, seed)`` in the order they are taken: a repeat after every 2 archs,
        so test-retest pairs accumulate from the start and the 20 pairs that fix the
        target epoch (``analysis.MIN_PAIRS``) are in once 40 architectures are: the
        replay and its proposals need not wait for the whole table."""
        out: list[tuple[int, int]] = []
        repeat = 0
        for arch in range(self.num_archs):
            out.append((arch, self.seed))
            if arch % 2 == 1 and repeat < self.repeats:
                out.append((repeat, self.seed + 1))
                repeat += 1
        out += [(r, self.seed + 1) for r in range(repeat, self.repeats)]
        return out

    def meta(self) -> dict[str, Any]:
        return {"space": self.space, "num_archs": self.num_archs, "repeats": self.repeats,
                "epochs": self.epochs, "seed": self.seed, "sample_seed": self.sample_seed,
                "probe_images": self.probe_images, "spectrum_images": self.spectrum_images,
                "cfg_options": dict(self.cfg_options), "id_layers": list(ID_LAYERS)}


def sample_architectures(space: Any, num_archs: int, sample_seed: int = 0) -> list[dict[str, Any]]:
    """The params of architectures ``0..num_archs-1``, distinct, each drawn uniformly by
    Optuna's RandomSampler seeded from ``(sample_seed, arch_id, attempt)``."""
    import numpy as np
    import optuna

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    out: list[dict[str, Any]] = []
    keys: set[str] = set()
    for arch in range(num_archs):
        for attempt in range(100):
            seed = int(np.random.SeedSequence([sample_seed, arch, attempt]).generate_state(1)[0])
            study = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=seed))
            candidate = space.suggest(study.ask())
            if candidate.key not in keys:
                break
        else:
            raise NasdetError(f"fewer than {num_archs} distinct architectures in the space",
                              file=space.path if hasattr(space, "path") else None)
        keys.add(candidate.key)
        out.append(dict(candidate.params))
    return out


@contextlib.contextmanager
def claim(lock_dir: Path, name: str) -> Iterator[bool]:
    """Hold an exclusive, non-blocking ``flock`` on ``<lock_dir>/<name>.lock``."""
    lock_dir.mkdir(parents=True, exist_ok=True)
    with open(lock_dir / f"{name}.lock", "a") as handle:
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            yield False
            return
        try:
            yield True
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def cpu_of(cpuinfo: str) -> dict[str, str]:
    """The first CPU of a ``/proc/cpuinfo`` text: ``cpu`` (its model name) and, on x86,
    ``cpu_id`` (family, model, stepping). A virtual machine may name CPU generations of
    very different speed alike ("AMD EPYC"); the numbers tell them apart."""
    found: dict[str, str] = {}
    for line in cpuinfo.splitlines():
        key, _, value = (part.strip() for part in line.partition(":"))
        if not key and found:
            break  # the end of the first processor's block
        if key in ("model name", "cpu family", "model", "stepping"):
            found[key] = value
    cpu = {"cpu": found.pop("model name", platform.processor())}
    if found:
        cpu["cpu_id"] = " ".join(f"{k} {v}" for k, v in found.items())
    return cpu


def _machine() -> dict[str, Any]:
    import torch

    cpuinfo = ""
    with contextlib.suppress(OSError):
        cpuinfo = Path("/proc/cpuinfo").read_text()
    return {**cpu_of(cpuinfo), "torch_threads": torch.get_num_threads(),
            "torch": torch.__version__,
            "cuda": torch.cuda.get_device_name(0) if torch.cuda.is_available() else None}


def job_config(space: Any, params: dict[str, Any], seed: int, plan: BenchmarkPlan,
               work_dir: Path) -> Any:
    """The training config of one job: the candidate with the plan's overrides, a
    validation and a checkpoint every epoch, and the ID hook."""
    from nasdet.data.roots import set_data_root

    cfg = space.candidate(params).to_config()
    if plan.cfg_options:
        cfg.merge_from_dict(dict(plan.cfg_options))
    if plan.data_root:
        cfg.pop("synthetic_data", None)
    set_data_root(cfg, Path(plan.data_root or str(cfg.get("data_root", "data"))).absolute())
    cfg.randomness = dict(seed=int(seed), deterministic=False)
    cfg.work_dir = str(work_dir / "train")
    cfg.train_cfg.max_epochs = plan.epochs
    cfg.train_cfg.val_interval = 1
    cfg.default_hooks.checkpoint = dict(type="CheckpointHook", interval=1, max_keep_ckpts=1,
                                        save_best=None)
    cfg.default_hooks.logger.interval = 50
    cfg.log_level = "WARNING"
    cfg.custom_hooks = [*cfg.get("custom_hooks", []), dict(
        type="EigenspectrumHook", layers=list(ID_LAYERS), interval=1,
        num_images=plan.spectrum_images, split="train", plot_file=None)]
    return cfg


def score_proxies(cfg: Any, seed: int, num_images: int,
                  names: list[str] | None = None) -> dict[str, dict[str, Any]]:
    """Every (or the named) registered proxy on the detector as training initialises it."""
    from nasdet.models.utils.build import build_detector
    from nasdet.proxies import MMDetAdapter, compute_proxies, registered_proxies
    from nasdet.search.evaluator import probe_batch

    model = build_detector(cfg, seed=seed)
    adapter = MMDetAdapter(model, probe_batch(cfg, num_images))
    results = compute_proxies(model, adapter, names or registered_proxies())
    return {"proxies": {r.name: float(r.value) for r in results if r.ok},
            "proxy_seconds": {r.name: r.seconds for r in results},
            "proxy_errors": {r.name: r.error for r in results if not r.ok}}


def run_job(space: Any, arch_id: int, params: dict[str, Any], seed: int,
            plan: BenchmarkPlan, work_dir: Path) -> dict[str, Any]:
    """Score and train one (architecture, seed); returns its row (not yet written)."""
    from nasdet.data.roots import prepare_data
    from nasdet.train import train

    cfg = job_config(space, params, seed, plan, work_dir)
    prepare_data(cfg, progress=False)
    # Proxies are scored on a seeded initialisation by rescore(), apart from training,
    # so a proxy added later is scored for every row without retraining any.
    scored: dict[str, Any] = {"proxies": {}, "proxy_seconds": {}, "proxy_errors": {}}
    cost = space.complexity(space.candidate(params))
    train(cfg, resume="auto")
    metrics = json.loads((work_dir / "train" / "metrics.json").read_text())
    history = json.loads((work_dir / "train" / "eigenspectrum_history.json").read_text())
    curve = sorted(metrics["history"], key=lambda h: h["epoch"])
    if [h["epoch"] for h in curve] != list(range(1, plan.epochs + 1)):
        raise NasdetError(f"validation epochs {[h['epoch'] for h in curve]}, expected "
                          f"1..{plan.epochs}", file=work_dir / "train" / "metrics.json")
    times = sorted(metrics["train_time"], key=lambda t: t["epoch"])
    by_epoch = {int(e["epoch"]): e["layers"] for e in history["entries"]}
    layers = list(by_epoch.get(0, {}))
    return {
        "arch_id": int(arch_id), "seed": int(seed), "key": space.candidate(params).key,
        "params": dict(params), "n_params": int(cost["params"]), "macs": int(cost["macs"]),
        "epochs": plan.epochs,
        # No detection at all leaves mmdet's metric at -1 or absent: AP 0.
        "ap": [max(0.0, float(h["metrics"].get("coco/bbox_mAP", 0.0))) for h in curve],
        "ap50": [max(0.0, float(h["metrics"].get("coco/bbox_mAP_50", 0.0))) for h in curve],
        "epoch_seconds": [t["seconds"] for t in times],
        "epoch_cpu_seconds": [t["cpu_seconds"] for t in times],
        "train_seconds": sum(t["seconds"] for t in times),
        "train_cpu_seconds": sum(t["cpu_seconds"] for t in times),
        **scored,
        "id": {n: [by_epoch[e][n]["id"] for e in sorted(by_epoch)] for n in layers},
        "id_per_width": {n: [by_epoch[e][n]["id_per_width"] for e in sorted(by_epoch)]
                         for n in layers},
        "channels": {n: by_epoch[0][n]["channels"] for n in layers},
        "machine": _machine(),
    }


def build_benchmark(plan: BenchmarkPlan, out_dir: str | Path, work_dir: str | Path, *,
                    max_jobs: int | None = None, log=print) -> int:
    """Take unclaimed, unfinished jobs of ``plan`` until none is left (or ``max_jobs``).

    Args:
        plan: What to train.
        out_dir: The benchmark directory (``rows/``, ``table.*``, ``meta.json``).
        work_dir: Training dirs, logs and claims of the jobs.
        max_jobs: Stop after this many jobs of this process.
        log: Where the progress lines go.

    Returns:
        Jobs this process finished.
    """
    from nasdet.space import SearchSpace
    from nasdet.utils.output import output_to

    out_dir, work_dir = Path(out_dir).absolute(), Path(work_dir).absolute()
    space = SearchSpace.from_yaml(plan.space)
    meta_file = out_dir / "meta.json"
    old: dict[str, Any] = {}
    if meta_file.is_file():
        old = json.loads(meta_file.read_text())
        for key in ("space", "epochs", "seed", "sample_seed", "probe_images",
                    "spectrum_images", "cfg_options"):
            mine = plan.meta()[key]
            if key == "space":
                mine, theirs = Path(mine).name, Path(old.get(key, "")).name
            else:
                theirs = old.get(key)
            if theirs != mine:
                raise NasdetError(f"the table was built with {key}={theirs!r}, this command "
                                  f"asks for {mine!r}: use another --out", file=meta_file,
                                  key=key)
    out_dir.mkdir(parents=True, exist_ok=True)
    meta = {**plan.meta(), "space": str(Path(plan.space)), "format": FORMAT}
    # The plan is recorded before training, so a table growing over sessions says what it
    # is being grown to; a smaller command (one taking a few jobs) does not shrink it.
    for key in ("num_archs", "repeats"):
        meta[key] = max(meta[key], int(old.get(key, 0)))
    assemble(out_dir, meta)
    archs = dict(enumerate(sample_architectures(space, plan.num_archs, plan.sample_seed)))
    # ID-guided proposals a replay could not look up (proposals.json): after the plan's.
    proposed = {int(p["arch_id"]): p for p in read_proposals(out_dir)}
    archs.update({arch: dict(p["params"]) for arch, p in proposed.items()})
    jobs = plan.jobs() + [(arch, plan.seed) for arch in sorted(proposed)]
    done = 0
    start = time.perf_counter()
    for arch, seed in jobs:
        name = row_name(arch, seed)
        if (out_dir / "rows" / f"{name}.json").is_file():
            continue
        with claim(work_dir / "locks", name) as mine:
            if not mine or (out_dir / "rows" / f"{name}.json").is_file():
                continue
            job_dir = work_dir / name
            t0 = time.perf_counter()
            log(f"[benchmark] {name}: training {plan.epochs} epochs (log: {job_dir}/job.log)")
            try:
                with output_to(job_dir / "job.log"):
                    row = run_job(space, arch, archs[arch], seed, plan, job_dir)
                if arch in proposed:
                    p = proposed[arch]
                    row.update(origin=p["origin"], source_arch=p["source_arch"],
                               source_seed=p["source_seed"], proposal_epoch=p["epoch"])
            except NasdetError:
                raise
            except Exception as exc:
                raise NasdetError(f"{type(exc).__name__}: {exc} (log: {job_dir}/job.log)",
                                  key=name) from exc
            write_row(out_dir, row)
            assemble(out_dir)  # table.csv / table.json follow every row, as the rows land
            shutil.rmtree(job_dir / "train", ignore_errors=True)
            done += 1
            finished = len(list((out_dir / "rows").glob("*.json")))
            rate = (time.perf_counter() - start) / done
            left = len(jobs) - finished
            log(f"[benchmark] {name}: AP {row['ap'][-1]:.3f} AP50 {row['ap50'][-1]:.3f} "
                f"after {plan.epochs} epochs, {row['train_cpu_seconds']:.0f} CPU s "
                f"({time.perf_counter() - t0:.0f} s wall); {finished}/{len(jobs)} rows; "
                f"this worker's ETA for the rest ~{left * rate / 60:.0f} min")
            if max_jobs is not None and done >= max_jobs:
                break
    return done


def rescore(plan: BenchmarkPlan, out_dir: str | Path, work_dir: str | Path, *,
            names: list[str] | None = None, log=print) -> int:
    """Score every row's missing proxies (all registered ones, or ``names``).

    Proxies see the architecture as training initialises it: the detector built with the
    row's training seed (``build_detector(cfg, seed=row seed)``) and the first
    ``plan.probe_images`` training images. Rows are claimed like jobs, so several
    processes share the work; each row file is rewritten atomically.

    Returns:
        Rows this process rescored.
    """
    from nasdet.benchmark.table import load_benchmark
    from nasdet.proxies import registered_proxies
    from nasdet.space import SearchSpace
    from nasdet.utils.output import output_to

    out_dir, work_dir = Path(out_dir).absolute(), Path(work_dir).absolute()
    space = SearchSpace.from_yaml(plan.space)
    wanted = list(names or registered_proxies())
    done = 0
    for row in load_benchmark(out_dir).rows:
        missing = [n for n in wanted if n not in row.get("proxies", {})
                   and n not in row.get("proxy_errors", {})]
        if not missing:
            continue
        name = row_name(row["arch_id"], row["seed"])
        with claim(work_dir / "locks", f"rescore_{name}") as mine:
            if not mine:
                continue
            # The snapshot above may be stale: another process can have scored this row
            # and released it since. What is missing is decided on the row as it is now.
            current = read_row(out_dir / "rows" / f"{name}.json")
            missing = [n for n in missing if n not in current.get("proxies", {})
                       and n not in current.get("proxy_errors", {})]
            if not missing:
                continue
            cfg = job_config(space, row["params"], row["seed"], plan, work_dir / name)
            with output_to(work_dir / name / "rescore.log"):
                scored = score_proxies(cfg, row["seed"], plan.probe_images, missing)
            for key in ("proxies", "proxy_seconds", "proxy_errors"):
                current[key] = {**current.get(key, {}), **scored[key]}
            current.pop("format", None)
            write_row(out_dir, current)
            done += 1
            log(f"[benchmark] {name}: scored {len(missing)} proxies "
                f"({sum(scored['proxy_seconds'].values()):.1f} s)")
    if done:
        assemble(out_dir)  # table.json / table.csv carry the new scores too
    return done


def worker_main(args: dict[str, Any]) -> int:
    """One worker process (for ``multiprocessing``): pinned threads, then the loop."""
    import torch

    os.environ["OMP_NUM_THREADS"] = str(args["threads"])
    torch.set_num_threads(int(args["threads"]))
    try:
        if args.get("rescore"):
            return rescore(args["plan"], args["out"], args["work_dir"],
                           names=args.get("proxies"))
        return build_benchmark(args["plan"], args["out"], args["work_dir"],
                               max_jobs=args.get("max_jobs"))
    except NasdetError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return -1


def _exit_with_driver(driver_pid: int, every: float = 5.0) -> None:
    """End this worker when its driver is gone (killed): no orphan keeps training.

    The job in flight resumes from its last epoch checkpoint when the table is extended.
    """
    import threading

    def watch() -> None:
        while os.getppid() == driver_pid:
            time.sleep(every)
        os._exit(3)

    threading.Thread(target=watch, daemon=True, name="driver-watch").start()


def worker_process(args: dict[str, Any]) -> None:
    """Entry of a spawned worker: exit status 2 on a user error."""
    if args.get("driver_pid"):
        _exit_with_driver(int(args["driver_pid"]))
    sys.exit(0 if worker_main(args) >= 0 else 2)
