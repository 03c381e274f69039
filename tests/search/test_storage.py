"""Opening storages: several workers creating one new study database at the same moment."""

from __future__ import annotations

import multiprocessing as mp

import optuna
import pytest

from nasdet.search.storage import open_storage


def _open(url: str, barrier, results) -> None:
    barrier.wait()  # all workers create the schema at once, as simultaneous launches do
    try:
        open_storage(url)
        results.put("ok")
    except Exception as exc:  # report, do not hang the parent
        results.put(str(exc))


@pytest.mark.parametrize("rep", range(3))
def test_workers_starting_together_share_a_new_sqlite_study(tmp_path, rep):
    """Without the retry, 9 of 10 such launches lost a worker ('table studies already
    exists' / 'UNIQUE constraint failed: alembic_version')."""
    ctx = mp.get_context("fork")
    url = f"sqlite:///{tmp_path / 'study.db'}"
    barrier, results = ctx.Barrier(6), ctx.Queue()
    procs = [ctx.Process(target=_open, args=(url, barrier, results)) for _ in range(6)]
    for p in procs:
        p.start()
    outcomes = [results.get(timeout=120) for _ in procs]
    for p in procs:
        p.join(timeout=30)
    assert outcomes == ["ok"] * 6
    storage = open_storage(url)
    optuna.create_study(storage=storage, study_name="s")
    assert [s.study_name for s in optuna.get_all_study_summaries(storage)] == ["s"]
