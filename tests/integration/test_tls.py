"""Ingest against a Mosquitto with mutual TLS and a password file: it stores and acknowledges,
keeps the password out of logs and ``config show``, and fails fast and clearly on a wrong CA or
a wrong password (a typed error naming the setting, one log line, no traceback, no hang)."""

from __future__ import annotations

import asyncio
import json
import logging
import os
import signal
import ssl
import subprocess
import sys
import time
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import pytest

from boltwatch.config import Config, parse_config
from ingest.service import BrokerConnectError, IngestService
from ingest.store import Store
from tests.integration.conftest import (
    BROKER_PASSWORD,
    BROKER_USER,
    Collector,
    MosquittoServer,
    Reaper,
    TlsFiles,
    client_tls_context,
)

pytestmark = pytest.mark.integration

T0 = int(time.time() * 1000) - 86_400_000  # yesterday: every test reading is plausible
BOLTWATCH = Path(sys.executable).parent / "boltwatch"
# How long a refused connection may take to be reported (it is immediate; the bound catches a hang).
FAIL_FAST_S = 10.0


def reading(dev: int, seq: int) -> tuple[str, bytes]:
    topic = f"boltwatch/v1/site-a/cbolt/bolt-{dev:03d}/telemetry"
    payload = json.dumps({"ts": T0 + seq * 1000, "seq": seq, "preload_kn": 60.0 + dev}).encode()
    return topic, payload


async def wait_until(predicate: Callable[[], bool], timeout: float, what: str) -> None:  # noqa: ASYNC109
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout} s waiting for {what}")
        await asyncio.sleep(0.05)


def count(path: Path) -> int:
    with Store(path) as reader:
        return reader.stats().readings


def broker_section(server: MosquittoServer, tls: TlsFiles, **overrides: Any) -> dict[str, Any]:
    """``[broker]`` for the secure broker: mutual TLS and the test user (no password yet)."""
    return {
        "url": server.url,
        "client_id": "ingest-tls",
        "tls_ca_file": str(tls.ca_cert),
        "tls_cert_file": str(tls.client_cert),
        "tls_key_file": str(tls.client_key),
        "username": BROKER_USER,
        **overrides,
    }


def make_config(
    broker: Mapping[str, Any], store: Path, environ: Mapping[str, str] | None = None
) -> Config:
    return parse_config(
        {
            "broker": dict(broker),
            "ingest": {"metrics_listen": "", "batch_max_ms": 20},
            "store": {"path": str(store)},
        },
        environ=environ or {},
    )


def publisher(server: MosquittoServer, tls: TlsFiles) -> Collector:
    """A gmqtt publisher over mutual TLS, logged in as the test user."""
    return Collector(
        server.url,
        ["unused/#"],
        tls=client_tls_context(tls.ca_cert, tls.client_cert, tls.client_key),
        username=BROKER_USER,
        password=BROKER_PASSWORD,
    )


def leftover_tasks() -> list[str]:
    return [t.get_name() for t in asyncio.all_tasks() if t is not asyncio.current_task()]


# -- the broker really enforces what the tests rely on ---------------------------------------------


def test_the_broker_refuses_a_client_without_a_certificate(
    secure_mosquitto: MosquittoServer, tls_files: TlsFiles
) -> None:
    """Mutual TLS is on: so the ingest tests below do authenticate with their certificate."""
    import socket

    def talk(context: ssl.SSLContext) -> bytes:
        address = (secure_mosquitto.host, secure_mosquitto.port)
        with (
            socket.create_connection(address, 5) as raw,
            context.wrap_socket(raw, server_hostname="127.0.0.1") as tls,
        ):
            # TLS 1.3: the broker checks the client certificate after the handshake and answers
            # a bad one with an alert; one it accepts waits quietly for our CONNECT.
            tls.settimeout(1.0)
            try:
                return tls.recv(1)
            except TimeoutError:
                return b"accepted"

    trusted = talk(
        client_tls_context(tls_files.ca_cert, tls_files.client_cert, tls_files.client_key)
    )
    assert trusted == b"accepted", "with a certificate the broker waits for CONNECT"
    # Without one (the context verifies the broker, presents nothing), it fails.
    with pytest.raises((ssl.SSLError, ConnectionError)):
        talk(client_tls_context(tls_files.ca_cert))


