"""The notification channels against real servers on free ports.

webhook and apprise -> a local ``http.server`` that records requests and answers as told; email ->
aiosmtpd (plain, and STARTTLS + AUTH with the test CA's certificate); mqtt -> the real Mosquitto
(``mosquitto`` fixture); alertmanager -> the Debian ``prometheus-alertmanager`` binary; console ->
a captured rich Console.
"""

from __future__ import annotations

import asyncio
import email
import email.policy
import http.client
import json
import shutil
import signal
import ssl
import subprocess
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from email.message import EmailMessage
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from io import StringIO
from pathlib import Path
from typing import Any

import pytest
from aiosmtpd.controller import Controller
from aiosmtpd.smtp import AuthResult, LoginPassword
from rich.console import Console

from alerts.channels import (
    AlertmanagerChannel,
    ConsoleChannel,
    HttpChannelError,
    MqttChannel,
    make_channel,
    verify_signature,
)
from alerts.channels.console import ConsoleOptions
from alerts.model import Alert, AlertState, ChannelError, Notification
from detection.events import Severity
from tests.integration.conftest import (
    BROKER_PASSWORD,
    BROKER_USER,
    Collector,
    MosquittoServer,
    TlsFiles,
    client_tls_context,
    free_port,
)

pytestmark = pytest.mark.integration

T0 = 1_767_268_987_000  # 2026-01-01T12:03:07Z
SECRET = "whsec-test-0123456789"  # a throwaway HMAC secret, only for these tests
SMTP_USER = "alerts@example.org"
SMTP_PASSWORD = "smtp-Pa55-for-tests"  # a throwaway password, only for these tests


def alert(
    device_id: str = "wtg03-f1-b004",
    kind: str = "loosening",
    *,
    id_: int = 7,
    severity: Severity = Severity.CRITICAL,
    state: AlertState = AlertState.ACTIVE,
) -> Alert:
    cleared = state is AlertState.CLEARED
    return Alert(
        id=id_,
        device_id=device_id,
        kind=kind,
        site="windfarm-north",
        group="wtg03-f1",
        severity=severity,
        state=state,
        first_ms=T0 - 60_000,
        last_event_ms=T0,
        active_ms=T0 - 30_000,
        cleared_ms=T0 + 60_000 if cleared else 0,
        explanation="preload 61 % of nominal (36.6 kN), falling 2.1 kN/h",
        data={"preload_kn": 36.6, "nan_is_null": float("nan")},
    )


def notification(*alerts: Alert, status: str = "firing", id_: str = "n-0001") -> Notification:
    alerts = alerts or (alert(),)
    return Notification(
        id=id_,
        receiver="test",
        status=status,
        group="wtg03-f1",
        title=f"[{alerts[0].severity}] {alerts[0].kind} on {alerts[0].device_id} (windfarm-north)",
        alerts=[a.as_dict() for a in alerts],
        created_ms=T0,
    )


# -- a recording HTTP server ----------------------------------------------------------------------


@dataclass
class Request:
    path: str
    headers: dict[str, str]
    body: bytes


@dataclass
class HttpServer:
    """A local HTTP server: records every POST, answers with ``status`` and ``headers``."""

    url: str
    requests: list[Request] = field(default_factory=list)
    status: int = 200
    headers: dict[str, str] = field(default_factory=dict)
    delay_s: float = 0.0


@pytest.fixture
def http_server() -> Iterator[HttpServer]:
    server_state: HttpServer

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            body = self.rfile.read(int(self.headers.get("Content-Length", "0")))
            server_state.requests.append(Request(self.path, dict(self.headers.items()), body))
            time.sleep(server_state.delay_s)
            answer = b'{"ok": true}' if server_state.status < 300 else b"nope"
            try:
                self.send_response(server_state.status)
                for name, value in server_state.headers.items():
                    self.send_header(name, value)
                self.send_header("Content-Length", str(len(answer)))
                self.end_headers()
                self.wfile.write(answer)
            except (BrokenPipeError, ConnectionResetError):
                return  # the client gave up (the timeout test)

        def log_message(self, format: str, *args: Any) -> None:
            return

    httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    httpd.daemon_threads = True
    server_state = HttpServer(f"http://127.0.0.1:{httpd.server_address[1]}")
    thread = threading.Thread(
        target=httpd.serve_forever, args=(0.05,), name="http-server", daemon=True
    )
    thread.start()
    try:
        yield server_state
    finally:
        httpd.shutdown()
        httpd.server_close()


