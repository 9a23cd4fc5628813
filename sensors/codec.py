"""JSON codec of the telemetry contract, decoding straight into column arrays.

A payload is one reading object or ``{"readings": [...]}``; UTF-8 JSON of at most 256 KiB.
:class:`TelemetryDecoder` decodes many MQTT messages at once into :class:`ReadingColumns` (one
numpy array per field, per device kind) — what ingest stores and detection consumes. A message is
the unit of acceptance: if anything in it breaks the contract, the whole message is rejected with
one :class:`~sensors.errors.PayloadError` naming the field, and the other messages of the batch
are unaffected. The decoder is total: for any topic and any bytes it returns a batch, and a message
it cannot accept is reported with a PayloadError — never another exception. Size, nesting depth,
timestamp window and ``seq`` bounds are those of :mod:`sensors.limits`, checked before a value
reaches numpy or :mod:`datetime`.
"""

from __future__ import annotations

import math
import re
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from operator import attrgetter, itemgetter
from typing import Any, Final, NamedTuple

import msgspec
import numpy as np
import numpy.typing as npt

from sensors.errors import PayloadError, TopicError
from sensors.limits import (
    MAX_FUTURE_MS,
    MAX_NESTING_DEPTH,
    MAX_PAYLOAD_BYTES,
    MAX_TS_MS,
    MIN_TS_MS,
)
from sensors.schema import (
    DEVICE_ID_PATTERN,
    READING_TYPES,
    AnyEvent,
    AnyReading,
    Channel,
    DeviceKind,
    Event,
    GatewayReading,
    Reading,
    Status,
)
from sensors.topics import Topic, parse_topic

__all__ = [
    "MAX_FUTURE_MS",
    "MAX_NESTING_DEPTH",
    "MAX_PAYLOAD_BYTES",
    "MIN_TS_MS",
    "DecodedBatch",
    "DeviceEvent",
    "DeviceStatus",
    "ReadingColumns",
    "Rows",
    "TelemetryDecoder",
    "encode_event",
    "encode_reading",
    "encode_readings",
    "nesting_depth",
    "to_epoch_ms",
]

Float64 = npt.NDArray[np.float64]
Int64 = npt.NDArray[np.int64]
Objects = npt.NDArray[np.object_]

_BATCH_KEY: Final = b'"readings"'
_BATCH_HEAD: Final = b'{"readings"'
_KIND_KEY: Final = b'"kind"'
_KIND_OF: Final[dict[type[Reading], DeviceKind]] = {cls: k for k, cls in READING_TYPES.items()}
_TOPIC_CACHE_MAX: Final = 65_536
_TS_CEILING: Final = f"Expected `int` <= {MAX_TS_MS}"


def to_epoch_ms(ts: int | datetime) -> int:
    """Epoch milliseconds of a reading's ``ts`` (an int is returned as it is)."""
    if isinstance(ts, int):
        return ts
    return int(ts.timestamp() * 1000.0 + (0.5 if ts.timestamp() >= 0 else -0.5))


@dataclass(slots=True)
class ReadingColumns:
    """Readings of one device kind as columns: row ``i`` is one reading.

    Attributes:
        kind: The device kind of every row.
        site: Site of each row (object array of str).
        device_id: Device of each row (object array of str).
        ts_ms: Epoch milliseconds UTC.
        seq: The device's sequence number.
        values: One float64 array per numeric field of the kind's schema; NaN = not reported.
        arrays: Waveform fields (e.g. ``vib_ms2``), one array or None per row.
        message: Index, in the decoded batch, of the message each row came from.
    """

    kind: DeviceKind
    site: Objects
    device_id: Objects
    ts_ms: Int64
    seq: Int64
    values: dict[str, Float64]
    arrays: dict[str, list[Float64 | None]] = field(default_factory=dict)
    message: Int64 = field(default_factory=lambda: np.zeros(0, np.int64))

    def __len__(self) -> int:
        return int(self.ts_ms.shape[0])

    def select(self, rows: npt.NDArray[np.bool_] | Int64) -> ReadingColumns:
        """The rows picked by a boolean mask or an index array, as new columns."""
        idx = np.flatnonzero(rows) if rows.dtype == np.bool_ else rows
        return ReadingColumns(
            kind=self.kind,
            site=self.site[idx],
            device_id=self.device_id[idx],
            ts_ms=self.ts_ms[idx],
            seq=self.seq[idx],
            values={k: v[idx] for k, v in self.values.items()},
            arrays={k: [v[i] for i in idx.tolist()] for k, v in self.arrays.items()},
            message=self.message[idx],
        )

    @staticmethod
    def concat(parts: Sequence[ReadingColumns]) -> ReadingColumns:
        """Join columns of the same kind, in order."""
        if not parts:
            raise ValueError("concat needs at least one part")
        kind = parts[0].kind
        if any(p.kind is not kind for p in parts):
            raise ValueError("concat of different device kinds")
        return ReadingColumns(
            kind=kind,
            site=np.concatenate([p.site for p in parts]),
            device_id=np.concatenate([p.device_id for p in parts]),
            ts_ms=np.concatenate([p.ts_ms for p in parts]),
            seq=np.concatenate([p.seq for p in parts]),
            values={k: np.concatenate([p.values[k] for p in parts]) for k in parts[0].values},
            arrays={k: [x for p in parts for x in p.arrays[k]] for k in parts[0].arrays},
            message=np.concatenate([p.message for p in parts]),
        )


