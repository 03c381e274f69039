"""Opening Optuna storages from a URL, with a clear error when one cannot be opened."""

from __future__ import annotations

import os
import time
from pathlib import Path

import optuna

from nasdet.errors import NasdetError

# RDB storages beat a heartbeat, so a trial whose process was killed is marked FAIL
# once it has been silent for the grace period (Optuna checks when a trial starts and
# a resumed search checks at once). Environment variables tune both for clusters
# with slow shared databases.
HEARTBEAT_SECONDS = int(os.environ.get("NASDET_HEARTBEAT_SECONDS", "10"))
GRACE_SECONDS = int(os.environ.get("NASDET_GRACE_SECONDS", "30"))

# What a process meets when another one is creating the same new database's schema at
# that moment (SQLite, PostgreSQL, MySQL wording); the schema exists on the next try.
_SCHEMA_RACE = ("already exists", "alembic_version", "duplicate key", "database is locked")


def default_storage_url(work_dir: str | Path) -> str:
    """SQLite file in the search's work dir."""
    return f"sqlite:///{Path(work_dir).absolute() / 'study.db'}"


def open_storage(url: str, *, heartbeat: bool = True) -> optuna.storages.BaseStorage:
    """An Optuna storage for ``url``.

    Args:
        url: An RDB URL (``sqlite:///path.db``, ``postgresql://user@host/db``,
            ``mysql://...``) or a journal file (``journal:///path.log`` or any path
            ending in ``.log``/``.jsonl``), which several workers may share on one
            machine or a shared file system.
        heartbeat: RDB storages beat a heartbeat for each running trial (the Optuna
            driver's ``study.optimize``); off for ask-and-tell drivers (Ray Tune's
            searcher), whose interrupted trials are failed by the driver itself.

    Returns:
        The storage.

    Raises:
        NasdetError: the storage cannot be opened (naming ``--storage``).
    """
    try:
        if url.startswith("journal://") or url.endswith((".log", ".jsonl")):
            path = Path(url.removeprefix("journal://"))
            path.parent.mkdir(parents=True, exist_ok=True)
            backend = optuna.storages.journal.JournalFileBackend(str(path))
            return optuna.storages.JournalStorage(backend)
        if url.startswith("sqlite:///"):
            Path(url.removeprefix("sqlite:///")).parent.mkdir(parents=True, exist_ok=True)
        return _rdb_storage(url, heartbeat=heartbeat)
    except Exception as exc:  # SQLAlchemy, drivers and OS errors all end up here
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise NasdetError(f"cannot open storage {url!r}: {first}", key="--storage") from None


def _rdb_storage(url: str, retries: int = 5, *,
                 heartbeat: bool = True) -> optuna.storages.RDBStorage:
    """``RDBStorage(url)``, retried while another worker creates the same new schema."""
    def connect() -> optuna.storages.RDBStorage:
        if not heartbeat:
            return optuna.storages.RDBStorage(url)
        return optuna.storages.RDBStorage(
            url, heartbeat_interval=HEARTBEAT_SECONDS, grace_period=GRACE_SECONDS)

    for attempt in range(retries):
        try:
            return connect()
        except Exception as exc:
            if not any(s in str(exc) for s in _SCHEMA_RACE):
                raise
            time.sleep(0.2 * (attempt + 1))
    return connect()
