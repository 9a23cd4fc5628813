"""Fixtures of the integration tests: real servers on free ports, and an MQTT collector.

``mosquitto`` starts a real Mosquitto (the Debian package; ``make test`` installs it) on a free
port of 127.0.0.1 with persistence in the test's temporary directory, so a ``restart()`` keeps
retained messages, persistent sessions and their queued messages, as a production broker does.
:class:`Collector` subscribes with gmqtt and records every message (topic, payload, retain, qos).
"""

from __future__ import annotations

import asyncio
import os
import pwd
import signal
import socket
import subprocess
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import Any

import gmqtt
import pytest
from gmqtt.mqtt.constants import MQTTv311

MOSQUITTO = Path("/usr/sbin/mosquitto")


def free_port() -> int:
    """A TCP port of 127.0.0.1 that nothing listens on (now)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class MosquittoServer:
    """A Mosquitto process on a fixed port, which can be stopped and started again on it.

    Args:
        workdir: Directory for the config, the persistence database and the log.
        port: Port to listen on (127.0.0.1); default a free one.
    """

    host = "127.0.0.1"

    def __init__(self, workdir: Path, port: int | None = None) -> None:
        self.workdir = workdir
        self.port = port or free_port()
        self.config = workdir / "mosquitto.conf"
        self.log = workdir / "mosquitto.log"
        user = pwd.getpwuid(os.geteuid()).pw_name
        # `user`: started as root, Mosquitto would switch to the `mosquitto` user, which cannot
        # write into the test's temporary directory.
        self.config.write_text(
            f"listener {self.port} {self.host}\n"
            "allow_anonymous true\n"
            "persistence true\n"
            f"persistence_location {workdir}/\n"
            f"log_dest file {self.log}\n"
            "log_type error\nlog_type warning\nlog_type notice\nlog_type information\n"
            "max_queued_messages 1000000\n"
            f"user {user}\n"
        )
        self._proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        """``mqtt://127.0.0.1:PORT``."""
        return f"mqtt://{self.host}:{self.port}"

    @property
    def running(self) -> bool:
        """Whether the process is alive."""
        return self._proc is not None and self._proc.poll() is None

    def start(self, timeout: float = 10.0) -> None:
        """Start the broker and wait until it accepts connections."""
        if self.running:
            return
        self._proc = subprocess.Popen(
            [str(MOSQUITTO), "-c", str(self.config)],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
        )
        deadline = time.monotonic() + timeout
        while True:
            if self._proc.poll() is not None:
                err = self._proc.stderr.read().decode() if self._proc.stderr else ""
                raise RuntimeError(f"mosquitto exited at start: {err}\n{self.log_text()}")
            try:
                with socket.create_connection((self.host, self.port), timeout=0.2):
                    return
            except OSError:
                if time.monotonic() > deadline:
                    self.kill()
                    raise RuntimeError(f"mosquitto did not listen on {self.port}") from None
                time.sleep(0.02)

    def stop(self, timeout: float = 10.0) -> None:
        """Stop the broker with SIGTERM (it saves its database) and wait for it to exit."""
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
        if proc.stderr is not None:
            proc.stderr.close()

    def kill(self) -> None:
        """Kill the broker (SIGKILL: nothing saved since the last autosave)."""
        proc, self._proc = self._proc, None
        if proc is None:
            return
        if proc.poll() is None:
            proc.kill()
        proc.wait()
        if proc.stderr is not None:
            proc.stderr.close()

    def pause(self) -> None:
        """Freeze the broker (SIGSTOP): connections stay open, nothing is answered."""
        if self._proc is not None:
            self._proc.send_signal(signal.SIGSTOP)

    def resume(self) -> None:
        """Unfreeze the broker (SIGCONT)."""
        if self._proc is not None:
            self._proc.send_signal(signal.SIGCONT)

    def restart(self) -> None:
        """Stop, then start again on the same port."""
        self.stop()
        self.start()

    async def astop(self) -> None:
        """:meth:`stop` without blocking the event loop."""
        await asyncio.to_thread(self.stop)

    async def astart(self) -> None:
        """:meth:`start` without blocking the event loop."""
        await asyncio.to_thread(self.start)

    def log_text(self) -> str:
        """The broker's log so far (for failure messages)."""
        return self.log.read_text() if self.log.exists() else ""


