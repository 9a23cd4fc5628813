"""An embedded MQTT broker for ``boltwatch demo``: amqtt in-process, nothing to install or set up.

The broker listens on 127.0.0.1 only, speaks MQTT 3.1.1 (amqtt has no MQTT 5), lets every
client in anonymously, checks no topics and writes no files: no password file, no persistence
database, no ``$SYS`` statistics. It is a demo broker, not a production one:

* Persistent sessions do not survive a disconnection. amqtt marks every client of an
  anonymous broker as anonymous, forgets its session about a second after it disconnects and
  queues no QoS 1 messages for it in the meantime.
* Retained messages live in memory and are gone after :meth:`EmbeddedBroker.stop`.

amqtt logs a line per connection at INFO, and the ``transitions`` state machine it uses one per
state change. Unless those loggers were configured (given a level) beforehand,
:meth:`EmbeddedBroker.start` sets them to WARNING.

Example:
    >>> async with EmbeddedBroker() as broker:  # doctest: +SKIP
    ...     print(broker.url)
    mqtt://127.0.0.1:40123
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import logging
from types import TracebackType
from typing import Any

__all__ = ["BrokerStartError", "EmbeddedBroker"]

_log = logging.getLogger(__name__)

#: Loggers set to WARNING on start when nobody gave them a level.
_NOISY_LOGGERS = ("amqtt", "transitions")

#: The message of amqtt's own traceback when a listener cannot bind: ours says it better.
_STARTUP_FAILED = "Broker startup failed"

#: How long :meth:`EmbeddedBroker.stop` waits for amqtt's connection tasks to end.
_STOP_GRACE_S = 2.0


class BrokerStartError(RuntimeError):
    """The embedded broker could not start (the port is taken, the address is not local...)."""


class _DropStartupTraceback(logging.Filter):
    """Drops amqtt's ERROR traceback for a failed start: :class:`BrokerStartError` says it."""

    def filter(self, record: logging.LogRecord) -> bool:
        return record.getMessage() != _STARTUP_FAILED


def _quiet_amqtt() -> None:
    """Set amqtt's chatty loggers to WARNING, unless they were configured already."""
    for name in _NOISY_LOGGERS:
        logger = logging.getLogger(name)
        if logger.level == logging.NOTSET:
            logger.setLevel(logging.WARNING)
    broker_logger = logging.getLogger("amqtt.broker")
    if not any(isinstance(f, _DropStartupTraceback) for f in broker_logger.filters):
        broker_logger.addFilter(_DropStartupTraceback())


def _amqtt_config(host: str, port: int) -> dict[str, Any]:
    """The amqtt configuration: one TCP listener, anonymous clients, no other plugin.

    Listing ``plugins`` explicitly replaces amqtt's defaults, among them the ``$SYS`` plugin
    (psutil, a task publishing every 20 s) and the event/packet loggers.
    """
    return {
        "listeners": {
            "default": {"type": "tcp", "bind": f"{host}:{port}", "max_connections": 0},
        },
        "plugins": {
            "amqtt.plugins.authentication.AnonymousAuthPlugin": {"allow_anonymous": True},
        },
    }


def _owner(task: asyncio.Task[Any]) -> object:
    """The object whose method ``task`` runs (``self`` of its coroutine), if any."""
    frame = getattr(task.get_coro(), "cr_frame", None)
    return None if frame is None else frame.f_locals.get("self")


async def _reap_tasks(owners: list[object]) -> None:
    """Wait briefly for the tasks of ``owners`` (amqtt's broker and handlers), then cancel them.

    amqtt's ``shutdown()`` normally ends them all; this is the safety net, so that a stopped
    broker leaves nothing running in the loop. Tasks of other brokers are left alone.
    """
    current = asyncio.current_task()
    leftovers = {
        t
        for t in asyncio.all_tasks()
        if t is not current and not t.done() and any(_owner(t) is o for o in owners)
    }
    if not leftovers:
        return
    _, pending = await asyncio.wait(leftovers, timeout=_STOP_GRACE_S)
    for task in pending:
        task.cancel()
    if pending:
        await asyncio.wait(pending, timeout=_STOP_GRACE_S)