@dataclass(slots=True, frozen=True)
class DeviceEvent:
    """An event (``tightened``, ``battery_swap``, ...) placed at its device."""

    site: str
    kind: DeviceKind
    device_id: str
    ts_ms: int
    event: AnyEvent
    message: int


@dataclass(slots=True, frozen=True)
class DeviceStatus:
    """A birth (``online``) or last-will (``offline``) message of a device."""

    site: str
    kind: DeviceKind
    device_id: str
    status: Status
    message: int


@dataclass(slots=True)
class DecodedBatch:
    """What :meth:`TelemetryDecoder.decode_batch` made of a list of messages.

    Attributes:
        telemetry: Readings per device kind, as columns.
        events: Events, in message order.
        statuses: Status messages, in message order.
        errors: ``(message index, error)`` of every rejected message, in message order.
        commands: Indexes of messages on the ``cmd`` channel (boltwatch's own; not ingested).
        count: Number of messages decoded.
    """

    telemetry: dict[DeviceKind, ReadingColumns] = field(default_factory=dict)
    events: list[DeviceEvent] = field(default_factory=list)
    statuses: list[DeviceStatus] = field(default_factory=list)
    errors: list[tuple[int, PayloadError]] = field(default_factory=list)
    commands: list[int] = field(default_factory=list)
    count: int = 0

    @property
    def readings(self) -> int:
        """Number of readings accepted."""
        return sum(len(c) for c in self.telemetry.values())


def _batch_type(item: object) -> type[msgspec.Struct]:
    """``{"readings": [item, ...]}`` with no other key."""
    readings: object = list.__class_getitem__(item)
    return msgspec.defstruct(
        "Batch", [("readings", readings)], forbid_unknown_fields=True, gc=False
    )


def _error_from(exc: msgspec.MsgspecError) -> PayloadError:
    """Turn msgspec's message (``"... - at `$.readings[3].ts`"``) into a PayloadError."""
    text = str(exc)
    path = "payload"
    if " - at `" in text:
        text, _, rest = text.partition(" - at `")
        path = rest.rstrip("`")
    if isinstance(exc, msgspec.DecodeError) and not isinstance(exc, msgspec.ValidationError):
        return PayloadError("payload", f"not valid JSON: {text}")
    if path.endswith(".ts") and text == _TS_CEILING:
        text = f"{text}: after 9999-12-31, more than a day in the future"
    return PayloadError(path, text)


class _KindCodec:
    """The decoders and column layout of one device kind."""

    __slots__ = (
        "array_fields",
        "batch",
        "float_fields",
        "getters",
        "kind",
        "single",
    )

    def __init__(self, kind: DeviceKind, cls: type[Reading]) -> None:
        self.kind = kind
        self.single: msgspec.json.Decoder[Any] = msgspec.json.Decoder(cls)
        self.batch: msgspec.json.Decoder[Any] = msgspec.json.Decoder(_batch_type(cls))
        names = [f.name for f in msgspec.structs.fields(cls)]
        info = msgspec.inspect.type_info(cls)
        assert isinstance(info, msgspec.inspect.StructType)  # noqa: S101 - our own schema
        arrays = {
            f.name
            for f in info.fields
            if any(
                isinstance(t, msgspec.inspect.ListType)
                for t in (
                    f.type.types if isinstance(f.type, msgspec.inspect.UnionType) else [f.type]
                )
            )
        }
        self.float_fields = [
            n for n in names if n not in ("ts", "seq", "device_id") and n not in arrays
        ]
        self.array_fields = sorted(arrays)
        self.getters: dict[str, Callable[[Any], Any]] = {n: attrgetter(n) for n in names}


