"""The store's error and the records its writes and reads return."""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from sensors.schema import DeviceKind


class StoreError(Exception):
    """The store cannot be opened or written.

    Attributes:
        path: The folder or database file concerned.
        reason: What is wrong, in words an operator can act on.
    """

    def __init__(self, path: str | os.PathLike[str], reason: str) -> None:
        super().__init__(f"{os.fspath(path)}: {reason}")
        self.path = Path(path)
        self.reason = reason

    def __reduce__(self) -> tuple[type[StoreError], tuple[Path, str]]:
        return (type(self), (self.path, self.reason))


@dataclass(frozen=True, slots=True)
class DeadLetter:
    """A rejected message, kept with its raw bytes so that it can be inspected and replayed.

    Attributes:
        topic: The MQTT topic it arrived on.
        payload: The payload, byte for byte.
        field: Where the problem is (``PayloadError.field``: ``"topic"``, ``"$.preload_kn"``).
        reason: Why it was rejected.
        received_ms: When ingest received it (epoch milliseconds UTC).
        id: Its number in the store (``None`` until stored).
        replayed_ms: When it was replayed (epoch milliseconds UTC), ``None`` if not yet.
    """

    topic: str
    payload: bytes
    field: str
    reason: str
    received_ms: int
    id: int | None = None
    replayed_ms: int | None = None


@dataclass(frozen=True, slots=True)
class WriteResult:
    """What one :meth:`Store.write` committed.

    Attributes:
        stored: Readings inserted (new rows).
        duplicates: Readings and events that were already stored (attempted minus inserted).
        events: Events inserted.
        dead_letters: Dead letters inserted.
        by_kind: Readings inserted per device kind (only kinds present in the batch).
    """

    stored: int
    duplicates: int
    events: int
    dead_letters: int
    by_kind: dict[str, int]


@dataclass(frozen=True, slots=True)
class DeviceRecord:
    """What the store knows about one device.

    Attributes:
        device_id: The device.
        kind: Its kind (the latest seen).
        site: Its site (the latest seen).
        state: ``online``/``offline`` from its last status message; ``None`` if it never sent one
            (e.g. a bolt relayed by a gateway).
        boot_id: Boot id of its last status message that had one.
        fw_version: Firmware version of its last status message that had one.
        last_seen_ms: Largest reading timestamp stored (epoch ms UTC), ``None`` if no reading yet.
        last_status_ms: When its last status message was received (epoch ms UTC).
        updated_ms: When this record last changed (the ``received_ms`` of that write).
    """

    device_id: str
    kind: DeviceKind
    site: str
    state: Literal["online", "offline"] | None
    boot_id: str | None
    fw_version: str | None
    last_seen_ms: int | None
    last_status_ms: int | None
    updated_ms: int


@dataclass(frozen=True, slots=True)
class Rollup:
    """Statistics of one field of one device over one bucket.

    Attributes:
        kind: Device kind.
        device_id: Device.
        field: Reading field (e.g. ``preload_kn``), in its own unit.
        bucket_ms: Start of the bucket (epoch ms UTC); the bucket is 1 minute or 1 hour long.
        n: Number of readings that reported the field in the bucket.
        min: Smallest value.
        mean: Arithmetic mean.
        max: Largest value.
    """

    kind: DeviceKind
    device_id: str
    field: str
    bucket_ms: int
    n: int
    min: float
    mean: float
    max: float


@dataclass(frozen=True, slots=True)
class SealResult:
    """What one :meth:`Store.seal` did.

    Attributes:
        readings: Readings moved from the tail into sealed chunks.
        chunks: Chunks written (one per device and day; a day sealed again is rewritten).
        done: Nothing is left to seal below the floor (false: call again).
        floor_ms: The seal floor: readings before it may be sealed (a UTC midnight).
    """

    readings: int
    chunks: int
    done: bool
    floor_ms: int


@dataclass(frozen=True, slots=True)
class StoreStats:
    """Counts for ``/metrics`` and the console.

    Attributes:
        readings: Raw readings stored, all kinds.
        readings_by_kind: Raw readings per kind (every known kind, zero included).
        devices: Devices known.
        events: Events stored.
        dead_letters: Dead letters stored (replayed ones included).
        dead_letters_pending: Dead letters not yet replayed.
        dead_letters_by_reason: Dead letters per ``field``, array indexes removed
            (``$.readings[3].ts`` counts as ``$.readings[].ts``).
        rollup_watermark_ms: ``now_ms`` of the last :meth:`Store.rollup`, ``None`` if never.
    """

    readings: int
    readings_by_kind: dict[str, int]
    devices: int
    events: int
    dead_letters: int
    dead_letters_pending: int
    dead_letters_by_reason: dict[str, int]
    rollup_watermark_ms: int | None
