"""Generate a synthetic dataset (cached: a second run with the same options is instant).

Examples:
    python tools/make_dataset.py detection data/shapes
    python tools/make_dataset.py detection data/shapes8 --num-classes 8 --background textured
    python tools/make_dataset.py classification data/shapes_cls --num-train 100
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path
from typing import Any

from nasdet.cli import run_tool
from nasdet.data import BACKGROUNDS, ensure_dataset, read_meta
from nasdet.errors import NasdetError


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    """Parse the command line; options left out take the spec's defaults."""
    parser = argparse.ArgumentParser(
        description="Generate a synthetic shapes dataset: COCO-format detection or an "
        "ImageNet-style classification source task. Options left out take the defaults of "
        "nasdet.data.DetectionSpec / ClassificationSpec.",
    )
    parser.add_argument("kind", choices=["detection", "classification"])
    parser.add_argument("out_dir", type=Path, help="dataset directory (created atomically)")
    parser.add_argument("--num-classes", type=int, help="first N shapes of the vocabulary")
    parser.add_argument("--image-size", type=int, help="square image side (px)")
    parser.add_argument(
        "--num-train", type=int, help="training images (per class for classification)"
    )
    parser.add_argument(
        "--num-val", type=int, help="validation images (per class for classification)"
    )
    parser.add_argument("--seed", type=int)
    parser.add_argument("--background", choices=BACKGROUNDS)
    parser.add_argument(
        "--scale-range", type=float, nargs=2, metavar=("MIN", "MAX"), help="object size (px)"
    )
    parser.add_argument("--num-distractors", type=int, nargs=2, metavar=("MIN", "MAX"))
    parser.add_argument("--max-rotation", type=float, help="degrees")
    parser.add_argument("--noise-std", type=float, help="pixel noise std (0..255 scale)")
    parser.add_argument("--min-contrast", type=float, help="RGB distance (0..255 scale)")
    det = parser.add_argument_group("detection only")
    det.add_argument("--objects-per-image", type=int, nargs=2, metavar=("MIN", "MAX"))
    det.add_argument("--min-visible", type=float, help="smallest visible fraction of an object")
    parser.add_argument("--no-progress", action="store_true", help="hide the progress bar")
    return parser.parse_args(argv)


def spec_kwargs(args: argparse.Namespace) -> dict[str, Any]:
    """Spec fields given on the command line, named as the spec names them."""
    fields = [
        "num_classes",
        "image_size",
        "seed",
        "background",
        "scale_range",
        "num_distractors",
        "max_rotation",
        "noise_std",
        "min_contrast",
    ]
    renames = {"num_train": "num_train", "num_val": "num_val"}
    if args.kind == "detection":
        fields += ["objects_per_image", "min_visible"]
    else:
        renames = {"num_train": "num_train_per_class", "num_val": "num_val_per_class"}
        for option in ("objects_per_image", "min_visible"):
            if getattr(args, option) is not None:
                key = "--" + option.replace("_", "-")
                raise NasdetError("applies to detection datasets only", key=key)
    names = {f: f for f in fields} | renames
    return {
        field: tuple(value) if isinstance(value, list) else value
        for arg, field in names.items()
        if (value := getattr(args, arg)) is not None
    }


def summary(root: Path, seconds: float, cached: bool) -> str:
    """A few lines describing the dataset at ``root``."""
    meta = read_meta(root)
    lines = [
        f"{meta['kind']} dataset at {root} "
        + ("(already there, reused)" if cached else f"(generated in {seconds:.1f} s)"),
        f"  classes ({len(meta['classes'])}): {', '.join(meta['classes'])}",
    ]
    for split, info in meta["splits"].items():
        line = f"  {split}: {info['images']} images"
        if "objects" in info:
            line += f", {info['objects']} objects"
            if info.get("objects_dropped"):
                line += f" ({info['objects_dropped']} dropped by the occlusion limit)"
        lines.append(line)
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    """Run the tool; returns the process exit status."""
    args = parse_args(argv)
    try:
        kwargs = spec_kwargs(args)
        cached = (args.out_dir / "meta.json").is_file()
        start = time.perf_counter()
        root = ensure_dataset(args.kind, args.out_dir, progress=not args.no_progress, **kwargs)
        print(summary(root, time.perf_counter() - start, cached))
    except NasdetError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    return 0


def run() -> None:
    """The ``nasdet-make-dataset`` command."""
    sys.exit(run_tool(main))


if __name__ == "__main__":
    run()