@pytest.fixture
def mosquitto(tmp_path: Path) -> Iterator[MosquittoServer]:
    """A real Mosquitto on a free port, persistent, stopped after the test."""
    if not MOSQUITTO.exists():
        pytest.skip(f"{MOSQUITTO} is not installed (`make test` installs the mosquitto package)")
    workdir = tmp_path / "mosquitto"
    workdir.mkdir()
    server = MosquittoServer(workdir)
    server.start()
    try:
        yield server
    finally:
        server.stop()


@dataclass(frozen=True, slots=True)
class Received:
    """One message a :class:`Collector` got."""

    topic: str
    payload: bytes
    retain: bool
    qos: int


class Collector:
    """A gmqtt subscriber that records what it receives; ``async with`` connects it.

    With ``clean_session=False`` (and a fixed ``client_id``) the broker keeps its subscription
    and queues QoS 1 messages for it while it is disconnected, broker restarts included; it
    reconnects by itself (gmqtt's loop, short delay).

    Args:
        url: ``mqtt://host:port``.
        topics: Topic filters to subscribe to.
        client_id: MQTT client id (default random).
        clean_session: False for a persistent session.
        qos: Subscription QoS.
        version: MQTT protocol version.
    """

    def __init__(
        self,
        url: str,
        topics: Sequence[str] = ("#",),
        *,
        client_id: str | None = None,
        clean_session: bool = True,
        qos: int = 1,
        version: int = MQTTv311,
    ) -> None:
        host, _, port = url.removeprefix("mqtt://").partition(":")
        self.host = host
        self.port = int(port or 1883)
        self.topics = list(topics)
        self.qos = qos
        self.version = version
        self.messages: list[Received] = []
        self._subscribed = asyncio.Event()
        self._client: Any = gmqtt.Client(client_id, clean_session=clean_session)
        self._client.reconnect_delay = 0.1
        self._client.on_message = self._on_message
        self._client.on_subscribe = self._on_subscribe

    def _on_message(
        self, client: object, topic: str, payload: bytes, qos: int, properties: dict[str, Any]
    ) -> int:
        self.messages.append(Received(topic, bytes(payload), bool(properties.get("retain")), qos))
        return 0

    def _on_subscribe(self, client: object, mid: int, qos: object, properties: object) -> None:
        self._subscribed.set()

    async def __aenter__(self) -> Collector:
        await self._client.connect(self.host, self.port, version=self.version, keepalive=30)
        self._client.subscribe([gmqtt.Subscription(t, qos=self.qos) for t in self.topics])
        await asyncio.wait_for(self._subscribed.wait(), 5.0)
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self._client.disconnect()

    def publish(self, topic: str, payload: bytes, *, qos: int = 1, retain: bool = False) -> None:
        """Publish a message (e.g. a command to a device)."""
        self._client.publish(topic, payload, qos=qos, retain=retain)

    def on(self, suffix: str) -> list[Received]:
        """Messages whose topic ends with ``suffix``."""
        return [m for m in self.messages if m.topic.endswith(suffix)]

    async def wait_for(
        self,
        predicate: Callable[[list[Received]], bool],
        timeout: float = 10.0,  # noqa: ASYNC109 - a polling bound, not a cancellation scope
        what: str = "the expected messages",
    ) -> None:
        """Wait until ``predicate(messages)`` holds.

        Raises:
            AssertionError: Not within ``timeout`` seconds (says how many messages came).
        """
        deadline = asyncio.get_running_loop().time() + timeout
        while not predicate(self.messages):
            if asyncio.get_running_loop().time() > deadline:
                raise AssertionError(
                    f"timed out after {timeout} s waiting for {what} "
                    f"({len(self.messages)} messages received)"
                )
            await asyncio.sleep(0.02)


# The VictoriaMetrics fixture lives with its server class; registered here for every test module.
from tests.integration.vm import victoria  # noqa: E402, F401
