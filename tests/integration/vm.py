"""A real VictoriaMetrics for integration tests, and the ``victoria`` fixture.

:class:`VictoriaMetrics` runs the Debian package's ``victoria-metrics`` on a free port of
127.0.0.1 with its storage in the test's temporary directory, so :meth:`~VictoriaMetrics.restart`
(on the same port) keeps what was written, as a production server does. Readings come back
through ``/api/v1/export`` (one JSON object per series and line).

Import the fixture into a test module with ``from tests.integration.vm import victoria``; its
pytest name is ``victoria`` under any alias, so ``import victoria as _victoria`` keeps ruff from
calling each test's ``victoria`` parameter a redefinition (F811).
"""

from __future__ import annotations

import http.client
import json
import shutil
import signal
import socket
import subprocess
import time
import urllib.parse
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import pytest

BINARY = "victoria-metrics"
"""Name of the executable (Debian package ``victoria-metrics``: ``/usr/bin/victoria-metrics``)."""


def free_port() -> int:
    """A TCP port of 127.0.0.1 that nothing listens on (now)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class VictoriaMetrics:
    """A victoria-metrics process on a fixed port, which can be stopped and started again on it.

    Args:
        workdir: Directory for the storage and the log.
        port: Port to listen on (127.0.0.1); default a free one.
        binary: Path of the executable; default ``victoria-metrics`` on ``PATH``.
        extra_args: More flags (``-dedup.minScrapeInterval=1ms``: a sample written twice is
            kept once, as the cluster's store workers want it).
    """

    host = "127.0.0.1"

    def __init__(
        self,
        workdir: Path,
        port: int | None = None,
        binary: str | None = None,
        extra_args: Sequence[str] = (),
    ) -> None:
        found = binary or shutil.which(BINARY)
        if found is None:
            raise FileNotFoundError(BINARY)
        self.binary = found
        self.workdir = workdir
        self.port = port or free_port()
        self.storage = workdir / "storage"
        self.log = workdir / "victoria-metrics.log"
        self.extra_args = list(extra_args)
        self._proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        """``http://127.0.0.1:PORT``."""
        return f"http://{self.host}:{self.port}"

    @property
    def running(self) -> bool:
        """Whether the process is alive."""
        return self._proc is not None and self._proc.poll() is None

    def start(self, timeout: float = 20.0) -> None:
        """Start the server and wait until ``/health`` answers ``OK``."""
        if self.running:
            return
        with self.log.open("ab") as log:
            self._proc = subprocess.Popen(
                [
                    self.binary,
                    f"-httpListenAddr={self.host}:{self.port}",
                    f"-storageDataPath={self.storage}",
                    # Tests write fixed timestamps of any age; the default (1 month) drops them.
                    "-retentionPeriod=100y",
                    "-loggerLevel=WARN",
                    *self.extra_args,
                ],
                stdout=log,
                stderr=subprocess.STDOUT,
            )
        deadline = time.monotonic() + timeout
        while True:
            if self._proc.poll() is not None:
                raise RuntimeError(f"victoria-metrics exited at start:\n{self.log_text()}")
            try:
                if self._get("/health", timeout=1.0) == "OK":
                    return
            except (OSError, http.client.HTTPException):
                pass
            if time.monotonic() > deadline:
                self.stop()
                raise RuntimeError(f"victoria-metrics did not answer /health on {self.port}")
            time.sleep(0.05)

    def stop(self, timeout: float = 20.0) -> None:
        """Stop the server with SIGTERM (it flushes to disk) and wait for it to exit."""
        proc, self._proc = self._proc, None
        if proc is None:
            return
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(timeout)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()

    def restart(self) -> None:
        """Stop, then start again on the same port with the same storage."""
        self.stop()
        self.start()

    def flush(self) -> None:
        """Make everything written so far visible to searches (``/internal/force_flush``)."""
        self._get("/internal/force_flush")

    def export(
        self, match: str, *, min_samples: int = 0, timeout: float = 10.0
    ) -> list[dict[str, Any]]:
        """The series matching a selector, as ``/api/v1/export`` gives them.

        Each item is ``{"metric": {"__name__": …, label: value, …}, "values": [...],
        "timestamps": [...]}`` (milliseconds).

        Args:
            match: A series selector, e.g. ``{__name__=~"cbolt_.*"}``.
            min_samples: Poll until the series hold at least this many samples in all.
            timeout: How long to poll, seconds.
        """
        query = urllib.parse.urlencode({"match[]": match})
        deadline = time.monotonic() + timeout
        while True:
            self.flush()
            text = self._get(f"/api/v1/export?{query}")
            series = [json.loads(line) for line in text.splitlines() if line.strip()]
            if sum(len(s["values"]) for s in series) >= min_samples:
                return series
            if time.monotonic() > deadline:
                return series
            time.sleep(0.05)

    def _get(self, path: str, timeout: float = 10.0) -> str:
        """GET ``path``; the body as text.

        Raises:
            RuntimeError: The answer is not 200.
        """
        conn = http.client.HTTPConnection(self.host, self.port, timeout=timeout)
        try:
            conn.request("GET", path)
            resp = conn.getresponse()
            body = resp.read().decode()
        finally:
            conn.close()
        if resp.status != 200:
            raise RuntimeError(f"GET {path}: HTTP {resp.status} {body[:200]}")
        return body

    def log_text(self) -> str:
        """The server's log so far (for failure messages)."""
        return self.log.read_text(errors="replace") if self.log.exists() else ""


@pytest.fixture(name="victoria")
def victoria(tmp_path: Path) -> Iterator[VictoriaMetrics]:
    """A real VictoriaMetrics on a free port, storage in ``tmp_path``, stopped after the test."""
    if shutil.which(BINARY) is None:
        pytest.skip(
            f"{BINARY} is not installed (Debian package `victoria-metrics`: "
            "`apt-get install victoria-metrics`)"
        )
    workdir = tmp_path / "victoria-metrics"
    workdir.mkdir()
    server = VictoriaMetrics(workdir)
    server.start()
    try:
        yield server
    finally:
        server.stop()
