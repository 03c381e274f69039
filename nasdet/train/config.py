"""Loading MMDetection-style configs: the file as written, the user's options last."""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

from mmengine.config import Config

from nasdet.errors import NasdetError
from nasdet.transfer import apply_transfer
from nasdet.utils.config import WRAPPER_TYPES
from nasdet.utils.resources import resolve_path


def load_config(
    path: str | Path,
    *,
    cfg_options: dict[str, Any] | None = None,
    work_dir: str | Path | None = None,
) -> Config:
    """Read a config file, apply ``--cfg-options`` last and settle the work dir.

    Args:
        path: Python/YAML config (may inherit ``mmdet::`` bases); ``nasdet::NAME`` or a
            relative path missing here names a shipped config
            (:func:`nasdet.utils.resources.resolve_path`).
        cfg_options: ``key.sub=value`` overrides, as mmengine's ``DictAction`` parses them;
            merged last, over everything the file says (see :func:`merge_cfg_options`).
        work_dir: Overrides ``cfg.work_dir``; default ``work_dirs/<config stem>``.

    The config is what ``Config.fromfile`` reads, as MMDetection's ``tools/train.py``
    sees it: nothing is applied behind its back. A transfer strategy is written in full
    (``configs/transfer/*.py``, ``configs/study/*.py``); its ``transfer`` dict is a
    record (with ``fragment``) that is never re-applied. A bare declaration
    ``transfer = dict(type=..., ...)`` without ``fragment``, which MMDetection would
    ignore and so train the base, is refused (:func:`apply_declared_transfer` converts
    one).

    Returns:
        The merged config, with ``work_dir`` made absolute.

    Raises:
        NasdetError: missing or unparsable file, an unapplied transfer declaration, a
            ``transfer.*`` option.
    """
    path = resolve_path(path, kind="configs")
    if not path.is_file():
        raise NasdetError("config file not found", file=path)
    try:
        cfg = Config.fromfile(str(path))
    except Exception as exc:  # mmengine raises several types for a broken config
        raise NasdetError(f"cannot read config: {type(exc).__name__}: {exc}", file=path) from None
    declared = cfg.get("transfer")
    if isinstance(declared, dict) and "fragment" not in declared:
        name = declared.get("type")
        raise NasdetError(
            f"declares transfer strategy {name!r} without applying it: MMDetection's "
            "tools/train.py would ignore it and train the base config. Write the "
            f"strategy's keys in full (as configs/transfer/{name}.py and configs/study/ "
            "do), or dump nasdet.train.config.apply_declared_transfer(Config.fromfile(FILE))",
            file=path,
            key="transfer",
        )
    if cfg_options:
        merge_cfg_options(cfg, cfg_options)
    if work_dir is not None:
        cfg.work_dir = str(work_dir)
    elif cfg.get("work_dir") is None:
        cfg.work_dir = str(Path("work_dirs") / path.stem)
    cfg.work_dir = str(Path(cfg.work_dir).absolute())
    return cfg


def merge_cfg_options(cfg: Config, options: dict[str, Any]) -> Config:
    """Merge a user's ``key.sub=value`` overrides into ``cfg``: they win over everything.

    Under transfer wrappers (``model=dict(type='L2SPDetector', detector=...)``) a
    ``model.<key>`` that the wrapper lacks and the wrapped detector has goes to the
    detector (``model.backbone.frozen_stages`` -> ``model.detector.backbone...``), so
    options written for the plain detector mean the same on a wrapped one.

    Args:
        cfg: Config to edit in place.
        options: The overrides (mmengine's ``DictAction`` output).

    Returns:
        The same config.

    Raises:
        NasdetError: a ``transfer.*`` key (the record of an applied strategy: setting it
            would change nothing that trains).
    """
    out = {}
    for key, value in options.items():
        if key == "transfer" or key.startswith("transfer."):
            raise NasdetError(
                "transfer records how this config was made and is not applied; set the keys "
                "the strategy wrote (model.backbone..., optim_wrapper..., train_cfg...) or "
                "apply another strategy (nasdet.transfer.apply_transfer)",
                file=cfg.filename, key=key)
        parts = key.split(".")
        model = cfg.get("model")
        if parts[0] == "model" and len(parts) > 1:
            prefix = ["model"]
            while (isinstance(model, dict) and model.get("type") in WRAPPER_TYPES
                   and parts[1] not in model and isinstance(model.get("detector"), dict)
                   and parts[1] in model["detector"]):
                prefix.append("detector")
                model = model["detector"]
            key = ".".join(prefix + parts[1:])
        out[key] = value
    for key, value in out.items():  # one at a time, so an error names its key
        try:
            cfg.merge_from_dict({key: value})
        except (TypeError, KeyError, ValueError, AttributeError) as exc:
            first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
            raise NasdetError(f"cannot set this option: {first}", file=cfg.filename or None,
                              key=f"--cfg-options {key}") from None
    return cfg


def apply_declared_transfer(cfg: Config) -> Config:
    """Convert a bare ``transfer = dict(type=..., ...)`` declaration into its full config.

    The declaration is applied through :func:`nasdet.transfer.apply_transfer`;
    ``cfg.dump()`` of the result is a config that MMDetection trains as nasdet does.
    A config without a declaration, or with an applied record, is returned as it is.

    Args:
        cfg: A config as ``Config.fromfile`` reads it.

    Returns:
        The full config (a new object when a declaration was applied).

    Raises:
        NasdetError: a declared strategy that cannot apply, naming ``transfer.<key>``.
    """
    declared = cfg.get("transfer")
    if not isinstance(declared, dict) or "fragment" in declared:
        return cfg
    params = dict(declared)
    name = params.pop("type", None)
    checkpoint = params.pop("checkpoint", None)
    base = copy.deepcopy(cfg)
    base.pop("transfer")
    try:
        return apply_transfer(base, str(name), checkpoint=checkpoint, **params)
    except NasdetError as exc:
        # apply_transfer names its own arguments; here they are keys of `transfer`.
        key = {"strategy": "type", None: "type"}.get(exc.key, exc.key)
        # A fragment file is where the strategy's defaults live; the user's config is what
        # declared it. Other files (a checkpoint) stay named.
        file = cfg.filename if not exc.file or exc.file.endswith(".py") else exc.file
        raise NasdetError(exc.message, file=file,
                          key=key if key.startswith("transfer.") else f"transfer.{key}") from None


