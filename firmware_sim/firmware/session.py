"""What an uplink's MQTT session carries: the buffered records and the messages made of them
(``{"readings": [...]}`` batches, status payloads), the store of QoS 1 messages awaiting their
PUBACK, and the gmqtt client the uplink drives."""

from __future__ import annotations

import asyncio
from collections import OrderedDict
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import Any, Final, NamedTuple

import gmqtt
import msgspec

from firmware_sim.firmware.node import Node
from sensors.codec import encode_event, encode_reading
from sensors.schema import AnyEvent, Reading

_OFFLINE: Final = b'{"state":"offline"}'
_JSON: Final = msgspec.json.Encoder()
_BATCH_HEAD: Final = b'{"readings":['
_BATCH_TAIL: Final = b"]}"

_Item = Reading | AnyEvent
# A buffered entry: the node it comes from (None: the gateway's own) and the reading or event.
_Record = tuple[Node | None, _Item]


class _Chunk(NamedTuple):
    """One message made of the first ``n`` entries of a sequence of records."""

    topic: str
    payload: bytes
    n: int


@dataclass(slots=True)
class _Sent:
    """What an in-flight message carries (to count its PUBACK, or requeue it)."""

    records: list[_Record]


class _InflightStore:
    """gmqtt's persistent-storage interface for the QoS 1 messages awaiting their PUBACK.

    Like gmqtt's own store, it keeps the raw packets for gmqtt to resend when the broker kept
    the session. It also remembers what each message carried, so that PUBACKs are counted and,
    when the broker lost the session (gmqtt then clears the store), the entries go back to the
    flash buffer instead of being lost.
    """

    def __init__(
        self, on_ack: Callable[[_Sent], None], on_lost: Callable[[list[int], list[_Sent]], None]
    ) -> None:
        self._messages: OrderedDict[int, bytes] = OrderedDict()
        self._sent: dict[int, _Sent] = {}
        self._waiters: list[tuple[set[int], asyncio.Future[None]]] = []
        self._on_ack = on_ack
        self._on_lost = on_lost
        self.pending: _Sent | None = None

    def __len__(self) -> int:
        return len(self._messages)

    def __bool__(self) -> bool:
        # gmqtt takes `persistent_storage or PersistentStorage()`: an empty store must not be
        # mistaken for "no store given".
        return True

    def push_message(self, mid: int, raw_package: bytes) -> None:
        self._messages[mid] = raw_package
        if self.pending is not None:
            self._sent[mid] = self.pending
            self.pending = None

    def remove_message_by_mid(self, mid: int) -> None:
        if self._messages.pop(mid, None) is None:
            return
        sent = self._sent.pop(mid, None)
        self._wake(mid)
        if sent is not None:
            self._on_ack(sent)

    @property
    def is_empty(self) -> bool:
        return not self._messages

    async def wait_empty(self) -> None:
        # gmqtt waits here, after a reconnect, for the messages it resent: wait for those only,
        # not for every message published since (a busy uplink is never empty).
        if not self._messages:
            return
        waiter: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        entry = (set(self._messages), waiter)
        self._waiters.append(entry)
        try:
            await waiter
        finally:
            if entry in self._waiters:
                self._waiters.remove(entry)

    def clear(self) -> None:
        mids = list(self._messages)
        lost = [self._sent[mid] for mid in mids if mid in self._sent]
        self._messages.clear()
        self._sent.clear()
        for mids_left, waiter in self._waiters:
            mids_left.clear()
            if not waiter.done():
                waiter.set_result(None)
        self._waiters.clear()
        if mids:
            self._on_lost(mids, lost)

    def get_all(self) -> list[tuple[int, bytes]]:
        return list(self._messages.items())

    def _wake(self, mid: int) -> None:
        for mids_left, waiter in self._waiters:
            mids_left.discard(mid)
            if not mids_left and not waiter.done():
                waiter.set_result(None)


class _Client(gmqtt.Client):  # type: ignore[misc]  # gmqtt ships no type information
    """gmqtt's client without its own reconnect loop (fixed delay, no backoff): the uplink
    reconnects, with exponential backoff and jitter."""

    async def reconnect(self, delay: bool = False) -> None:
        return


def _encode_status(status: Mapping[str, Any]) -> bytes:
    return _JSON.encode(status)


def _json_chunk(
    records: Iterable[_Record],
    *,
    telemetry_topic: str,
    event_topic: str,
    with_kind: bool,
    max_batch: int,
    max_bytes: int,
) -> _Chunk:
    """A ``{"readings": [...]}`` batch of the leading readings (or the leading event alone)."""
    it = iter(records)
    first = next(it)
    item = first[1]
    if not isinstance(item, Reading):
        return _Chunk(event_topic, encode_event(item), 1)
    parts = [encode_reading(item, with_kind=with_kind)]
    size = len(_BATCH_HEAD) + len(_BATCH_TAIL) + len(parts[0])
    for _, nxt in it:
        if len(parts) >= max_batch or not isinstance(nxt, Reading):
            break
        encoded = encode_reading(nxt, with_kind=with_kind)
        if size + len(encoded) + 1 > max_bytes:
            break
        parts.append(encoded)
        size += len(encoded) + 1
    return _Chunk(telemetry_topic, _BATCH_HEAD + b",".join(parts) + _BATCH_TAIL, len(parts))
