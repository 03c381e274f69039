"""The Ray driver on a real two-node Ray cluster started with ``ray start``.

Both nodes run on this machine as separate ``ray start`` process trees (a head with
one CPU and a second node with one CPU), each with its own temp dir and explicit ports,
so nothing is shared with other Ray instances on the machine. Teardown kills exactly
the processes of this cluster: every ``ray start`` runs in a new session, and the
cluster's daemons and workers inherit that session id (``ray stop`` would stop every
Ray on the machine).
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from nasdet.search import load_search_config
from nasdet.search.ray_driver import DRIVER_MEMORY, RaySearch
from tests.conftest import REPO
from tests.search.test_ray_driver import FAST, write_search

pytestmark = pytest.mark.slow

RAY = Path(sys.executable).parent / "ray"


def free_ports(n: int, taken: set[int] = frozenset()) -> list[int]:
    """``n`` distinct free ports, none in ``taken``.

    All sockets stay bound until every port is chosen: a port picked and released one
    at a time can come back on the next pick (Ray refuses two components on one port).
    """
    with contextlib.ExitStack() as stack:
        ports: list[int] = []
        while len(ports) < n:
            s = stack.enter_context(socket.socket())
            s.bind(("127.0.0.1", 0))
            if (port := s.getsockname()[1]) not in taken:
                ports.append(port)
        return ports


@dataclass
class LocalCluster:
    """A head and a second node started by ``ray start``, and how to remove them."""

    temp: Path
    address: str = ""
    sessions: list[int] = field(default_factory=list)
    node_ids: set[str] = field(default_factory=set)
    ports: set[int] = field(default_factory=set)  # every port given to this cluster

    def start_node(self, *, head: bool, cpus: int = 1, memory: int | None = None,
                   name: str = "node2") -> None:
        name = "head" if head else name
        picked = free_ports(8, self.ports)
        self.ports |= set(picked)
        ports = ["--min-worker-port=0", "--max-worker-port=0",
                 *(f"--{flag}={port}" for flag, port in zip(
                     ("node-manager-port", "object-manager-port", "dashboard-agent-listen-port",
                      "dashboard-agent-grpc-port", "runtime-env-agent-port",
                      "metrics-export-port"), picked[:6], strict=True))]
        if head:
            self.address = f"127.0.0.1:{picked[6]}"
            role = ["--head", f"--port={picked[6]}", "--include-dashboard=false",
                    "--dashboard-host=127.0.0.1", f"--ray-client-server-port={picked[7]}"]
        else:
            role = [f"--address={self.address}"]
        cmd = [str(RAY), "start", *role, "--node-ip-address=127.0.0.1", f"--num-cpus={cpus}",
               "--num-gpus=0", "--disable-usage-stats", f"--temp-dir={self.temp / name}",
               "--object-store-memory=100000000", *ports,
               *([f"--memory={memory}"] if memory is not None else [])]
        env = {**os.environ, "RAY_USAGE_STATS_ENABLED": "0", "RAY_AUTH_MODE": "token"}
        env.pop("RAY_ADDRESS", None)
        proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                                text=True, env=env, start_new_session=True)
        self.sessions.append(proc.pid)  # the new session's id is the leader's pid
        out, _ = proc.communicate(timeout=120)
        assert proc.returncode == 0, out[-3000:]

    def wait_for_nodes(self, n: int, timeout: float = 60) -> None:
        import ray

        ray.init(address=self.address, logging_level="WARNING", log_to_driver=False)
        try:
            deadline = time.time() + timeout
            while time.time() < deadline:
                alive = {n_["NodeID"] for n_ in ray.nodes() if n_["Alive"]}
                if len(alive) >= n:
                    self.node_ids = alive
                    return
                time.sleep(0.5)
            raise AssertionError(f"only {len(alive)} of {n} Ray nodes came up")
        finally:
            ray.shutdown()

    def processes(self) -> list[int]:
        """Live processes of this cluster: those in the sessions of its ``ray start``."""
        out = []
        for entry in os.listdir("/proc"):
            if not entry.isdigit():
                continue
            try:
                stat = Path(f"/proc/{entry}/stat").read_text()
            except OSError:
                continue
            # Fields after the parenthesised command name: state, ppid, pgrp, session.
            state, _, _, session = stat.rsplit(")", 1)[1].split()[:4]
            if int(session) in self.sessions and state != "Z":
                out.append(int(entry))
        return out

    def kill_node(self, index: int) -> None:
        """SIGKILL every process of the ``index``-th node started (0: the head)."""
        session = self.sessions[index]
        self.sessions = [s for s in self.sessions if s != session]
        for pid in self._session_processes(session):
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)

    def _session_processes(self, session: int) -> list[int]:
        kept, self.sessions = self.sessions, [session]
        try:
            return self.processes()
        finally:
            self.sessions = kept

    def stop(self) -> None:
        """SIGTERM this cluster's processes, SIGKILL what is left after 3 s."""
        for sig, wait in ((signal.SIGTERM, 3.0), (signal.SIGKILL, 5.0)):
            for pid in self.processes():
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, sig)
            deadline = time.time() + wait
            while self.processes() and time.time() < deadline:
                time.sleep(0.2)
        shutil.rmtree(self.temp, ignore_errors=True)