def _float_column(rows: list[Any], getter: Callable[[Any], Any]) -> Float64:
    n = len(rows)
    try:
        return np.fromiter(map(getter, rows), np.float64, n)
    except TypeError:  # a `null` on the wire: the same as not reported
        return np.fromiter((np.nan if v is None else v for v in map(getter, rows)), np.float64, n)


def _int_column(rows: list[Any], getter: Callable[[Any], Any]) -> Int64:
    n = len(rows)
    try:
        return np.fromiter(map(getter, rows), np.int64, n)
    except TypeError:  # RFC 3339 strings (decoded as datetimes) among the integers
        return np.fromiter((to_epoch_ms(v) for v in map(getter, rows)), np.int64, n)


class TelemetryDecoder:
    """Decodes MQTT messages (topic, payload) of the JSON wire contract.

    Args:
        max_payload_bytes: Larger payloads are rejected without being parsed.
        max_future_ms: Readings further ahead of ``clock`` than this are rejected.
        clock: Seconds since the epoch (injected for tests).
        max_nesting_depth: Payloads nesting arrays and objects deeper than this (levels) are
            rejected without being parsed.
    """

    def __init__(
        self,
        *,
        max_payload_bytes: int = MAX_PAYLOAD_BYTES,
        max_future_ms: int = MAX_FUTURE_MS,
        clock: Callable[[], float] = time.time,
        max_nesting_depth: int = MAX_NESTING_DEPTH,
    ) -> None:
        self.max_payload_bytes = max_payload_bytes
        self.max_future_ms = max_future_ms
        self.max_nesting_depth = max_nesting_depth
        self._clock = clock
        self._kinds = {k: _KindCodec(k, cls) for k, cls in READING_TYPES.items()}
        self._gateway_single: msgspec.json.Decoder[Any] = msgspec.json.Decoder(AnyReading)
        self._gateway_batch: msgspec.json.Decoder[Any] = msgspec.json.Decoder(
            _batch_type(AnyReading)
        )
        self._event_single: msgspec.json.Decoder[Any] = msgspec.json.Decoder(AnyEvent)
        self._event_batch: msgspec.json.Decoder[Any] = msgspec.json.Decoder(_batch_type(AnyEvent))
        self._status: msgspec.json.Decoder[Status] = msgspec.json.Decoder(Status)
        self._topics: dict[str, Topic | TopicError] = {}
        self._fast_topics: dict[str, Topic] = {}
        self._valid_ids: set[str] = set()

    # -- topics ---------------------------------------------------------------------------------

    def topic(self, name: str) -> Topic:
        """Parse a topic (cached: devices publish on the same few topics again and again)."""
        hit = self._topics.get(name)
        if hit is None:
            try:
                hit = parse_topic(name)
            except TopicError as exc:
                # Without its traceback: a cached exception would keep its frames alive, and a
                # client publishing on made-up topics fills the cache.
                hit = exc.with_traceback(None)
            if len(self._topics) >= _TOPIC_CACHE_MAX:
                self._topics.clear()
                self._fast_topics.clear()
            self._topics[name] = hit
            if (
                isinstance(hit, Topic)
                and hit.channel is Channel.TELEMETRY
                and hit.kind is not DeviceKind.GATEWAY
            ):
                # One-reading telemetry of a device on its own topic: the hot path.
                self._fast_topics[name] = hit
        if isinstance(hit, TopicError):
            raise TopicError(hit.reason)
        return hit

    # -- decoding -------------------------------------------------------------------------------

    def decode(self, topic: str, payload: bytes) -> DecodedBatch:
        """Decode one message.

        Raises:
            PayloadError: The message breaks the contract (names the field and the reason).
        """
        out = self.decode_batch(((topic, payload),))
        if out.errors:
            raise out.errors[0][1]
        return out

    def decode_batch(self, messages: Iterable[tuple[str, bytes]]) -> DecodedBatch:
        """Decode many messages into columns; bad messages are reported, not raised.

        Args:
            messages: ``(topic, payload)`` pairs, in arrival order.

        Returns:
            Columns per kind (rows in message order), events, statuses, and
            ``(index, PayloadError)`` for each rejected message. Never raises for any input bytes.
        """
        out = DecodedBatch()
        rows: dict[DeviceKind, Rows] = {}
        # Single-reading telemetry on a device's own topic (the common case) is collected per
        # kind and decoded in one call per kind; everything else goes message by message.
        singles = _Singles([], [], [])
        errors = out.errors
        max_bytes = self.max_payload_bytes
        fast = self._fast_topics
        n = 0
        for i, (topic_name, payload) in enumerate(messages):
            n = i + 1
            topic = fast.get(topic_name)
            if topic is not None and len(payload) <= max_bytes and payload[:11] != _BATCH_HEAD:
                singles.payloads.append(payload)
                singles.msg.append(i)
                singles.topics.append(topic)
                continue
            try:
                topic = self.topic(topic_name)
            except TopicError as exc:
                errors.append((i, exc))
                continue
            try:
                self._one(i, topic, payload, out, rows)
            except PayloadError as exc:
                errors.append((i, exc))
            except _DECODE_FAILURES as exc:
                errors.append((i, _decode_failure(exc)))
        if singles.payloads:
            for kind, group in _by_kind(singles):
                self._singles(kind, group, rows, errors)
        out.count = n
        if errors:
            errors.sort(key=_first)
        self.build_columns(rows, out)
        return out

    def _one(
        self, i: int, topic: Topic, payload: bytes, out: DecodedBatch, rows: dict[DeviceKind, Rows]
    ) -> None:
        """Decode a message that is not a one-reading telemetry message (or is oversize)."""
        if len(payload) > self.max_payload_bytes:
            raise PayloadError(
                "payload", f"{len(payload)} bytes is over the {self.max_payload_bytes}-byte limit"
            )
        # Before parsing: a union's decoder (gateway readings, events) skips unknown values
        # recursively while it looks for the tag, so depth must be bounded before it runs.
        depth = nesting_depth(payload, self.max_nesting_depth)
        if depth > self.max_nesting_depth:
            raise PayloadError(
                "payload",
                f"arrays and objects nested {depth} levels deep; the limit is "
                f"{self.max_nesting_depth}",
            )
        channel = topic.channel
        if channel is Channel.TELEMETRY:
            self._telemetry(i, topic, payload, rows)
        elif channel is Channel.EVENT:
            self._events(i, topic, payload, out.events)
        elif channel is Channel.STATUS:
            status = self._decode_status(payload)
            out.statuses.append(DeviceStatus(topic.site, topic.kind, topic.device_id, status, i))
        else:
            out.commands.append(i)

    def _singles(
        self,
        kind: DeviceKind,
        group: _Singles,
        rows: dict[DeviceKind, Rows],
        errors: list[tuple[int, PayloadError]],
    ) -> None:
        """Decode one-reading messages of one kind together (one msgspec call when all are good)."""
        codec = self._kinds[kind]
        payloads = group.payloads
        count = len(payloads)
        readings: list[Any] | None = None
        joined = b"\n".join(payloads)
        # One line per message is what makes the attribution exact: a payload with a newline of
        # its own (pretty-printed JSON) sends the group the message-by-message way.
        if joined.count(b"\n") == count - 1:
            try:
                readings = codec.single.decode_lines(joined)
            except _DECODE_FAILURES:
                readings = None  # some message is bad: find it below, one by one
            if readings is not None and len(readings) != count:
                readings = None
        index = group.msg
        topics = group.topics
        if readings is None:
            good: list[Any] = []
            keep: list[int] = []
            for j, payload in enumerate(payloads):
                try:
                    if _is_batch(payload):  # a batch with white space before its key
                        self._telemetry(index[j], topics[j], payload, rows)
                        continue
                    good.append(codec.single.decode(payload))
                    keep.append(j)
                except PayloadError as exc:
                    errors.append((index[j], exc))
                except _DECODE_FAILURES as exc:
                    errors.append((index[j], _decode_failure(exc)))
            if len(keep) != count:
                index = [index[j] for j in keep]
                topics = [topics[j] for j in keep]
            readings = good
        claimed = list(map(_DEVICE_ID, readings))
        if claimed.count(None) != len(claimed):
            spoofed = [
                j for j, dev in enumerate(claimed) if dev is not None and dev != topics[j].device_id
            ]
            errors.extend(
                (index[j], _spoofed("$", claimed[j], topics[j].device_id)) for j in spoofed
            )
            if spoofed:
                drop = set(spoofed)
                keep = [j for j in range(len(readings)) if j not in drop]
                readings = [readings[j] for j in keep]
                index = [index[j] for j in keep]
                topics = [topics[j] for j in keep]
        bucket = rows.get(kind)
        if bucket is None:
            bucket = rows[kind] = Rows([], [], [], [])
        bucket.readings.extend(readings)
        bucket.sites.extend(map(_SITE, topics))
        bucket.devices.extend(map(_DEVICE, topics))
        bucket.msg.extend(index)

    def _telemetry(
        self,
        i: int,
        topic: Topic,
        payload: bytes,
        rows: dict[DeviceKind, Rows],
    ) -> None:
        kind = topic.kind
        is_batch = _is_batch(payload)
        # On a gateway's topic, readings without any `kind` are the gateway's own health.
        if kind is _GATEWAY and _KIND_KEY in payload:
            readings: list[Any] = (
                self._gateway_batch.decode(payload).readings
                if is_batch
                else [self._gateway_single.decode(payload)]
            )
            owner = topic.device_id
            types = set(map(type, readings))
            if len(types) == 1 and GatewayReading not in types:
                # The usual gateway batch: readings of one kind of device, in bulk.
                devices = list(map(_DEVICE_ID, readings))
                if None in devices:
                    j = devices.index(None)
                    raise PayloadError(
                        _path(is_batch, j) + ".device_id",
                        "a gateway's reading must name the device it comes from",
                    )
                self._check_ids(devices, is_batch)
                bucket = _bucket(rows, _KIND_OF[types.pop()])
                k = len(readings)
                bucket.readings.extend(readings)
                bucket.sites.extend([topic.site] * k)
                bucket.devices.extend(devices)
                bucket.msg.extend([i] * k)
                return
            # Checked first, added after: a message is accepted whole or not at all.
            placed = self._mixed_gateway_readings(readings, owner, is_batch)
            for r_kind, r, dev in placed:
                bucket = _bucket(rows, r_kind)
                bucket.readings.append(r)
                bucket.sites.append(topic.site)
                bucket.devices.append(dev)
                bucket.msg.append(i)
            return
        codec = self._kinds[kind]
        try:
            readings = (
                codec.batch.decode(payload).readings if is_batch else [codec.single.decode(payload)]
            )
        except msgspec.ValidationError as exc:
            if kind is _GATEWAY and "unknown field" in str(exc):
                error = _error_from(exc)
                raise PayloadError(
                    error.field,
                    error.reason + " (a reading a gateway relays must say its `kind` and "
                    "`device_id`; readings without `kind` are the gateway's own)",
                ) from exc
            raise
        dev = topic.device_id
        for j, r in enumerate(readings):
            if r.device_id is not None and r.device_id != dev:
                raise _spoofed(_path(is_batch, j), r.device_id, dev)
        bucket = _bucket(rows, kind)
        k = len(readings)
        bucket.readings.extend(readings)
        bucket.sites.extend([topic.site] * k)
        bucket.devices.extend([dev] * k)
        bucket.msg.extend([i] * k)

    def _mixed_gateway_readings(
        self, readings: list[Any], owner: str, is_batch: bool
    ) -> list[tuple[DeviceKind, Any, str]]:
        """Kind, reading and device of each reading of a gateway batch mixing kinds (or holding
        the gateway's own health).

        Raises:
            PayloadError: A reading without its device, spoofing the gateway, or with a bad id.
        """
        placed: list[tuple[DeviceKind, Any, str]] = []
        for j, r in enumerate(readings):
            r_kind = _KIND_OF[type(r)]
            dev = r.device_id
            if r_kind is _GATEWAY:
                if dev is not None and dev != owner:
                    raise _spoofed(_path(is_batch, j), dev, owner)
                dev = owner
            elif dev is None:
                raise PayloadError(
                    _path(is_batch, j) + ".device_id",
                    "a gateway's reading must name the device it comes from",
                )
            else:
                self._check_ids([dev], is_batch, j)
            placed.append((r_kind, r, dev))
        return placed

    def _events(self, i: int, topic: Topic, payload: bytes, sink: list[DeviceEvent]) -> None:
        is_batch = _is_batch(payload)
        events: list[Any] = (
            self._event_batch.decode(payload).readings
            if is_batch
            else [self._event_single.decode(payload)]
        )
        now_ms = int(self._clock() * 1000)
        decoded: list[DeviceEvent] = []
        for j, ev in enumerate(events):
            where = _path(is_batch, j)
            if topic.kind is DeviceKind.GATEWAY and ev.kind not in (None, DeviceKind.GATEWAY):
                if ev.device_id is None:
                    raise PayloadError(
                        where + ".device_id", "a gateway's event must name the device it comes from"
                    )
                kind, dev = DeviceKind(ev.kind), ev.device_id
                self._check_ids([dev], is_batch, j)
            else:
                if ev.device_id is not None and ev.device_id != topic.device_id:
                    raise _spoofed(where, ev.device_id, topic.device_id)
                if ev.kind is not None and ev.kind != topic.kind:
                    raise PayloadError(
                        where + ".kind", f"{ev.kind!r} differs from the topic's kind {topic.kind!r}"
                    )
                kind, dev = topic.kind, topic.device_id
            ts_ms = to_epoch_ms(ev.ts)
            self._check_ts(ts_ms, now_ms, where + ".ts")
            decoded.append(DeviceEvent(topic.site, kind, dev, ts_ms, ev, i))
        sink.extend(decoded)

    def _check_ids(self, devices: list[str], is_batch: bool, offset: int = 0) -> None:
        """Check the characters of device ids a gateway relays (once per distinct id)."""
        known = self._valid_ids
        new = set(devices).difference(known)
        if not new:
            return
        for dev in new:
            if _ID_RE.fullmatch(dev) is None:
                j = offset + devices.index(dev)
                raise PayloadError(
                    _path(is_batch, j) + ".device_id",
                    f"{dev!r} must be 1-64 characters of A-Z a-z 0-9 _ -",
                )
        if len(known) > _TOPIC_CACHE_MAX:
            known.clear()
        known.update(new)

    def _decode_status(self, payload: bytes) -> Status:
        text = payload.strip()
        if text in (b"online", b"offline"):
            return Status(state="online" if text == b"online" else "offline")
        return self._status.decode(payload)

    def _check_ts(self, ts_ms: int, now_ms: int, where: str) -> None:
        if ts_ms > now_ms + self.max_future_ms:
            raise PayloadError(where, f"{ts_ms} is more than a day in the future")
        if ts_ms < MIN_TS_MS:
            hint = " (seconds sent as milliseconds?)" if ts_ms > 0 else ""
            raise PayloadError(where, f"{ts_ms} is before 2000-01-01{hint}")

    # -- columns --------------------------------------------------------------------------------

    def build_columns(self, rows: dict[DeviceKind, Rows], out: DecodedBatch) -> None:
        """Turn decoded readings into ``out.telemetry`` columns (rows in message order), then
        reject the messages whose timestamps are implausible (into ``out.errors``).

        Shared with the Sparkplug B decoder, so both codecs give one layout and one set of checks.
        """
        if not rows:
            return
        now_ms = int(self._clock() * 1000)
        hi = now_ms + self.max_future_ms
        built: dict[DeviceKind, ReadingColumns] = {}
        bad: dict[int, PayloadError] = {}
        for kind, bucket in rows.items():
            structs = bucket.readings
            codec = self._kinds[kind]
            g = codec.getters
            message = np.asarray(bucket.msg, dtype=np.int64)
            ts = _int_column(structs, g["ts"])
            cols = ReadingColumns(
                kind=kind,
                site=np.array(bucket.sites, dtype=object),
                device_id=np.array(bucket.devices, dtype=object),
                ts_ms=ts,
                seq=_int_column(structs, g["seq"]),
                values={f: _float_column(structs, g[f]) for f in codec.float_fields},
                arrays={
                    f: [
                        None if a is None else np.asarray(a, np.float64) for a in map(g[f], structs)
                    ]
                    for f in codec.array_fields
                },
                message=message,
            )
            if message.shape[0] > 1 and (message[1:] < message[:-1]).any():
                # One-reading and batch messages were decoded apart: restore arrival order.
                cols = cols.select(np.argsort(message, kind="stable"))
                ts = cols.ts_ms
            wrong = (ts > hi) | (ts < MIN_TS_MS)
            if wrong.any():
                for r in np.flatnonzero(wrong).tolist():
                    m = int(cols.message[r])
                    if m not in bad:
                        bad[m] = _bad_ts(cols, r, hi)
            built[kind] = cols
        if bad:
            rejected = np.fromiter(bad, np.int64, len(bad))
            for kind, cols in list(built.items()):
                keep = ~np.isin(cols.message, rejected)
                if not keep.all():
                    built[kind] = cols.select(keep)
            out.errors.extend(bad.items())
            out.errors.sort(key=_first)
        out.telemetry = {k: c for k, c in built.items() if len(c)}


