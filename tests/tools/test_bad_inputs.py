"""Bad inputs to the tools: exit code 2, one ``error: FILE: KEY: message`` line, nothing written.

Each case runs a tool's ``main`` in-process through :func:`nasdet.cli.run_tool`, as the
script's ``__main__`` does. The table of every input tried is ``docs/bad_inputs.md``.
"""

from __future__ import annotations

import json
import re
import shutil
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import pytest
import torch

from nasdet.cli import ConfigOptionsAction, run_tool
from nasdet.errors import NasdetError
from tests.conftest import REPO, load_tool, shrink_config

TOOLS = {name: load_tool(name) for name in (
    "train", "test", "search", "sample_space", "analyze_spectrum", "derive_widths")}


@dataclass
class Env:
    """Files the cases point at (made once per module)."""

    tmp: Path
    good: Path  # a config of the tiny detector on a 16 + 8 image dataset
    data: Path

    def variant(self, name: str, edit: Callable[[Path], None]) -> Path:
        """A config on a copy of the dataset changed by ``edit(root)``."""
        root = self.tmp / f"data_{name}"
        if not root.exists():
            shutil.copytree(self.data, root)
            edit(root)
        cfg = shrink_config("tiny_faster_rcnn_synth.py", root, self.tmp / "work")
        path = self.tmp / f"{name}.py"
        cfg.dump(str(path))
        return path

    def write(self, name: str, text: str) -> Path:
        path = self.tmp / name
        path.write_text(text)
        return path


@pytest.fixture(scope="module")
def env(tiny_det_root: Path, tmp_path_factory: pytest.TempPathFactory) -> Env:
    tmp = tmp_path_factory.mktemp("bad_inputs")
    cfg = shrink_config("tiny_faster_rcnn_synth.py", tiny_det_root, tmp / "work")
    good = tmp / "good.py"
    cfg.dump(str(good))
    return Env(tmp=tmp, good=good, data=tiny_det_root)


