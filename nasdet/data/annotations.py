"""Checks of annotation files before a dataloader reads them: one clear line per problem."""

from __future__ import annotations

import json
import mmap
import os
import re
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from nasdet.errors import NasdetError

# What mmdet's CocoDataset and pycocotools index without a default, per section.
_COCO_REQUIRED = {
    "images": ("id", "height", "width"),
    "annotations": ("id", "image_id", "category_id", "bbox", "area"),
    "categories": ("id", "name"),
}


# Annotation files larger than this get the quick check (see check_annotation_file).
FULL_PARSE_MAX_BYTES = 64 * 2**20


_FILE_NAME = re.compile(rb'"file_name"\s*:\s*"((?:[^"\\]|\\.)*)"')


# Annotation files checked in this process: path, size, mtime, image dir, its mtime, how.
_checked: set[tuple[Any, ...]] = set()


def _coco_kind(ds_type: Any) -> str | None:
    """``'coco'``, ``'panoptic'`` (mmdet's CocoPanopticDataset) or ``None`` for a ``type``."""
    from mmdet.datasets import CocoDataset, CocoPanopticDataset
    from mmdet.registry import DATASETS

    if isinstance(ds_type, str):
        ds_type = DATASETS.get(ds_type)
    if not isinstance(ds_type, type) or not issubclass(ds_type, CocoDataset):
        return None
    return "panoptic" if issubclass(ds_type, CocoPanopticDataset) else "coco"


def check_annotation_file(ann_file: str | Path, *, ds_type: Any = None, test_mode: bool = False,
                          img_dir: str | Path | None = None, file: str = "<config>",
                          key: str = "ann_file", img_key: str = "data_prefix.img",
                          full_parse_max_bytes: int = FULL_PARSE_MAX_BYTES) -> None:
    """A JSON annotation file must parse, and a COCO one name only images that exist.

    Files up to ``full_parse_max_bytes`` (64 MiB: COCO val2017's instances are 25 MB)
    are parsed with :func:`json.load`. For mmdet's ``CocoDataset`` family,
    ``images``, ``annotations`` (may be absent in ``test_mode``: image-info files such
    as COCO test-dev's) and ``categories`` must then be lists of objects with the keys
    mmdet reads without a default, and every ``images[i].file_name`` must exist in
    ``img_dir``.

    Larger files (COCO train2017's 448 MB take as long to parse as the dataset's own
    load) get a quick check on a memory map instead, about 1 s per 400 MB: the text
    must begin with ``{`` and end with ``}`` (a truncated download does not), the three
    sections must be named, and every ``"file_name"`` must exist in ``img_dir``; a
    corruption inside the text is then left to the dataset's own parser.

    A file already checked in this process is not read again while it and the image
    folder are unchanged (same size and modification times).

    Args:
        ann_file: The annotation file (only ``.json`` files are checked).
        ds_type: The dataset's ``type`` (registry name or class).
        test_mode: The dataset's ``test_mode``.
        img_dir: The image folder (``data_root`` + ``data_prefix.img``); ``None``: no
            image check.
        file: The config file, for the message.
        key: The config key of ``ann_file``, for the message.
        img_key: The config key of the image folder, for the message.
        full_parse_max_bytes: Size above which the quick check is used.

    Raises:
        NasdetError: naming the config file and key, the annotation file, and the first
            problem in it (position of a JSON error, entry of a missing key or image).
    """
    path = Path(ann_file)
    if path.suffix.lower() != ".json":
        return
    stat = path.stat()
    # A folder's mtime changes when a file is added or removed in it.
    img_mtime = os.stat(img_dir).st_mtime_ns if img_dir is not None else None
    kind = _coco_kind(ds_type)
    token = (str(path.resolve()), stat.st_size, stat.st_mtime_ns, str(img_dir), img_mtime,
             kind, test_mode)
    if token in _checked:
        return
    where = {"file": file, "key": key}
    if stat.st_size > full_parse_max_bytes:
        names = _quick_check(path, sections=kind is not None, test_mode=test_mode, **where)
        if kind == "coco" and img_dir is not None:
            _check_images(path, enumerate(names), img_dir, file=file, key=img_key)
    else:
        try:
            with open(path, "rb") as f:
                data = json.load(f)
        except ValueError as exc:  # JSONDecodeError, UnicodeDecodeError
            raise NasdetError(_json_error(path, exc, stat.st_size), **where) from None
        if kind is not None:
            _check_sections(path, data, panoptic=kind == "panoptic", test_mode=test_mode,
                            **where)
            if img_dir is not None:
                images = ((i, img.get("file_name")) for i, img in enumerate(data["images"]))
                _check_images(path, images, img_dir, file=file, key=img_key)
    _checked.add(token)


