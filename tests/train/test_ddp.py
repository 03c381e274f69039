"""``torchrun --nproc_per_node 2 tools/train.py CONFIG --launcher pytorch``: DDP without Ray.

One real two-process run (gloo on the CPU, one thread each) of the tiny detector on the
16-image synthetic set, one epoch, compared with what one process would do.
"""

from __future__ import annotations

import json
import math
import os
import re
import socket
import subprocess
import sys
from pathlib import Path

import pytest
import torch.distributed as dist

from tests.conftest import REPO, shrink_config

needs_gloo = pytest.mark.skipif(not dist.is_gloo_available(), reason="gloo backend missing")

WORLD = 2
BATCH = 4


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _torchrun(args: list[str], cwd: Path) -> subprocess.CompletedProcess:
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(REPO)}
    env.pop("LOCAL_RANK", None)
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nnodes", "1",
           "--nproc_per_node", str(WORLD), "--master-addr", "127.0.0.1",
           "--master-port", str(_free_port()), *args]
    return subprocess.run(cmd, cwd=cwd, env=env, capture_output=True, text=True, timeout=600)


@pytest.fixture(scope="module")
def ddp_run(tiny_det_root: Path, tmp_path_factory: pytest.TempPathFactory):
    tmp = tmp_path_factory.mktemp("ddp")
    work = tmp / "work"
    cfg = shrink_config("tiny_faster_rcnn_synth.py", tiny_det_root, work, epochs=1,
                        **{"train_dataloader.batch_size": BATCH})
    cfg.dump(str(tmp / "tiny_ddp.py"))
    proc = _torchrun([str(REPO / "tools" / "train.py"), str(tmp / "tiny_ddp.py"),
                      "--launcher", "pytorch", "--work-dir", str(work)], cwd=tmp)
    return proc, cfg, work


def _train_images(cfg) -> int:
    """Training images after mmdet's ``filter_empty_gt`` (images with an annotation)."""
    ds = cfg.train_dataloader.dataset
    coco = json.loads((Path(ds.data_root) / ds.ann_file).read_text())
    return len({a["image_id"] for a in coco["annotations"]})


@pytest.mark.slow
@needs_gloo
def test_two_process_training(ddp_run) -> None:
    import torch

    from nasdet.models.utils.build import build_detector
    from nasdet.utils.checkpoint import check_state_dict_fits, load_checkpoint_file

    proc, cfg, work = ddp_run
    assert proc.returncode == 0, proc.stderr[-3000:]
    logs = list(work.glob("*/*.log"))
    assert len(logs) == 1, logs  # one Runner log: rank 0's
    log = logs[0].read_text()
    assert "Distributed launcher: pytorch" in log and "Distributed training: True" in log
    assert re.search(r"GPU number: 2\n", log)  # mmengine's name for the world size

    # Each rank iterates over its half of the images: DefaultSampler gives it
    # ceil(n / 2) of them, i.e. ceil(n / (2 * batch)) iterations (one process: n / batch).
    n = _train_images(cfg)
    per_rank, one_process = math.ceil(n / (WORLD * BATCH)), math.ceil(n / BATCH)
    assert per_rank < one_process
    iters = {int(m) for m in re.findall(r"Epoch\(train\)\s+\[1\]\s*\[\s*\d+/(\d+)\]", log)}
    assert iters == {per_rank}, iters

    # nasdet's own outputs once, from rank 0: the metrics file and the terminal lines.
    metrics = json.loads((work / "metrics.json").read_text())
    assert metrics["world_size"] == WORLD
    assert metrics["iter"] == per_rank and metrics["epoch"] == 1
    assert 0.0 <= metrics["val"]["coco/bbox_mAP"] <= 1.0
    assert proc.stdout.count("final validation metrics") == 1, proc.stdout
    assert proc.stdout.count("work dir:") == 1
    assert "error" not in proc.stderr.lower(), proc.stderr[-3000:]
    dumped = (work / "tiny_ddp.py").read_text()  # the config as it ran
    assert "backend='gloo'" in dumped and "launcher = 'pytorch'" in dumped

    # The final checkpoint holds the plain model (no DDP 'module.' prefix) and loads.
    state = load_checkpoint_file(work / "epoch_1.pth")["state_dict"]
    model = build_detector(cfg)
    check_state_dict_fits(model, state, file=work / "epoch_1.pth", strict=True)
    model.load_state_dict(state, strict=True)
    assert not any(k.startswith("module.") for k in state)
    loaded = model.state_dict()
    assert all(torch.equal(loaded[k], v) for k, v in state.items())


@pytest.mark.slow
@needs_gloo
def test_two_process_test_tool_equals_the_last_validation(ddp_run) -> None:
    """tools/test.py under torchrun: the same shards and weights as the run's last
    validation, so the same COCO metrics; printed once."""
    proc, cfg, work = ddp_run
    assert proc.returncode == 0, proc.stderr[-3000:]
    test = _torchrun([str(REPO / "tools" / "test.py"), str(work / "tiny_ddp.py"),
                      str(work / "epoch_1.pth"), "--launcher", "pytorch",
                      "--work-dir", str(work / "test")], cwd=work)
    assert test.returncode == 0, test.stderr[-3000:]
    assert test.stdout.count("test metrics") == 1, test.stdout
    val = json.loads((work / "metrics.json").read_text())["val"]
    got = json.loads((work / "test" / "metrics.json").read_text())
    assert got["world_size"] == WORLD
    assert got["test"].keys() == val.keys()
    for key, value in val.items():
        assert got["test"][key] == pytest.approx(value, rel=0, abs=1e-12), key


@pytest.mark.parametrize(("argv", "message"), [
    (["--launcher", "slurmm"], "error: --launcher: unknown launcher 'slurmm'; choose one of"),
    (["--launcher", "pytorch"], "error: --launcher: pytorch: RANK, WORLD_SIZE, MASTER_ADDR, "
                                "MASTER_PORT not set"),
    (["--launcher", "pytorch", "--cfg-options", "env_cfg.dist_cfg.backend=nccl"],
     "error: --cfg-options: env_cfg.dist_cfg.backend=nccl needs CUDA devices"),
])
def test_launcher_errors_are_one_line(argv: list[str], message: str, tmp_path: Path,
                                      monkeypatch: pytest.MonkeyPatch, capsys) -> None:
    import torch

    from nasdet.cli import run_tool
    from tests.conftest import load_tool

    if "nccl" in " ".join(argv) and torch.cuda.is_available():
        pytest.skip("nccl is valid where CUDA is present")
    for var in ("RANK", "LOCAL_RANK", "WORLD_SIZE", "MASTER_ADDR", "MASTER_PORT"):
        monkeypatch.delenv(var, raising=False)
    work = tmp_path / "work"
    code = run_tool(load_tool("train").main, [str(REPO / "configs" / "tiny_faster_rcnn_synth.py"),
                                              "--work-dir", str(work), *argv])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and len(err) == 1 and err[0].startswith(message), err
    assert not work.exists()  # refused before anything was made
    assert not dist.is_initialized()
