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
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from nasdet.search import load_search_config
from nasdet.search.ray_driver import RaySearch
from tests.conftest import REPO
from tests.search.test_ray_driver import FAST, write_search

pytestmark = pytest.mark.slow

RAY = Path(sys.executable).parent / "ray"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@dataclass
class LocalCluster:
    """A head and a second node started by ``ray start``, and how to remove them."""

    temp: Path
    address: str = ""
    sessions: list[int] = field(default_factory=list)
    node_ids: set[str] = field(default_factory=set)

    def start_node(self, *, head: bool) -> None:
        name = "head" if head else "node2"
        ports = ["--min-worker-port=0", "--max-worker-port=0",
                 f"--node-manager-port={free_port()}",
                 f"--object-manager-port={free_port()}",
                 f"--dashboard-agent-listen-port={free_port()}",
                 f"--dashboard-agent-grpc-port={free_port()}",
                 f"--runtime-env-agent-port={free_port()}",
                 f"--metrics-export-port={free_port()}"]
        if head:
            port = free_port()
            self.address = f"127.0.0.1:{port}"
            role = ["--head", f"--port={port}", "--include-dashboard=false",
                    "--dashboard-host=127.0.0.1", f"--ray-client-server-port={free_port()}"]
        else:
            role = [f"--address={self.address}"]
        cmd = [str(RAY), "start", *role, "--node-ip-address=127.0.0.1", "--num-cpus=1",
               "--num-gpus=0", "--disable-usage-stats", f"--temp-dir={self.temp / name}",
               "--object-store-memory=100000000", *ports]
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


@pytest.fixture(scope="module")
def cluster() -> Iterator[LocalCluster]:
    import ray

    # A short path: Ray's Unix sockets live under the temp dir (108-byte limit).
    c = LocalCluster(temp=Path(tempfile.mkdtemp(prefix="nasdet-ray-", dir="/tmp")))
    old_mode = use_token_auth()
    try:
        c.start_node(head=True)
        c.start_node(head=False)
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