def _bad_ts(cols: ReadingColumns, r: int, hi: int) -> PayloadError:
    """The error of row ``r``'s timestamp, with the reading's path inside its message."""
    same = np.flatnonzero(cols.message == cols.message[r])
    where = "$.ts" if same.shape[0] == 1 else f"$.readings[{int(np.searchsorted(same, r))}].ts"
    ts = int(cols.ts_ms[r])
    if ts > hi:
        return PayloadError(where, f"{ts} is more than a day in the future")
    hint = " (seconds sent as milliseconds?)" if ts > 0 else ""
    return PayloadError(where, f"{ts} is before 2000-01-01{hint}")


class Rows(NamedTuple):
    """Decoded readings of one kind waiting to become columns: per reading its struct, site,
    device and the index of its message in the batch (see :meth:`TelemetryDecoder.build_columns`).
    """

    readings: list[Any]
    sites: list[str]
    devices: list[str]
    msg: list[int]


class _Singles(NamedTuple):
    """One-reading messages of one kind waiting to be decoded together."""

    payloads: list[bytes]
    msg: list[int]
    topics: list[Topic]


def _is_batch(payload: bytes) -> bool:
    """Whether a payload is ``{"readings": [...]}``.

    ``readings`` is the only key a batch may have, so a valid batch starts with it (after white
    space); a reading that merely contains the word is invalid anyway. Cheaper than a search.
    """
    if payload[:11] == _BATCH_HEAD:
        return True
    text = payload.lstrip()
    return text[:1] == b"{" and text[1:].lstrip().startswith(_BATCH_KEY)


