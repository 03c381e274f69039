"""Several search workers on one study in a real PostgreSQL server."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import optuna
import pytest
import yaml

from tests.conftest import REPO
from tests.search.postgres_server import postgres_server, server_bin
from tests.search.test_optuna_driver import FAST


@pytest.fixture(scope="module")
def postgres_url():
    if server_bin() is None:
        if os.environ.get("CI"):
            pytest.fail("CI must have PostgreSQL's server (.ci/run installs postgresql)")
        pytest.skip("no PostgreSQL server binaries (apt-get install postgresql)")
    with postgres_server() as url:
        yield url


def test_the_server_is_real_and_local_only(postgres_url):
    import sqlalchemy

    engine = sqlalchemy.create_engine(postgres_url)
    with engine.connect() as conn:
        version = conn.execute(sqlalchemy.text("select version()")).scalar()
        listen = conn.execute(sqlalchemy.text("show listen_addresses")).scalar()
    engine.dispose()
    assert version.startswith("PostgreSQL") and listen == ""  # a Unix socket, no TCP


@pytest.mark.slow
def test_workers_share_one_postgres_study_and_its_n_trials(tmp_path, tiny_det_root, tiny_space,
                                                           postgres_url):
    search = tmp_path / "search.yaml"
    search.write_text(yaml.safe_dump({
        "space": str(tiny_space), "n_trials": 6, "seed": 0, "sampler": {"type": "tpe"},
        "objectives": [{"metric": "ap50", "direction": "maximize"}],
        "stages": [{"type": "complexity"}, {"type": "train", "name": "short", "epochs": 1}]}))
    cmd = [sys.executable, str(REPO / "tools/search.py"), str(search), "--work-dir",
           str(tmp_path / "work"), "--storage", postgres_url, "--study-name", "shared",
           "--data-root", str(tiny_det_root), "--cfg-options",
           *[f"{k}={json.dumps(v) if isinstance(v, list) else v}" for k, v in FAST.items()]]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    # One worker creates the study (1 trial); then 3 launched together share the rest.
    first = subprocess.run([*cmd, "--n-trials", "1"], capture_output=True, text=True,
                           cwd=REPO, env=env, timeout=600)
    assert first.returncode == 0, first.stdout[-1500:] + first.stderr[-1500:]
    workers = [subprocess.Popen([*cmd, "--resume", "--n-trials", "7"], stdout=subprocess.PIPE,
                                stderr=subprocess.STDOUT, text=True, cwd=REPO, env=env)
               for _ in range(3)]
    outs = [w.communicate(timeout=900)[0] for w in workers]
    assert all(w.returncode == 0 for w in workers), "\n".join(o[-1500:] for o in outs)
    trials = optuna.load_study(study_name="shared", storage=postgres_url).trials
    # n_trials is the study's: 7 in all (a worker that starts one at the same instant as
    # another may add one each), never 7 per worker.
    assert 7 <= len(trials) <= 9 and all(t.state.is_finished() for t in trials)
    assert len({json.dumps(t.params, sort_keys=True) for t in trials}) == len(trials)
    assert sum("[search] trial" in o for o in outs) >= 2  # the study was really shared
