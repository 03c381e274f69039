"""Comparing transfer strategies: each trained on the same base detector, seed and data."""

from __future__ import annotations

import copy
import csv
import io
import json
import math
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from mmengine.config import Config, ConfigDict
from mmengine.logging import print_log

from nasdet.errors import NasdetError
from nasdet.models.utils.build import count_model_parameters
from nasdet.report.transfer_comparison import plot_comparison
from nasdet.train.config import load_config, merge_cfg_options
from nasdet.train.runner import train
from nasdet.transfer import (
    apply_transfer,
    parse_strategy_spec,
    set_training_length,
    strategy_needs_checkpoint,
)
from nasdet.utils.io import atomic_write_json, atomic_write_text

#: Columns of the comparison table, with their units.
COMPARE_COLUMNS: dict[str, str] = {
    "strategy": "label of the run (strategy spec as given)",
    "type": "transfer strategy",
    "params": "strategy parameters (JSON)",
    "bbox_mAP": "COCO box AP@[0.5:0.95] on the val split, fraction in [0, 1] (pycocotools); "
    "empty if the detector produced no detections",
    "bbox_mAP_50": "COCO box AP@0.5, fraction in [0, 1]",
    "train_seconds": "wall-clock seconds of training plus its validation epochs",
    "params_trainable": "distinct scalar parameters with requires_grad=True at the start "
    "(frozen stages excluded; a feature-transfer teacher is not part of the model)",
    "params_total": "distinct scalar parameters of the trained model",
    "epochs": "training epochs of this run",
    "seed": "random seed",
    "work_dir": "directory with the run's logs, checkpoints and config.py",
}


def _read_rows(path: Path) -> list[dict[str, Any]]:
    if not path.is_file():
        return []
    try:
        return list(json.loads(path.read_text()).get("rows", []))
    except (json.JSONDecodeError, AttributeError):
        raise NasdetError(
            "cannot read the comparison results (delete it to start over)",
            file=path,
            key="--resume",
        ) from None


def write_comparison(work_dir: Path, rows: list[dict[str, Any]], *, base: str) -> None:
    """Atomically write ``results.json``, ``results.csv`` and ``ap_per_strategy.png``.

    Args:
        work_dir: The comparison's directory.
        rows: One dict per finished strategy (keys: :data:`COMPARE_COLUMNS`).
        base: The base config, recorded in the JSON.
    """
    atomic_write_json(
        work_dir / "results.json",
        {
            "base": base,
            "units": COMPARE_COLUMNS,
            "rows": rows,
        },
    )
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=list(COMPARE_COLUMNS), extrasaction="ignore")
    writer.writeheader()
    for row in rows:
        writer.writerow({k: "" if row.get(k) is None else row.get(k) for k in COMPARE_COLUMNS})
    atomic_write_text(work_dir / "results.csv", buf.getvalue())
    plot_comparison(rows, work_dir / "ap_per_strategy.png", title=f"Transfer strategies on {base}")


def _metric(metrics: dict[str, Any], key: str) -> float | None:
    v = metrics.get(key)
    if v is None or (isinstance(v, float) and (math.isnan(v) or v < 0)):
        return None
    return float(v)