def _by_kind(singles: _Singles) -> list[tuple[DeviceKind, _Singles]]:
    """Split one-reading messages by device kind (one group in the usual case)."""
    kinds = set(map(_KIND, singles.topics))
    if len(kinds) == 1:
        return [(kinds.pop(), singles)]
    groups: dict[DeviceKind, _Singles] = {}
    for payload, i, topic in zip(singles.payloads, singles.msg, singles.topics, strict=True):
        group = groups.get(topic.kind)
        if group is None:
            group = groups[topic.kind] = _Singles([], [], [])
        group.payloads.append(payload)
        group.msg.append(i)
        group.topics.append(topic)
    return list(groups.items())


def _bucket(rows: dict[DeviceKind, Rows], kind: DeviceKind) -> Rows:
    bucket = rows.get(kind)
    if bucket is None:
        bucket = rows[kind] = Rows([], [], [], [])
    return bucket


_GATEWAY: Final = DeviceKind.GATEWAY
_ID_RE: Final = re.compile(DEVICE_ID_PATTERN)
_DEVICE_ID: Final = attrgetter("device_id")
_SITE: Final = attrgetter("site")
_KIND: Final = attrgetter("kind")
_DEVICE: Final = attrgetter("device_id")
_first: Final = itemgetter(0)


