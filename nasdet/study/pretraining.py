"""The pre-training study: I vs S, their eigenspectra and ID dynamics, widths derived from ID.

The seed paper's workflow as one resumable run (``tools/study_pretraining.py``):

1. the I config's backbone checkpoint: given, or pre-trained on the source task
   (:func:`nasdet.train.pretrain.pretrain`) when the file is missing;
2. train I (fine-tuned) and S (from scratch) for every seed with the
   :class:`~nasdet.hooks.EigenspectrumHook` on: AP, and the ID of every probed layer
   after every epoch;
3. eigenspectra of the pre-trained backbone before fine-tuning (the I config's
   initialisation), of trained I, of S at initialisation and of trained S, on the same
   validation images;
4. widths proportional to trained S's stage ID within a MACs (or params) budget
   (:func:`nasdet.space.derive_widths.derive_config`), retrained from scratch with S's
   recipe for every seed;
5. one report (:func:`nasdet.report.pretraining_study.write_study_report`).

Layout of ``work_dir``::

    pretrain/backbone.pth          when it had to be pre-trained here
    runs/<model>_seed<k>/          mmengine work dir of each training: config.py,
                                   run.json (AP, seconds), eigenspectrum_history.json
    spectrum/                      spectrum.json and figures of step 3
    derived_config.py              step 4's config (tools/train.py retrains it)
    study.json                     everything the report shows
    report/                        report.md and its PNGs

A run with ``run.json`` is never trained again, and a killed run continues from its
last epoch checkpoint, so a killed study loses at most the epoch in flight.
"""

from __future__ import annotations

import copy
import json
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from nasdet.errors import NasdetError
from nasdet.train.pretrain import DEFAULT_EPOCHS
from nasdet.utils.io import atomic_write_json, atomic_write_text

__all__ = ["StudyOptions", "run_pretraining_study", "train_run"]

MODELS = ("I", "S", "D")
MODEL_NAMES = {
    "I": "I: fine-tuned from the pre-trained backbone",
    "S": "S: from scratch",
    "D": "D: from scratch, widths derived from S's stage ID",
}


@dataclass
class StudyOptions:
    """What the study runs.

    Args:
        i_config: Config of I, a ``finetune``-family strategy written in full with its
            ``transfer`` record (``configs/study/*_I.py``); its checkpoint is the backbone's
            ``init_cfg``.
        s_config: Config of S (``scratch``, written in full with its record).
        work_dir: Output directory.
        seeds: Training seeds of every model.
        epochs: I's training epochs (None: its config's); S and D get S's
            ``schedule_factor`` times as many.
        checkpoint: I's pre-trained backbone (None: the I config's, pre-trained into
            ``work_dir/pretrain`` when that file does not exist).
        pretrain_epochs: Epochs of that pre-training.
        pretrain_data: ImageNet-style folder of the source task (None: the synthetic one).
        layers: Probed layers (presets / patterns); ``backbone_stages`` is needed for
            derived widths.
        num_images: Validation images of every spectrum.
        interval: Epochs between ID measurements during training.
        derive_metric: ``macs`` or ``params`` for the derived widths.
        derive_budget: Allowed cost of D as a fraction of S's.
        derive: Derive and retrain widths (step 4).
        cfg_options: Overrides of both configs (e.g. a training subset).
        backend: ``local`` (one run after another) or ``ray`` (runs as Ray tasks).
        address: Ray cluster head (``ray`` backend; None: a private local instance).
        cpus_per_run: CPUs a Ray task reserves.
        gpus_per_run: GPUs a Ray task reserves.
    """

    i_config: str | Path
    s_config: str | Path
    work_dir: str | Path
    seeds: Sequence[int] = (0,)
    epochs: int | None = None
    checkpoint: str | None = None
    pretrain_epochs: int = DEFAULT_EPOCHS
    pretrain_data: str | None = None
    layers: Sequence[str] = ("backbone_stages", "fpn")
    num_images: int = 32
    interval: int = 1
    derive_metric: str = "macs"
    derive_budget: float = 1.0
    derive: bool = True
    cfg_options: dict[str, Any] = field(default_factory=dict)
    backend: str = "local"
    address: str | None = None
    cpus_per_run: float = 1.0
    gpus_per_run: float = 0.0


# ------------------------------------------------------------------------------ configs
def _check_options(opts: StudyOptions) -> None:
    if opts.backend not in ("local", "ray"):
        raise NasdetError(f"must be local or ray, got {opts.backend!r}", key="--backend")
    if not opts.seeds or len(set(opts.seeds)) != len(opts.seeds):
        raise NasdetError(f"give distinct seeds, got {list(opts.seeds)}", key="--seeds")
    for key, value in (("--num-images", opts.num_images), ("--interval", opts.interval),
                       ("--pretrain-epochs", opts.pretrain_epochs)):
        if not isinstance(value, int) or value < 1:
            raise NasdetError(f"must be a positive integer, got {value!r}", key=key)
    if opts.epochs is not None and (not isinstance(opts.epochs, int) or opts.epochs < 1):
        raise NasdetError(f"must be a positive integer, got {opts.epochs!r}", key="--epochs")
    if opts.derive and not any("backbone" in str(x) for x in opts.layers):
        raise NasdetError("derived widths need the backbone stages among the probed layers "
                          "(add backbone_stages)", key="--layers")


