"""Start-up failures of ingest: each is one :class:`BrokerConnectError` naming the setting to
check, within a bounded time, with nothing of the service left running.

A broker that cannot be reached, a TLS port spoken to in plain MQTT (and the reverse), a broker
that never answers, a refused login (no misleading "retrying" line: nothing is retried), and
``boltwatch run`` turning one of them into a single ``error:`` line and exit status 2.
Reconnection after a successful start is unchanged (``test_ingest.py``, broker restart; and the
last test here)."""

from __future__ import annotations

import asyncio
import logging
import os
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

import pytest

import ingest.service
from boltwatch.config import Config, parse_config
from ingest.service import BrokerConnectError, IngestService
from ingest.store import Store
from tests.integration.conftest import (
    BROKER_PASSWORD,
    BROKER_USER,
    MosquittoServer,
    TlsFiles,
    free_port,
)

pytestmark = pytest.mark.integration

BOLTWATCH = Path(sys.executable).parent / "boltwatch"
# A regression (a hang) fails the test after this long instead of blocking the run.
BOUND_S = 60.0


def make_config(store: Path, **broker: Any) -> Config:
    return parse_config(
        {
            "broker": {"client_id": "ingest-connect-errors", **broker},
            "ingest": {"metrics_listen": "", "batch_max_ms": 20},
            "store": {"path": str(store)},
        },
        environ={},
    )


def leftovers() -> list[str]:
    """Tasks other than the test's, and the service's worker threads, still alive."""
    tasks = [t.get_name() for t in asyncio.all_tasks() if t is not asyncio.current_task()]
    threads = [t.name for t in threading.enumerate() if t.name.startswith("ingest-")]
    return tasks + threads


async def start_fails(cfg: Config, store_dir: Path) -> tuple[BrokerConnectError, float]:
    """Start the service, expect a BrokerConnectError; return it and how long it took."""
    started = time.monotonic()
    with Store(store_dir) as store, pytest.raises(BrokerConnectError) as refused:
        async with IngestService(cfg, store):
            pytest.fail("the service started")
    return refused.value, time.monotonic() - started


def ingest_lines(caplog: pytest.LogCaptureFixture, level: int = logging.WARNING) -> list[str]:
    return [
        r.getMessage()
        for r in caplog.records
        if r.name == "boltwatch.ingest" and r.levelno >= level
    ]


@pytest.fixture
def silent_server() -> Iterator[int]:
    """A TCP port that accepts connections and never says anything (a hung broker)."""
    server = socket.create_server(("127.0.0.1", 0))
    server.listen()
    accepted: list[socket.socket] = []
    stop = threading.Event()

    def accept() -> None:
        server.settimeout(0.1)
        while not stop.is_set():
            try:
                accepted.append(server.accept()[0])
            except TimeoutError:
                continue
            except OSError:
                return

    thread = threading.Thread(target=accept, name="silent-broker", daemon=True)
    thread.start()
    try:
        yield int(server.getsockname()[1])
    finally:
        stop.set()
        thread.join(5)
        for conn in accepted:
            conn.close()
        server.close()


# -- unreachable -----------------------------------------------------------------------------------


