"""A throwaway PostgreSQL server for tests: its own data dir, a Unix socket, no TCP port.

Uses the server binaries of Debian's ``postgresql`` package (``.ci/run`` installs it
where missing). PostgreSQL refuses to run as root, so as root the server runs as the
package's ``postgres`` user.
"""

from __future__ import annotations

import contextlib
import glob
import os
import shutil
import socket
import subprocess
import tempfile
from collections.abc import Iterator
from pathlib import Path


def server_bin() -> Path | None:
    """The newest ``/usr/lib/postgresql/<major>/bin`` that has ``pg_ctl``, or None."""
    found = sorted(glob.glob("/usr/lib/postgresql/*/bin/pg_ctl"),
                   key=lambda p: int(Path(p).parts[-3]))
    return Path(found[-1]).parent if found else None


def _free_port() -> int:
    # Only names the socket file (.s.PGSQL.<port>); the server listens on no TCP port.
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@contextlib.contextmanager
def postgres_server(database: str = "optuna") -> Iterator[str]:
    """Run a server for the duration of the block; yields an SQLAlchemy URL to ``database``."""
    bindir = server_bin()
    if bindir is None:
        raise RuntimeError("no PostgreSQL server binaries under /usr/lib/postgresql")
    base = Path(tempfile.mkdtemp(prefix="pg", dir="/tmp"))  # socket paths must be short
    as_user: list[str] = []
    if os.geteuid() == 0:
        shutil.chown(base, "postgres", "postgres")
        as_user = ["runuser", "-u", "postgres", "--"]
    data, port = base / "data", _free_port()

    def run(*cmd: str) -> None:
        subprocess.run([*as_user, *cmd], check=True, capture_output=True, text=True)

    try:
        run(str(bindir / "initdb"), "-D", str(data), "-U", "nasdet", "--auth=trust", "-E", "UTF8")
        run(str(bindir / "pg_ctl"), "-D", str(data), "-l", str(base / "server.log"), "-w",
            "-o", f"-c listen_addresses='' -k {base} -p {port}", "start")
        try:
            run(str(bindir / "createdb"), "-h", str(base), "-p", str(port), "-U", "nasdet",
                database)
            yield f"postgresql+psycopg2://nasdet@/{database}?host={base}&port={port}"
        finally:
            run(str(bindir / "pg_ctl"), "-D", str(data), "-m", "fast", "-w", "stop")
    finally:
        shutil.rmtree(base, ignore_errors=True)