def _path(is_batch: bool, j: int) -> str:
    return f"$.readings[{j}]" if is_batch else "$"


def _spoofed(where: str, claimed: str, topic_device: str) -> PayloadError:
    return PayloadError(
        where + ".device_id",
        f"{claimed!r} differs from the topic's device {topic_device!r} (spoofed device_id)",
    )


# What msgspec raises for bytes it cannot accept. RecursionError is a backstop only: depth is
# bounded before parsing (see nesting_depth), but a parser's recursion limit is never a crash.
_DECODE_FAILURES: Final = (msgspec.MsgspecError, UnicodeDecodeError, RecursionError)


def _decode_failure(
    exc: msgspec.MsgspecError | UnicodeDecodeError | RecursionError,
) -> PayloadError:
    if isinstance(exc, UnicodeDecodeError):
        return PayloadError("payload", f"not UTF-8: {exc.reason} at byte {exc.start}")
    if isinstance(exc, RecursionError):
        return PayloadError("payload", "arrays and objects nested too deeply to parse")
    return _error_from(exc)


# Per byte: +1 opens an array or object, -1 closes one, 0 anything else.
_STEP: Final = np.zeros(256, np.int64)
_STEP[[ord("["), ord("{")]] = 1
_STEP[[ord("]"), ord("}")]] = -1
_QUOTE: Final = ord('"')
_BACKSLASH: Final = ord("\\")


