"""Where a config's data lives: pointing it at a root, and making sure it is there."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from mmengine.config import Config

from nasdet.data.annotations import check_annotation_file
from nasdet.errors import NasdetError


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
        NasdetError: a dataset root, annotation file or image folder that does not exist;
            an annotation file that does not parse, or (COCO) lacks a section or names an
            image that is not on disk (:func:`nasdet.data.annotations.check_annotation_file`).
    """
    spec = cfg.get("synthetic_data")
    if spec:
        from nasdet.data.synthetic import ensure_dataset

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
            if ann:
                # Parses, has COCO's sections, names only images on disk (cached per file).
                check_annotation_file(
                    root / ann, ds_type=ds.get("type"), test_mode=bool(ds.get("test_mode")),
                    img_dir=root / img if img else None, file=cfg_file,
                    key=f"{key}.dataset.ann_file", img_key=f"{key}.dataset.data_prefix.img")
