"""``run_search``: the main job, whatever the backend; then the report.

The terminal gets only nasdet's own lines (the drivers' header and trial lines, errors);
what the libraries print while the search runs goes to ``<work_dir>/search.log`` and
each trial's ``trial.log`` (see :func:`nasdet.utils.output.output_to`).
"""

from __future__ import annotations

import sys
import time
from pathlib import Path
from typing import Any, TextIO

from nasdet.errors import NasdetError
from nasdet.search.config import load_search_config
from nasdet.search.trials import SEARCH_LOG
from nasdet.utils.output import output_to, output_to_folder_log


def run_search(
    config_path: str | Path,
    work_dir: str | Path,
    *,
    backend: str = "optuna",
    n_trials: int | None = None,
    storage: str | None = None,
    study_name: str | None = None,
    resume: bool = False,
    address: str | None = None,
    cpus_per_trial: float = 1,
    gpus_per_trial: float = 0,
    keep_checkpoints: bool = False,
    data_root: str | Path | None = None,
    cfg_options: dict[str, Any] | None = None,
    max_failures: int | None = None,
    workers_per_trial: int = 1,
    cpus_per_worker: float = 1,
    gpus_per_worker: float = 0,
    placement_strategy: str = "PACK",
) -> dict[str, Any]:
    """Validate everything, run the search, write the report.

    Args:
        config_path: Search config YAML.
        work_dir: Trials, storage and report go here (absolute paths inside).
        backend: ``optuna`` (in-process) or ``ray`` (Ray Tune, local or ``address``).
        n_trials: Overrides the config's ``n_trials``.
        storage: Optuna storage URL, both backends (default: SQLite in ``work_dir``).
        study_name: Study / experiment name (default: config file stem).
        resume: Continue an interrupted search.
        address: Ray cluster address (ray backend; default: ``RAY_ADDRESS``, if set,
            else a private Ray on 127.0.0.1).
        cpus_per_trial: Ray resources per trial.
        gpus_per_trial: Ray resources per trial.
        keep_checkpoints: Keep trials' checkpoints.
        data_root: Dataset root for every candidate (default: the base config's).
        cfg_options: Overrides applied to every candidate's config.
        max_failures: Overrides the config's ``max_failures`` (retries of a trial cut off
            by a lost worker, node or driver).
        workers_per_trial: Ray Train DDP workers per trial's train stages (ray backend;
            1: the trial's own process).
        cpus_per_worker: Ray resources per worker.
        gpus_per_worker: Ray resources per worker.
        placement_strategy: Placement of a trial's workers (``PACK``, ``SPREAD``,
            ``STRICT_SPREAD``, ``STRICT_PACK``).

    Returns:
        ``{"rows": [...], "report": Path, "elapsed_s": float}``.
    """
    if workers_per_trial != 1 and backend != "ray":
        raise NasdetError("several workers per trial need --backend ray (Ray Train); "
                          "the optuna backend trains each trial in its own process",
                          key="--workers-per-trial")
    work_dir = Path(work_dir).absolute()
    # Validating builds models (checkpoint warnings): into search.log, which exists
    # only once the config is valid (a bad config leaves no work dir behind).
    with output_to_folder_log(work_dir, SEARCH_LOG):
        config = load_search_config(config_path, n_trials=n_trials, max_failures=max_failures)
        work_dir.mkdir(parents=True, exist_ok=True)
    with output_to(work_dir / SEARCH_LOG) as terminal:
        return _run(config, work_dir, terminal, backend=backend, storage=storage,
                    study_name=study_name, resume=resume, address=address,
                    cpus_per_trial=cpus_per_trial, gpus_per_trial=gpus_per_trial,
                    keep_checkpoints=keep_checkpoints, data_root=data_root,
                    cfg_options=cfg_options,
                    workers={"workers_per_trial": workers_per_trial,
                             "cpus_per_worker": cpus_per_worker,
                             "gpus_per_worker": gpus_per_worker,
                             "placement_strategy": placement_strategy})


def _run(config, work_dir: Path, out: TextIO, *, backend: str, storage: str | None,
         study_name: str | None, resume: bool, address: str | None, cpus_per_trial: float,
         gpus_per_trial: float, keep_checkpoints: bool, data_root: str | Path | None,
         cfg_options: dict[str, Any] | None,
         workers: dict[str, Any] | None = None) -> dict[str, Any]:
    from nasdet.report import write_search_report

    start = time.perf_counter()
    ensure_pretrained(config, out=out)
    study = None
    if backend == "optuna":
        from nasdet.search.optuna_driver import OptunaSearch
        from nasdet.search.trials import trial_rows

        driver = OptunaSearch(config, work_dir, storage=storage, study_name=study_name,
                              resume=resume, keep_checkpoints=keep_checkpoints,
                              data_root=data_root, cfg_options=cfg_options, out=out)
        study = driver.run()
        rows = trial_rows(study, config)
        name = driver.study_name
    elif backend == "ray":
        from nasdet.search.ray_driver import RaySearch

        driver = RaySearch(config, work_dir, address=address, storage=storage,
                           cpus_per_trial=cpus_per_trial, gpus_per_trial=gpus_per_trial,
                           resume=resume, keep_checkpoints=keep_checkpoints,
                           study_name=study_name, data_root=data_root,
                           cfg_options=cfg_options, out=out, **(workers or {}))
        driver.run()
        rows = driver.rows()  # Tune's rows: where each trial ran, as well
        study = driver.load_study()  # importances from the storage, as for optuna
        name = driver.study_name
    else:
        raise NasdetError(f"unknown backend {backend!r} (optuna or ray)", key="--backend")
    elapsed = time.perf_counter() - start
    report = write_search_report(
        rows, work_dir / "report", title=f"Search '{name}' ({backend})",
        objectives=[(o.metric, o.direction) for o in config.objectives], study=study,
        elapsed_s=elapsed, rungs=proxy_rungs(config))
    return {"rows": rows, "report": report, "elapsed_s": elapsed}


def proxy_rungs(config) -> tuple[str, ...]:
    """The proxies the search prunes on: each proxy stage's ``report`` proxy."""
    return tuple(str(s.options["report"]) for s in config.stages
                 if s.type == "proxy" and s.options.get("report") is not None)


def ensure_pretrained(config, out: TextIO | None = None) -> Path | None:
    """Run the config's ``pretrain`` section once: skipped when its checkpoint exists.

    Args:
        config: The search config.
        out: Where its two lines go (default ``sys.stdout``).

    Returns:
        The checkpoint, or None when the config has no ``pretrain`` section.
    """
    if not config.pretrain:
        return None
    ckpt = Path(config.pretrain["checkpoint"]).absolute()
    if ckpt.is_file():
        return ckpt
    from nasdet.train.pretrain import pretrain

    out = out or sys.stdout
    print(f"[search] pre-training the source backbone once: {ckpt}", file=out, flush=True)
    options = {k: config.pretrain[k] for k in ("epochs", "batch_size", "lr") if k in config.pretrain}
    result = pretrain(config.pretrain["source"], work_dir=ckpt.parent, filename=ckpt.name,
                      **options)
    print(f"[search] source task top-1 {result.val_top1:.3f} "
          f"({result.train_seconds:.0f} s)", file=out, flush=True)
    return result.checkpoint