async def test_the_broker_refuses_anonymous_clients(
    secure_mosquitto: MosquittoServer, tls_files: TlsFiles, tmp_path: Path
) -> None:
    broker = broker_section(secure_mosquitto, tls_files)
    del broker["username"]
    cfg = make_config(broker, tmp_path / "store")
    with Store(tmp_path / "store") as store:
        async with asyncio.timeout(FAIL_FAST_S):
            with pytest.raises(BrokerConnectError, match="anonymous client"):
                await IngestService(cfg, store).__aenter__()
    assert leftover_tasks() == []


# -- (1) ingest over mutual TLS with a password ----------------------------------------------------


@pytest.mark.parametrize("secret", ["password_file", "env", "password"])
async def test_ingest_over_mutual_tls_with_a_password_stores_and_acknowledges(
    secure_mosquitto: MosquittoServer, tls_files: TlsFiles, tmp_path: Path, secret: str
) -> None:
    store_dir = tmp_path / "store"
    broker = broker_section(secure_mosquitto, tls_files)
    environ: dict[str, str] = {}
    if secret == "password_file":
        (tmp_path / "broker-password").write_text(BROKER_PASSWORD + "\n")
        broker["password_file"] = str(tmp_path / "broker-password")
    elif secret == "env":
        environ["BOLTWATCH_BROKER_PASSWORD"] = BROKER_PASSWORD
    else:
        broker["password"] = BROKER_PASSWORD
    cfg = make_config(broker, store_dir, environ)
    assert cfg.broker.url.startswith("mqtts://")
    messages = [reading(d, s) for d in range(5) for s in range(40)]
    async with asyncio.timeout(60):  # a hang fails the test instead of blocking it
        with Store(store_dir) as store:
            async with IngestService(cfg, store) as svc:
                await svc.wait_subscribed()
                async with publisher(secure_mosquitto, tls_files) as pub:
                    for topic, payload in messages:
                        pub.publish(topic, payload, qos=1)
                    await wait_until(lambda: count(store_dir) == len(messages), 20, "200 stored")
                    # The broker acknowledged every publish (PUBACKs back over TLS).
                    await wait_until(
                        lambda: pub._client._persistent_storage.is_empty, 10, "publisher PUBACKs"
                    )
                await wait_until(lambda: not svc._queue, 10, "the last commit")
            assert svc.metrics.messages._value.get() == len(messages)
            assert svc.metrics.duplicates._value.get() == 0
            # Ingest acknowledged everything: its persistent session holds nothing to redeliver.
            async with IngestService(cfg, store) as again:
                await again.wait_subscribed()
                await asyncio.sleep(1.0)
            assert again.metrics.messages._value.get() == 0, "unacknowledged messages redelivered"
            stats = store.stats()
    assert stats.readings == len(messages)
    assert stats.devices == 5
    assert stats.dead_letters == 0
    assert f"as {cfg.broker.client_id}" in secure_mosquitto.log_text()  # a real login happened
    assert f"u'{BROKER_USER}'" in secure_mosquitto.log_text()


# -- (2) secrets stay out of logs and `config show` ------------------------------------------------