def _truncate_train_json(root: Path) -> None:
    ann = root / "annotations" / "train.json"
    ann.write_bytes(ann.read_bytes()[: ann.stat().st_size // 2])


def _remove_fourth_val_image(root: Path) -> None:
    name = json.loads((root / "annotations" / "val.json").read_text())["images"][3]["file_name"]
    (root / "val" / name).unlink()


def _drop_categories(root: Path) -> None:
    ann = root / "annotations" / "val.json"
    data = json.loads(ann.read_text())
    del data["categories"]
    ann.write_text(json.dumps(data))


def _search_yaml(env: Env, name: str, extra: str) -> Path:
    """The shipped tiny search config (its space made absolute) plus ``extra`` lines."""
    text = (REPO / "configs/search/tiny_synth.yaml").read_text()
    space = str(REPO / "search_spaces" / "tiny_synth.yaml")
    lines = [f"space: {space}" if ln.startswith("space:") else ln for ln in text.splitlines()]
    return env.write(name, "\n".join(lines) + "\n" + extra)


def _ckpt(env: Env) -> Path:
    path = env.tmp / "empty_state.pth"
    torch.save({"state_dict": {}}, path)
    return path


def _retina_ckpt(env: Env) -> Path:
    """Weights of another detector (RetinaNet) that share the backbone and neck."""
    from nasdet.models.utils.build import build_detector

    path = env.tmp / "retina.pth"
    if not path.exists():
        cfg = shrink_config("tiny_retinanet_synth.py", env.data, env.tmp / "work_r")
        torch.save({"state_dict": build_detector(cfg).state_dict(), "meta": {}}, path)
    return path


# id -> (tool, argv(env) -> (argv, paths that must not exist afterwards), words in the line)
CASES: dict[str, tuple[str, Callable[[Env], tuple[list[str], list[Path]]], list[str]]] = {
    "cfg-options item without '='": (
        "train", lambda e: ([str(e.good), "--cfg-options", "foo", "--work-dir",
                             str(e.tmp / "w1")], [e.tmp / "w1"]),
        ["error: --cfg-options: 'foo' has no '='"]),
    "cfg-options unbalanced brackets": (
        "test", lambda e: ([str(e.good), str(_ckpt(e)), "--cfg-options", "k=[1,"], []),
        ["--cfg-options: 'k=[1,'", "brackets do not balance", "'[' is not closed"]),
    "cfg-options list split by the shell": (
        "analyze_spectrum", lambda e: ([str(e.good), "--layers", "fpn", "--num-images", "1",
                                        "--cfg-options", "a=1", "k=[1,", "2]"], []),
        ["--cfg-options: 'k=[1,'", "quoted whole"]),
    "cfg-options empty key": (
        "train", lambda e: ([str(e.good), "--cfg-options", "=5"], []),
        ["--cfg-options: '=5': empty key"]),
    "cfg-options misspelt model argument": (
        "train", lambda e: ([str(e.good), "--cfg-options", "model.backbone.deth=34",
                             "--work-dir", str(e.tmp / "w2")], [e.tmp / "w2"]),
        ["good.py: model.backbone.deth: FlexResNet takes no argument 'deth'",
         "did you mean 'depth'?"]),
    "cfg-options misspelt loop argument": (
        "train", lambda e: ([str(e.good), "--cfg-options", "train_cfg.max_epoch=2",
                             "--work-dir", str(e.tmp / "w12")], [e.tmp / "w12"]),
        ["good.py: train_cfg.max_epoch: EpochBasedTrainLoop takes no argument 'max_epoch'"]),
    "cfg-options key under a number": (
        "train", lambda e: ([str(e.good), "--cfg-options", "train_cfg.max_epochs.x=1",
                             "--work-dir", str(e.tmp / "w14")], [e.tmp / "w14"]),
        ["good.py: --cfg-options train_cfg.max_epochs.x: cannot set this option"]),
    "checkpoint of another detector to test": (
        "test", lambda e: ([str(e.good), str(_retina_ckpt(e)), "--work-dir",
                            str(e.tmp / "w13")], [e.tmp / "w13"]),
        ["retina.pth", "missing"]),
    "truncated COCO annotation file": (
        "train", lambda e: ([str(e.variant("trunc", _truncate_train_json)), "--work-dir",
                             str(e.tmp / "w3")], [e.tmp / "w3"]),
        ["trunc.py: train_dataloader.dataset.ann_file:", "data_trunc/annotations/train.json",
         "not valid JSON (line 1, column", "truncated?"]),
    "COCO annotation file without categories": (
        "test", lambda e: ([str(e.variant("nocat", _drop_categories)), str(_ckpt(e)),
                            "--work-dir", str(e.tmp / "w4")], [e.tmp / "w4"]),
        ["nocat.py: val_dataloader.dataset.ann_file:", "data_nocat/annotations/val.json",
         "'categories' is missing"]),
    "image named by the annotations missing on disk": (
        "analyze_spectrum", lambda e: ([str(e.variant("noimg", _remove_fourth_val_image)),
                                        "--layers", "fpn", "--num-images", "2", "--out",
                                        str(e.tmp / "sp1")], [e.tmp / "sp1"]),
        ["noimg.py: val_dataloader.dataset.data_prefix.img: image '000003.png'",
         "data_noimg/annotations/val.json (images[3].file_name)", "1 of 8 images missing"]),
    "space YAML syntax error": (
        "sample_space", lambda e: ([str(e.write("syn.yaml", "name: x\nwidths: [1, 2\nb: 3\n")),
                                    "--no-complexity", "--out", str(e.tmp / "s1")],
                                   [e.tmp / "s1"]),
        ["syn.yaml: not valid YAML at line 3, column 2", "from line 2"]),
    "space YAML with a python tag": (
        "sample_space", lambda e: ([str(e.write("tag.yaml",
                                                "name: !!python/object/apply:os.system [ls]\n")),
                                    "--no-complexity"], []),
        ["tag.yaml: YAML tag !!python/object/apply:os.system at line 1, column 7",
         "tags like !!python/... are not allowed"]),
    "space YAML not UTF-8": (
        "sample_space", lambda e: ([str(_ckpt(e)), "--no-complexity"], []),
        ["empty_state.pth: not a YAML text file"]),
    "search YAML syntax error": (
        "search", lambda e: ([str(e.write("ssyn.yaml", "stages: [a, b\nn_trials: 2\n")),
                              "--work-dir", str(e.tmp / "w5")], [e.tmp / "w5"]),
        ["ssyn.yaml: not valid YAML at line 2, column 9"]),
    "search YAML with a python tag": (
        "search", lambda e: ([str(e.write("stag.yaml", "space: !!python/name:os.getcwd ''\n")),
                              "--work-dir", str(e.tmp / "w6")], [e.tmp / "w6"]),
        ["stag.yaml: YAML tag !!python/name:os.getcwd at line 1, column 8",
         "tags like !!python/... are not allowed"]),
    "search YAML with an unknown key": (
        "search", lambda e: ([str(_search_yaml(e, "typo.yaml", "n_trails: 3\n")),
                              "--work-dir", str(e.tmp / "w7")], [e.tmp / "w7"]),
        ["typo.yaml: n_trails: unknown key"]),
    "empty search YAML": (
        "search", lambda e: ([str(e.write("empty.yaml", "")), "--work-dir", str(e.tmp / "w8")],
                             [e.tmp / "w8"]),
        ["empty.yaml: space: missing"]),
    "text file as checkpoint": (
        "test", lambda e: ([str(e.good), str(e.write("notes.txt", "epoch 1 loss 0.5\n")),
                            "--work-dir", str(e.tmp / "w9")], [e.tmp / "w9"]),
        ["notes.txt: CHECKPOINT: not a torch checkpoint"]),
    "text file to resume from": (
        "train", lambda e: ([str(e.good), "--resume", str(e.write("log.txt", "x\n")),
                             "--work-dir", str(e.tmp / "w10")], [e.tmp / "w10"]),
        ["log.txt: --resume: not a torch checkpoint"]),
    "text file as spectrum checkpoint": (
        "analyze_spectrum", lambda e: ([str(e.good), "init", str(e.write("n.txt", "x\n")),
                                        "--layers", "fpn", "--num-images", "1"], []),
        ["n.txt: CKPT: not a torch checkpoint"]),
    "directory as checkpoint": (
        "test", lambda e: ([str(e.good), str(e.tmp), "--work-dir", str(e.tmp / "w11")],
                           [e.tmp / "w11"]),
        ["CHECKPOINT: is a directory"]),
    "missing config": (
        "train", lambda e: ([str(e.tmp / "absent.py")], []),
        ["absent.py: config file not found"]),
    "negative --num-images": (
        "analyze_spectrum", lambda e: ([str(e.good), "--layers", "fpn", "--num-images", "-3",
                                        "--out", str(e.tmp / "sp2")], [e.tmp / "sp2"]),
        ["--num-images: must be >= 1, got -3"]),
    "work dir under a file": (
        "train", lambda e: ([str(e.good), "--work-dir", str(e.write("f1", "x") / "sub")],
                            [e.tmp / "f1" / "sub"]),
        ["f1/sub: --work-dir: work dir cannot be created:", "f1 is a file"]),
    "spectrum --out is a file": (
        "analyze_spectrum", lambda e: ([str(e.good), "--layers", "fpn", "--num-images", "1",
                                        "--out", str(e.write("f2", "x"))], []),
        ["f2: --out: output directory cannot be created: it is a file"]),
    "sample_space --out is a file": (
        "sample_space", lambda e: ([str(REPO / "search_spaces/tiny_synth.yaml"),
                                    "--no-complexity", "--num", "1", "--out",
                                    str(e.write("f3", "x"))], []),
        ["f3: --out: output directory cannot be created: it is a file"]),
    "derive_widths --out under a file": (
        "derive_widths", lambda e: ([str(e.good), str(e.write("r.json", "{}")), "--out",
                                     str(e.write("f4", "x") / "d.py")], []),
        ["f4: --out: folder of the derived config cannot be created"]),
}


@pytest.mark.parametrize("case", list(CASES))
def test_bad_input_is_one_error_line(case: str, env: Env, capfd) -> None:
    tool, make, words = CASES[case]
    argv, must_not_exist = make(env)
    capfd.readouterr()
    rc = run_tool(TOOLS[tool].main, argv)
    out, err = capfd.readouterr()
    lines = err.strip().splitlines()
    assert rc == 2, (out, err)
    assert len(lines) == 1, err
    assert lines[0].startswith("error: ") and "Traceback" not in err + out
    for word in words:
        assert word in lines[0], (word, lines[0])
    for path in must_not_exist:
        assert not path.exists(), f"{path} left behind"


def test_num_images_beyond_the_split_warns_with_the_number_used(env: Env, capfd) -> None:
    out_dir = env.tmp / "spectrum_big"
    rc = run_tool(TOOLS["analyze_spectrum"].main, [
        str(env.good), "--layers", "backbone_stages", "--num-images", "100000", "--out",
        str(out_dir), "--no-progress"])
    _, err = capfd.readouterr()
    assert rc == 0, err
    assert err.strip().splitlines() == [
        f"warning: {env.good}: --num-images: 100000 requested but the val split has 8 "
        "images: using 8"]
    meta = json.loads((out_dir / "spectrum.json").read_text())["meta"]
    assert (meta["num_images"], meta["num_images_requested"]) == (8, 100000)


@pytest.mark.parametrize("items", [
    ["a.b=1", "c=[1,2]", "d=(x,y)", "e=None", "f=true", "g=[(1,2),[3,4]]", "h='k=v'", "i=1,2"],
    ["model.backbone.widths=[16,32,64,128]", "x.y=-1.5e-3"],
])
def test_cfg_options_parse_as_mmengine_does(items: list[str]) -> None:
    import argparse

    from mmengine.config import DictAction

    ours, theirs = argparse.ArgumentParser(), argparse.ArgumentParser()
    ours.add_argument("--cfg-options", nargs="+", action=ConfigOptionsAction)
    theirs.add_argument("--cfg-options", nargs="+", action=DictAction)
    mine = ours.parse_args(["--cfg-options", *items]).cfg_options
    assert mine == theirs.parse_args(["--cfg-options", *items]).cfg_options
    assert mine["a.b" if "a.b" in mine else "x.y"] in (1, -1.5e-3)


@pytest.mark.parametrize("bad", ["k=1,[2", "k=(1,2]", "k=[1,2]]"])
def test_cfg_options_brackets_that_mmengine_refuses_are_one_error(bad: str) -> None:
    import argparse

    parser = argparse.ArgumentParser()
    parser.add_argument("--cfg-options", nargs="+", action=ConfigOptionsAction)
    with pytest.raises(NasdetError, match="^" + re.escape(f"--cfg-options: '{bad}'")):
        parser.parse_args(["--cfg-options", "ok=1", bad])


def test_misspelt_loop_argument_is_found_before_the_runner(env: Env) -> None:
    from nasdet.train import load_config
    from nasdet.train.checks import check_loops

    check_loops(load_config(env.good))  # the shipped keys are all arguments
    cfg = load_config(env.good, cfg_options={"train_cfg.max_epoch": 2})
    with pytest.raises(NasdetError, match="did you mean 'max_epochs'") as info:
        check_loops(cfg)
    assert (info.value.file, info.value.key) == (str(env.good), "train_cfg.max_epoch")
    assert info.value.message.startswith("EpochBasedTrainLoop takes no argument 'max_epoch'")
    with pytest.raises(NasdetError, match="ValLoop takes no argument 'fp61'") as info:
        check_loops(load_config(env.good, cfg_options={"val_cfg.fp61": True}))
    assert info.value.key == "val_cfg.fp61"


@pytest.mark.parametrize("quick", [False, True], ids=["json.load", "quick (large file)"])
def test_annotation_checks_full_and_quick_agree(env: Env, quick: bool) -> None:
    from nasdet.data.annotations import check_annotation_file

    limit = 0 if quick else 2**30
    root = env.tmp / f"ann_{quick}"
    shutil.copytree(env.data, root)
    ann, img_dir = root / "annotations" / "val.json", root / "val"

    def check(**kw) -> None:
        check_annotation_file(ann, ds_type="CocoDataset", img_dir=img_dir, file="c.py",
                              key="val_dataloader.dataset.ann_file",
                              full_parse_max_bytes=limit, **kw)

    check()  # the generated dataset is complete
    _remove_fourth_val_image(root)
    with pytest.raises(NasdetError, match=re.escape(
            "images[3].file_name) does not exist in") + ".*1 of 8 images missing") as info:
        check()
    assert info.value.key == "data_prefix.img"
    text = ann.read_text()
    ann.write_text(text[: len(text) - 10])
    with pytest.raises(NasdetError, match="truncated") as info:
        check()
    assert info.value.key == "val_dataloader.dataset.ann_file" and str(ann) in info.value.message
    data = json.loads(text)
    image_info = {"images": data["images"][:3], "categories": data["categories"]}
    ann.write_text(json.dumps(image_info))  # a test-dev style image-info file
    check(test_mode=True)
    with pytest.raises(NasdetError, match="'annotations' is missing"):
        check(test_mode=False)
    # A JSON file of another dataset type is only parsed (or, quick, checked for its ends).
    ann.write_text(json.dumps({"metainfo": {}, "data_list": []}))
    check_annotation_file(ann, ds_type="BaseDataset", img_dir=img_dir, full_parse_max_bytes=limit)