def _declared_transfer(path: Path, expected: tuple[str, ...], key: str) -> dict[str, Any]:
    """The ``transfer`` record of a study config (checked before anything trains).

    A bare declaration without ``fragment`` is refused here, by :func:`load_config`, so a
    study never pre-trains a backbone for a config it cannot train.
    """
    from nasdet.train import load_config

    if not path.is_file():
        raise NasdetError("config file not found", file=path, key=key)
    record = load_config(path).get("transfer")
    if not isinstance(record, dict) or record.get("type") not in expected:
        raise NasdetError(
            f"the study needs a config written in full with a transfer record of type in "
            f"{list(expected)} (see configs/study/), got {record!r}", file=path,
            key=f"{key} transfer")
    return dict(record)


def _i_checkpoint(opts: StudyOptions, work_dir: Path, progress: bool) -> str:
    """I's backbone: given, pre-trained here before, the config's, or pre-trained now."""
    from mmengine.config import Config

    from nasdet.transfer import STRATEGIES
    from nasdet.utils.checkpoint import is_url
    from nasdet.utils.config import pretrained_checkpoint

    i_path = Path(opts.i_config)
    _declared_transfer(
        i_path, tuple(n for n, s in STRATEGIES.items() if s.needs_checkpoint), "--i-config")
    ckpt = opts.checkpoint or pretrained_checkpoint(Config.fromfile(str(i_path)))
    target = work_dir / "pretrain" / "backbone.pth"
    if not opts.checkpoint and target.is_file():
        # Pre-trained here by an earlier invocation: later seeds fine-tune the same
        # backbone, even if the config's checkpoint has appeared since.
        return str(target)
    if ckpt and (is_url(str(ckpt)) or Path(ckpt).is_file()):
        return str(ckpt) if is_url(str(ckpt)) else str(Path(ckpt).absolute())
    if opts.checkpoint:
        raise NasdetError("checkpoint file not found", file=opts.checkpoint, key="--checkpoint")
    from nasdet.train.pretrain import pretrain

    source = Config.fromfile(str(i_path))
    source.pop("transfer")
    print(f"[study] {ckpt or 'no checkpoint'} not found: pre-training I's backbone for "
          f"{opts.pretrain_epochs} epochs into {target}", flush=True)
    pretrain(source, data=opts.pretrain_data, epochs=opts.pretrain_epochs,
             work_dir=target.parent, progress=progress)
    return str(target)


def _check_finished_i_runs(runs: Path, ckpt: str) -> None:
    """Refuse to mix source backbones within one study: finished I runs used ``ckpt``."""
    from mmengine.config import Config

    for done in sorted(runs.glob("I_seed*/run.json")):
        from nasdet.utils.config import pretrained_checkpoint

        used = pretrained_checkpoint(Config.fromfile(str(done.parent / "config.py")))
        if used and str(used) != ckpt:
            raise NasdetError(
                f"{done.parent.name} of this study was fine-tuned from {used}, this "
                f"invocation would fine-tune from {ckpt}; pass --checkpoint {used} to "
                "continue the study, or use another --work-dir", key="--checkpoint")


def _load(path: str | Path, opts: StudyOptions, extra: dict[str, Any]):
    from nasdet.train import load_config

    return load_config(path, cfg_options={**opts.cfg_options, **extra})


def _schedule(cfg, epochs: int | None):
    from nasdet.transfer import set_training_length

    if epochs is not None:
        set_training_length(cfg, epochs)  # times the config's schedule rule (S: 2x)
    return cfg