def use_token_auth() -> str | None:
    """Token authentication for the cluster, its nodes and this process's drivers.

    The token is Ray's default one (``~/.ray/auth_token``, which a local ``ray.init``
    creates too) unless ``RAY_AUTH_TOKEN``/``RAY_AUTH_TOKEN_PATH`` name another. Ray
    reads ``RAY_AUTH_MODE`` when it is imported, so its config is refreshed here.
    Returns the previous ``RAY_AUTH_MODE``.
    """
    from ray._raylet import Config

    if not {"RAY_AUTH_TOKEN", "RAY_AUTH_TOKEN_PATH"} & set(os.environ):
        subprocess.run([str(RAY), "get-auth-token", "--generate"], check=True,
                       capture_output=True, timeout=60)
    old = os.environ.get("RAY_AUTH_MODE")
    os.environ["RAY_AUTH_MODE"] = "token"
    Config.initialize("")
    return old


@contextlib.contextmanager
def local_cluster(head_cpus: int = 1, node2_memory: int | None = None, *,
                  head_memory: int | None = None, node2_cpus: int = 1
                  ) -> Iterator[LocalCluster]:
    """A head with ``head_cpus`` CPUs and a second node with ``node2_cpus`` (and
    ``head_memory``/``node2_memory`` bytes of Ray's ``memory`` resource, default Ray's),
    removed afterwards."""
    import ray

    # A short path: Ray's Unix sockets live under the temp dir (108-byte limit).
    c = LocalCluster(temp=Path(tempfile.mkdtemp(prefix="nasdet-ray-", dir="/tmp")))
    old_mode = use_token_auth()
    try:
        c.start_node(head=True, cpus=head_cpus, memory=head_memory)
        c.start_node(head=False, cpus=node2_cpus, memory=node2_memory)
        c.wait_for_nodes(2)
        yield c
    finally:
        if ray.is_initialized():
            ray.shutdown()
        c.stop()
        if old_mode is None:
            os.environ.pop("RAY_AUTH_MODE", None)
        else:
            os.environ["RAY_AUTH_MODE"] = old_mode
    assert not c.processes()


@pytest.fixture(scope="module")
def cluster() -> Iterator[LocalCluster]:
    with local_cluster() as c:
        yield c


def test_trials_run_on_both_nodes(cluster, tmp_path, tiny_det_root):
    # Trials that train (seconds each, not a proxy's milliseconds) overlap in time even on
    # a loaded machine, so two run at once; a trial rejected at once frees its CPU at once.
    cfg = load_search_config(write_search(
        tmp_path, n_trials=4, pruner={"type": "none"},
        objectives=[{"metric": "ap50", "direction": "maximize"}],
        stages=[{"type": "complexity"}, {"type": "train", "name": "short", "epochs": 1}]))
    search = RaySearch(cfg, tmp_path / "work", address=cluster.address, cpus_per_trial=1,
                       data_root=tiny_det_root, cfg_options=FAST)
    grid = search.run()
    assert grid.num_errors == 0
    rows = search.rows()
    assert len(rows) == 4 and {r["state"] for r in rows} <= {"COMPLETE", "PRUNED"}
    # One CPU per node, one per trial: two trials at a time, one on each node.
    assert {r["node_id"] for r in rows} == cluster.node_ids
    assert len(cluster.node_ids) == 2


DRIVER = """
import sys
from nasdet.search import load_search_config
from nasdet.search.ray_driver import RaySearch
cfg = load_search_config(sys.argv[1])
RaySearch(cfg, sys.argv[2], address=sys.argv[3], max_concurrent=1, data_root=sys.argv[4],
          cfg_options={cfg_options}).run()
"""