def nesting_depth(payload: bytes, limit: int = MAX_NESTING_DEPTH) -> int:
    """How deep JSON arrays and objects nest in ``payload`` (levels; brackets in strings skip).

    Linear time in numpy, and only when the payload has more than ``limit`` opening brackets in
    all (otherwise that count bounds the depth and is returned). Bytes that are not JSON get a
    number too: at least the depth a parser would reach before failing.

    Args:
        payload: The raw message.
        limit: The depth that matters; payloads with at most this many ``[``/``{`` are not scanned.
    """
    opening = payload.count(b"[") + payload.count(b"{")
    if opening <= limit:
        return opening
    b = np.frombuffer(payload, np.uint8)
    step = _STEP[b]
    quote = b == _QUOTE
    if quote.any():
        backslash = b == _BACKSLASH
        if backslash.any():
            # A quote preceded by an odd run of backslashes is escaped (inside a string).
            idx = np.arange(b.shape[0], dtype=np.int64)
            last_other = np.maximum.accumulate(np.where(backslash, -1, idx))
            run = np.zeros(b.shape[0], np.int64)
            run[1:] = idx[:-1] - last_other[:-1]
            quote &= run % 2 == 0
        inside = (np.cumsum(quote, dtype=np.int64) & 1).astype(np.bool_)
        step[inside] = 0
    return int(np.cumsum(step).max(initial=0))