def _json_error(path: Path, exc: ValueError, size: int) -> str:
    if isinstance(exc, json.JSONDecodeError):
        where = f"line {exc.lineno}, column {exc.colno}: {exc.msg}"
        tail = "; the file ends there: truncated?" if exc.pos >= size - 64 else ""
        return f"annotation file {path} is not valid JSON ({where}{tail})"
    return f"annotation file {path} is not valid JSON ({exc})"


def _quick_check(path: Path, *, sections: bool, test_mode: bool, file: str,
                 key: str) -> list[str]:
    """Ends, section names and ``file_name`` values of a large JSON file (memory map)."""
    with open(path, "rb") as f, mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ) as text:
        head = text[:4096].lstrip()[:1]
        tail = text[max(0, len(text) - 4096):].rstrip()[-1:]
        if head != b"{" or tail != b"}":
            found = tail.decode("latin-1") or "nothing"
            raise NasdetError(f"annotation file {path} is not a complete JSON object (it "
                              f"starts with {head.decode('latin-1')!r} and ends with {found!r}): "
                              "truncated?", file=file, key=key)
        if sections:
            needed = ["images", "categories"] + ([] if test_mode else ["annotations"])
            for section in needed:
                if text.find(b'"' + section.encode() + b'"') < 0:
                    raise NasdetError(f"annotation file {path}: '{section}' is missing "
                                      "(is it a COCO detection file?)", file=file, key=key)
        names = []
        for match in _FILE_NAME.finditer(text):
            raw = match.group(1)
            names.append(json.loads(b'"' + raw + b'"') if b"\\" in raw else raw.decode())
        return names


def _check_sections(path: Path, data: Any, *, panoptic: bool, test_mode: bool, file: str,
                    key: str) -> None:
    if not isinstance(data, dict):
        raise NasdetError(f"annotation file {path} holds a JSON {type(data).__name__}, not "
                          "a COCO object with images, annotations and categories",
                          file=file, key=key)
    for section, required in _COCO_REQUIRED.items():
        entries = data.get(section)
        if section == "annotations" and (panoptic or (test_mode and entries is None)):
            continue  # panoptic entries are per image; image-info files have none
        if not isinstance(entries, list):
            found = "is missing" if entries is None else f"is a {type(entries).__name__}"
            raise NasdetError(f"annotation file {path}: '{section}' {found}, expected a list "
                              "(is it a COCO detection file?)", file=file, key=key)
        for i, entry in enumerate(entries):
            if not isinstance(entry, dict):
                raise NasdetError(f"annotation file {path}: {section}[{i}] is not an object",
                                  file=file, key=key)
            absent = [k for k in required if k not in entry]
            if absent:
                raise NasdetError(f"annotation file {path}: {section}[{i}] has no "
                                  f"'{absent[0]}'", file=file, key=key)


def _check_images(path: Path, images: Iterable[tuple[int, Any]], img_dir: str | Path, *,
                  file: str, key: str) -> None:
    """Every ``(index, file_name)`` must exist in ``img_dir`` (one ``stat`` each)."""
    img_dir = str(img_dir)
    total, missing = 0, []
    for i, name in images:
        total += 1
        if isinstance(name, str) and not os.path.exists(os.path.join(img_dir, name)):
            missing.append((i, name))
    if missing:
        i, name = missing[0]
        raise NasdetError(f"image {name!r} named by {path} (images[{i}].file_name) does not "
                          f"exist in {img_dir} ({len(missing)} of {total} images missing)",
                          file=file, key=key)