async def test_the_password_never_reaches_the_logs(
    secure_mosquitto: MosquittoServer,
    tls_files: TlsFiles,
    tmp_path: Path,
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.DEBUG)
    caplog.set_level(logging.DEBUG, logger="gmqtt")  # the MQTT library too, at its chattiest
    broker = broker_section(secure_mosquitto, tls_files)
    cfg = make_config(broker, tmp_path / "store", {"BOLTWATCH_BROKER_PASSWORD": BROKER_PASSWORD})
    async with asyncio.timeout(60):  # a hang fails the test instead of blocking it
        with Store(tmp_path / "store") as store:
            async with IngestService(cfg, store) as svc:
                await svc.wait_subscribed()
                async with publisher(secure_mosquitto, tls_files) as pub:
                    topic, payload = reading(1, 1)
                    pub.publish(topic, payload)
                    await wait_until(lambda: count(tmp_path / "store") == 1, 20, "one reading")
            # A refused login is where a careless error message would echo the secret.
            wrong = make_config(
                {**broker, "client_id": "ingest-wrong"},
                tmp_path / "store",
                {"BOLTWATCH_BROKER_PASSWORD": BROKER_PASSWORD + "-wrong"},
            )
            async with asyncio.timeout(FAIL_FAST_S):
                with pytest.raises(BrokerConnectError) as refused:
                    await IngestService(wrong, store).__aenter__()
    assert cfg.broker.password == BROKER_PASSWORD, "the service had the password to leak"
    assert "connected to" in caplog.text, "the capture saw the service's log"
    assert "authentication failed" in caplog.text
    # The wrong password starts with the right one: a leak of either is caught.
    text = "\n".join([caplog.text, *(repr(r.args) for r in caplog.records), str(refused.value)])
    assert BROKER_PASSWORD not in text


def _spawn_run(env: Mapping[str, str], out: Path) -> subprocess.Popen[bytes]:
    """``boltwatch run`` in the background, its stdout and stderr both into ``out``."""
    with out.open("wb") as fh:
        return subprocess.Popen(
            [str(BOLTWATCH), "run"], env={**os.environ, **env}, stdout=fh, stderr=fh
        )


