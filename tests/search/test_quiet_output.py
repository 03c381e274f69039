"""A quiet terminal: a search prints nasdet's own lines; library chatter goes to log files."""

from __future__ import annotations

import json
import logging
import os
import re
import subprocess
import sys
from pathlib import Path

import optuna
import pytest
import torch
import yaml

from nasdet.utils.output import output_to, output_to_folder_log
from tests.conftest import CONFIGS, REPO, shrink_config

FAST = {  # every candidate: 64-px images, 2-image batches, 4 training images
    "train_dataloader.batch_size": 2,
    "val_dataloader.batch_size": 4,
    "train_dataloader.dataset.indices": 4,
    "param_scheduler": [],
    "model.test_cfg.rcnn.score_thr": 0.0,
}
CHATTER = ("loading annotations", "Average Precision", "DONE (t=", "mmengine", "Warning",
           "index created", "Hooks will be executed", "[I ")
TRIAL_LINE = re.compile(
    r"^\[search\] trial (?P<number>\d+) (?P<state>complete|pruned|fail): (?P<what>.+) \| "
    r"ended at (?P<stage>\w+) \| (?P<seconds>\d+) s \| (?P<done>\d+)/(?P<n>\d+) done \| "
    r"best (?P<best>.+) \| ETA (?P<eta>-|\d+(\.\d)? min)(?P<note> \| log .+)?$")


def _search_yaml(tmp_path: Path, tiny_space: Path, n_trials: int = 2) -> Path:
    space = yaml.safe_load(tiny_space.read_text())
    space.pop("constraints", None)  # no candidate rejected: every trial trains
    (tmp_path / "space.yaml").write_text(yaml.safe_dump(space, sort_keys=False))
    data = {
        "space": str(tmp_path / "space.yaml"), "n_trials": n_trials, "seed": 0,
        "sampler": {"type": "random"},
        "objectives": [{"metric": "ap50", "direction": "maximize"}],
        "stages": [{"type": "complexity"},
                   {"type": "proxy", "proxies": ["id_mean", "params"], "num_images": 2},
                   {"type": "train", "name": "short", "epochs": 1}],
    }
    path = tmp_path / "search.yaml"
    path.write_text(yaml.safe_dump(data))
    return path


def _run_search_tool(search: Path, work: Path, data_root: Path,
                     options: dict) -> subprocess.CompletedProcess:
    cmd = [sys.executable, str(REPO / "tools/search.py"), str(search), "--work-dir", str(work),
           "--data-root", str(data_root), "--cfg-options",
           *[f"{k}={json.dumps(v) if isinstance(v, list) else v}" for k, v in options.items()]]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    return subprocess.run(cmd, cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                          text=True, timeout=600, env=env)


def test_a_search_prints_only_its_own_lines(tmp_path, tiny_det_root, tiny_space):
    work = tmp_path / "work"
    proc = _run_search_tool(_search_yaml(tmp_path, tiny_space), work, tiny_det_root, FAST)
    assert proc.returncode == 0, proc.stdout[-3000:]
    lines = proc.stdout.splitlines()
    assert not [line for line in lines if any(c in line for c in CHATTER)], proc.stdout
    # The header (2 lines), one line per trial, the report: nothing else.
    assert len(lines) == 5, proc.stdout
    header = re.match(r"^\[search\] study 'search' \| storage (\S+) \| n_trials 2 "
                      r"\(0 finished, 2 to run\) \| work dir (\S+)$", lines[0])
    assert header and header.group(1) == f"sqlite:///{work / 'study.db'}", lines[0]
    assert header.group(2) == str(work)
    assert lines[1].startswith("[search] library output: ") and lines[-1].startswith("report: ")

    # Each trial line against the study itself.
    study = optuna.load_study(study_name="search", storage=f"sqlite:///{work / 'study.db'}")
    matches = [TRIAL_LINE.match(line) for line in lines[2:4]]
    assert all(matches), lines[2:4]
    best = None
    for done, (m, trial) in enumerate(zip(matches, study.trials, strict=True), start=1):
        assert int(m["number"]) == trial.number and m["state"] == "complete", m.string
        assert m["what"] == f"ap50={trial.value:.4g}" and m["stage"] == "short"
        assert abs(int(m["seconds"]) - trial.duration.total_seconds()) <= 0.5 + 1e-9
        assert (int(m["done"]), int(m["n"])) == (done, 2)
        if best is None or trial.value > best.value:
            best = trial
        assert m["best"] == f"ap50={best.value:.4g} (trial {best.number})"
    assert matches[0]["eta"] != "-" and matches[1]["eta"] == "0 min"

    # The chatter is in the logs: each trial's own, and the driver's.
    for trial in study.trials:
        log = (Path(trial.user_attrs["trial_dir"]) / "trial.log").read_text()
        for text in ("loading annotations into memory", "Average Precision", "DONE (t="):
            assert text in log, (trial.number, log[-2000:])
    search_log = (work / "search.log").read_text()
    assert "A new study created" in search_log and "Trial 1 finished" in search_log
    assert "ExperimentalWarning" in search_log  # Python warnings, there too


