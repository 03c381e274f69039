"""Synthetic datasets: determinism, annotation correctness against the pixels, COCO and
mmdet compatibility, caching, atomicity and the command-line tool."""

from __future__ import annotations

import importlib.util
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from nasdet.data import (
    SHAPES,
    ClassificationSpec,
    DetectionSpec,
    _store,
    detection,
    ensure_dataset,
    make_classification_dataset,
    make_detection_dataset,
    read_meta,
    render_classification_image,
    render_detection_image,
)
from nasdet.errors import NasdetError

REPO = Path(__file__).resolve().parents[2]

# Small, fast specs; plain backgrounds without noise let tests read objects off the pixels.
SMALL = dict(num_train=12, num_val=6, image_size=96, scale_range=(14.0, 40.0))
CLEAN = dict(SMALL, background="plain", noise_std=0.0)


def _files(root: Path) -> dict[str, bytes]:
    return {
        str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()
    }


def _coco(root: Path, split: str) -> dict:
    return json.loads((root / "annotations" / f"{split}.json").read_text())


def _background_colour(image: np.ndarray) -> np.ndarray:
    """The most frequent colour: the uniform background of a ``plain`` image."""
    colours, counts = np.unique(image.reshape(-1, 3), axis=0, return_counts=True)
    return colours[counts.argmax()]


def _changed_extent(image: np.ndarray, bg: np.ndarray, box, pad: int = 2) -> tuple[int, ...]:
    """``(x0, y0, x1, y1)`` of the pixels differing from ``bg`` around ``box`` (x, y, w, h)."""
    x, y, w, h = (int(v) for v in box)
    x0, y0 = max(x - pad, 0), max(y - pad, 0)
    window = image[y0 : y + h + pad, x0 : x + w + pad]
    rows, cols = np.nonzero((window != bg).any(axis=2))
    return x0 + cols.min(), y0 + rows.min(), x0 + cols.max() + 1, y0 + rows.max() + 1


def _overlaps(a, b, pad: int) -> bool:
    return not (
        a[0] + a[2] + pad <= b[0] - pad
        or b[0] + b[2] + pad <= a[0] - pad
        or a[1] + a[3] + pad <= b[1] - pad
        or b[1] + b[3] + pad <= a[1] - pad
    )


@pytest.fixture(scope="module")
def det_root(tmp_path_factory) -> Path:
    return make_detection_dataset(
        tmp_path_factory.mktemp("det") / "shapes", DetectionSpec(**SMALL, seed=3), progress=False
    )


@pytest.fixture(scope="module")
def clean_root(tmp_path_factory) -> Path:
    spec = DetectionSpec(**{**CLEAN, "num_train": 40}, objects_per_image=(1, 5), seed=5)
    return make_detection_dataset(tmp_path_factory.mktemp("clean") / "shapes", spec, progress=False)


# ----------------------------------------------------------------------- determinism


def test_same_spec_gives_byte_identical_files_and_other_seeds_differ(tmp_path):
    spec = DetectionSpec(num_train=4, num_val=2, image_size=64, scale_range=(12.0, 40.0))
    a = _files(make_detection_dataset(tmp_path / "a", spec, progress=False))
    b = _files(make_detection_dataset(tmp_path / "b", spec, progress=False))
    assert a.keys() == b.keys()
    assert len([k for k in a if k.endswith(".png")]) == 6
    assert a == b

    other = DetectionSpec(**{**spec.to_dict(), "seed": 1})
    c = _files(make_detection_dataset(tmp_path / "c", other, progress=False))
    assert c.keys() == a.keys()
    assert all(c[k] != a[k] for k in a if k.endswith(".png"))
    assert c["annotations/train.json"] != a["annotations/train.json"]


def test_written_images_and_annotations_match_a_fresh_render(det_root):
    spec = DetectionSpec(**SMALL, seed=3)
    anns = _coco(det_root, "val")["annotations"]
    for index in range(spec.num_val):
        image, objects, _ = render_detection_image(_store.image_rng(3, 1, 1, index), spec)
        on_disk = np.asarray(Image.open(det_root / "val" / f"{index:06d}.png").convert("RGB"))
        np.testing.assert_array_equal(on_disk, image)
        mine = [a for a in anns if a["image_id"] == index + 1]
        assert [a["bbox"] for a in mine] == [list(map(float, o.bbox)) for o in objects]
        assert [a["category_id"] for a in mine] == [o.label + 1 for o in objects]


# ------------------------------------------------------------------ annotation content