class EmbeddedBroker:
    """amqtt in-process on 127.0.0.1 (MQTT 3.1.1).

    Use ``async with EmbeddedBroker() as broker:`` and give clients ``broker.url``; or call
    :meth:`start` and :meth:`stop`. A stopped broker can be started again (on a new free port
    if ``port`` was 0).

    Args:
        host: Address to listen on; keep the default, the broker has no authentication.
        port: TCP port; 0 picks a free one (read it from :attr:`port` after :meth:`start`).

    Attributes:
        host: The listening address.
        port: The listening port: the one asked for, or after :meth:`start` the one picked.
    """

    def __init__(self, host: str = "127.0.0.1", port: int = 0) -> None:
        if not 0 <= port <= 65_535:
            raise ValueError(f"port must be 0..65535, got {port}")
        self.host = host
        self.port = port
        self._requested_port = port
        self._broker: Any = None  # amqtt.broker.Broker while running

    @property
    def url(self) -> str:
        """``mqtt://HOST:PORT`` (the actual port once started)."""
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"mqtt://{host}:{self.port}"

    @property
    def running(self) -> bool:
        """Whether the broker is started and not yet stopped."""
        return self._broker is not None

    async def start(self) -> None:
        """Start listening; returns once clients can connect.

        Raises:
            BrokerStartError: The port is taken, the address cannot be bound, or amqtt failed
                otherwise (the message says which address and why).
        """
        if self._broker is not None:
            return
        _quiet_amqtt()
        from amqtt.broker import Broker  # lazy: amqtt pulls in websockets, transitions, ...
        from amqtt.errors import BrokerError

        bind = f"{self.host}:{self._requested_port}"
        try:
            broker = Broker(_amqtt_config(self.host, self._requested_port))
            await broker.start()
        except (BrokerError, OSError, ValueError) as exc:
            reason = exc.__cause__ if exc.__cause__ is not None else exc
            raise BrokerStartError(
                f"cannot start the embedded MQTT broker on {bind}: {reason}"
                + (" (port in use? pick another one)" if _in_use(reason) else "")
            ) from exc
        self._broker = broker
        self.port = _bound_port(broker) or self._requested_port
        _log.info("embedded MQTT broker listening on %s", self.url)

    async def stop(self) -> None:
        """Disconnect every client, close the listener, wait for amqtt's tasks to end.

        Idempotent: stopping a stopped (or never started) broker does nothing.
        """
        broker, self._broker = self._broker, None
        if broker is None:
            return
        # amqtt's shutdown() ends the sessions first and closes the listener last: a client that
        # reconnects in between (gmqtt does, at once) gets a session nobody ends, and a task that
        # waits for it forever. So stop accepting first, and end any such session afterwards.
        servers = list(broker._servers.values())  # private: amqtt has no public way
        for server in servers:
            if server.instance is not None:
                server.instance.close()
        # Whose tasks are ours: amqtt forgets the handlers of the sessions it ends.
        owners: list[object] = [broker, *(handler for _, handler in broker.sessions.values())]
        try:
            await broker.shutdown()
            for client_id in list(broker.sessions):
                owners.append(broker.sessions[client_id][1])
                await broker._cleanup_session(client_id)  # private, as above
        except Exception:  # noqa: BLE001 - stopping must not fail; the socket is closed below
            _log.warning("embedded MQTT broker: unclean shutdown", exc_info=True)
            for server in servers:
                with contextlib.suppress(Exception):
                    await server.close_instance()
        await _reap_tasks(owners)
        _log.info("embedded MQTT broker on %s stopped", self.url)

    async def __aenter__(self) -> EmbeddedBroker:
        await self.start()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.stop()


def _bound_port(broker: Any) -> int | None:  # noqa: ANN401 - amqtt is untyped
    """The port amqtt's listener actually bound (differs from the config's when that was 0)."""
    server = getattr(broker, "_servers", {}).get("default")
    sockets = getattr(getattr(server, "instance", None), "sockets", None) or ()
    for sock in sockets:
        port = sock.getsockname()[1]
        if isinstance(port, int):
            return port
    return None


def _in_use(exc: BaseException) -> bool:
    """Whether ``exc`` is an address-in-use error."""
    return isinstance(exc, OSError) and exc.errno == errno.EADDRINUSE
