"""Synthetic ImageNet-style classification dataset: the pre-training "source task".

It shares the detection task's visual vocabulary (the same shapes, colours,
backgrounds and distractors) but not its task: one object per image, labelled with its
shape over the *full* vocabulary, more classes than the detection task uses.

Layout: ``train/<class>/<class>_NNNNNN.png`` and ``val/<class>/...`` (the folder
layout of torchvision's ``ImageFolder`` and mmpretrain's ``CustomDataset``; both sort
class folders alphabetically), plus ``annotations/{train,val}.txt`` with lines
``<split-relative path> <label>`` where ``label`` indexes ``meta.json["classes"]``
(vocabulary order), and ``meta.json``.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from nasdet.data import _store, render
from nasdet.data._spec import check_appearance, check_int
from nasdet.utils.io import atomic_write_json, atomic_write_text

KIND = "classification"
SPLITS = ("train", "val")

# Fragments keep at most this share of a shape, well below a whole object.
_MAX_FRAGMENT_FRACTION = 0.4


@dataclass(frozen=True)
class ClassificationSpec:
    """What to generate; the dataset is a pure function of this spec.

    Args:
        num_classes: Number of classes: the first ``num_classes`` shapes of
            :data:`nasdet.data.render.SHAPES` (default: all of them).
        image_size: Side of the square images (px).
        num_train_per_class: Training images per class.
        num_val_per_class: Validation images per class.
        scale_range: ``(min, max)`` object size (px), the extent of the shape's longer
            axis before rotation; ``max <= image_size / sqrt(2)``.
        background: ``plain``, ``textured`` or ``cluttered``.
        seed: Random seed; everything else equal, one seed gives byte-identical files.
        max_rotation: Rotation drawn uniformly in ``[-max_rotation, max_rotation]``
            degrees.
        noise_std: Standard deviation of Gaussian pixel noise (0..255 scale).
        min_contrast: Minimum Euclidean RGB distance (0..255 scale) between the object's
            colour and the mean colour beneath it, when one of several draws achieves it.
        num_distractors: ``(min, max)`` distractors per ``cluttered`` image.
    """

    num_classes: int = len(render.SHAPES)
    image_size: int = 64
    num_train_per_class: int = 1000
    num_val_per_class: int = 40
    scale_range: tuple[float, float] = (20.0, 44.0)
    background: str = "cluttered"
    seed: int = 0
    max_rotation: float = 180.0
    noise_std: float = 4.0
    min_contrast: float = 60.0
    num_distractors: tuple[int, int] = field(default=(1, 4))

    def __post_init__(self) -> None:
        name = type(self).__name__
        check_int(name, "num_classes", self.num_classes, 2, len(render.SHAPES))
        check_int(name, "num_train_per_class", self.num_train_per_class, 1)
        check_int(name, "num_val_per_class", self.num_val_per_class, 1)
        check_appearance(self)

    @property
    def classes(self) -> tuple[str, ...]:
        """Class names; a label is an index into this tuple."""
        return render.SHAPES[: self.num_classes]

    def to_dict(self) -> dict[str, Any]:
        """The spec as a JSON-ready dict (pairs as lists)."""
        return {k: list(v) if isinstance(v, tuple) else v for k, v in asdict(self).items()}


def render_classification_image(
    rng: np.random.Generator, spec: ClassificationSpec, label: int
) -> tuple[np.ndarray, tuple[int, int, int, int]]:
    """Render one image holding a single object of class ``label``.

    Args:
        rng: Random generator (the image is a pure function of its state).
        spec: Dataset spec.
        label: Class index into ``spec.classes``.

    Returns:
        ``(image, bbox)``: ``uint8`` ``(S, S, 3)`` image and the object's ``(x, y, w, h)``.
    """
    size = spec.image_size
    canvas = render.render_background(rng, size, spec.background)
    if spec.background == "cluttered":
        count = int(rng.integers(spec.num_distractors[0], spec.num_distractors[1] + 1))
        render.draw_distractors(rng, canvas, count, spec.scale_range, _MAX_FRAGMENT_FRACTION)
    cov = render.shape_coverage(
        render.SHAPES[label],
        rng.uniform(*spec.scale_range),
        rng.uniform(-spec.max_rotation, spec.max_rotation),
        tuple(rng.uniform(0.0, 1.0, 2)),
    )
    h, w = cov.shape
    x0, y0 = int(rng.integers(0, size - w + 1)), int(rng.integers(0, size - h + 1))
    colour = render.contrasting_colour(rng, canvas, cov, x0, y0, spec.min_contrast)
    render.composite(canvas, cov, render.shaded_fill(rng, colour, h, w), x0, y0)
    return render.finish(rng, canvas, spec.noise_std), (x0, y0, w, h)


def make_classification_dataset(
    root: str | Path, spec: ClassificationSpec | None = None, *, progress: bool = True
) -> Path:
    """Generate (or find cached) an ImageNet-style classification dataset under ``root``.

    Args:
        root: Dataset directory; created atomically (a temporary sibling renamed into
            place), so an interrupted call leaves no ``root`` behind.
        spec: What to generate; defaults to ``ClassificationSpec()``.
        progress: Show a progress bar.

    Returns:
        ``root`` as a :class:`~pathlib.Path`.

    Raises:
        NasdetError: If ``root`` holds something other than this dataset.

    Example:
        >>> import tempfile
        >>> spec = ClassificationSpec(num_classes=3, num_train_per_class=2, num_val_per_class=1)
        >>> root = make_classification_dataset(tempfile.mkdtemp() + "/src", spec, progress=False)
        >>> sorted(p.name for p in (root / "train").iterdir())
        ['circle', 'square', 'triangle']
    """
    spec = spec if spec is not None else ClassificationSpec()
    root = Path(root)
    if _store.is_complete(root, KIND, spec.to_dict()):
        return root
    from nasdet.utils.progress import progress as progress_bar

    per_split = (spec.num_train_per_class, spec.num_val_per_class)
    with (
        _store.building(root, KIND, spec.to_dict()) as tmp,
        progress_bar(
            total=sum(per_split) * spec.num_classes,
            desc=f"classification dataset {root.name}",
            unit="img",
            disable=not progress,
        ) as bar,
    ):
        (tmp / "annotations").mkdir()
        for split_id, (split, count) in enumerate(zip(SPLITS, per_split, strict=True)):
            lines = []
            for label, name in enumerate(spec.classes):
                folder = tmp / split / name
                folder.mkdir(parents=True)
                for index in range(count):
                    rng = _store.image_rng(spec.seed, 2, split_id, label, index)
                    image, _ = render_classification_image(rng, spec, label)
                    file_name = f"{name}_{index:06d}.png"
                    _store.save_png(folder / file_name, image)
                    lines.append(f"{name}/{file_name} {label}\n")
                    bar.update()
            atomic_write_text(tmp / "annotations" / f"{split}.txt", "".join(lines))
        atomic_write_json(tmp / _store.META_FILE, _meta(spec))
    return root


def _meta(spec: ClassificationSpec) -> dict[str, Any]:
    counts = {"train": spec.num_train_per_class, "val": spec.num_val_per_class}
    return {
        "kind": KIND,
        "format_version": _store.FORMAT_VERSION,
        "generator": "nasdet.data.classification",
        "spec": spec.to_dict(),
        "classes": list(spec.classes),
        "splits": {
            split: {
                "images_dir": f"{split}/",
                "ann_file": f"annotations/{split}.txt",
                "images": n * spec.num_classes,
                "images_per_class": n,
            }
            for split, n in counts.items()
        },
        "units": {"counts": "images"},
    }