async def test_a_closed_port_is_reported_after_a_few_quick_retries(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    port = free_port()
    cfg = make_config(tmp_path / "store", url=f"mqtt://127.0.0.1:{port}")
    error, took = await asyncio.wait_for(start_fails(cfg, tmp_path / "store"), BOUND_S)
    assert error.key == "broker.url"
    assert error.reason.startswith(f"cannot reach mqtt://127.0.0.1:{port}: connection refused")
    assert "tried 5 times" in error.reason
    assert took < 10.0, f"took {took:.1f} s"
    assert leftovers() == []
    assert len(ingest_lines(caplog)) == 1, "one error line, no 'retrying' warnings"


async def test_a_host_name_that_does_not_resolve_is_reported(tmp_path: Path) -> None:
    cfg = make_config(tmp_path / "store", url="mqtt://no-such-broker.invalid:1883")
    error, _ = await asyncio.wait_for(start_fails(cfg, tmp_path / "store"), BOUND_S)
    assert error.key == "broker.url"
    # A resolver that does not answer at all ends in the start-up bound instead.
    assert "cannot resolve the host name" in error.reason or "no answer" in error.reason
    assert leftovers() == []


async def test_a_broker_that_never_answers_hits_the_start_up_bound(
    tmp_path: Path, silent_server: int, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The bound is max(keepalive, 30 s); shortened here so the test is quick.
    monkeypatch.setattr(ingest.service, "_FIRST_CONNECT_MIN_S", 1.0)
    cfg = make_config(tmp_path / "store", url=f"mqtt://127.0.0.1:{silent_server}", keepalive_s=5)
    error, took = await asyncio.wait_for(start_fails(cfg, tmp_path / "store"), BOUND_S)
    assert error.key == "broker.url"
    assert f"no answer from mqtt://127.0.0.1:{silent_server} within 5 s" in error.reason
    assert 4.0 < took < 15.0, f"took {took:.1f} s"
    assert leftovers() == []


# -- TLS and plain ports mixed up ------------------------------------------------------------------


async def test_mqtts_to_a_plain_port_says_the_broker_did_not_speak_tls(
    mosquitto: MosquittoServer, tls_files: TlsFiles, tmp_path: Path
) -> None:
    cfg = make_config(
        tmp_path / "store",
        url=f"mqtts://127.0.0.1:{mosquitto.port}",
        tls_ca_file=str(tls_files.ca_cert),
    )
    error, _ = await asyncio.wait_for(start_fails(cfg, tmp_path / "store"), BOUND_S)
    assert error.key == "broker.url"
    assert "TLS" in error.reason
    assert "mqtt://" in error.reason, "the hint: use mqtt:// for a plain port"
    assert leftovers() == []


async def test_mqtt_to_a_tls_port_says_the_broker_closed_the_connection(
    secure_mosquitto: MosquittoServer, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    cfg = make_config(
        tmp_path / "store",
        url=f"mqtt://127.0.0.1:{secure_mosquitto.port}",
        username=BROKER_USER,
        password=BROKER_PASSWORD,
    )
    error, _ = await asyncio.wait_for(start_fails(cfg, tmp_path / "store"), BOUND_S)
    assert error.key == "broker.url"
    assert "closed the connection before accepting us" in error.reason
    assert "mqtts://" in error.reason, "the hint: use mqtts:// for a TLS port"
    assert leftovers() == []
    assert not any("retrying" in line for line in ingest_lines(caplog))


# -- a refused login is not followed by a "retrying" warning ---------------------------------------


async def test_a_refused_login_logs_no_retrying_warning(
    secure_mosquitto: MosquittoServer,
    tls_files: TlsFiles,
    tmp_path: Path,
    caplog: pytest.LogCaptureFixture,
) -> None:
    cfg = make_config(
        tmp_path / "store",
        url=secure_mosquitto.url,
        tls_ca_file=str(tls_files.ca_cert),
        tls_cert_file=str(tls_files.client_cert),
        tls_key_file=str(tls_files.client_key),
        username=BROKER_USER,
        password="wrong-" + BROKER_PASSWORD,
    )
    error, _ = await asyncio.wait_for(start_fails(cfg, tmp_path / "store"), BOUND_S)
    assert error.key == "broker.password"
    await asyncio.sleep(1.5)  # when gmqtt's reconnect delay would have run out
    lines = ingest_lines(caplog)
    assert len(lines) == 1, lines
    assert "authentication failed" in lines[0]
    assert not any("retrying" in r.getMessage() for r in caplog.records)
    assert leftovers() == []


# -- after a successful start, a lost connection is still retried ----------------------------------


async def test_after_a_successful_start_a_lost_connection_is_retried(
    mosquitto: MosquittoServer, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    cfg = make_config(tmp_path / "store", url=mosquitto.url, keepalive_s=5)
    async with asyncio.timeout(BOUND_S):
        with Store(tmp_path / "store") as store:
            async with IngestService(cfg, store) as svc:
                await svc.wait_subscribed()
                await mosquitto.astop()
                for _ in range(600):  # the loss is seen within a moment of the broker's exit
                    if not svc._state.connected.is_set():
                        break
                    await asyncio.sleep(0.05)
                assert not svc._state.connected.is_set(), "the loss was not noticed"
                await mosquitto.astart()
                await asyncio.wait_for(svc._state.connected.wait(), 30)
    assert any("retrying in" in line for line in ingest_lines(caplog))
    assert leftovers() == []


# -- the command line ------------------------------------------------------------------------------


def _cli(args: list[str], env: Mapping[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(BOLTWATCH), *args],
        env={**os.environ, **env},
        capture_output=True,
        text=True,
        timeout=BOUND_S,
        check=False,
    )


async def test_boltwatch_run_against_a_closed_port_exits_2_with_one_line(tmp_path: Path) -> None:
    port = free_port()
    run = await asyncio.to_thread(
        _cli,
        ["run", "--broker", f"mqtt://127.0.0.1:{port}", "--store", str(tmp_path / "store")],
        {"BOLTWATCH_INGEST_METRICS_LISTEN": ""},
    )
    assert run.returncode == 2, f"{run.stdout}\n{run.stderr}"
    errors = [line for line in run.stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 1, run.stderr
    assert errors[0].startswith(
        f"error: broker.url: cannot reach mqtt://127.0.0.1:{port}: connection refused"
    )
    assert "tried 5 times" in errors[0]
    assert "Traceback" not in run.stdout + run.stderr
    assert "retrying" not in run.stderr


async def test_boltwatch_run_with_the_api_port_in_use_exits_2_with_one_line(
    mosquitto: MosquittoServer, tmp_path: Path
) -> None:
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        run = await asyncio.to_thread(
            _cli,
            ["run", "--broker", mosquitto.url, "--store", str(tmp_path / "store")],
            {
                "BOLTWATCH_INGEST_METRICS_LISTEN": "",
                "BOLTWATCH_ALERTS_API_LISTEN": f"127.0.0.1:{port}",
                "BOLTWATCH_ALERTS_API_TOKEN": "t0ken",
            },
        )
    assert run.returncode == 2, f"{run.stdout}\n{run.stderr}"
    errors = [line for line in run.stderr.splitlines() if line.startswith("error:")]
    assert errors == [
        f"error: alerts.api_listen: cannot listen on 127.0.0.1:{port}: Address already in use"
    ], run.stderr
    assert "Traceback" not in run.stdout + run.stderr