def test_coco_json_is_valid_and_boxes_lie_inside_images(det_root):
    from pycocotools.coco import COCO

    spec = DetectionSpec(**SMALL, seed=3)
    for split, count in (("train", spec.num_train), ("val", spec.num_val)):
        coco = COCO(str(det_root / "annotations" / f"{split}.json"))
        assert len(coco.getImgIds()) == count
        cats = coco.loadCats(coco.getCatIds())
        assert [(c["id"], c["name"]) for c in cats] == [
            (1, "circle"),
            (2, "square"),
            (3, "triangle"),
            (4, "star"),
        ]
        anns = coco.loadAnns(coco.getAnnIds())
        assert len(anns) >= count  # at least one object per image by default
        assert len({a["id"] for a in anns}) == len(anns)
        for ann in anns:
            img = coco.loadImgs(ann["image_id"])[0]
            x, y, w, h = ann["bbox"]
            assert 0 <= x and 0 <= y and x + w <= img["width"] and y + h <= img["height"]
            assert w >= 1 and h >= 1 and ann["iscrowd"] == 0
            assert 0 < ann["area"] <= w * h
        for img in coco.loadImgs(coco.getImgIds()):
            with Image.open(det_root / split / img["file_name"]) as im:
                assert im.size == (img["width"], img["height"]) == (96, 96)


def test_boxes_match_the_rendered_pixels_of_unoccluded_objects(clean_root):
    coco = _coco(clean_root, "train")
    checked = 0
    for img in coco["images"]:
        image = np.asarray(Image.open(clean_root / "train" / img["file_name"]).convert("RGB"))
        bg = _background_colour(image)
        boxes = [a["bbox"] for a in coco["annotations"] if a["image_id"] == img["id"]]
        for i, box in enumerate(boxes):
            if any(_overlaps(box, other, 2) for j, other in enumerate(boxes) if j != i):
                continue
            x0, y0, x1, y1 = _changed_extent(image, bg, box)
            expected = (box[0], box[1], box[0] + box[2], box[1] + box[3])
            assert np.abs(np.subtract((x0, y0, x1, y1), expected)).max() <= 1, (img, box)
            checked += 1
    assert checked >= 30


def test_every_object_keeps_min_visible_under_heavy_occlusion():
    spec = DetectionSpec(
        num_classes=12,
        image_size=96,
        objects_per_image=(6, 12),
        scale_range=(24.0, 48.0),
        min_visible=0.7,
        background="plain",
    )
    fractions, dropped = [], 0
    for index in range(20):
        _, objects, lost = render_detection_image(_store.image_rng(0, 9, index), spec)
        dropped += lost
        # Recompute visibility from the amodal masks and the drawing order.
        full = []
        for obj in objects:
            x, y, w, h = obj.bbox
            assert obj.coverage.shape == (h, w)
            mask = np.zeros((96, 96))
            mask[y : y + h, x : x + w] = obj.coverage
            full.append(mask)
        for i, mask in enumerate(full):
            visible = mask.copy()
            for later in full[i + 1 :]:
                visible *= 1 - later
            fractions.append(visible.sum() / mask.sum())
        assert [o.visible_fraction for o in objects] == pytest.approx(fractions[-len(objects) :])
    fractions = np.array(fractions)
    assert fractions.min() >= 0.7 - 1e-6
    assert (fractions < 0.95).mean() > 0.1  # occlusion really happens
    assert dropped > 0  # and crowded scenes really hit the limit


def test_dataset_records_visible_fraction_at_least_min_visible(det_root):
    for split in ("train", "val"):
        for ann in _coco(det_root, split)["annotations"]:
            assert ann["visible_fraction"] >= 0.6


def test_classes_are_balanced_and_colour_does_not_identify_the_class():
    spec = DetectionSpec(
        num_classes=4,
        image_size=96,
        scale_range=(20.0, 40.0),
        background="plain",
        noise_std=0.0,
        min_contrast=0.0,
    )
    labels: list[int] = []
    colours: dict[int, list[np.ndarray]] = {k: [] for k in range(4)}
    for index in range(150):
        image, objects, _ = render_detection_image(_store.image_rng(1, 9, index), spec)
        for i, obj in enumerate(objects):
            labels.append(obj.label)
            x, y, w, h = obj.bbox
            core = obj.coverage == 1.0
            if core.any() and not any(_overlaps(obj.bbox, o.bbox, 0) for o in objects[i + 1 :]):
                colours[obj.label].append(image[y : y + h, x : x + w][core].mean(axis=0))
    shares = np.bincount(labels, minlength=4) / len(labels)
    assert len(labels) > 300
    assert shares.min() > 0.2 and shares.max() < 0.3
    means = [np.mean(colours[k], axis=0) for k in range(4)]
    spread = max(np.linalg.norm(a - b) for a in means for b in means)
    assert spread < 45  # per-class mean colours are all near the same grey


