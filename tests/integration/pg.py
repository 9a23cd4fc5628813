"""A real PostgreSQL server for the tests (Debian's packages), on a free port.

``initdb`` makes a cluster in a temporary directory and ``postgres`` serves it on 127.0.0.1 (and a
socket in that directory), with trust authentication for the test's own user. PostgreSQL refuses
to run as root: as root (CI), the server runs as the ``postgres`` system user that Debian's
package creates, in a directory given to it. ``fsync`` is off: the tests kill workers, never the
database, and the suite runs on a shared 2-core machine.

The ``postgres`` fixture (session) starts one server and stops it at the end, also after failures;
``pg_dsn`` gives each test a database of its own on it.
"""

from __future__ import annotations

import contextlib
import glob
import os
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

__all__ = ["PostgresServer", "find_pg_bin", "pg_dsn", "postgres"]


def find_pg_bin() -> Path | None:
    """The newest ``/usr/lib/postgresql/<version>/bin`` holding ``initdb`` (Debian's layout)."""
    found = sorted(
        glob.glob("/usr/lib/postgresql/*/bin/initdb"),
        key=lambda p: (
            int(Path(p).parent.parent.name) if Path(p).parent.parent.name.isdigit() else 0
        ),
    )
    return Path(found[-1]).parent if found else None


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class PostgresServer:
    """One PostgreSQL server in a fresh directory.

    Args:
        bindir: Where ``initdb`` and ``postgres`` are.
    """

    host = "127.0.0.1"
    user = "boltwatch"

    def __init__(self, bindir: Path) -> None:
        self.bindir = bindir
        self.root = os.geteuid() == 0
        # Not under pytest's tmp_path: as root that is a 0700 folder the postgres user cannot
        # enter.
        self.workdir = Path(tempfile.mkdtemp(prefix="boltwatch-pg-"))
        self.data = self.workdir / "data"
        self.log = self.workdir / "postgres.log"
        self.port = _free_port()
        self._proc: subprocess.Popen[bytes] | None = None
        if self.root:
            shutil.chown(self.workdir, "postgres", "postgres")

    def _as_owner(self, args: list[str]) -> list[str]:
        return ["runuser", "-u", "postgres", "--", *args] if self.root else args

    @property
    def admin_dsn(self) -> str:
        """The ``postgres`` database, as the test user (a superuser)."""
        return self.dsn("postgres")

    def dsn(self, database: str) -> str:
        """``postgresql://boltwatch@127.0.0.1:PORT/DATABASE``."""
        return f"postgresql://{self.user}@{self.host}:{self.port}/{database}"

    def start(self, timeout: float = 60.0) -> None:
        """initdb, then start the server and wait until it accepts connections."""
        subprocess.run(
            self._as_owner(
                [
                    str(self.bindir / "initdb"),
                    "-D",
                    str(self.data),
                    "-U",
                    self.user,
                    "-A",
                    "trust",
                    "-E",
                    "UTF8",
                    "--no-sync",
                ]
            ),
            check=True,
            capture_output=True,
        )
        with self.log.open("ab") as log:
            self._proc = subprocess.Popen(
                self._as_owner(
                    [
                        str(self.bindir / "postgres"),
                        "-D",
                        str(self.data),
                        "-p",
                        str(self.port),
                        "-c",
                        f"listen_addresses={self.host}",
                        "-c",
                        f"unix_socket_directories={self.workdir}",
                        "-c",
                        "fsync=off",
                        "-c",
                        "max_connections=200",
                    ]
                ),
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        import psycopg

        deadline = time.monotonic() + timeout
        while True:
            if self._proc.poll() is not None:
                raise RuntimeError(f"postgres exited at start:\n{self.log_text()}")
            try:
                with psycopg.connect(self.admin_dsn, connect_timeout=2):
                    return
            except psycopg.OperationalError:
                pass
            if time.monotonic() > deadline:
                self.stop()
                raise RuntimeError(f"postgres did not accept connections on {self.port}")
            time.sleep(0.1)

    def create_database(self, name: str) -> str:
        """A new empty database; its DSN."""
        import psycopg

        with psycopg.connect(self.admin_dsn, autocommit=True) as conn:
            conn.execute(f'CREATE DATABASE "{name}"')
        return self.dsn(name)

    def stop(self, timeout: float = 20.0) -> None:
        """Fast shutdown (SIGINT), then SIGKILL if it lingers; the directory is removed."""
        proc, self._proc = self._proc, None
        if proc is not None and proc.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGINT)
            try:
                proc.wait(timeout)
            except subprocess.TimeoutExpired:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(proc.pid, signal.SIGKILL)
                proc.wait()
        shutil.rmtree(self.workdir, ignore_errors=True)

    def log_text(self) -> str:
        """The server's log so far (for failure messages)."""
        return self.log.read_text(errors="replace") if self.log.exists() else ""


@pytest.fixture(scope="session")
def postgres() -> Iterator[PostgresServer]:
    """A real PostgreSQL for the session, stopped at its end (also after failures)."""
    bindir = find_pg_bin()
    if bindir is None:
        pytest.skip(
            "PostgreSQL is not installed (Debian package `postgresql`: "
            "`apt-get install postgresql`; `make test` installs it as root)"
        )
    server = PostgresServer(bindir)
    try:
        server.start()
        yield server
    finally:
        server.stop()


_COUNT = iter(range(1_000_000))


@pytest.fixture
def pg_dsn(postgres: PostgresServer) -> str:
    """A database of this test's own on the session's server."""
    return postgres.create_database(f"t{os.getpid()}_{next(_COUNT)}")