def _prepare_run(cfg, run_dir: Path, seed: int, opts: StudyOptions) -> Path:
    """Write the run's standalone config (hook, seed, checkpoints, absolute data root)."""
    from nasdet.data.roots import prepare_data, set_data_root

    cfg = copy.deepcopy(cfg)
    prepare_data(cfg)  # generate the synthetic data once, here, not in every Ray task
    set_data_root(cfg, Path(str(cfg.get("data_root", "data"))).absolute())
    cfg.pop("synthetic_data", None)
    cfg.work_dir = str(run_dir)
    cfg.randomness = dict(cfg.get("randomness") or {}) | {"seed": int(seed)}
    epochs = int(cfg.train_cfg.get("max_epochs", 1))
    hooks = [h for h in (cfg.get("custom_hooks") or []) if h.get("type") != "EigenspectrumHook"]
    hooks.append(dict(type="EigenspectrumHook", layers=list(opts.layers),
                      interval=min(opts.interval, epochs), by_epoch=True,
                      num_images=opts.num_images, split="val"))
    cfg.custom_hooks = hooks
    imports = dict(cfg.get("custom_imports") or {})
    mods = list(imports.get("imports") or [])
    cfg.custom_imports = dict(imports=mods + [m for m in ("nasdet.models", "nasdet.hooks")
                                              if m not in mods],
                              allow_failed_imports=imports.get("allow_failed_imports", False))
    ckpt_hook = cfg.default_hooks.checkpoint
    ckpt_hook.interval, ckpt_hook.max_keep_ckpts, ckpt_hook.save_best = 1, 1, None
    cfg.default_hooks.logger.interval = 50
    run_dir.mkdir(parents=True, exist_ok=True)
    path = run_dir / "config.py"
    atomic_write_text(path, cfg.dump())
    return path


def train_run(config_path: str, model: str, seed: int) -> dict[str, Any]:
    """Train one run from its config file (resuming its last epoch) and write ``run.json``.

    A plain function of a path, so Ray can run it on any node that sees the work dir.
    """
    from nasdet.train import load_config, train

    cfg = load_config(config_path)
    run_dir = Path(cfg.work_dir)
    start = time.perf_counter()
    metrics = train(cfg, resume="auto")
    seconds = time.perf_counter() - start
    epochs = int(cfg.train_cfg.max_epochs)
    record = {
        "model": model, "seed": int(seed), "epochs": epochs,
        "ap": float(metrics.get("coco/bbox_mAP", 0.0)),
        "ap50": float(metrics.get("coco/bbox_mAP_50", 0.0)),
        "ap75": float(metrics.get("coco/bbox_mAP_75", 0.0)),
        "train_seconds": seconds,
        "checkpoint": str(run_dir / f"epoch_{epochs}.pth"),
        "history": str(run_dir / "eigenspectrum_history.json"),
        "units": "ap*: COCO box AP (pycocotools) as fractions; train_seconds: wall clock "
                 "of this session's training (a resumed run counts its last part only)",
    }
    atomic_write_json(run_dir / "run.json", record)
    return record


def _run_all(jobs: list[tuple[str, str, int]], opts: StudyOptions) -> list[dict[str, Any]]:
    """Train the ``(config path, model, seed)`` jobs not finished yet; return every record."""
    records: dict[int, dict[str, Any]] = {}
    todo = []
    for i, (path, _, _) in enumerate(jobs):
        done = Path(path).parent / "run.json"
        if done.is_file():
            records[i] = json.loads(done.read_text())
        else:
            todo.append(i)
    if todo and opts.backend == "ray":
        import ray

        from nasdet.utils.ray_cluster import connect_ray

        started = connect_ray(opts.address)
        try:
            remote = ray.remote(num_cpus=opts.cpus_per_run, num_gpus=opts.gpus_per_run,
                                max_retries=0)(train_run)
            futures = {i: remote.remote(*jobs[i]) for i in todo}
            for i, fut in futures.items():
                records[i] = ray.get(fut)
                print(f"[study] {jobs[i][1]} seed {jobs[i][2]}: AP {records[i]['ap']:.3f} "
                      f"(Ray task)", flush=True)
        finally:
            if started:
                ray.shutdown()
    else:
        for n, i in enumerate(todo, start=1):
            path, model, seed = jobs[i]
            print(f"[study] training {model} seed {seed} ({n}/{len(todo)}): {path}", flush=True)
            records[i] = train_run(path, model, seed)
            print(f"[study] {model} seed {seed}: AP {records[i]['ap']:.3f}, AP50 "
                  f"{records[i]['ap50']:.3f}, {records[i]['train_seconds']:.0f} s", flush=True)
    return [records[i] for i in range(len(jobs))]