def test_a_failing_trial_is_one_line_and_its_traceback_is_in_its_log(
        tmp_path, tiny_det_root, tiny_space):
    work = tmp_path / "work"
    options = {**FAST, "model.roi_head.bbox_head.num_classes": -1}
    proc = _run_search_tool(_search_yaml(tmp_path, tiny_space), work, tiny_det_root, options)
    assert proc.returncode == 0, proc.stdout[-3000:]
    lines = proc.stdout.splitlines()
    assert len(lines) == 5 and "Traceback" not in proc.stdout, proc.stdout
    for line in lines[2:4]:
        m = TRIAL_LINE.match(line)
        assert m and m["state"] == "fail" and "negative dimension" in m["what"], line
        log = Path(m["note"].removeprefix(" | log "))
        assert log.name == "trial.log" and log.parent.parent == work / "trials"
        text = log.read_text()
        assert "Traceback (most recent call last)" in text and "negative dimension" in text


@pytest.fixture(scope="module")
def other_architecture_ckpt(tmp_path_factory) -> Path:
    """A checkpoint of a narrower tiny detector: it does not fit the base config."""
    from mmengine.config import Config

    from nasdet.models.utils.build import build_detector

    cfg = Config.fromfile(CONFIGS / "tiny_faster_rcnn_synth.py")
    cfg.model.backbone.widths = [16, 32, 64, 128]
    cfg.model.backbone.stem_channels = 16
    cfg.model.neck.in_channels = [16, 32, 64, 128]
    model = build_detector(cfg, init_weights=False)
    path = tmp_path_factory.mktemp("ckpt") / "narrow.pth"
    torch.save({"state_dict": model.state_dict(), "meta": {}}, path)
    return path


@pytest.mark.parametrize("tool", ["train", "test"])
def test_a_bad_checkpoint_is_one_line_without_the_hook_table(tool, tmp_path, tiny_det_root,
                                                             other_architecture_ckpt):
    cfg = shrink_config("tiny_faster_rcnn_synth.py", tiny_det_root, tmp_path / "unused")
    config = tmp_path / "tiny.py"
    cfg.dump(str(config))
    work = tmp_path / "work"
    ckpt = str(other_architecture_ckpt)
    args = ([config, "--cfg-options", f"load_from={ckpt}"] if tool == "train"
            else [config, ckpt])
    proc = subprocess.run([sys.executable, str(REPO / f"tools/{tool}.py"), *map(str, args),
                           "--work-dir", str(work)], cwd=REPO, capture_output=True, text=True,
                          timeout=300, env={**os.environ, "OMP_NUM_THREADS": "1"})
    assert proc.returncode == 2, proc.stdout[-2000:] + proc.stderr[-2000:]
    assert proc.stdout == ""
    [line] = proc.stderr.strip().splitlines()
    assert line.startswith(f"error: {ckpt}: backbone.") and "shape" in line, line
    # Refused before any work: the run leaves nothing behind (no work dir, no log).
    assert not work.exists()


def test_output_to_takes_descriptors_python_streams_and_logging(tmp_path, capfd):
    logger = logging.getLogger("nasdet.tests.quiet")
    before = logging.StreamHandler(sys.stderr)  # made before the block
    logger.addHandler(before)
    logger.setLevel(logging.INFO)
    try:
        with output_to(tmp_path / "a.log") as terminal:
            print("python print")
            os.write(1, b"fd 1\n")
            os.write(2, b"fd 2\n")
            logger.info("logged by an old handler")
            inner = logging.getLogger("nasdet.tests.quiet.inner")
            made_inside = logging.StreamHandler(sys.stdout)  # as mmengine's logger does
            inner.addHandler(made_inside)
            inner.propagate = False
            inner.info("logged by a new handler")
            print("own line", file=terminal)
        logger.info("old handler, after")
        inner.info("new handler, after")  # its stream was the redirected one: still works
    finally:
        logger.removeHandler(before)
        inner.removeHandler(made_inside)
    log = (tmp_path / "a.log").read_text()
    for text in ("python print", "fd 1", "fd 2", "logged by an old handler",
                 "logged by a new handler"):
        assert text in log
    assert "own line" not in log and "after" not in log
    captured = capfd.readouterr()
    assert "own line" in captured.out
    assert "python print" not in captured.out + captured.err
    assert "old handler, after" in captured.err


def test_output_to_folder_log_leaves_nothing_where_the_folder_was_never_made(tmp_path):
    with pytest.raises(RuntimeError), output_to_folder_log(tmp_path / "never", "x.log"):
        print("said before failing")
        raise RuntimeError("a check failed")
    assert not (tmp_path / "never").exists()
    with output_to_folder_log(tmp_path / "made", "x.log"):
        print("said before the folder existed")
        (tmp_path / "made").mkdir()
    assert (tmp_path / "made" / "x.log").read_text() == "said before the folder existed\n"


def test_ray_progress_lines_best_and_pareto_front():
    from nasdet.search.config import Objective
    from nasdet.search.trials import pareto_front as _pareto_front

    objectives = [Objective("ap50", "maximize"), Objective("macs", "minimize")]
    values = {0: [0.5, 10.0], 1: [0.4, 12.0], 2: [0.6, 20.0], 3: [0.5, 10.0], 4: [0.3, 5.0]}
    # 1 is dominated by 0 (better AP, fewer MACs); 0 and 3 tie and both stay.
    assert sorted(_pareto_front(values, objectives)) == [0, 2, 3, 4]
    assert _pareto_front({7: [0.1, 1.0]}, objectives) == [7]