# ---------------------------------------------------------------------------------------------
# Encoding (devices, the simulator, tests).

_encoder = msgspec.json.Encoder()
_FIRST: Final = ("ts", "seq", "device_id")


def _clean(obj: msgspec.Struct) -> dict[str, Any]:
    """A struct as a dict without unreported fields (None / NaN), with its tag."""
    d: dict[str, Any] = {}
    cfg = obj.__struct_config__
    if cfg.tag_field is not None:
        d[cfg.tag_field] = cfg.tag
    for name in _FIRST + tuple(n for n in obj.__struct_fields__ if n not in _FIRST):
        v = getattr(obj, name, None)
        if v is None or (isinstance(v, float) and math.isnan(v)):
            continue
        d[name] = v
    return d


def encode_reading(reading: Reading, *, with_kind: bool = False) -> bytes:
    """JSON of one reading, without unreported fields.

    Args:
        reading: The reading.
        with_kind: Include ``kind`` (required when a gateway relays it).
    """
    d = _clean(reading)
    if not with_kind:
        d.pop("kind", None)
    return _encoder.encode(d)


def encode_readings(readings: Iterable[Reading], *, with_kind: bool = False) -> bytes:
    """JSON of a ``{"readings": [...]}`` batch."""
    items = []
    for r in readings:
        d = _clean(r)
        if not with_kind:
            d.pop("kind", None)
        items.append(d)
    return _encoder.encode({"readings": items})


def encode_event(event: Event) -> bytes:
    """JSON of one event (with its ``type``)."""
    return _encoder.encode(_clean(event))