# ------------------------------------------------------------------------------ the study
def run_pretraining_study(opts: StudyOptions, *, report_dir: str | Path | None = None,
                          progress: bool = True) -> dict[str, Any]:
    """Run (or continue) the study and write its report.

    Args:
        opts: What to run.
        report_dir: Also write the report here (e.g. ``docs/pretraining_study``).
        progress: Progress bars of pre-training and spectra.

    Returns:
        The study summary (also ``work_dir/study.json``).
    """
    from nasdet.models.utils.macs import config_complexity
    from nasdet.report.pretraining_study import write_study_report
    from nasdet.report.spectrum_report import write_spectrum_report
    from nasdet.space.derive_widths import config_input_size, derive_config
    from nasdet.spectrum.analysis import analyze_checkpoints
    from nasdet.train import load_config

    _check_options(opts)
    start = time.perf_counter()
    work_dir = Path(opts.work_dir).absolute()
    work_dir.mkdir(parents=True, exist_ok=True)
    _declared_transfer(Path(opts.s_config), ("scratch",), "--s-config")
    ckpt = _i_checkpoint(opts, work_dir, progress)
    runs = work_dir / "runs"
    _check_finished_i_runs(runs, ckpt)
    from nasdet.utils.config import set_pretrained_checkpoint

    i_cfg = _schedule(set_pretrained_checkpoint(_load(opts.i_config, opts, {}), ckpt), opts.epochs)
    s_cfg = _schedule(_load(opts.s_config, opts, {}), opts.epochs)
    cfgs = {"I": i_cfg, "S": s_cfg}
    jobs = [(str(_prepare_run(cfgs[m], runs / f"{m}_seed{s}", s, opts)), m, s)
            for s in opts.seeds for m in ("I", "S")]
    records = _run_all(jobs, opts)

    # Eigenspectra on the same validation images, first seed's runs.
    first = {r["model"]: r for r in records if r["seed"] == opts.seeds[0]}
    spectra = []
    for model, labels in (("I", ("I pre-trained", "I")), ("S", ("S init", "S"))):
        path = runs / f"{model}_seed{opts.seeds[0]}" / "config.py"
        res = analyze_checkpoints(load_config(path), [None, first[model]["checkpoint"]],
                                  layers=list(opts.layers), num_images=opts.num_images,
                                  labels=list(labels), progress=progress)
        spectra.append(res)
    merged = dict(spectra[0])
    merged["checkpoints"] = spectra[0]["checkpoints"] + spectra[1]["checkpoints"]
    merged["meta"] = dict(merged["meta"]) | {
        "config": f"I: {opts.i_config}; S: {opts.s_config}"}
    write_spectrum_report(merged, work_dir / "spectrum")

    size = config_input_size(s_cfg)
    complexity = {m: config_complexity(c, size).to_dict() for m, c in cfgs.items()}
    derived = None
    if opts.derive:
        s_run_cfg = load_config(runs / f"S_seed{opts.seeds[0]}" / "config.py")
        d_cfg, proposal = derive_config(s_run_cfg, spectra[1], label="S",
                                        metric=opts.derive_metric, budget=opts.derive_budget,
                                        input_size=size)
        d_cfg.pop("custom_hooks", None)
        atomic_write_text(work_dir / "derived_config.py", d_cfg.dump())
        complexity["D"] = config_complexity(d_cfg, size).to_dict()
        d_jobs = [(str(_prepare_run(d_cfg, runs / f"D_seed{s}", s, opts)), "D", s)
                  for s in opts.seeds]
        records += _run_all(d_jobs, opts)
        derived = proposal.to_dict() | {"config": str(work_dir / "derived_config.py")}

    histories = {}
    for model in ("I", "S", "D"):
        path = runs / f"{model}_seed{opts.seeds[0]}" / "eigenspectrum_history.json"
        if path.is_file():
            histories[model] = json.loads(path.read_text())
    summary = {
        "format": "nasdet.pretraining-study/1",
        "options": {k: (list(v) if isinstance(v, tuple) else v)
                    for k, v in vars(opts).items()} | {
            "i_config": str(opts.i_config), "s_config": str(opts.s_config),
            "work_dir": str(work_dir)},
        "checkpoint": ckpt,
        "pretrain": _pretrain_meta(ckpt),
        "epochs": {m: int(c.train_cfg.max_epochs) for m, c in cfgs.items()},
        "runs": records,
        "complexity": complexity,
        "input_size": list(size),
        "spectrum": merged,
        "histories": histories,
        "derived": derived,
        "seconds": time.perf_counter() - start,
        "units": {"ap": "COCO box AP as fractions", "params": "distinct parameter scalars",
                  "macs": f"multiply-accumulates per {size[0]}x{size[1]} image",
                  "id": "Suzuki's degrees of freedom N(lambda), dimensions",
                  "seconds": "wall clock of this invocation"},
    }
    atomic_write_json(work_dir / "study.json", summary)
    write_study_report(summary, work_dir / "report")
    if report_dir is not None:
        write_study_report(summary, report_dir)
    return summary


def _pretrain_meta(ckpt: str) -> dict[str, Any] | None:
    """Source task, epochs and accuracy of a nasdet pre-training checkpoint."""
    from nasdet.utils.checkpoint import is_url

    if is_url(ckpt):
        return {"source": ckpt}
    metrics = Path(ckpt).with_name("pretrain_metrics.json")
    if not metrics.is_file():
        return None
    meta = json.loads(metrics.read_text())
    return {k: meta.get(k) for k in ("source", "data", "epochs", "val_top1", "train_seconds")} | {
        "classes": len(meta.get("classes") or [])}