# -- webhook ------------------------------------------------------------------------------------


async def test_webhook_posts_signed_json(
    http_server: HttpServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("TEST_WEBHOOK_SECRET", SECRET)
    channel = make_channel(
        "webhook",
        {
            "url": f"{http_server.url}/hooks/boltwatch?token=abc",
            "secret_env": "TEST_WEBHOOK_SECRET",
        },
        "receivers[0]",
    )
    n = notification(alert(), alert("wtg03-f1-b005", id_=8))
    await channel.send(n)
    await channel.aclose()

    (req,) = http_server.requests
    assert req.path == "/hooks/boltwatch?token=abc"
    assert req.headers["Content-Type"] == "application/json"
    assert req.headers["X-Boltwatch-Notification-Id"] == "n-0001"
    body = json.loads(req.body)
    expected = n.as_dict()
    for a in expected["alerts"]:
        a["data"]["nan_is_null"] = None  # JSON has no NaN: msgspec writes null
    assert body == expected
    signature = req.headers["X-Boltwatch-Signature"]
    assert signature.startswith("sha256=")
    assert verify_signature(req.body, signature, SECRET)
    assert not verify_signature(req.body, signature, "another-secret")
    assert not verify_signature(req.body.replace(b"wtg03", b"wtg04"), signature, SECRET)


async def test_webhook_unsigned_without_secret(http_server: HttpServer) -> None:
    channel = make_channel("webhook", {"url": http_server.url}, "receivers[0]")
    await channel.send(notification())
    assert "X-Boltwatch-Signature" not in http_server.requests[0].headers


@pytest.mark.parametrize(
    ("status", "headers", "retryable", "retry_after_s"),
    [
        (500, {}, True, None),
        (503, {"Retry-After": "12"}, True, 12.0),
        (429, {"Retry-After": "7"}, True, 7.0),
        (404, {}, False, None),
        (400, {}, False, None),
        (302, {"Location": "/elsewhere"}, False, None),
    ],
)
async def test_webhook_failures(
    http_server: HttpServer,
    status: int,
    headers: dict[str, str],
    retryable: bool,
    retry_after_s: float | None,
) -> None:
    http_server.status, http_server.headers = status, headers
    channel = make_channel(
        "webhook", {"url": f"{http_server.url}/x?token=t0ps3cret", "secret": SECRET}, "r"
    )
    with pytest.raises(ChannelError) as info:
        await channel.send(notification())
    error = info.value
    assert isinstance(error, HttpChannelError)
    assert error.retryable is retryable
    assert error.status == status
    assert getattr(error, "retry_after_s", None) == retry_after_s
    assert f"HTTP {status}" in str(error)
    if retry_after_s is not None:
        assert f"retry after {retry_after_s:g} s" in str(error)
    # Neither the secret nor the URL's path and query (which may hold a token) are in the message.
    assert SECRET not in str(error)
    assert "t0ps3cret" not in str(error)
    assert len(http_server.requests) == 1  # a redirect is not followed


async def test_webhook_connection_refused_and_timeout_are_retryable(
    http_server: HttpServer,
) -> None:
    refused = make_channel("webhook", {"url": f"http://127.0.0.1:{free_port()}/"}, "r")
    with pytest.raises(ChannelError) as info:
        await refused.send(notification())
    assert info.value.retryable

    http_server.delay_s = 1.0
    slow = make_channel("webhook", {"url": http_server.url, "timeout_s": 0.2}, "r")
    with pytest.raises(ChannelError) as info:
        await slow.send(notification())
    assert info.value.retryable
    assert "0.2 s" in str(info.value)


# -- e-mail -------------------------------------------------------------------------------------


class MailHandler:
    """aiosmtpd handler: keeps every message; refuses recipients at ``refuse.example.org``."""

    def __init__(self) -> None:
        self.messages: list[tuple[str, list[str], EmailMessage]] = []

    async def handle_RCPT(  # noqa: N802 - aiosmtpd's hook signature
        self, server: object, session: object, envelope: Any, address: str, rcpt_options: object
    ) -> str:
        if address.endswith("@refuse.example.org"):
            return "550 5.1.1 no such user"
        envelope.rcpt_tos.append(address)
        return "250 OK"

    async def handle_DATA(self, server: object, session: object, envelope: Any) -> str:  # noqa: N802
        msg = email.message_from_bytes(envelope.content, policy=email.policy.default)
        assert isinstance(msg, EmailMessage)
        self.messages.append((envelope.mail_from, list(envelope.rcpt_tos), msg))
        return "250 Message accepted for delivery"


def authenticator(
    server: object, session: object, envelope: object, mechanism: str, auth_data: object
) -> AuthResult:
    ok = (
        isinstance(auth_data, LoginPassword)
        and auth_data.login == SMTP_USER.encode()
        and auth_data.password == SMTP_PASSWORD.encode()
    )
    return AuthResult(success=ok, handled=False)


@pytest.fixture
def smtp_server() -> Iterator[tuple[Controller, MailHandler]]:
    handler = MailHandler()
    controller = Controller(handler, hostname="127.0.0.1", port=free_port())
    controller.start()
    try:
        yield controller, handler
    finally:
        controller.stop()


@pytest.fixture
def smtp_tls_server(tls_files: TlsFiles) -> Iterator[tuple[Controller, MailHandler]]:
    handler = MailHandler()
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.load_cert_chain(str(tls_files.server_cert), str(tls_files.server_key))
    controller = Controller(
        handler,
        hostname="127.0.0.1",
        port=free_port(),
        tls_context=context,
        require_starttls=True,
        authenticator=authenticator,
        auth_required=True,
        auth_require_tls=True,
    )
    controller.start()
    try:
        yield controller, handler
    finally:
        controller.stop()


async def test_email_plain(smtp_server: tuple[Controller, MailHandler]) -> None:
    controller, handler = smtp_server
    channel = make_channel(
        "email",
        {
            "host": "127.0.0.1",
            "port": controller.port,
            "sender": "boltwatch <alerts@example.org>",
            "to": ["maintenance@example.org", "Oncall <oncall@example.org>"],
        },
        "receivers[1]",
    )
    n = notification()
    await channel.send(n)
    (mail_from, rcpt_tos, msg) = handler.messages[0]
    assert mail_from == "alerts@example.org"
    assert rcpt_tos == ["maintenance@example.org", "oncall@example.org"]
    assert msg["Subject"] == f"[boltwatch] {n.title}"
    assert msg["X-Boltwatch-Notification-Id"] == "n-0001"
    assert msg["Message-ID"] == "<n-0001@boltwatch>"
    body = msg.get_content().replace("\r\n", "\n")
    assert body.strip() == n.text().strip()
    assert "loosening on wtg03-f1-b004 (windfarm-north)" in body


async def test_email_starttls_and_auth(
    smtp_tls_server: tuple[Controller, MailHandler], tls_files: TlsFiles, tmp_path: Path
) -> None:
    controller, handler = smtp_tls_server
    password_file = tmp_path / "smtp-password"
    password_file.write_text(SMTP_PASSWORD + "\n")
    options = {
        "host": "127.0.0.1",
        "port": controller.port,
        "starttls": True,
        "ca_file": str(tls_files.ca_cert),
        "username": SMTP_USER,
        "password_file": str(password_file),
        "sender": SMTP_USER,
        "to": ["maintenance@example.org"],
        "subject_prefix": "",
    }
    channel = make_channel("email", options, "receivers[1]")
    n = notification()
    await channel.send(n)
    assert handler.messages[0][2]["Subject"] == n.title

    wrong = make_channel("email", {**options, "password_file": None, "password": "wrong"}, "r")
    with pytest.raises(ChannelError) as info:
        await wrong.send(n)
    assert not info.value.retryable
    assert "authentication" in str(info.value)
    assert "wrong" not in str(info.value)
    assert SMTP_PASSWORD not in str(info.value)

    untrusted = make_channel("email", {**options, "ca_file": str(tls_files.other_ca_cert)}, "r")
    with pytest.raises(ChannelError) as info:
        await untrusted.send(n)
    assert not info.value.retryable
    assert "certificate" in str(info.value)

    # STARTTLS is required by the server: without it, even the MAIL command is refused.
    no_tls = make_channel(
        "email",
        {k: v for k, v in options.items() if k not in ("starttls", "username", "password_file")},
        "r",
    )
    with pytest.raises(ChannelError) as info:
        await no_tls.send(n)
    assert not info.value.retryable
    assert len(handler.messages) == 1


async def test_email_refused_recipient_and_no_server(
    smtp_server: tuple[Controller, MailHandler],
) -> None:
    controller, _ = smtp_server
    options = {"host": "127.0.0.1", "port": controller.port, "sender": "a@example.org"}
    refused = make_channel("email", {**options, "to": ["x@refuse.example.org"]}, "r")
    with pytest.raises(ChannelError) as info:
        await refused.send(notification())
    assert not info.value.retryable
    assert "x@refuse.example.org" in str(info.value)

    down = make_channel("email", {**options, "port": free_port(), "to": ["a@example.org"]}, "r")
    with pytest.raises(ChannelError) as info:
        await down.send(notification())
    assert info.value.retryable


# -- MQTT ---------------------------------------------------------------------------------------

ALERT_TOPICS = "boltwatch/v1/+/alerts/#"


async def retained(url: str, count: int) -> dict[str, tuple[dict[str, Any], bool]]:
    """What a subscriber that connects now receives (``count`` messages): topic -> (payload,
    retain flag)."""
    async with Collector(url, [ALERT_TOPICS]) as late:
        await late.wait_for(lambda m: len(m) >= count, what=f"{count} retained messages")
        await asyncio.sleep(0.05)  # a surplus message (which would be a bug) has time to arrive
        return {m.topic: (json.loads(m.payload), m.retain) for m in late.messages}


@pytest.mark.parametrize("mqtt_version", [5, 4])
async def test_mqtt_publishes_retained_state(mosquitto: MosquittoServer, mqtt_version: int) -> None:
    channel = make_channel(
        "mqtt", {"url": mosquitto.url, "mqtt_version": mqtt_version}, "receivers[2]"
    )
    assert isinstance(channel, MqttChannel)
    try:
        n = notification(alert(), alert("wtg03-f1-b005", "preload_low", id_=8))
        await channel.send(n)  # returns once the broker acknowledged both messages

        state = await retained(mosquitto.url, 2)
        topic = "boltwatch/v1/windfarm-north/alerts/wtg03-f1-b004/loosening"
        assert set(state) == {topic, "boltwatch/v1/windfarm-north/alerts/wtg03-f1-b005/preload_low"}
        payload, retain = state[topic]
        assert retain
        assert payload["notification_id"] == "n-0001"
        assert payload["notification_status"] == "firing"
        assert payload["state"] == "active"
        assert payload["severity"] == "critical"
        assert payload["device_id"] == "wtg03-f1-b004"
        assert payload["data"] == {"preload_kn": 36.6, "nan_is_null": None}

        cleared = notification(alert(state=AlertState.CLEARED), status="resolved", id_="n-0002")
        await channel.send(cleared)
        state = await retained(mosquitto.url, 2)
        assert len(state) == 2
        payload, retain = state[topic]
        assert retain
        assert payload["state"] == "cleared"
        assert payload["notification_id"] == "n-0002"
    finally:
        await channel.aclose()


async def test_mqtt_reconnects_and_reports_broker_down(mosquitto: MosquittoServer) -> None:
    channel = make_channel("mqtt", {"url": mosquitto.url, "timeout_s": 2.0}, "r")
    try:
        await channel.send(notification())
        await mosquitto.astop()
        with pytest.raises(ChannelError) as info:
            await channel.send(notification(id_="n-0002"))
        assert info.value.retryable

        await mosquitto.astart()
        await channel.send(notification(id_="n-0003"))  # connects again by itself
        payload, _ = (await retained(mosquitto.url, 1))[
            "boltwatch/v1/windfarm-north/alerts/wtg03-f1-b004/loosening"
        ]
        assert payload["notification_id"] == "n-0003"
    finally:
        await channel.aclose()


async def test_mqtt_tls_and_password(
    secure_mosquitto: MosquittoServer, tls_files: TlsFiles, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("TEST_MQTT_PASSWORD", BROKER_PASSWORD)
    options = {
        "url": secure_mosquitto.url,
        "ca_file": str(tls_files.ca_cert),
        "cert_file": str(tls_files.client_cert),
        "key_file": str(tls_files.client_key),
        "username": BROKER_USER,
        "password_env": "TEST_MQTT_PASSWORD",
    }
    channel = make_channel("mqtt", options, "receivers[2]")
    try:
        await channel.send(notification())
    finally:
        await channel.aclose()
    context = client_tls_context(tls_files.ca_cert, tls_files.client_cert, tls_files.client_key)
    async with Collector(
        secure_mosquitto.url, [ALERT_TOPICS], tls=context, username=BROKER_USER,
        password=BROKER_PASSWORD,
    ) as late:  # fmt: skip
        await late.wait_for(lambda m: len(m) >= 1)
    assert late.messages[0].retain

    wrong = make_channel("mqtt", {**options, "password_env": None, "password": "wrong"}, "r")
    with pytest.raises(ChannelError) as info:
        await wrong.send(notification())
    await wrong.aclose()
    assert not info.value.retryable
    assert "wrong" not in str(info.value)
    assert BROKER_PASSWORD not in str(info.value)

    untrusted = make_channel("mqtt", {**options, "ca_file": str(tls_files.other_ca_cert)}, "r")
    with pytest.raises(ChannelError) as info:
        await untrusted.send(notification())
    assert not info.value.retryable
    assert "certificate" in str(info.value)


# -- Apprise ------------------------------------------------------------------------------------


async def test_apprise_json_target(
    http_server: HttpServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    port = http_server.url.rsplit(":", 1)[1]
    monkeypatch.setenv("TEST_APPRISE_URLS", f"json://127.0.0.1:{port}/notify/boltwatch")
    channel = make_channel("apprise", {"urls_env": "TEST_APPRISE_URLS"}, "receivers[3]")
    n = notification()
    await channel.send(n)
    (req,) = http_server.requests
    assert req.path == "/notify/boltwatch"
    body = json.loads(req.body)
    assert body["title"] == n.title
    assert body["message"] == n.text()
    assert body["type"] == "failure"  # a firing critical alert

    http_server.status = 500
    with pytest.raises(ChannelError) as info:
        await channel.send(n)
    assert info.value.retryable


# -- Alertmanager -------------------------------------------------------------------------------

ALERTMANAGER = "prometheus-alertmanager"


@dataclass
class AlertmanagerServer:
    url: str
    log: Path

    def get(self, path: str) -> Any:
        host, port = self.url.removeprefix("http://").split(":")
        conn = http.client.HTTPConnection(host, int(port), timeout=10)
        try:
            conn.request("GET", path)
            response = conn.getresponse()
            body = response.read()
        finally:
            conn.close()
        assert response.status == 200, body
        return json.loads(body) if body else None


@pytest.fixture
def alertmanager(tmp_path: Path) -> Iterator[AlertmanagerServer]:
    binary = shutil.which(ALERTMANAGER) or (
        f"/usr/bin/{ALERTMANAGER}" if Path(f"/usr/bin/{ALERTMANAGER}").exists() else None
    )
    if binary is None:
        pytest.skip(
            f"{ALERTMANAGER} is not installed (Debian package `prometheus-alertmanager`: "
            "`apt-get install prometheus-alertmanager`; `make test` installs it)"
        )
    workdir = tmp_path / "alertmanager"
    workdir.mkdir()
    config = workdir / "alertmanager.yml"
    config.write_text('route:\n  receiver: "null"\nreceivers:\n  - name: "null"\n')
    port = free_port()
    log = workdir / "alertmanager.log"
    with log.open("wb") as out:
        proc = subprocess.Popen(
            [
                binary,
                "--config.file",
                str(config),
                "--web.listen-address",
                f"127.0.0.1:{port}",
                "--cluster.listen-address=",
                "--storage.path",
                str(workdir / "data"),
            ],
            stdout=out,
            stderr=subprocess.STDOUT,
        )
    server = AlertmanagerServer(f"http://127.0.0.1:{port}", log)
    try:
        deadline = time.monotonic() + 20.0
        while True:
            if proc.poll() is not None:
                raise RuntimeError(f"alertmanager exited at start:\n{log.read_text()}")
            try:
                conn = http.client.HTTPConnection("127.0.0.1", port, timeout=1)
                conn.request("GET", "/-/ready")
                if conn.getresponse().status == 200:
                    conn.close()
                    break
                conn.close()
            except OSError:
                pass
            if time.monotonic() > deadline:
                raise RuntimeError(f"alertmanager not ready on {port}:\n{log.read_text()}")
            time.sleep(0.05)
        yield server
    finally:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


async def test_alertmanager_push_and_resolve(alertmanager: AlertmanagerServer) -> None:
    channel = make_channel(
        "alertmanager",
        {"url": alertmanager.url, "generator_url": "https://boltwatch.example.org/"},
        "receivers[4]",
    )
    assert isinstance(channel, AlertmanagerChannel)
    # Started "now" (Alertmanager keeps alerts whose start is recent and end is in the future).
    now_ms = int(time.time() * 1000)
    firing = alert()
    firing.first_ms, firing.active_ms, firing.last_event_ms = (
        now_ms - 60_000,
        now_ms - 30_000,
        now_ms,
    )
    await channel.send(notification(firing))

    found = alertmanager.get("/api/v2/alerts?filter=boltwatch_id%3D%227%22")
    assert len(found) == 1, found
    (am,) = found
    assert am["labels"] == {
        "alertname": "loosening",
        "device_id": "wtg03-f1-b004",
        "site": "windfarm-north",
        "severity": "critical",
        "group": "wtg03-f1",
        "boltwatch_id": "7",
    }
    assert am["annotations"] == {
        "summary": "[critical] loosening on wtg03-f1-b004 (windfarm-north)",
        "description": firing.explanation,
    }
    assert am["status"]["state"] == "active"
    assert am["generatorURL"] == "https://boltwatch.example.org/"
    assert am["startsAt"].startswith(time.strftime("%Y-%m-%dT", time.gmtime(now_ms / 1000)))

    resolved = alert(state=AlertState.CLEARED)
    resolved.first_ms, resolved.active_ms = firing.first_ms, firing.active_ms
    resolved.cleared_ms = int(time.time() * 1000) - 1
    await channel.send(notification(resolved, status="resolved", id_="n-0002"))
    assert alertmanager.get("/api/v2/alerts?filter=boltwatch_id%3D%227%22") == []


async def test_alertmanager_rejection_is_not_retryable(alertmanager: AlertmanagerServer) -> None:
    # A base URL with a wrong path: Alertmanager answers 404 — a configuration error.
    channel = make_channel("alertmanager", {"url": f"{alertmanager.url}/wrong/prefix"}, "r")
    with pytest.raises(ChannelError) as info:
        await channel.send(notification())
    assert not info.value.retryable
    assert "HTTP 404" in str(info.value)


# -- console ------------------------------------------------------------------------------------


async def test_console_one_line_per_alert() -> None:
    out = StringIO()
    # Narrow on purpose: a line is never wrapped, however long.
    channel = ConsoleChannel(
        ConsoleOptions(utc=True), Console(file=out, width=40, color_system=None)
    )
    cleared = alert("wtg03-f1-b005", "preload_low", id_=8, severity=Severity.WARNING,
                    state=AlertState.CLEARED)  # fmt: skip
    await channel.send(notification(alert(), cleared))
    lines = out.getvalue().splitlines()
    assert lines == [
        "12:03:07 CRITICAL loosening wtg03-f1-b004 (windfarm-north): " + alert().explanation,
        "12:04:07 WARNING  preload_low wtg03-f1-b005 (windfarm-north) cleared: "
        + alert().explanation,
    ]


async def test_console_colours_the_severity() -> None:
    out = StringIO()
    channel = ConsoleChannel(
        ConsoleOptions(utc=True), Console(file=out, force_terminal=True, color_system="standard")
    )
    await channel.send(notification())
    text = out.getvalue()
    assert "\x1b[" in text
    assert "CRITICAL" in text
    assert len(text.strip().splitlines()) == 1