# ------------------------------------------------------------------------ mmdet


def _mmdet_dataset(root: Path, split: str, classes):
    from mmdet.datasets import CocoDataset
    from mmdet.utils import register_all_modules

    register_all_modules()
    return CocoDataset(
        data_root=str(root),
        ann_file=f"annotations/{split}.json",
        data_prefix=dict(img=f"{split}/"),
        metainfo=dict(classes=classes),
        pipeline=[
            dict(type="LoadImageFromFile"),
            dict(type="LoadAnnotations", with_bbox=True),
            dict(type="PackDetInputs"),
        ],
        test_mode=False,
    )


def test_mmdet_coco_dataset_loads_every_instance(det_root):
    classes = DetectionSpec().classes
    coco = _coco(det_root, "train")
    dataset = _mmdet_dataset(det_root, "train", classes)
    assert len(dataset) == len(coco["images"])
    total = 0
    for i in range(len(dataset)):
        item = dataset[i]
        sample = item["data_samples"]
        assert tuple(item["inputs"].shape) == (3, 96, 96)
        anns = [a for a in coco["annotations"] if a["image_id"] == sample.img_id]
        expected = np.array([[x, y, x + w, y + h] for x, y, w, h in (a["bbox"] for a in anns)])
        np.testing.assert_allclose(sample.gt_instances.bboxes.numpy(), expected.reshape(-1, 4))
        assert sample.gt_instances.labels.tolist() == [a["category_id"] - 1 for a in anns]
        total += len(anns)
    assert total == len(coco["annotations"])


def test_coco_metric_scores_ground_truth_as_perfect(det_root):
    import torch
    from mmdet.evaluation import CocoMetric

    classes = DetectionSpec().classes
    dataset = _mmdet_dataset(det_root, "val", classes)

    def evaluate(shift_labels: int) -> dict:
        metric = CocoMetric(ann_file=str(det_root / "annotations" / "val.json"), metric="bbox")
        metric.dataset_meta = dict(classes=classes)
        for i in range(len(dataset)):
            sample = dataset[i]["data_samples"]
            gt = sample.gt_instances
            n = len(gt.labels)
            pred = dict(
                bboxes=gt.bboxes.tensor if hasattr(gt.bboxes, "tensor") else gt.bboxes,
                scores=torch.ones(n),
                labels=(gt.labels + shift_labels) % len(classes),
            )
            metric.process(
                {}, [dict(img_id=sample.img_id, ori_shape=sample.ori_shape, pred_instances=pred)]
            )
        return metric.evaluate(size=len(dataset))

    perfect = evaluate(0)
    assert perfect["coco/bbox_mAP"] == pytest.approx(1.0, abs=1e-3)
    assert perfect["coco/bbox_mAP_50"] == pytest.approx(1.0, abs=1e-3)
    assert evaluate(1)["coco/bbox_mAP_50"] < 0.1  # the check can fail


# --------------------------------------------------------------------- validation


@pytest.mark.parametrize(
    ("kwargs", "key"),
    [
        (dict(num_classes=0), "num_classes"),
        (dict(num_classes=len(SHAPES) + 1), "num_classes"),
        (dict(num_classes=True), "num_classes"),
        (dict(image_size=8), "image_size"),
        (dict(num_train=0), "num_train"),
        (dict(num_val=1.5), "num_val"),
        (dict(objects_per_image=(3, 2)), "objects_per_image"),
        (dict(objects_per_image=(0, 0)), "objects_per_image"),
        (dict(objects_per_image=5), "objects_per_image"),
        (dict(scale_range=(30.0, 20.0)), "scale_range"),
        (dict(scale_range=(16.0, 100.0)), "scale_range"),  # 100 * sqrt(2) > 128
        (dict(min_visible=0.0), "min_visible"),
        (dict(min_visible=1.5), "min_visible"),
        (dict(min_visible=float("nan")), "min_visible"),
        (dict(background="foggy"), "background"),
        (dict(seed=-1), "seed"),
        (dict(noise_std=-1.0), "noise_std"),
        (dict(max_rotation=270.0), "max_rotation"),
        (dict(num_distractors=(2, 1)), "num_distractors"),
    ],
)
def test_invalid_detection_spec_names_the_field(kwargs, key):
    with pytest.raises(NasdetError) as err:
        DetectionSpec(**kwargs)
    assert err.value.key == f"DetectionSpec.{key}"