def _cli(args: list[str], env: Mapping[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(BOLTWATCH), *args],
        env={**os.environ, **env},
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


def test_config_show_redacts_the_password(tls_files: TlsFiles, tmp_path: Path) -> None:
    secret_file = tmp_path / "broker-password"
    secret_file.write_text(BROKER_PASSWORD + "\n")
    toml = tmp_path / "boltwatch.toml"
    toml.write_text(
        "[broker]\n"
        'url = "mqtts://127.0.0.1:8883"\n'
        f'username = "{BROKER_USER}"\n'
        f'tls_ca_file = "{tls_files.ca_cert}"\n'
        f'tls_cert_file = "{tls_files.client_cert}"\n'
        f'tls_key_file = "{tls_files.client_key}"\n'
    )
    in_file = toml.read_text() + f'password = "{BROKER_PASSWORD}"\n'
    (tmp_path / "inline.toml").write_text(in_file)
    runs = {
        "env": _cli(
            ["config", "show", "-c", str(toml)], {"BOLTWATCH_BROKER_PASSWORD": BROKER_PASSWORD}
        ),
        "toml": _cli(["config", "show", "-c", str(tmp_path / "inline.toml")], {}),
        "file": _cli(
            ["config", "show", "-c", str(toml)],
            {"BOLTWATCH_BROKER_PASSWORD_FILE": str(secret_file)},
        ),
    }
    for how, run in runs.items():
        assert run.returncode == 0, f"{how}: {run.stderr}"
        assert BROKER_PASSWORD not in run.stdout + run.stderr, how
        shown = json.loads(run.stdout)["broker"]
        assert shown["username"] == BROKER_USER
        assert shown["tls_cert_file"] == str(tls_files.client_cert)
        if how == "file":
            assert shown["password"] is None
            assert shown["password_file"] == str(secret_file)
        else:
            assert shown["password"] == "***", how


# -- (3) a wrong CA, (4) a wrong password: typed errors, one log line, no hang ---------------------


async def test_a_wrong_ca_is_a_typed_tls_error_not_a_hang(
    secure_mosquitto: MosquittoServer,
    tls_files: TlsFiles,
    tmp_path: Path,
    caplog: pytest.LogCaptureFixture,
) -> None:
    broker = broker_section(secure_mosquitto, tls_files, tls_ca_file=str(tls_files.other_ca_cert))
    cfg = make_config(broker, tmp_path / "store", {"BOLTWATCH_BROKER_PASSWORD": BROKER_PASSWORD})
    started = time.monotonic()
    with Store(tmp_path / "store") as store:
        async with asyncio.timeout(FAIL_FAST_S):
            with pytest.raises(BrokerConnectError) as refused:
                async with IngestService(cfg, store):
                    pytest.fail("connected although the broker's certificate is not trusted")
    assert time.monotonic() - started < FAIL_FAST_S
    error = refused.value
    assert error.key == "broker.tls_ca_file"
    assert "TLS" in error.reason
    assert "did not verify" in error.reason
    assert isinstance(error.__cause__, ssl.SSLCertVerificationError)
    lines = [
        r.getMessage()
        for r in caplog.records
        if r.name == "boltwatch.ingest" and r.levelno >= logging.ERROR
    ]
    assert len(lines) == 1
    assert "broker.tls_ca_file: TLS" in lines[0]
    assert leftover_tasks() == [], "the service's tasks were stopped"


async def test_a_wrong_password_is_an_authentication_error(
    secure_mosquitto: MosquittoServer,
    tls_files: TlsFiles,
    tmp_path: Path,
    caplog: pytest.LogCaptureFixture,
) -> None:
    broker = broker_section(secure_mosquitto, tls_files)
    wrong = "not-" + BROKER_PASSWORD
    cfg = make_config(broker, tmp_path / "store", {"BOLTWATCH_BROKER_PASSWORD": wrong})
    with Store(tmp_path / "store") as store:
        async with asyncio.timeout(FAIL_FAST_S):
            with pytest.raises(BrokerConnectError) as refused:
                async with IngestService(cfg, store):
                    pytest.fail("connected with a wrong password")
    error = refused.value
    assert error.key == "broker.password"
    assert "authentication failed" in error.reason
    assert f"user {BROKER_USER!r}" in error.reason
    assert wrong not in str(error)
    assert any(
        "authentication failed" in r.getMessage() and r.levelno >= logging.ERROR
        for r in caplog.records
        if r.name == "boltwatch.ingest"
    )
    assert leftover_tasks() == []


async def test_boltwatch_run_reports_tls_and_login_failures_in_one_line(
    secure_mosquitto: MosquittoServer, tls_files: TlsFiles, tmp_path: Path
) -> None:
    """The command line: exit status 2, one `error:` line naming the key, no traceback."""
    env = {
        "BOLTWATCH_INGEST_METRICS_LISTEN": "",
        "BOLTWATCH_BROKER_URL": secure_mosquitto.url,
        "BOLTWATCH_BROKER_USERNAME": BROKER_USER,
        "BOLTWATCH_BROKER_TLS_CERT_FILE": str(tls_files.client_cert),
        "BOLTWATCH_BROKER_TLS_KEY_FILE": str(tls_files.client_key),
        "BOLTWATCH_STORE_PATH": str(tmp_path / "store"),
    }
    cases = {
        "broker.tls_ca_file": {
            "BOLTWATCH_BROKER_TLS_CA_FILE": str(tls_files.other_ca_cert),
            "BOLTWATCH_BROKER_PASSWORD": BROKER_PASSWORD,
        },
        "broker.password": {
            "BOLTWATCH_BROKER_TLS_CA_FILE": str(tls_files.ca_cert),
            "BOLTWATCH_BROKER_PASSWORD": "wrong-" + BROKER_PASSWORD,
        },
    }
    for key, extra in cases.items():
        run = await asyncio.to_thread(_cli, ["run"], {**env, **extra})
        assert run.returncode == 2, f"{key}: {run.stdout}\n{run.stderr}"
        assert f"error: {key}: " in run.stderr
        assert "Traceback" not in run.stderr
        assert BROKER_PASSWORD not in run.stdout + run.stderr


async def test_boltwatch_run_over_mutual_tls_keeps_the_password_out_of_its_output(
    secure_mosquitto: MosquittoServer, tls_files: TlsFiles, reaper: Reaper, tmp_path: Path
) -> None:
    """The real service at debug level, password from the environment: ingest, stop, read."""
    env = {
        "BOLTWATCH_INGEST_METRICS_LISTEN": "",
        "BOLTWATCH_LOG_LEVEL": "debug",
        "BOLTWATCH_BROKER_URL": secure_mosquitto.url,
        "BOLTWATCH_BROKER_USERNAME": BROKER_USER,
        "BOLTWATCH_BROKER_PASSWORD": BROKER_PASSWORD,
        "BOLTWATCH_BROKER_TLS_CA_FILE": str(tls_files.ca_cert),
        "BOLTWATCH_BROKER_TLS_CERT_FILE": str(tls_files.client_cert),
        "BOLTWATCH_BROKER_TLS_KEY_FILE": str(tls_files.client_key),
        "BOLTWATCH_STORE_PATH": str(tmp_path / "store"),
    }
    log = tmp_path / "run.log"
    proc = reaper.track(_spawn_run(env, log))  # killed at teardown if the test fails
    try:
        await wait_until(lambda: "u'ingest'" in secure_mosquitto.log_text(), 30, "the login")
        await asyncio.sleep(0.5)  # subscribed
        async with publisher(secure_mosquitto, tls_files) as pub:
            for topic, payload in (reading(2, s) for s in range(20)):
                pub.publish(topic, payload)
            await wait_until(lambda: count(tmp_path / "store") == 20, 20, "20 stored")
    finally:
        proc.send_signal(signal.SIGTERM)
        await asyncio.to_thread(proc.wait, 30)
    output = log.read_text()
    assert proc.returncode == 0, output
    assert "connected to" in output, "the debug log was captured"
    assert BROKER_PASSWORD not in output


@pytest.mark.parametrize("client_cert", ["none", "from an unrelated CA"])
async def test_a_missing_or_untrusted_client_certificate_fails_fast(
    secure_mosquitto: MosquittoServer,
    tls_files: TlsFiles,
    tmp_path: Path,
    client_cert: str,
    caplog: pytest.LogCaptureFixture,
) -> None:
    """TLS 1.3: the broker checks the client certificate after the handshake and drops the
    connection before CONNACK. The first connect notices the loss (instead of gmqtt waiting
    forever while it reconnects) and names ``broker.tls_cert_file``; nothing keeps running."""
    broker = broker_section(secure_mosquitto, tls_files)
    if client_cert == "none":
        del broker["tls_cert_file"], broker["tls_key_file"]
    else:
        broker["tls_cert_file"] = str(tls_files.other_client_cert)
        broker["tls_key_file"] = str(tls_files.other_client_key)
    cfg = make_config(broker, tmp_path / "store", {"BOLTWATCH_BROKER_PASSWORD": BROKER_PASSWORD})
    with Store(tmp_path / "store") as store:
        async with asyncio.timeout(FAIL_FAST_S / 2):
            with pytest.raises(BrokerConnectError) as refused:
                await IngestService(cfg, store).__aenter__()
    assert refused.value.key == "broker.tls_cert_file"
    assert "client certificate missing or not trusted" in refused.value.reason
    assert leftover_tasks() == [], "the service's tasks (and gmqtt's reconnects) were stopped"
    # One error line, and no misleading "retrying" warning: nothing is retried.
    ours = [r for r in caplog.records if r.name == "boltwatch.ingest"]
    assert [r.levelno for r in ours if r.levelno >= logging.WARNING] == [logging.ERROR]
    assert not any("retrying" in r.getMessage() for r in ours)
