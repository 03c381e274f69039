"""The Ray backend's Optuna study in a real storage; RAY_ADDRESS; a loopback-only private Ray."""

from __future__ import annotations

import csv
import io
import json
import socket
from pathlib import Path

import optuna
import pytest

from nasdet.errors import NasdetError
from nasdet.report import write_search_report
from nasdet.search import load_search_config
from nasdet.search.ray_driver import RaySearch
from nasdet.search.storage import default_storage_url, open_storage
from nasdet.search.trials import RAY_TRIAL_ATTR, trial_rows
from nasdet.utils.ray_cluster import connect_ray, ray_target
from tests.search.test_postgres import postgres_url  # noqa: F401  (a real server)
from tests.search.test_ray_cluster import cluster  # noqa: F401  (the 2-node fixture)
from tests.search.test_ray_driver import FAST, write_search


def dead_address() -> str:
    """127.0.0.1:PORT where nothing listens."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return f"127.0.0.1:{s.getsockname()[1]}"


def listening(pid_root: int) -> dict[str, set[str]]:
    """Listening TCP addresses of ``pid_root`` and its descendants, by process name."""
    import psutil

    out: dict[str, set[str]] = {}
    root = psutil.Process(pid_root)
    for proc in [root, *root.children(recursive=True)]:
        try:
            conns = proc.net_connections(kind="tcp")
            name = proc.name()
        except (psutil.NoSuchProcess, psutil.AccessDenied):
            continue
        for c in conns:
            if c.status == psutil.CONN_LISTEN:
                out.setdefault(name, set()).add(c.laddr.ip)
    return out


def is_loopback(ip: str) -> bool:
    return ip in ("127.0.0.1", "::1") or ip.removeprefix("::ffff:").startswith("127.")


# ------------------------------------------------------------------------- without Ray
def test_ray_address_rules(monkeypatch, tmp_path, tiny_det_root):
    import ray

    monkeypatch.delenv("RAY_ADDRESS", raising=False)
    assert ray_target(None) == (None, "")
    monkeypatch.setenv("RAY_ADDRESS", "local")  # ray.init's own word for a new local Ray
    assert ray_target(None) == (None, "")
    monkeypatch.setenv("RAY_ADDRESS", "10.1.2.3:6379")
    assert ray_target(None) == ("10.1.2.3:6379", "RAY_ADDRESS")
    assert ray_target("127.0.0.1:7000") == ("127.0.0.1:7000", "--address")  # --address wins

    # A set RAY_ADDRESS is joined, not replaced by a private Ray: nothing listens, so
    # the search fails fast naming it, before any trial or Ray process starts.
    address = dead_address()
    monkeypatch.setenv("RAY_ADDRESS", address)
    cfg = load_search_config(write_search(tmp_path))
    with pytest.raises(NasdetError, match=r"^RAY_ADDRESS: no Ray cluster reachable") as info:
        RaySearch(cfg, tmp_path / "work", data_root=tiny_det_root).run()
    assert address in str(info.value)
    assert not ray.is_initialized() and not (tmp_path / "work" / "trials").exists()
    monkeypatch.setenv("RAY_ADDRESS", "http://127.0.0.1:8265")  # the job-submission form
    with pytest.raises(NasdetError, match=r"^RAY_ADDRESS: .*dashboard address"):
        RaySearch(cfg, tmp_path / "work", data_root=tiny_det_root).run()


def test_study_bookkeeping_is_the_optuna_drivers(tmp_path, tiny_det_root):
    cfg = load_search_config(write_search(tmp_path))
    work = tmp_path / "work"
    search = RaySearch(cfg, work, data_root=tiny_det_root)
    assert search.storage_url == default_storage_url(work)  # the Optuna backend's file
    # A study of that name in the storage (e.g. run by the Optuna backend): the same
    # error as that backend's, before Ray starts.
    optuna.create_study(study_name="search", storage=open_storage(search.storage_url))
    with pytest.raises(NasdetError, match=r"^--study-name: study 'search' already exists"):
        search.run()
    # Resuming it needs Tune's experiment, which the Optuna backend never wrote.
    with pytest.raises(NasdetError, match=r"^--resume: no Ray Tune experiment.*--backend optuna"):
        RaySearch(cfg, work, data_root=tiny_det_root, resume=True).run()
    with pytest.raises(NasdetError, match=r"^--resume: no study 'other' to resume in sqlite:"):
        RaySearch(cfg, work, data_root=tiny_det_root, resume=True, study_name="other").run()
    assert not (work / "ray_results").exists()


@pytest.mark.parametrize("kind", ["sqlite", "postgresql"])
def test_searcher_snapshot_reopens_the_storage(kind, request, tmp_path):
    """Tune pickles its searcher every few seconds and restores it on --resume: the
    restored searcher must tell the trials it asked for to the same storage."""
    from nasdet.search.ray_tune import SpaceSampler, StageAwareOptunaSearch
    from tests.search.test_ray_driver import write_space

    if kind == "sqlite":
        url = f"sqlite:///{tmp_path / 'study.db'}"
    else:
        url = request.getfixturevalue("postgres_url")
    searcher = StageAwareOptunaSearch(
        2, space=SpaceSampler(write_space(tmp_path)),
        sampler=optuna.samplers.RandomSampler(seed=0), metric="proxy/macs", mode="min",
        storage=open_storage(url, heartbeat=False), study_name=f"snap_{kind}")
    asked = {tid: searcher.suggest(tid) for tid in ("a", "b")}
    searcher.save(str(tmp_path / "searcher.pkl"))  # as Tune snapshots it
    del searcher
    restored = StageAwareOptunaSearch(2)
    restored.restore(str(tmp_path / "searcher.pkl"))
    restored.on_trial_complete("a", {"stages_done": 2, "proxy/macs": 3.5,
                                     "trial_dir": str(tmp_path / "a")})
    restored.on_trial_complete("b", {"stages_done": 1, "stage_name": "size"})
    study = optuna.load_study(study_name=f"snap_{kind}", storage=url)
    by_id = {t.user_attrs[RAY_TRIAL_ATTR]: t for t in study.trials}
    assert {k: t.params for k, t in by_id.items()} == asked
    assert by_id["a"].state.name == "COMPLETE" and by_id["a"].values == [3.5]
    assert by_id["a"].user_attrs["trial_dir"] == str(tmp_path / "a")
    assert by_id["b"].state.name == "PRUNED" and by_id["b"].user_attrs["pruned_after"] == "size"


# ---------------------------------------------------------------------- private Ray
@pytest.fixture(scope="class")
def private_ray():
    """One private Ray (as a search without an address starts it) for the class."""
    import os

    import ray

    assert not ray.is_initialized()
    os.environ.pop("RAY_ADDRESS", None)
    assert connect_ray(None)
    try:
        yield
    finally:
        ray.shutdown()


class TestPrivateRay:
    """Tests sharing one private Ray (a Ray start is the slow part)."""

    def test_private_ray_listens_on_loopback_only(self, private_ray):
        import os

        import ray

        assert ray.util.get_node_ip_address() == "127.0.0.1"
        assert all(n["NodeManagerAddress"] == "127.0.0.1" for n in ray.nodes())

        @ray.remote
        def worker_ip() -> str:
            return ray.util.get_node_ip_address()

        assert ray.get(worker_ip.remote()) == "127.0.0.1"  # a worker process is up too
        sockets = listening(os.getpid())
        # Not vacuous: Ray's daemons and a worker are among the processes looked at.
        assert {"gcs_server", "raylet"} <= set(sockets), sockets
        exposed = {name: ips for name, ips in sockets.items()
                   if not all(is_loopback(ip) for ip in ips)}
        assert not exposed, f"listening beyond loopback: {exposed}"


    def test_ray_search_keeps_its_study_in_the_optuna_storage(self, private_ray, tmp_path,
                                                              tiny_det_root):
        cfg = load_search_config(write_search(tmp_path))  # 4 trials, ASHA on two proxy stages
        url = f"sqlite:///{tmp_path / 'elsewhere' / 'shared.db'}"
        out = io.StringIO()
        search = RaySearch(cfg, tmp_path / "work", storage=url, data_root=tiny_det_root,
                           cfg_options=FAST, out=out)
        search.run()
        header = out.getvalue().splitlines()[0]
        assert header.startswith(f"[search] study 'search' | storage {url} | n_trials 4")
        assert not (tmp_path / "work" / "study.db").exists()  # the URL given, not the default

        # Read back as any other process would: Optuna's own loader, on the URL alone.
        study = optuna.load_study(study_name="search", storage=url)
        assert study.metric_names == ["proxy/macs"]
        assert study.user_attrs["backend"] == "ray"
        rows = {r["trial_id"]: r for r in search.rows()}  # Tune's view of the same trials
        trials = study.get_trials()
        assert len(trials) == len(rows) == 4
        assert {t.user_attrs[RAY_TRIAL_ATTR] for t in trials} == set(rows)
        assert any(t.state.name == "COMPLETE" for t in trials)
        for t in trials:
            row = rows[t.user_attrs[RAY_TRIAL_ATTR]]
            assert t.number == row["trial"] and t.state.name == row["state"]
            assert t.params == {k.removeprefix("param/"): v for k, v in row.items()
                                if k.startswith("param/")}
            if "rejected" in row:
                assert t.user_attrs["rejected"] == row["rejected"] and t.values is None
                continue
            # Against the evaluator's own files in the trial directory.
            trial_dir = Path(t.user_attrs["trial_dir"])
            assert json.loads((trial_dir / "params.json").read_text()) == t.params
            record = json.loads((trial_dir / "metrics.json").read_text())["metrics"]
            for key, value in record.items():
                assert t.user_attrs["metrics"][key] == pytest.approx(value)
            if t.state.name == "COMPLETE":
                assert t.values == [pytest.approx(record["proxy/macs"])]
                assert t.user_attrs["ended_at"] == "cost"
            else:  # stopped by ASHA at its first rung: no objective value told
                assert t.values is None and t.user_attrs["pruned_after"] == "size"

        # The report, from the storage alone, as for the Optuna backend.
        report = write_search_report(trial_rows(study, cfg), tmp_path / "report",
                                     objectives=[("proxy/macs", "minimize")], study=study)
        with open(report.parent / "trials.csv") as f:
            table = {int(r["trial"]): r for r in csv.DictReader(f)}
        assert set(table) == {r["trial"] for r in rows.values()}
        for r in rows.values():
            assert table[r["trial"]]["state"] == r["state"]
            if r["state"] == "COMPLETE":
                assert float(table[r["trial"]]["proxy/macs"]) == pytest.approx(r["proxy/macs"])

        # The same name again is the Optuna driver's error.
        with pytest.raises(NasdetError, match="already exists in sqlite:"):
            RaySearch(cfg, tmp_path / "work", storage=url, data_root=tiny_det_root).run()


# ------------------------------------------------------------------------- a cluster
@pytest.mark.slow
def test_ray_address_joins_that_cluster(cluster, monkeypatch, tmp_path,  # noqa: F811
                                        tiny_det_root):
    import ray

    monkeypatch.setenv("RAY_ADDRESS", cluster.address)
    cfg = load_search_config(write_search(tmp_path, n_trials=2, pruner={"type": "none"}))
    out = io.StringIO()
    search = RaySearch(cfg, tmp_path / "work", data_root=tiny_det_root, cfg_options=FAST,
                       out=out)
    search.run()
    assert not ray.is_initialized()
    assert (f"[search] Ray: joined the cluster at {cluster.address} (from RAY_ADDRESS"
            in out.getvalue())
    rows = search.rows()
    assert len(rows) == 2 and {r["state"] for r in rows} <= {"COMPLETE", "PRUNED"}
    # The trials ran on the cluster's nodes, not on a private Ray of the driver.
    assert {r["node_id"] for r in rows} <= cluster.node_ids
    assert len(search.load_study().trials) == 2
