"""Train and test detectors through mmengine's Runner.

The Runner does the work; this module adds what a researcher otherwise meets as a
traceback halfway into a run: unknown module types, missing data, an unwritable work
dir, a checkpoint of another architecture, and torch >= 2.6's safe loading of
mmengine's own checkpoints (see :mod:`nasdet.utils.checkpoint`).

Distributed runs: :mod:`nasdet.train.launch`.
"""

from __future__ import annotations

import itertools
import json
import shutil
from pathlib import Path
from typing import Any

from mmengine.config import Config
from mmengine.runner import Runner, find_latest_checkpoint

from nasdet.errors import NasdetError
from nasdet.models.utils.build import check_model_types
from nasdet.train.checks import check_loops, check_work_dir
from nasdet.train.launch import prepare_data_once, setup_launcher
from nasdet.utils.checkpoint import (
    allow_mmengine_checkpoints,
    check_state_dict_fits,
    load_checkpoint_file,
)


def _enable_amp(cfg: Config) -> None:
    import torch

    if not torch.cuda.is_available():
        raise NasdetError("mixed precision needs a CUDA device; none is available", key="--amp")
    if cfg.optim_wrapper.get("type", "OptimWrapper") == "AmpOptimWrapper":
        return
    cfg.optim_wrapper.type = "AmpOptimWrapper"
    cfg.optim_wrapper.loss_scale = "dynamic"


def _resume_path(cfg: Config, resume: bool | str) -> str | None:
    if not resume:
        return None
    if resume is True or resume == "auto":
        return find_latest_checkpoint(cfg.work_dir)  # None: start fresh, as mmdet does
    if not Path(resume).is_file():
        raise NasdetError("checkpoint to resume from not found", file=resume, key="--resume")
    return str(resume)


_RUNS = itertools.count()


def _fresh_visualizer(cfg: Config) -> None:
    """Give this run its own visualizer.

    mmengine builds visualizers through ``get_instance(name)``: a second Runner in the
    same process (the next trial of a search, the next job of a benchmark) would get the
    first one's, and write its scalars into the first run's directory.
    """
    vis = cfg.get("visualizer")
    if isinstance(vis, dict):
        vis["name"] = f"{vis.get('name', 'visualizer')}_run{next(_RUNS)}"


def build_runner(
    cfg: Config,
    *,
    resume: bool | str = False,
    amp: bool = False,
    progress: bool = True,
    strict_load: bool = False,
) -> Runner:
    """Check ``cfg`` and build an mmengine Runner from it.

    Args:
        cfg: Loaded config (see :func:`nasdet.train.load_config`).
        resume: ``False``; ``True``/``'auto'`` for the latest checkpoint in the work dir;
            or a checkpoint path.
        amp: Train with automatic mixed precision (CUDA only).
        progress: Progress bar while generating the synthetic dataset.
        strict_load: Every weight of the model must come from ``load_from`` (what
            testing a checkpoint needs; fine-tuning may leave a new head random).

    Returns:
        The Runner, its model built and any checkpoint checked against it.
    """
    allow_mmengine_checkpoints()
    setup_launcher(cfg)  # cfg.launcher, e.g. set by tools/train.py --launcher pytorch
    check_work_dir(cfg.work_dir)
    check_model_types(cfg)
    check_loops(cfg)
    prepare_data_once(cfg, progress=progress)
    if amp:
        _enable_amp(cfg)
    ckpt = _resume_path(cfg, resume)
    if ckpt:
        cfg.resume, cfg.load_from = True, ckpt
    elif resume:
        cfg.resume = False  # 'auto' with nothing to resume: a fresh run
    _fresh_visualizer(cfg)
    hooks = list(cfg.get("custom_hooks") or [])
    if not any(h.get("type") == "MetricsDumpHook" for h in hooks):
        cfg.custom_hooks = [*hooks, dict(type="MetricsDumpHook")]
    existed = Path(cfg.work_dir).exists()
    runner = Runner.from_cfg(cfg)
    try:
        _check_load_from(runner, cfg, strict_load)
    except NasdetError:
        # Refused before any work: leave nothing of this run behind.
        shutil.rmtree(cfg.work_dir if not existed else runner.log_dir, ignore_errors=True)
        raise
    return runner


def _check_load_from(runner: Runner, cfg: Config, strict_load: bool) -> None:
    if not cfg.get("load_from"):
        return
    src = cfg.load_from
    key = "--resume" if cfg.get("resume") else "load_from"
    if not Path(src).is_file() and "://" not in str(src):
        raise NasdetError("checkpoint not found", file=src, key=key)
    if "://" not in str(src):
        state = load_checkpoint_file(src)
        from mmengine.model import is_model_wrapper

        model = runner.model.module if is_model_wrapper(runner.model) else runner.model
        skipped = check_state_dict_fits(
            model, state["state_dict"], file=src,
            strict=bool(cfg.get("resume")) or strict_load)
        if skipped:
            runner.logger.warning(
                f"{src}: {len(skipped)} entries have other shapes and are not loaded: "
                f"{', '.join(skipped[:5])}{' ...' if len(skipped) > 5 else ''}")


def train(cfg: Config, *, resume: bool | str = False, amp: bool = False) -> dict[str, Any]:
    """Train ``cfg`` and return the last validation metrics (``{}`` if none ran).

    Args:
        cfg: Loaded config.
        resume: See :func:`build_runner`.
        amp: See :func:`build_runner`.

    Returns:
        The metrics of the last validation epoch, as mmdet names them.
    """
    runner = build_runner(cfg, resume=resume, amp=amp)
    runner.train()
    return read_metrics(cfg.work_dir, "val")


def evaluate(cfg: Config, checkpoint: str | Path) -> dict[str, Any]:
    """Evaluate ``checkpoint`` on the config's test split.

    Args:
        cfg: Loaded config.
        checkpoint: The trained weights.

    Returns:
        The test metrics.
    """
    if not Path(checkpoint).is_file():
        raise NasdetError("checkpoint not found", file=checkpoint, key="CHECKPOINT")
    cfg.load_from = str(checkpoint)
    cfg.resume = False
    for key in ("train_dataloader", "train_cfg", "optim_wrapper", "param_scheduler"):
        cfg.pop(key, None)  # testing needs no training data on disk
    runner = build_runner(cfg, strict_load=True)  # a half-random model is no result
    return dict(runner.test())


def read_metrics(work_dir: str, split: str) -> dict[str, Any]:
    """The last ``split`` metrics a run wrote to ``<work_dir>/metrics.json`` ({} if none)."""
    path = Path(work_dir) / "metrics.json"
    if not path.is_file():
        return {}
    return json.loads(path.read_text()).get(split, {})
