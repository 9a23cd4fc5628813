"""What crosses the partitioned log: one message per reading, event or status, as MessagePack.

Ingest workers decode and validate MQTT messages as a single process does, then cut the
:class:`~sensors.codec.DecodedBatch` into records, one per reading (keyed by its device and
sequence number, the dedup id of the stream), event or status. Each record carries the typed
structs of the wire contract (``sensors.schema``): a reading is its kind's ``Reading`` struct, so a
worker that consumes a partition decodes it with the same schema, and builds the same columns
through :meth:`~sensors.codec.TelemetryDecoder.build_columns`, as the MQTT decoder would have.

:func:`decode_records` is total: a record that is not one of ours (a foreign publisher, a newer
release) becomes a :class:`~sensors.errors.PayloadError` naming the record, never an exception.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Final

import msgspec

from ingest.store.records import DeadLetter
from sensors.codec import DecodedBatch, DeviceEvent, DeviceStatus, ReadingColumns, Rows
from sensors.codec import TelemetryDecoder as _TelemetryDecoder
from sensors.errors import PayloadError
from sensors.schema import READING_TYPES, AnyEvent, AnyReading, DeviceKind, Status

__all__ = [
    "WIRE_VERSION",
    "WireRecord",
    "decode_dead",
    "decode_records",
    "encode_batch",
    "encode_dead",
]

WIRE_VERSION: Final = 1
"""The records' layout; a consumer refuses (dead-letters) records of a version it does not know."""


class _Reading(msgspec.Struct, array_like=True, tag=1, gc=False):
    version: int
    site: str
    reading: AnyReading


class _Event(msgspec.Struct, array_like=True, tag=2, gc=False):
    version: int
    site: str
    kind: DeviceKind
    device_id: str
    ts_ms: int
    event: AnyEvent


class _Status(msgspec.Struct, array_like=True, tag=3, gc=False):
    version: int
    site: str
    kind: DeviceKind
    device_id: str
    status: Status


class _Dead(msgspec.Struct, array_like=True, gc=False):
    version: int
    topic: str
    payload: bytes
    field: str
    reason: str
    received_ms: int


_Record = _Reading | _Event | _Status
_ENCODER: Final = msgspec.msgpack.Encoder()
_DECODER: Final = msgspec.msgpack.Decoder(_Record)
_DEAD_DECODER: Final = msgspec.msgpack.Decoder(_Dead)


@dataclass(frozen=True, slots=True)
class WireRecord:
    """One record for the log.

    Attributes:
        device_id: Whose it is (the partition is chosen from it, or from its joint).
        msg_id: The stream's dedup id: ``r:{device}:{ts_ms}:{seq}`` for a reading (the store's
            own key), ``e:{device}:{ts_ms}:{type}`` for an event; ``None`` for a status, which
            is idempotent and has no key of its own.
        data: The MessagePack bytes.
    """

    device_id: str
    msg_id: str | None
    data: bytes


def encode_batch(batch: DecodedBatch) -> list[WireRecord]:
    """A decoded batch's readings, events and statuses as records, in that order per kind."""
    out: list[WireRecord] = []
    for kind, cols in batch.telemetry.items():
        out.extend(_readings(kind, cols))
    for ev in batch.events:
        record = _Event(WIRE_VERSION, ev.site, ev.kind, ev.device_id, ev.ts_ms, ev.event)
        msg_id = f"e:{ev.device_id}:{ev.ts_ms}:{type(ev.event).__struct_config__.tag}"
        out.append(WireRecord(ev.device_id, msg_id, _ENCODER.encode(record)))
    for st in batch.statuses:
        record_s = _Status(WIRE_VERSION, st.site, st.kind, st.device_id, st.status)
        out.append(WireRecord(st.device_id, None, _ENCODER.encode(record_s)))
    return out


