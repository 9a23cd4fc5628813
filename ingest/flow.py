"""Back-pressure: stop reading from the broker while too many messages wait for their commit.

A QoS 1 message is acknowledged only after its commit, so every message received and not yet
committed is held in memory. The MQTT 5 Receive Maximum we announce should bound that, but
Mosquitto 2.0.11 sends more (measured in the chaos overload test), so ingest bounds it itself:
above ``high`` messages waiting, :class:`ReadGate` pauses reading from the connection's socket
(``transport.pause_reading()``); at ``low`` or fewer it resumes. TCP flow control then stops the
broker, which keeps the backlog (its ``max_queued_messages``), as it does for any slow client.
Nothing is dropped: what is not read is not acknowledged.

What was already read when the gate closes (the socket and stream buffers, a few hundred KiB) is
still delivered, so the count can pass ``high`` by that much. gmqtt reads through an
``asyncio.StreamReader``, which resumes the transport by itself when its own buffer empties:
every arrival while the gate is closed pauses the transport again.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from typing import Protocol

__all__ = ["ReadGate", "ReadableTransport", "gmqtt_transport", "water_marks"]

_log = logging.getLogger("boltwatch.ingest")


class ReadableTransport(Protocol):
    """What the gate needs of an asyncio transport."""

    def pause_reading(self) -> None: ...
    def resume_reading(self) -> None: ...
    def is_reading(self) -> bool: ...


def gmqtt_transport(client: object) -> ReadableTransport | None:
    """The asyncio transport of a gmqtt client's current connection (None: not connected).

    gmqtt (0.8) offers no public handle: ``Client._connection`` (an ``MQTTConnection``) holds it
    as ``_transport``; a new one is made at each reconnect.
    """
    connection = getattr(client, "_connection", None)
    transport = getattr(connection, "_transport", None)
    return transport if hasattr(transport, "pause_reading") else None


def water_marks(receive_maximum: int, batch_max_messages: int) -> tuple[int, int]:
    """(high, low) for a broker's Receive Maximum and the group-commit size.

    ``high`` is at least the Receive Maximum (a broker that keeps to it never meets the gate)
    and two groups (one committing while the next fills, so commits stay full); ``low`` is half.
    """
    high = max(receive_maximum, 2 * batch_max_messages, 2)
    return high, high // 2


class ReadGate:
    """Counts the messages waiting for their commit; pauses reading above ``high``, resumes at
    ``low``.

    Args:
        high: Pause reading when more than this many messages wait.
        low: Resume when this many or fewer wait (``0 <= low < high``).
        transport: The current transport (None while disconnected).
        on_change: Called with True at each pause, False at each resume (metrics).
        clock: Monotonic seconds, for the duration in the log.
    """

    def __init__(
        self,
        high: int,
        low: int,
        transport: Callable[[], ReadableTransport | None],
        *,
        on_change: Callable[[bool], None] | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        if not 0 <= low < high:
            raise ValueError(f"need 0 <= low < high, got low={low}, high={high}")
        self.high = high
        self.low = low
        self.waiting = 0
        self.paused = False
        self.pauses = 0
        """Pauses since the start."""
        self._transport = transport
        self._on_change = on_change
        self._clock = clock
        self._episode: tuple[float, int] | None = None
        """(start, pauses before it) of the stretch of back-pressure going on; None: none."""

    def arrived(self) -> None:
        """One more message waits for its commit."""
        self.waiting += 1
        if self.waiting <= self.high:
            return
        if not self.paused:
            self.paused = True
            self.pauses += 1
            if self._episode is None:
                self._episode = (self._clock(), self.pauses - 1)
                _log.warning(
                    "ingest is behind: %d messages wait for their commit; reading from the "
                    "broker paused until %d are left (the broker keeps the rest)",
                    self.waiting,
                    self.low,
                )
            if self._on_change is not None:
                self._on_change(True)
        # Also when already paused: the stream reader, or a reconnect, may have resumed it.
        transport = self._transport()
        if transport is not None and transport.is_reading():
            transport.pause_reading()

    def settled(self, n: int) -> None:
        """``n`` messages were committed (and acknowledged)."""
        self.waiting = max(0, self.waiting - n)
        if self.paused and self.waiting <= self.low:
            self.paused = False
            transport = self._transport()
            if transport is not None:
                transport.resume_reading()
            if self._on_change is not None:
                self._on_change(False)

    def idle(self) -> None:
        """Nothing waits any more: a stretch of back-pressure, if any, has ended (logged once)."""
        if self._episode is None or self.paused or self.waiting:
            return
        started, before = self._episode
        self._episode = None
        _log.info(
            "ingest caught up: reading from the broker was paused %d times over %.1f s",
            self.pauses - before,
            self._clock() - started,
        )