def test_killed_driver_resumes_keeping_finished_trials(cluster, tmp_path, tiny_det_root):
    search_yaml = write_search(tmp_path, n_trials=3)
    cfg = load_search_config(search_yaml)
    work = tmp_path / "work"
    first = None
    with open(tmp_path / "driver.log", "w") as log:
        proc = subprocess.Popen(
            [sys.executable, "-c", DRIVER.format(cfg_options=repr(FAST)), str(search_yaml),
             str(work), cluster.address, str(tiny_det_root)],
            cwd=REPO, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
        deadline = time.time() + 240
        while first is None and time.time() < deadline and proc.poll() is None:
            time.sleep(0.2)
            for metrics in (work / "trials").glob("*/metrics.json"):
                record = json.loads(metrics.read_text())
                if record["stages_done"] == len(cfg.stages):
                    first = (metrics.parent.name, record, metrics.stat().st_mtime_ns)
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()
    assert first is not None, (tmp_path / "driver.log").read_text()[-3000:]
    trial_id, record, mtime = first

    search = RaySearch(cfg, work, address=cluster.address, resume=True,
                       data_root=tiny_det_root, cfg_options=FAST)
    search.run()
    rows = search.rows()
    assert len(rows) == 3, rows
    assert {r["state"] for r in rows} <= {"COMPLETE", "PRUNED"}
    kept = next(r for r in rows if r["trial_id"] == trial_id)
    assert kept["state"] == "COMPLETE"
    for key, value in record["metrics"].items():
        assert kept[key] == pytest.approx(value)
    # Not run again: the trial's own record was not rewritten.
    assert (work / "trials" / trial_id / "metrics.json").stat().st_mtime_ns == mtime


def test_ddp_trial_spreads_its_workers_over_both_nodes(cluster, tmp_path, tiny_det_root):
    from tests.search.test_ray_train import TRAIN, check_ddp_trial

    cfg = load_search_config(write_search(tmp_path, **TRAIN))
    search = RaySearch(cfg, tmp_path / "work", address=cluster.address,
                       data_root=tiny_det_root, cfg_options=FAST, workers_per_trial=2,
                       cpus_per_worker=1, placement_strategy="STRICT_SPREAD")
    grid = search.run()
    assert grid.num_errors == 0, [r.error for r in grid]
    (row,) = search.rows()
    assert row["state"] == "COMPLETE" and row["epochs"] == 2
    record = check_ddp_trial(Path(row["trial_dir"]))
    # One worker on each node (one CPU each): the process group spans the cluster.
    assert {w["node_id"] for w in record["workers"]} == cluster.node_ids
    assert len(cluster.node_ids) == 2


def _run_until(search: RaySearch, ready: Any) -> tuple[threading.Thread, dict]:
    """Start ``search.run()`` in a thread and wait (up to 240 s) until ``ready()``; the
    thread and where its result (``grid``) lands. The search must still be running."""
    outcome: dict = {}
    thread = threading.Thread(target=lambda: outcome.update(grid=search.run()))
    thread.start()
    deadline = time.time() + 240
    while time.time() < deadline and thread.is_alive() and not ready():
        time.sleep(0.2)
    assert thread.is_alive(), outcome
    return thread, outcome


def test_ddp_trial_survives_losing_a_workers_node(tmp_path, tiny_det_root):
    from ray.tune import ExperimentAnalysis

    from tests.search.test_ray_train import TRAIN

    epochs = 3
    stages = [dict(TRAIN["stages"][1], epochs=epochs)]
    cfg = load_search_config(write_search(tmp_path, **{**TRAIN, "stages": stages}))
    work = tmp_path / "work"
    # Two CPUs on the head: after the second node is lost, both workers fit there. The
    # trial's driver (its Tune actor, reserving DRIVER_MEMORY) does not fit on the
    # second node: what is lost there is a Train worker.
    with local_cluster(head_cpus=2, node2_memory=DRIVER_MEMORY // 2) as c:
        search = RaySearch(cfg, work, address=c.address, data_root=tiny_det_root,
                           cfg_options=FAST, workers_per_trial=2, cpus_per_worker=1,
                           placement_strategy="SPREAD")
        checkpoints = work / "ray_results" / "search"
        # Epoch 1 is in Tune's storage (the trial's driver, on the head, survives).
        thread, outcome = _run_until(search, lambda: list(checkpoints.glob("*/checkpoint_*")))
        c.kill_node(1)  # the second node and its worker, mid-trial
        thread.join(timeout=400)
        assert not thread.is_alive()
        grid = outcome["grid"]
    assert grid.num_errors == 0, [r.error for r in grid]
    (row,) = search.rows()
    assert row["state"] == "COMPLETE" and row["epochs"] == epochs
    (trial,) = ExperimentAnalysis(str(checkpoints)).trials
    assert trial.num_failures == 1  # the lost node cut it off once
    # Every finished epoch was reported once (then the stage's end, at the last one):
    # the retry continued from its checkpoint.
    (results,) = checkpoints.glob("*/result.json")
    reported = [json.loads(line) for line in results.read_text().splitlines()]
    assert [r["epoch"] for r in reported if r["epoch"] and not r["stages_done"]] == \
        list(range(1, epochs + 1))
    assert [r["epoch"] for r in reported if r["stages_done"]] == [epochs]
    record = json.loads((Path(row["trial_dir"]) / "train" / "ddp.json").read_text())
    # The retried run trained only the epochs after the restored one, on the head alone.
    restored = epochs - len(record["workers"][0]["images_per_epoch"])
    assert 1 <= restored < epochs
    assert {w["node_id"] for w in record["workers"]} == {row["node_id"]}  # the head's
    assert record["world_size"] == 2


@pytest.mark.parametrize("workers", [1, 2], ids=["one-process", "ddp"])
def test_trial_survives_losing_the_node_of_its_own_driver(workers, tmp_path, tiny_det_root):
    """A preempted node took the trial's driver (its Tune actor) and all its workers; a
    replacement node joins and Tune's retry continues there from epoch 1's checkpoint."""
    from ray.tune import ExperimentAnalysis

    from nasdet.search.ray_trial import _progress
    from tests.search.test_ray_train import TRAIN

    epochs = 8  # about a second each: the loss lands well before the end
    stages = [dict(TRAIN["stages"][1], epochs=epochs)]
    cfg = load_search_config(write_search(tmp_path, **{**TRAIN, "stages": stages}))
    work = tmp_path / "work"
    # The head holds no trial (no CPU, less memory than a trial's driver reserves): the
    # trial, driver and workers, runs on the second node, and after its loss only on
    # the third.
    with local_cluster(head_cpus=0, head_memory=DRIVER_MEMORY // 2, node2_cpus=2) as c:
        search = RaySearch(cfg, work, address=c.address, data_root=tiny_det_root,
                           cfg_options=FAST, workers_per_trial=workers, cpus_per_worker=1)
        checkpoints = work / "ray_results" / "search"
        # Epoch 1 is in Tune's storage, whole (a copy cut off by the loss is not used).
        thread, outcome = _run_until(search, lambda: any(
            _progress(f) is not None for f in checkpoints.glob("*/checkpoint_*")))
        lost = c.node_ids
        c.kill_node(1)  # the second node: the trial's driver and its workers
        c.start_node(head=False, cpus=2, name="node3")
        thread.join(timeout=400)
        assert not thread.is_alive(), "the trial was not retried on the new node"
        grid = outcome["grid"]
        c.wait_for_nodes(2)  # the head and the replacement
    assert grid.num_errors == 0, [r.error for r in grid]
    (trial,) = ExperimentAnalysis(str(checkpoints)).trials
    assert trial.num_failures == 1  # cut off once, by the loss
    (row,) = search.rows()
    assert row["state"] == "COMPLETE" and row["epochs"] == epochs
    assert row["node_id"] in c.node_ids - lost  # the replacement node's
    (results,) = checkpoints.glob("*/result.json")
    reported = [json.loads(line) for line in results.read_text().splitlines()]
    # Each finished epoch reported once: the retry continued from the checkpoint.
    assert [r["epoch"] for r in reported if r["epoch"] and not r["stages_done"]] == \
        list(range(1, epochs + 1))
    assert [r["epoch"] for r in reported if r["stages_done"]] == [epochs]
    if workers > 1:
        record = json.loads((Path(row["trial_dir"]) / "train" / "ddp.json").read_text())
        restored = epochs - len(record["workers"][0]["images_per_epoch"])
        assert 1 <= restored < epochs
        assert {w["node_id"] for w in record["workers"]} == {row["node_id"]}
