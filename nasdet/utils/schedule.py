"""Training length of a config: epochs (or iterations) and the scheduler bounds with them."""

from __future__ import annotations

from mmengine.config import Config

from nasdet.errors import NasdetError


def set_schedule_length(cfg: Config, length: int) -> Config:
    """Set the training length, scaling epoch-based scheduler bounds proportionally.

    ``train_cfg.max_epochs`` (or ``max_iters`` for iteration-based loops) becomes
    ``length``; ``val_interval`` follows if it was the whole run; every epoch-based
    entry of ``param_scheduler`` (``by_epoch=True``, mmengine's default) has ``begin``,
    ``end``, ``milestones`` and ``T_max`` multiplied by ``length / old`` (rounded, at
    least 1 apart); iteration-based entries (warm-ups) keep their lengths.

    Args:
        cfg: Config to edit in place.
        length: New number of epochs (or iterations).

    Returns:
        The same config.
    """
    tc = cfg.get("train_cfg")
    if not tc:
        raise NasdetError("config has no train_cfg", file=cfg.filename, key="train_cfg")
    by_epoch = "max_epochs" in tc or tc.get("type", "EpochBasedTrainLoop") in (
        "EpochBasedTrainLoop",
    )
    key = "max_epochs" if by_epoch else "max_iters"
    old = tc.get(key)
    if not isinstance(old, int) or old < 1:
        raise NasdetError(
            f"cannot scale the schedule: {key}={old!r}", file=cfg.filename, key=f"train_cfg.{key}"
        )
    if not isinstance(length, int) or length < 1:
        raise NasdetError(f"must be a positive integer, got {length!r}", key="epochs")
    factor = length / old
    tc[key] = length
    if tc.get("val_interval", 1) >= old:
        tc["val_interval"] = length
    scheds = cfg.get("param_scheduler")
    items = scheds if isinstance(scheds, (list, tuple)) else [scheds] if scheds else []
    for s in items:
        if s.get("by_epoch", True) != by_epoch:
            continue
        for k in ("begin", "end", "T_max"):
            v = s.get(k)
            if isinstance(v, (int, float)) and v < 1e8:  # 1e8+: "until the end" sentinels
                s[k] = max(0 if k == "begin" else 1, round(v * factor))
        if s.get("milestones"):
            s["milestones"] = [max(1, round(m * factor)) for m in s["milestones"]]
    return cfg


def scale_schedule(cfg: Config, factor: float) -> Config:
    """Multiply the schedule length by ``factor`` (see :func:`set_schedule_length`).

    Args:
        cfg: Config to edit in place.
        factor: Positive multiplier; the new length is ``max(1, round(old * factor))``.

    Returns:
        The same config.
    """
    if not factor > 0:
        raise NasdetError(f"must be positive, got {factor!r}", key="schedule_factor")
    tc = cfg.get("train_cfg") or {}
    old = tc.get("max_epochs", tc.get("max_iters"))
    if not isinstance(old, int):
        raise NasdetError(
            "cannot scale the schedule: no integer max_epochs/max_iters",
            file=cfg.filename,
            key="train_cfg",
        )
    return set_schedule_length(cfg, max(1, round(old * factor)))
