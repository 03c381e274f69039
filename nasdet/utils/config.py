"""Helpers for walking mmengine config trees (no model is built here)."""

from __future__ import annotations

from pathlib import Path

from mmengine.config import Config

from nasdet.errors import NasdetError

#: Model types that wrap a detector config under ``detector``.
WRAPPER_TYPES = ("FeatureTransferDetector", "L2SPDetector", "ReinitDetector")


def detector_cfg(model: dict) -> dict:
    """The innermost detector config under transfer wrappers (``model.detector...``).

    Args:
        model: ``cfg.model``.

    Returns:
        The dict holding ``backbone`` (the same object, so edits apply to the config).
    """
    while isinstance(model, dict) and (
        model.get("type") in WRAPPER_TYPES or ("detector" in model and "backbone" not in model)
    ):
        model = model["detector"]
    return model


def _pretrained_entries(cfg: Config) -> list[dict]:
    bb = detector_cfg(cfg.get("model") or {}).get("backbone") if cfg.get("model") else None
    init = bb.get("init_cfg") if isinstance(bb, dict) else None
    entries = init if isinstance(init, (list, tuple)) else [init]
    return [e for e in entries if isinstance(e, dict) and e.get("type") == "Pretrained"]


def pretrained_checkpoint(cfg: Config) -> str | None:
    """The pretrained weights a config starts from, as MMDetection reads them.

    The backbone's ``init_cfg=dict(type='Pretrained', checkpoint=...)`` (under transfer
    wrappers too), else a feature-transfer teacher's ``teacher_checkpoint``.

    Args:
        cfg: The config.

    Returns:
        The checkpoint path or URL, None if the config starts from scratch.
    """
    entries = _pretrained_entries(cfg)
    if entries:
        return str(entries[0]["checkpoint"])
    model = cfg.get("model")
    while isinstance(model, dict):
        if model.get("teacher_checkpoint"):
            return str(model["teacher_checkpoint"])
        model = model.get("detector")
    return None


def set_pretrained_checkpoint(cfg: Config, checkpoint: str | Path) -> Config:
    """Point every pretrained entry of ``cfg`` (backbone, teacher, record) at ``checkpoint``.

    Args:
        cfg: Config to edit in place.
        checkpoint: Path or URL.

    Returns:
        The same config.

    Raises:
        NasdetError: the config loads no pretrained weights.
    """
    found = False
    for entry in _pretrained_entries(cfg):
        entry["checkpoint"] = str(checkpoint)
        found = True
    model = cfg.get("model")
    while isinstance(model, dict):
        if model.get("teacher_checkpoint"):
            model["teacher_checkpoint"] = str(checkpoint)
            found = True
        model = model.get("detector")
    if not found:
        raise NasdetError(
            "the config loads no pretrained weights (no backbone init_cfg of type "
            "'Pretrained', no teacher_checkpoint)",
            file=cfg.filename,
            key="model.backbone.init_cfg",
        )
    if isinstance(cfg.get("transfer"), dict) and cfg.transfer.get("checkpoint"):
        cfg.transfer["checkpoint"] = str(checkpoint)
    return cfg
