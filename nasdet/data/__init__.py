"""Synthetic datasets: COCO-format shape detection and an ImageNet-style source task.

Both are deterministic functions of a spec, generated atomically and cached on disk:

>>> from nasdet.data import ensure_dataset
>>> root = ensure_dataset("detection", "data/shapes", num_classes=4)  # doctest: +SKIP
"""

from __future__ import annotations

from nasdet.data._store import FORMAT_VERSION, read_meta
from nasdet.data.classification import (
    ClassificationSpec,
    make_classification_dataset,
    render_classification_image,
)
from nasdet.data.detection import (
    DetectionSpec,
    PlacedObject,
    make_detection_dataset,
    render_detection_image,
)
from nasdet.data.render import BACKGROUNDS, SHAPES
from nasdet.data.roots import prepare_data, set_data_root
from nasdet.data.synthetic import DATASET_KINDS, ensure_dataset, make_spec

__all__ = [
    "BACKGROUNDS",
    "DATASET_KINDS",
    "FORMAT_VERSION",
    "SHAPES",
    "ClassificationSpec",
    "DetectionSpec",
    "PlacedObject",
    "ensure_dataset",
    "make_classification_dataset",
    "make_detection_dataset",
    "make_spec",
    "prepare_data",
    "read_meta",
    "render_classification_image",
    "render_detection_image",
    "set_data_root",
]
