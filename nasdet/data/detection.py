"""Synthetic COCO-format detection dataset: coloured shapes on textured, cluttered scenes.

Annotation conventions (documented because they are choices):

* Boxes are *amodal*: ``bbox = [x, y, w, h]`` (px, COCO convention, ``x, y`` the top-left
  corner of the pixel grid cell) is the tight box of the object's whole rendered mask,
  including parts hidden by objects drawn later. For an unoccluded object it is exactly
  the extent of its pixels.
* ``area`` is the visible area (px², coverage-weighted), like COCO's segmentation area;
  ``visible_fraction`` (extra key, ignored by COCO tools) is visible / full area.
* Objects lie entirely inside the image (no truncation at the border).
* Occlusion is bounded at placement time: an object is placed only where it leaves every
  earlier object at least ``min_visible`` visible (objects are never hidden afterwards,
  later objects are drawn on top). An object with no such position within a fixed
  number of tries is *not placed*, so every object in the image is annotated and has
  ``visible_fraction >= min_visible``. Crowded specs can therefore yield fewer objects
  than drawn; ``meta.json`` counts them as ``objects_dropped``.
* Distractor fragments keep at most ``0.6 * min_visible`` of a shape, so a fragment is
  never something that, by the rule above, should have been annotated.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from nasdet.data import _store, render
from nasdet.data._spec import check_appearance, check_float, check_int, check_pair
from nasdet.errors import NasdetError
from nasdet.utils.io import atomic_write_json

KIND = "detection"
SPLITS = ("train", "val")

# Tries to find a position for an object that respects ``min_visible``.
_PLACEMENT_TRIES = 30


@dataclass(frozen=True)
class DetectionSpec:
    """What to generate; the dataset is a pure function of this spec.

    Difficulty knobs, easiest setting first: ``num_classes`` (later shapes of the
    vocabulary are more alike: hexagon vs circle, ellipse vs diamond), ``background``
    (``plain`` < ``textured`` < ``cluttered``), ``scale_range`` (smaller is harder),
    ``min_visible`` (lower allows heavier occlusion), ``objects_per_image``,
    ``num_distractors``, ``max_rotation``, ``noise_std`` and ``min_contrast`` (lower
    allows objects that blend into the background).

    Args:
        num_classes: Number of classes: the first ``num_classes`` shapes of
            :data:`nasdet.data.render.SHAPES`.
        image_size: Side of the square images (px).
        num_train: Number of training images.
        num_val: Number of validation images.
        objects_per_image: ``(min, max)`` objects drawn per image, uniformly.
        scale_range: ``(min, max)`` object size (px): extent of the shape's longer axis
            before rotation. ``max`` must not exceed ``image_size / sqrt(2)``.
        min_visible: Smallest visible fraction of an object's area, in ``(0, 1]``.
        background: ``plain``, ``textured`` or ``cluttered``.
        seed: Random seed; everything else equal, one seed gives byte-identical files.
        max_rotation: Objects are rotated uniformly in ``[-max_rotation, max_rotation]``
            degrees.
        noise_std: Standard deviation of Gaussian pixel noise (0..255 scale).
        min_contrast: Minimum Euclidean RGB distance (0..255 scale) between an object's
            colour and the mean colour beneath it, when one of several draws achieves it.
        num_distractors: ``(min, max)`` distractors per ``cluttered`` image (lines,
            blobs, shape fragments that are not objects).
    """

    num_classes: int = 4
    image_size: int = 128
    num_train: int = 512
    num_val: int = 128
    objects_per_image: tuple[int, int] = (1, 4)
    scale_range: tuple[float, float] = (16.0, 48.0)
    min_visible: float = 0.6
    background: str = "cluttered"
    seed: int = 0
    max_rotation: float = 180.0
    noise_std: float = 4.0
    min_contrast: float = 60.0
    num_distractors: tuple[int, int] = field(default=(3, 8))

    def __post_init__(self) -> None:
        name = type(self).__name__
        check_int(name, "num_classes", self.num_classes, 1, len(render.SHAPES))
        check_int(name, "num_train", self.num_train, 1)
        check_int(name, "num_val", self.num_val, 1)
        objects = check_pair(
            name, "objects_per_image", self.objects_per_image, 0, 100, integer=True
        )
        if objects[1] < 1:
            raise NasdetError("max must be at least 1", key=f"{name}.objects_per_image")
        object.__setattr__(self, "objects_per_image", objects)
        visible = check_float(name, "min_visible", self.min_visible, 0.0, 1.0, lo_open=True)
        object.__setattr__(self, "min_visible", visible)
        check_appearance(self)

    @property
    def classes(self) -> tuple[str, ...]:
        """Class names, in category-id order (id = index + 1)."""
        return render.SHAPES[: self.num_classes]

    def to_dict(self) -> dict[str, Any]:
        """The spec as a JSON-ready dict (pairs as lists)."""
        return {k: list(v) if isinstance(v, tuple) else v for k, v in asdict(self).items()}


@dataclass
class PlacedObject:
    """One annotated object of a rendered image.

    Args:
        label: Class index (0-based) into ``spec.classes``.
        bbox: ``(x, y, w, h)`` amodal box in pixels.
        coverage: ``(h, w)`` amodal anti-aliased coverage inside ``bbox``.
        visible_fraction: Visible share of the coverage after later objects are drawn.
        visible_area: Visible coverage-weighted area (px²).
    """

    label: int
    bbox: tuple[int, int, int, int]
    coverage: np.ndarray
    visible_fraction: float
    visible_area: float


def _overlap(a: tuple[int, int, int, int], b: tuple[int, int, int, int]) -> tuple | None:
    """Intersection of two ``(x, y, w, h)`` boxes as slices, or ``None``."""
    x0, y0 = max(a[0], b[0]), max(a[1], b[1])
    x1, y1 = min(a[0] + a[2], b[0] + b[2]), min(a[1] + a[3], b[1] + b[3])
    if x0 >= x1 or y0 >= y1:
        return None
    return slice(y0, y1), slice(x0, x1)


def render_detection_image(
    rng: np.random.Generator, spec: DetectionSpec
) -> tuple[np.ndarray, list[PlacedObject], int]:
    """Render one detection image.

    Args:
        rng: Random generator (the image is a pure function of its state).
        spec: Dataset spec.

    Returns:
        ``(image, objects, dropped)``: a ``uint8`` ``(S, S, 3)`` image, its objects in
        drawing order (later ones on top) and how many drawn objects found no position.
    """
    size = spec.image_size
    canvas = render.render_background(rng, size, spec.background)
    if spec.background == "cluttered":
        count = int(rng.integers(spec.num_distractors[0], spec.num_distractors[1] + 1))
        render.draw_distractors(rng, canvas, count, spec.scale_range, 0.6 * spec.min_visible)

    # Per placed object: full-image visible coverage, kept current as objects are added.
    visible: list[np.ndarray] = []
    totals: list[float] = []
    objects: list[PlacedObject] = []
    dropped = 0
    n = int(rng.integers(spec.objects_per_image[0], spec.objects_per_image[1] + 1))
    for _ in range(n):
        label = int(rng.integers(spec.num_classes))
        cov = render.shape_coverage(
            render.SHAPES[label],
            rng.uniform(*spec.scale_range),
            rng.uniform(-spec.max_rotation, spec.max_rotation),
            tuple(rng.uniform(0.0, 1.0, 2)),
        )
        h, w = cov.shape
        box = None
        for _ in range(_PLACEMENT_TRIES):
            cand = (int(rng.integers(0, size - w + 1)), int(rng.integers(0, size - h + 1)), w, h)
            if all(
                _visible_after(vis, obj.bbox, cand, cov) >= spec.min_visible * total
                for vis, total, obj in zip(visible, totals, objects, strict=True)
            ):
                box = cand
                break
        if box is None:
            dropped += 1
            continue
        x0, y0 = box[0], box[1]
        for vis, obj in zip(visible, objects, strict=True):
            inter = _overlap(obj.bbox, box)
            if inter is not None:
                vis[inter] *= 1.0 - _local(cov, inter, box)
        full = np.zeros((size, size), dtype=np.float32)
        full[y0 : y0 + h, x0 : x0 + w] = cov
        visible.append(full)
        totals.append(float(cov.sum()))
        objects.append(PlacedObject(label, box, cov, 1.0, totals[-1]))
        colour = render.contrasting_colour(rng, canvas, cov, x0, y0, spec.min_contrast)
        render.composite(canvas, cov, render.shaded_fill(rng, colour, h, w), x0, y0)

    for obj, vis, total in zip(objects, visible, totals, strict=True):
        obj.visible_area = float(vis.sum())
        obj.visible_fraction = obj.visible_area / total
    return render.finish(rng, canvas, spec.noise_std), objects, dropped


def _local(cov: np.ndarray, inter: tuple[slice, slice], box: tuple[int, ...]) -> np.ndarray:
    """The part of ``cov`` (placed at ``box``) under the image-space slices ``inter``."""
    rows, cols = inter
    return cov[rows.start - box[1] : rows.stop - box[1], cols.start - box[0] : cols.stop - box[0]]


def _visible_after(
    vis: np.ndarray,
    box: tuple[int, int, int, int],
    cand: tuple[int, int, int, int],
    cov: np.ndarray,
) -> float:
    """Visible area an object at ``box`` keeps if ``cov`` is drawn over it at ``cand``."""
    current = float(vis[box[1] : box[1] + box[3], box[0] : box[0] + box[2]].sum())
    inter = _overlap(box, cand)
    if inter is None:
        return current
    return current - float((vis[inter] * _local(cov, inter, cand)).sum())


def _coco(spec: DetectionSpec, split: str, images: list, annotations: list) -> dict[str, Any]:
    return {
        "info": {
            "description": f"nasdet synthetic shapes, detection, {split} split",
            "version": str(_store.FORMAT_VERSION),
        },
        "licenses": [],
        "images": images,
        "annotations": annotations,
        "categories": [
            {"id": i + 1, "name": name, "supercategory": "shape"}
            for i, name in enumerate(spec.classes)
        ],
    }


def make_detection_dataset(
    root: str | Path, spec: DetectionSpec | None = None, *, progress: bool = True
) -> Path:
    """Generate (or find cached) a COCO-format detection dataset under ``root``.

    Layout: ``train/*.png``, ``val/*.png``, ``annotations/{train,val}.json`` and
    ``meta.json``. Load it with mmdet's ``CocoDataset(data_root=root,
    ann_file='annotations/train.json', data_prefix=dict(img='train/'),
    metainfo=dict(classes=spec.classes))``.

    Args:
        root: Dataset directory; created atomically (a temporary sibling renamed into
            place), so an interrupted call leaves no ``root`` behind.
        spec: What to generate; defaults to ``DetectionSpec()``.
        progress: Show a progress bar.

    Returns:
        ``root`` as a :class:`~pathlib.Path`.

    Raises:
        NasdetError: If ``root`` holds something other than this dataset (another
            spec, another kind, or foreign files).

    Example:
        >>> import tempfile
        >>> root = make_detection_dataset(
        ...     tempfile.mkdtemp() + "/shapes", DetectionSpec(num_train=2, num_val=1),
        ...     progress=False)
        >>> sorted(p.name for p in root.iterdir())
        ['annotations', 'meta.json', 'train', 'val']
    """
    spec = spec if spec is not None else DetectionSpec()
    root = Path(root)
    if _store.is_complete(root, KIND, spec.to_dict()):
        return root
    from nasdet.utils.progress import progress as progress_bar

    stats: dict[str, Any] = {}
    with (
        _store.building(root, KIND, spec.to_dict()) as tmp,
        progress_bar(
            total=spec.num_train + spec.num_val,
            desc=f"detection dataset {root.name}",
            unit="img",
            disable=not progress,
        ) as bar,
    ):
        (tmp / "annotations").mkdir()
        for split_id, (split, count) in enumerate(
            zip(SPLITS, (spec.num_train, spec.num_val), strict=True)
        ):
            (tmp / split).mkdir()
            images: list[dict[str, Any]] = []
            annotations: list[dict[str, Any]] = []
            per_class = [0] * spec.num_classes
            dropped = 0
            for index in range(count):
                rng = _store.image_rng(spec.seed, 1, split_id, index)
                image, objects, lost = render_detection_image(rng, spec)
                file_name = f"{index:06d}.png"
                _store.save_png(tmp / split / file_name, image)
                image_id = index + 1
                images.append(
                    {
                        "id": image_id,
                        "file_name": file_name,
                        "width": spec.image_size,
                        "height": spec.image_size,
                    }
                )
                for obj in objects:
                    annotations.append(
                        {
                            "id": len(annotations) + 1,
                            "image_id": image_id,
                            "category_id": obj.label + 1,
                            "bbox": [float(v) for v in obj.bbox],
                            "area": round(obj.visible_area, 2),
                            "iscrowd": 0,
                            "visible_fraction": round(obj.visible_fraction, 4),
                        }
                    )
                    per_class[obj.label] += 1
                dropped += lost
                bar.update()
            atomic_write_json(
                tmp / "annotations" / f"{split}.json",
                _coco(spec, split, images, annotations),
                indent=None,
            )
            stats[split] = {
                "images": count,
                "objects": len(annotations),
                "objects_per_class": dict(zip(spec.classes, per_class, strict=True)),
                "objects_dropped": dropped,
            }
        atomic_write_json(tmp / _store.META_FILE, _meta(spec, stats))
    return root


def _meta(spec: DetectionSpec, stats: dict[str, Any]) -> dict[str, Any]:
    return {
        "kind": KIND,
        "format_version": _store.FORMAT_VERSION,
        "generator": "nasdet.data.detection",
        "spec": spec.to_dict(),
        "classes": list(spec.classes),
        "splits": {
            split: {
                "images_dir": f"{split}/",
                "ann_file": f"annotations/{split}.json",
                **stats[split],
            }
            for split in SPLITS
        },
        "units": {
            "bbox": "px, [x, y, w, h], amodal (includes occluded parts)",
            "area": "px^2, visible coverage-weighted area",
            "visible_fraction": "visible area / full object area",
            "counts": "objects (annotations) or images",
        },
    }