def compare_transfer(
    base: str | Path,
    strategies: Sequence[str],
    *,
    checkpoint: str | Path | None = None,
    epochs: int | None = None,
    work_dir: str | Path | None = None,
    cfg_options: dict[str, Any] | None = None,
    resume: bool = False,
    seed: int | None = None,
    pretrain_if_missing: bool = False,
    pretrain_options: dict[str, Any] | None = None,
    base_cfg: Config | None = None,
) -> list[dict[str, Any]]:
    """Train each strategy on the same base config and seed, and tabulate the results.

    Every strategy is applied (and its model built to count parameters) before any
    training, so a bad option fails at once. Then each run trains through
    :func:`nasdet.train.train` in ``<work_dir>/<label>/`` (its combined config dumped as
    ``config.py`` there, retrainable with ``tools/train.py``). After each run
    ``results.json``, ``results.csv`` and ``ap_per_strategy.png`` are rewritten
    atomically, so a killed comparison keeps its finished rows; with ``resume`` the
    labels already in ``results.json`` are skipped.

    Args:
        base: Base detector config file.
        strategies: Specs as :func:`parse_strategy_spec` reads them.
        checkpoint: Pretrained backbone weights for the strategies that need them.
        epochs: Training epochs of the base (scheduler scaled; ``scratch`` multiplies
            it by its ``schedule_factor``, see :func:`set_training_length`).
        work_dir: Output directory (default ``work_dirs/compare_transfer/<base stem>``).
        cfg_options: ``--cfg-options``: applied to the base and again to each
            strategy's config, so they win over what a strategy writes.
        resume: Skip strategies with a row in ``results.json``.
        seed: Random seed of every run (default: the base config's, else 0).
        pretrain_if_missing: Without ``checkpoint``, pre-train the base's backbone on
            the synthetic classification source task (see
            :func:`nasdet.train.pretrain.pretrain`) into ``<work_dir>/pretrain/`` (reused
            when it exists) instead of raising.
        pretrain_options: Keyword arguments for that pre-training (``epochs``, ...).
        base_cfg: An already loaded base config to use instead of reading ``base``
            (``cfg_options``/``work_dir`` are not applied to it).

    Returns:
        All rows of the table (finished earlier ones included when resuming).
    """

    base = str(base)
    given_cfg = base_cfg is not None
    if base_cfg is None:
        base_cfg = load_config(base, cfg_options=cfg_options)
    else:
        base_cfg = copy.deepcopy(base_cfg)
    out_dir = Path(work_dir or Path("work_dirs") / "compare_transfer" / Path(base).stem).absolute()
    if epochs is not None:
        set_training_length(base_cfg, epochs)  # strategies then apply their own rule
    if seed is None:
        seed = int((base_cfg.get("randomness") or {}).get("seed") or 0)
    base_cfg.randomness = ConfigDict({**dict(base_cfg.get("randomness") or {}), "seed": seed})

    specs = [parse_strategy_spec(s) for s in strategies]
    labels = [label for label, _, _ in specs]
    if not specs:
        raise NasdetError("give at least one strategy", key="STRATEGY")
    dup = {x for x in labels if labels.count(x) > 1}
    if dup:
        raise NasdetError(f"strategy given twice: {sorted(dup)}", key="STRATEGY")
    needing = [label for label, strat, _ in specs if strategy_needs_checkpoint(strat)]
    if needing and not checkpoint:
        if not pretrain_if_missing:
            raise NasdetError(
                f"strategy '{needing[0]}' needs a pretrained backbone: pass --checkpoint PATH, "
                "or --pretrain-if-missing to pre-train one on the synthetic source task",
                key="--checkpoint",
            )
        from nasdet.train.pretrain import pretrain

        target = out_dir / "pretrain" / "backbone.pth"
        if not target.is_file():
            pretrain(base_cfg, work_dir=target.parent, **(pretrain_options or {}))
        checkpoint = str(target)

    # Pre-flight: every combined config is built before the first run trains.
    plans = []
    for label, strat, params in specs:
        cfg = apply_transfer(base_cfg, strat, checkpoint=checkpoint, **params)
        if cfg_options and not given_cfg:
            merge_cfg_options(cfg, cfg_options)  # the user's options win over the strategy
        cfg.work_dir = str(out_dir / label)
        trainable, total = count_model_parameters(cfg)
        plans.append((label, cfg, trainable, total))

    rows = _read_rows(out_dir / "results.json") if resume else []
    done = {r["strategy"] for r in rows}
    for label, cfg, trainable, total in plans:
        if label in done:
            print_log(
                f"compare_transfer: {label} already finished, skipped (--resume)", logger="current"
            )
            continue
        run_dir = Path(cfg.work_dir)
        run_dir.mkdir(parents=True, exist_ok=True)
        cfg.dump(str(run_dir / "config.py"))
        start = time.perf_counter()
        metrics = train(cfg)
        seconds = time.perf_counter() - start
        transfer = dict(cfg.transfer)
        transfer.pop("previous", None)
        row = {
            "strategy": label,
            "type": transfer.pop("type"),
            "params": json.dumps(
                {k: v for k, v in transfer.items() if k not in ("fragment", "checkpoint")},
                default=str,
            ),
            "bbox_mAP": _metric(metrics, "coco/bbox_mAP"),
            "bbox_mAP_50": _metric(metrics, "coco/bbox_mAP_50"),
            "train_seconds": round(seconds, 3),
            "params_trainable": trainable,
            "params_total": total,
            "epochs": cfg.train_cfg.get("max_epochs", cfg.train_cfg.get("max_iters")),
            "seed": seed,
            "work_dir": str(run_dir),
            "checkpoint": transfer.get("checkpoint"),
        }
        rows = [r for r in rows if r["strategy"] != label] + [row]
        write_comparison(out_dir, rows, base=base)
    if rows:
        write_comparison(out_dir, rows, base=base)
    return rows