def test_invalid_classification_spec_and_unknown_options(tmp_path):
    with pytest.raises(NasdetError, match="num_classes"):
        ClassificationSpec(num_classes=1)
    with pytest.raises(NasdetError, match="scale_range"):
        ClassificationSpec(image_size=32)  # default scale (20, 44) does not fit
    with pytest.raises(NasdetError) as err:
        ensure_dataset("detection", tmp_path / "x", num_clases=3)
    assert err.value.key == "DetectionSpec.num_clases"
    with pytest.raises(NasdetError, match="kind"):
        ensure_dataset("segmentation", tmp_path / "x")
    assert not (tmp_path / "x").exists()


# ------------------------------------------------------------- caching and atomicity


def _mtimes(root: Path) -> dict[str, int]:
    return {str(p.relative_to(root)): p.stat().st_mtime_ns for p in root.rglob("*")}


def test_second_call_reuses_and_a_different_spec_is_refused(tmp_path):
    kwargs = dict(num_train=3, num_val=2, image_size=64, scale_range=(12.0, 40.0))
    root = ensure_dataset("detection", tmp_path / "d", progress=False, **kwargs)
    before = _mtimes(root)
    assert ensure_dataset("detection", root, progress=False, **kwargs) == root
    assert make_detection_dataset(root, DetectionSpec(**kwargs), progress=False) == root
    assert _mtimes(root) == before

    with pytest.raises(NasdetError) as err:
        ensure_dataset("detection", root, progress=False, **kwargs, seed=7)
    assert err.value.key == "spec.seed" and err.value.file == str(root / "meta.json")
    with pytest.raises(NasdetError, match="'detection' dataset"):
        ensure_dataset("classification", root, progress=False)
    assert _mtimes(root) == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["d"]


def test_foreign_directory_is_refused_and_empty_directory_is_filled(tmp_path):
    foreign = tmp_path / "foreign"
    foreign.mkdir()
    (foreign / "notes.txt").write_text("mine")
    with pytest.raises(NasdetError, match="no meta.json"):
        ensure_dataset("detection", foreign, num_train=1, num_val=1, progress=False)
    assert [p.name for p in foreign.iterdir()] == ["notes.txt"]

    empty = tmp_path / "empty"
    empty.mkdir()
    ensure_dataset("detection", empty, num_train=1, num_val=1, progress=False)
    assert read_meta(empty)["splits"]["train"]["images"] == 1


@pytest.mark.parametrize("exc", [RuntimeError, KeyboardInterrupt])
def test_failure_mid_generation_leaves_nothing_behind(tmp_path, monkeypatch, exc):
    real = detection.render_detection_image
    calls = []

    def failing(rng, spec):
        calls.append(1)
        if len(calls) > 5:
            raise exc("simulated failure")
        return real(rng, spec)

    monkeypatch.setattr(detection, "render_detection_image", failing)
    parent = tmp_path / "datasets"
    with pytest.raises(exc):
        make_detection_dataset(
            parent / "shapes", DetectionSpec(num_train=8, num_val=2), progress=False
        )
    assert len(calls) == 6
    assert list(parent.iterdir()) == []

    monkeypatch.setattr(detection, "render_detection_image", real)
    make_detection_dataset(parent / "shapes", DetectionSpec(num_train=8, num_val=2), progress=False)
    assert [p.name for p in parent.iterdir()] == ["shapes"]


def test_losing_a_generation_race_keeps_the_winner(tmp_path):
    kwargs = dict(num_train=1, num_val=1)
    root = ensure_dataset("detection", tmp_path / "shapes", progress=False, **kwargs)
    before = _files(root)
    spec = DetectionSpec(**kwargs).to_dict()
    # A second process that generated the same dataset meanwhile publishes after us.
    with _store.building(root, "detection", spec) as tmp:
        (tmp / "meta.json").write_text("{}")
    assert _files(root) == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["shapes"]
    with pytest.raises(NasdetError, match="different spec"):
        with _store.building(root, "detection", {**spec, "seed": 1}):
            pass
    assert sorted(p.name for p in tmp_path.iterdir()) == ["shapes"]


