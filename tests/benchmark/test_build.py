"""Building a table for real: train, record every epoch, resume mid-job, claim, rescore."""

from __future__ import annotations

import json

import pytest

from nasdet.benchmark.build import BenchmarkPlan, build_benchmark, claim, rescore
from nasdet.benchmark.table import load_benchmark
from nasdet.errors import NasdetError
from tests.benchmark.conftest import SPACE

FAST = (  # every architecture: 2-image batches, 4 training images, no LR schedule
    ("param_scheduler", []),
    ("train_dataloader.batch_size", 2),
    ("train_dataloader.dataset.indices", 4),
    ("val_dataloader.batch_size", 4),
)


def _plan(root, **kw) -> BenchmarkPlan:
    args = dict(space=str(SPACE), num_archs=1, repeats=0, epochs=2, probe_images=2,
                spectrum_images=2, cfg_options=FAST, data_root=str(root))
    return BenchmarkPlan(**{**args, **kw})


@pytest.mark.slow
def test_a_job_resumed_mid_training_records_every_epoch_once(tmp_path, tiny_det_root):
    out, work = tmp_path / "table", tmp_path / "jobs"
    lines: list[str] = []
    # A worker killed after epoch 1 of 2: its job's train dir holds epoch 1.
    from nasdet.benchmark.build import job_config, sample_architectures
    from nasdet.space import SearchSpace
    from nasdet.train import train

    space = SearchSpace.from_yaml(SPACE)
    plan = _plan(tiny_det_root)

    params = sample_architectures(space, 1)[0]
    cfg = job_config(space, params, 0, plan, work / "a000_s0")
    cfg.train_cfg.max_epochs = 1
    train(cfg)
    first_epoch = json.loads((work / "a000_s0/train/metrics.json").read_text())["history"]
    assert [h["epoch"] for h in first_epoch] == [1]

    assert build_benchmark(plan, out, work, log=lines.append) == 1
    assert not (work / "a000_s0" / "train").exists()  # finished jobs keep no checkpoints
    bench = load_benchmark(out)
    (row,) = bench.rows
    assert len(row["ap"]) == len(row["ap50"]) == len(row["epoch_cpu_seconds"]) == 2
    # Epoch 1 was not retrained: its record is the killed run's.
    assert row["ap"][0] == max(0.0, first_epoch[0]["metrics"].get("coco/bbox_mAP", 0.0))
    assert set(row["id"]) >= {"backbone.layer1", "backbone.layer4", "neck.0"}
    assert all(len(v) == 3 for v in row["id"].values())  # init, epoch 1, epoch 2
    assert row["train_cpu_seconds"] == pytest.approx(sum(row["epoch_cpu_seconds"]))
    assert row["proxies"] == {}
    assert any("AP" in line and "1/1 rows" in line for line in lines)
    # Nothing left to do: a rerun trains nothing.
    assert build_benchmark(plan, out, work, log=lines.append) == 0

    stale = load_benchmark(out)  # what a second rescorer read before this one scored
    assert rescore(plan, out, work, names=["params", "id_mean"], log=lines.append) == 1
    # That second rescorer claims the row once the first released it: nothing to score.
    import nasdet.benchmark.table as table

    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(table, "load_benchmark", lambda path: stale)
        assert rescore(plan, out, work, names=["params", "id_mean"], log=lines.append) == 0
    (row,) = load_benchmark(out).rows
    assert set(row["proxies"]) == {"params", "id_mean"} and row["proxies"]["params"] > 1e6
    (tabled,) = load_benchmark(out / "table.json").rows  # the assembled table has them too
    assert tabled["proxies"] == row["proxies"]
    assert rescore(plan, out, work, names=["params"], log=lines.append) == 0

    # An ID-guided proposal outside the table becomes a job of its own, then a row.
    from nasdet.benchmark.proposals import PROPOSAL_IDS_FROM, add_proposals, row_proposal

    prop = row_proposal(space, row, 2)
    if prop["key"] is None:  # the rule kept its widths: another first-stage width by hand
        dim = next(d for d in space.dimensions if d.name == "widths")
        other = min(w for w in dim.stage_values_set(0) if w != row["params"][dim.params[0]])
        params = {**row["params"], dim.params[0]: other}
        prop.update(params=params, key=space.candidate(params).key)
    (added,) = add_proposals(out, [prop])
    assert added["arch_id"] == PROPOSAL_IDS_FROM
    assert build_benchmark(plan, out, work, log=lines.append) == 1
    bench = load_benchmark(out)
    new = next(r for r in bench.rows if r["arch_id"] == PROPOSAL_IDS_FROM)
    assert new["origin"] == "id_guided" and new["source_arch"] == 0
    assert new["key"] == prop["key"] and len(new["ap"]) == 2
    assert [r["arch_id"] for r in bench.sampled().rows] == [0]

    with pytest.raises(NasdetError, match="epochs=2"):
        build_benchmark(_plan(tiny_det_root, epochs=3), out, work)


