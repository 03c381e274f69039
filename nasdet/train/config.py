"""Loading MMDetection-style configs and making their data available."""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

from mmengine.config import Config

from nasdet.errors import NasdetError


def load_config(
    path: str | Path,
    *,
    cfg_options: dict[str, Any] | None = None,
    work_dir: str | Path | None = None,
) -> Config:
    """Read a config file, apply ``--cfg-options`` and settle the work dir.

    Args:
        path: Python/YAML config (may inherit ``mmdet::`` bases).
        cfg_options: ``key.sub=value`` overrides, as mmengine's ``DictAction`` parses them.
        work_dir: Overrides ``cfg.work_dir``; default ``work_dirs/<config stem>``.

    A config may declare a transfer strategy that is not applied yet,
    ``transfer = dict(type='finetune', checkpoint=PATH, **params)`` (the I vs S
    baselines in ``configs/study/`` do): it is applied here through
    :func:`nasdet.train.transfer.apply_transfer`, after ``cfg_options``, so every tool
    trains the combined config. Applied strategies record their ``fragment`` and are
    left as they are.

    Returns:
        The merged config, with ``work_dir`` made absolute.

    Raises:
        NasdetError: missing or unparsable file, a declared strategy that cannot apply.
    """
    path = Path(path)
    if not path.is_file():
        raise NasdetError("config file not found", file=path)
    try:
        cfg = Config.fromfile(str(path))
    except Exception as exc:  # mmengine raises several types for a broken config
        raise NasdetError(f"cannot read config: {type(exc).__name__}: {exc}", file=path) from None
    if cfg_options:
        cfg.merge_from_dict(cfg_options)
    cfg = apply_declared_transfer(cfg)
    if work_dir is not None:
        cfg.work_dir = str(work_dir)
    elif cfg.get("work_dir") is None:
        cfg.work_dir = str(Path("work_dirs") / path.stem)
    cfg.work_dir = str(Path(cfg.work_dir).absolute())
    return cfg


def apply_declared_transfer(cfg: Config) -> Config:
    """Apply a config's own ``transfer = dict(type=..., ...)`` if it is not applied yet."""
    declared = cfg.get("transfer")
    if not isinstance(declared, dict) or "fragment" in declared:
        return cfg
    from nasdet.train.transfer import apply_transfer

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


def _dataloader_keys(cfg: Config) -> list[str]:
    return [k for k in ("train_dataloader", "val_dataloader", "test_dataloader") if cfg.get(k)]


def _datasets(loader_cfg: Any) -> list[Any]:
    """Dataset dicts of one dataloader, looking through wrappers (RepeatDataset, ...)."""
    out, todo = [], [loader_cfg.get("dataset")]
    while todo:
        ds = todo.pop()
        if ds is None:
            continue
        if isinstance(ds, (list, tuple)):
            todo.extend(ds)
        elif "dataset" in ds or "datasets" in ds:
            todo.extend([ds.get("dataset"), *(ds.get("datasets") or [])])
        else:
            out.append(ds)
    return out


def set_data_root(cfg: Config, root: str | Path) -> Config:
    """Point every dataloader, evaluator and the synthetic spec at ``root``.

    ``data_root`` is interpolated into dataset dicts when a config is parsed, so
    overriding the top-level variable afterwards changes nothing; this rewrites the
    places that use it.

    Args:
        cfg: Config to edit in place.
        root: New dataset root.

    Returns:
        The same config.
    """
    old = str(cfg.get("data_root", ""))
    new = str(Path(root)) + "/"
    cfg.data_root = new
    if cfg.get("synthetic_data"):
        cfg.synthetic_data.root = new
    for key in _dataloader_keys(cfg):
        for ds in _datasets(cfg[key]):
            ds.data_root = new
    for key in ("val_evaluator", "test_evaluator"):
        ev = cfg.get(key)
        for e in ev if isinstance(ev, (list, tuple)) else [ev]:
            if e is not None and isinstance(e.get("ann_file"), str) and old:
                e.ann_file = e.ann_file.replace(old, new, 1) if e.ann_file.startswith(old) \
                    else e.ann_file
    return cfg


def prepare_data(cfg: Config, *, progress: bool = True) -> None:
    """Generate the synthetic dataset a config names, if it is not on disk yet.

    Configs built on ``configs/_base_/datasets/synthetic_det.py`` carry a
    ``synthetic_data`` dict; generation is deterministic and cached, so this is a
    no-op after the first run. Then every dataset path the config names must exist.

    Args:
        cfg: The config.
        progress: Show a progress bar while generating.

    Raises:
        NasdetError: a dataset root, annotation file or image folder that does not exist.
    """
    spec = cfg.get("synthetic_data")
    if spec:
        from nasdet.data import ensure_dataset

        spec = dict(spec)
        ensure_dataset(spec.pop("kind"), spec.pop("root"), progress=progress, **spec)
    cfg_file = cfg.filename or "<config>"
    for key in _dataloader_keys(cfg):
        for ds in _datasets(cfg[key]):
            root = Path(ds.get("data_root") or "")
            if ds.get("data_root") and not root.is_dir():
                raise NasdetError(
                    f"dataset root {root} does not exist", file=cfg_file,
                    key=f"{key}.dataset.data_root")
            ann = ds.get("ann_file")
            if ann and not (root / ann).is_file():
                raise NasdetError(
                    f"annotation file {root / ann} does not exist", file=cfg_file,
                    key=f"{key}.dataset.ann_file")
            img = (ds.get("data_prefix") or {}).get("img")
            if img and not (root / img).is_dir():
                raise NasdetError(
                    f"image folder {root / img} does not exist", file=cfg_file,
                    key=f"{key}.dataset.data_prefix.img")