def test_leftovers_of_killed_generations_are_removed(tmp_path):
    proc = subprocess.run(
        [sys.executable, "-c", "import os; print(os.getpid())"],
        capture_output=True,
        text=True,
        check=True,
    )
    dead = int(proc.stdout)
    stale = tmp_path / f".shapes.partial-{_store._host()}-{dead}-0000"
    stale.mkdir()
    (stale / "000000.png").write_bytes(b"half")
    alive = tmp_path / f".shapes.partial-otherhost-{dead}-0000"
    alive.mkdir()  # another machine's generation may still be running
    ensure_dataset("detection", tmp_path / "shapes", num_train=1, num_val=1, progress=False)
    assert sorted(p.name for p in tmp_path.iterdir()) == [alive.name, "shapes"]


# ------------------------------------------------------------------ classification


def test_classification_layout_counts_and_determinism(tmp_path):
    spec = ClassificationSpec(
        num_classes=3,
        image_size=32,
        num_train_per_class=4,
        num_val_per_class=2,
        scale_range=(10.0, 22.0),
    )
    root = make_classification_dataset(tmp_path / "a", spec, progress=False)
    for split, n in (("train", 4), ("val", 2)):
        folders = sorted(p.name for p in (root / split).iterdir())
        assert folders == ["circle", "square", "triangle"]
        for name in folders:
            files = sorted((root / split / name).glob("*.png"))
            assert len(files) == n
            with Image.open(files[0]) as im:
                assert im.size == (32, 32) and im.mode == "RGB"
        lines = (root / "annotations" / f"{split}.txt").read_text().splitlines()
        assert len(lines) == 3 * n
        for line in lines:
            path, label = line.split()
            assert (root / split / path).is_file()
            assert spec.classes[int(label)] == path.split("/")[0]
    meta = read_meta(root)
    assert meta["classes"] == ["circle", "square", "triangle"]
    assert meta["splits"]["train"]["images"] == 12
    again = make_classification_dataset(tmp_path / "b", spec, progress=False)
    assert _files(root) == _files(again)


def test_classification_default_covers_the_whole_vocabulary():
    spec = ClassificationSpec()
    assert spec.classes == SHAPES and len(SHAPES) >= 10
    assert len(spec.classes) > DetectionSpec().num_classes


def test_classification_object_box_matches_pixels():
    spec = ClassificationSpec(image_size=64, background="plain", noise_std=0.0)
    for index in range(24):
        label = index % len(SHAPES)
        image, box = render_classification_image(_store.image_rng(4, index), spec, label)
        extent = _changed_extent(image, _background_colour(image), box)
        expected = (box[0], box[1], box[0] + box[2], box[1] + box[3])
        assert np.abs(np.subtract(extent, expected)).max() <= 1


# ------------------------------------------------------------------------- tool


def _load_tool():
    spec = importlib.util.spec_from_file_location(
        "make_dataset_tool", REPO / "tools" / "make_dataset.py"
    )
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_tool_generates_reports_and_rejects_bad_options(tmp_path, capsys):
    tool = _load_tool()
    out = tmp_path / "det"
    argv = [
        "detection",
        str(out),
        "--num-train",
        "3",
        "--num-val",
        "2",
        "--image-size",
        "64",
        "--scale-range",
        "12",
        "40",
        "--objects-per-image",
        "2",
        "2",
        "--no-progress",
    ]
    assert tool.main(argv) == 0
    printed = capsys.readouterr().out
    meta = read_meta(out)
    assert meta["spec"]["objects_per_image"] == [2, 2]
    assert meta["spec"]["scale_range"] == [12.0, 40.0]
    train = meta["splits"]["train"]
    assert f"train: 3 images, {train['objects']} objects" in printed
    assert "circle, square, triangle, star" in printed

    assert tool.main(argv) == 0
    assert "reused" in capsys.readouterr().out
    assert tool.main([*argv, "--seed", "2"]) == 2
    assert "spec.seed" in capsys.readouterr().err
    assert tool.main(["classification", str(tmp_path / "c"), "--min-visible", "0.5"]) == 2
    assert "--min-visible" in capsys.readouterr().err

    cls = tmp_path / "cls"
    argv = [
        "classification",
        str(cls),
        "--num-classes",
        "2",
        "--num-train",
        "2",
        "--num-val",
        "1",
        "--image-size",
        "32",
        "--scale-range",
        "10",
        "20",
        "--no-progress",
    ]
    assert tool.main(argv) == 0
    assert sum(1 for _ in (cls / "train").rglob("*.png")) == 4