def test_the_plan_is_recorded_before_training_and_never_shrinks(tmp_path, monkeypatch):
    import nasdet.benchmark.build as build
    from nasdet.benchmark.table import assemble, write_row
    from tests.benchmark.conftest import make_rows

    out, work = tmp_path / "table", tmp_path / "jobs"
    small = _plan(tmp_path, epochs=6)
    write_row(out, make_rows(num_archs=1, pairs=0)[0])
    assemble(out, {**small.meta(), "format": build.FORMAT})

    def killed(*args, **kwargs):  # the worker dies in the first job it takes
        raise RuntimeError("killed")

    monkeypatch.setattr(build, "run_job", killed)
    with pytest.raises(NasdetError, match="killed"):
        build_benchmark(_plan(tmp_path, epochs=6, num_archs=3, repeats=1), out, work)
    meta = json.loads((out / "meta.json").read_text())
    assert (meta["num_archs"], meta["repeats"]) == (3, 1)  # what the table is grown to
    assert build_benchmark(small, out, work) == 0  # a smaller command: nothing to train
    meta = json.loads((out / "meta.json").read_text())
    assert (meta["num_archs"], meta["repeats"]) == (3, 1)


def test_a_claimed_job_is_not_taken_twice(tmp_path):
    with claim(tmp_path, "a000_s0") as first:
        with claim(tmp_path, "a000_s0") as second:
            assert first and not second
    with claim(tmp_path, "a000_s0") as again:
        assert again  # released with its holder


_ORPHAN = """
import multiprocessing as mp, os, sys, time
from nasdet.benchmark.build import _exit_with_driver

def child(driver_pid, path):
    _exit_with_driver(driver_pid, every=0.05)
    open(path, "w").write(str(os.getpid()))
    time.sleep(60)  # a job in flight

if __name__ == "__main__":
    p = mp.get_context("spawn").Process(target=child, args=(os.getpid(), sys.argv[1]))
    p.start()
    time.sleep(60)
"""


def test_a_worker_ends_when_its_driver_is_killed(tmp_path):
    import os
    import signal
    import subprocess
    import sys
    import time

    script = tmp_path / "driver.py"
    script.write_text(_ORPHAN)
    pid_file = tmp_path / "child.pid"
    driver = subprocess.Popen([sys.executable, str(script), str(pid_file)])
    deadline = time.monotonic() + 60
    while not pid_file.is_file() or not pid_file.read_text():
        assert time.monotonic() < deadline and driver.poll() is None
        time.sleep(0.05)
    child = int(pid_file.read_text())
    os.kill(driver.pid, signal.SIGKILL)
    driver.wait()
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        try:
            os.kill(child, 0)
        except ProcessLookupError:
            break
        time.sleep(0.05)
    else:
        os.kill(child, signal.SIGKILL)
        raise AssertionError("the worker outlived its driver by 10 s")