def _readings(kind: DeviceKind, cols: ReadingColumns) -> list[WireRecord]:
    cls = READING_TYPES[kind]
    names = list(cols.values)
    value_rows = zip(*(cols.values[n].tolist() for n in names), strict=True) if names else None
    arrays = list(cols.arrays)
    out: list[WireRecord] = []
    for r, (site, device, ts, seq) in enumerate(
        zip(
            cols.site.tolist(),
            cols.device_id.tolist(),
            cols.ts_ms.tolist(),
            cols.seq.tolist(),
            strict=True,
        )
    ):
        fields: dict[str, Any] = {}
        if value_rows is not None:
            for name, v in zip(names, next(value_rows), strict=True):
                # Not reported is NaN in the columns and absent (None) on the wire.
                fields[name] = None if math.isnan(v) else v
        for name in arrays:
            a = cols.arrays[name][r]
            fields[name] = None if a is None else a.tolist()
        reading = cls(ts=ts, seq=seq, device_id=device, **fields)
        out.append(
            WireRecord(
                device,
                f"r:{device}:{ts}:{seq}",
                _ENCODER.encode(_Reading(WIRE_VERSION, site, reading)),  # type: ignore[arg-type]
            )
        )
    return out


def decode_records(
    records: Sequence[bytes], decoder: _TelemetryDecoder | None = None
) -> DecodedBatch:
    """Records back into a batch, as if their messages had come over MQTT in this order.

    Message ``i`` of the batch is record ``i``: its events and statuses carry that index, its
    readings are columns built by ``decoder`` (which also applies the timestamp plausibility
    checks), and a record that cannot be read is ``(i, PayloadError)`` in ``errors``.

    Args:
        records: The records' bytes, in log order.
        decoder: The telemetry decoder whose column layout and checks apply (a default one).
    """
    out = DecodedBatch(count=len(records))
    rows: dict[DeviceKind, Rows] = {}
    for i, data in enumerate(records):
        try:
            record = _DECODER.decode(data)
        except msgspec.MsgspecError as exc:
            out.errors.append((i, _error_of(exc)))
            continue
        if record.version != WIRE_VERSION:
            out.errors.append(
                (i, PayloadError("record.version", f"{record.version} is not {WIRE_VERSION}"))
            )
            continue
        if isinstance(record, _Reading):
            reading = record.reading
            kind = _KIND_OF[type(reading)]
            if reading.device_id is None:
                out.errors.append((i, PayloadError("record.reading.device_id", "missing")))
                continue
            bucket = rows.get(kind)
            if bucket is None:
                bucket = rows[kind] = Rows([], [], [], [])
            bucket.readings.append(reading)
            bucket.sites.append(record.site)
            bucket.devices.append(reading.device_id)
            bucket.msg.append(i)
        elif isinstance(record, _Event):
            out.events.append(
                DeviceEvent(
                    record.site, record.kind, record.device_id, record.ts_ms, record.event, i
                )
            )
        else:
            out.statuses.append(
                DeviceStatus(record.site, record.kind, record.device_id, record.status, i)
            )
    (decoder or _default_decoder()).build_columns(rows, out)
    return out


_KIND_OF: Final = {cls: kind for kind, cls in READING_TYPES.items()}
_DEFAULT: list[_TelemetryDecoder] = []


def _default_decoder() -> _TelemetryDecoder:
    if not _DEFAULT:
        _DEFAULT.append(_TelemetryDecoder())
    return _DEFAULT[0]


def _error_of(exc: msgspec.MsgspecError) -> PayloadError:
    text = str(exc)
    path = "record"
    if " - at `" in text:
        text, _, rest = text.partition(" - at `")
        path = "record" + rest.rstrip("`").removeprefix("$")
    if not isinstance(exc, msgspec.ValidationError):
        return PayloadError("record", f"not a boltwatch log record: {text}")
    return PayloadError(path, text)


def encode_dead(dead: DeadLetter) -> bytes:
    """A dead letter (the rejected message, byte for byte, and why) as a record."""
    return _ENCODER.encode(
        _Dead(WIRE_VERSION, dead.topic, dead.payload, dead.field, dead.reason, dead.received_ms)
    )


def decode_dead(data: bytes) -> DeadLetter:
    """A dead-letter record back; one that cannot be read is itself kept, as a dead letter of
    the topic ``log:dead`` whose payload is the record."""
    try:
        d = _DEAD_DECODER.decode(data)
    except msgspec.MsgspecError as exc:
        error = _error_of(exc)
        return DeadLetter("log:dead", data, error.field, error.reason, 0)
    return DeadLetter(d.topic, d.payload, d.field, d.reason, d.received_ms)
