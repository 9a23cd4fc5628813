"""Sparkplug B decoding onto the readings of the telemetry contract (and an encoder for devices).

Sparkplug B is the industrial convention for MQTT: protobuf payloads on
``spBv1.0/{group}/{MSGTYPE}/{edge_node}[/{device}]``. :class:`SparkplugDecoder` turns those
messages into the same :class:`~sensors.codec.DecodedBatch` the JSON decoder produces, so ingest
and detection never see the difference.

Mapping:

* **Topic.** ``group`` is the site; the edge node is a gateway (:attr:`DeviceKind.GATEWAY`,
  ``device_id`` = the edge node id); a device's ``device_id`` is the topic's device segment. Group,
  edge node and device ids must match :data:`~sensors.schema.DEVICE_ID_PATTERN`. A topic outside
  the ``spBv1.0`` namespace, of an unknown message type or with the wrong number of segments is
  rejected with a :class:`~sensors.errors.TopicError`. ``STATE`` (host applications' own) and
  ``NCMD``/``DCMD`` (boltwatch's own commands) are not telemetry: their message index goes to
  ``DecodedBatch.commands`` and their payload is not read.
* **Births.** ``NBIRTH`` and ``DBIRTH`` yield a :class:`~sensors.codec.DeviceStatus` ``online``
  (an ``NBIRTH``'s ``boot_id`` is its ``bdSeq``) and keep, per (group, edge node, device), the
  device's kind and its alias → metric name (and datatype) map. A ``DBIRTH`` must carry a string
  metric ``kind``, one of :class:`~sensors.schema.DeviceKind`; an edge node is always a gateway.
  An ``NBIRTH`` forgets the births of every device of that edge node (a new session, new
  ``bdSeq``: its devices must be born again). Births carry current values, so their metrics are
  readings too; a birth whose values lack a required field (e.g. ``preload_kn`` still null) gives
  no reading but is accepted.
* **Data.** ``NDATA``/``DDATA`` need the birth of their edge node / device (``DDATA`` before the
  device's ``DBIRTH`` is rejected: the kind and the aliases are unknown; the host must request a
  rebirth, as the Sparkplug specification says). Metrics may be addressed by alias and may omit
  their datatype; both are resolved through the birth.
* **Deaths.** ``NDEATH`` and ``DDEATH`` yield a :class:`~sensors.codec.DeviceStatus` ``offline``
  and forget the birth; an ``NDEATH`` also reports every device born under that edge node offline.
  An ``NDEATH`` whose ``bdSeq`` differs from the current ``NBIRTH``'s is a late will of an older
  session and is ignored. A ``DDEATH`` of a device never born (kind unknown) yields nothing.
* **Metrics → fields.** A metric's name maps to a reading field of the kind's schema
  (:data:`~sensors.schema.READING_TYPES`); in a name with folders (``Telemetry/preload_kn``) the
  last segment counts. Metrics under the conventional Sparkplug folders ``Node Control/``,
  ``Device Control/``, ``Node Info/``, ``Device Info/`` and ``Properties/`` are not telemetry and
  are skipped, as are ``kind`` and ``bdSeq``. Any other name that is not a field of the kind is
  rejected (``metrics[<name>]``). Values are validated by the reading schema (type and range;
  NaN is out of every range — a value not measured is sent with Sparkplug's ``is_null``, which
  means "not reported"). Array metrics (e.g. ``DOUBLE_ARRAY``) fill waveform fields (``vib_ms2``).
* **Readings.** A reading's ``ts`` is the metric's timestamp if it has one, else the payload's;
  metrics with different timestamps in one message become separate readings (historical metrics
  included). A metric named ``seq`` gives the reading's ``seq``; without one, ``seq`` is the
  reading's timestamp in milliseconds — Sparkplug's own payload ``seq`` counts 0..255 per edge
  node and wraps, so it cannot tell a replayed reading from a new one. Every DATA reading must
  carry the kind's required fields (a cbolt's ``preload_kn``): Sparkplug's report-by-exception
  is not extended to them, because repeating a stale preload would hide a failed sensor.

A message is the unit of acceptance, as for JSON: anything wrong rejects the whole message with one
:class:`~sensors.errors.PayloadError` naming the field, and leaves the birth state as it was. The
payload size limit (256 KiB), the timestamp window and the ``seq`` bounds are those of
:mod:`sensors.limits`, as for JSON; a birth's or death's own timestamp must lie in 1970..9999. The
decoder is total: whatever pysparkplug or protobuf raise on a crafted payload is reported as a
PayloadError, never passed on.
"""

from __future__ import annotations

import re
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Final, NamedTuple, TypeVar

import msgspec
import pysparkplug as psp

# protobuf ships no type information (see pyproject's mypy overrides); only DecodeError is used.
from google.protobuf.message import DecodeError

from sensors.codec import DecodedBatch, DeviceStatus, Rows, TelemetryDecoder
from sensors.errors import PayloadError, TopicError
from sensors.limits import MAX_FUTURE_MS, MAX_PAYLOAD_BYTES, MAX_TS_MS, MIN_TS_MS
from sensors.schema import (
    DEVICE_ID_PATTERN,
    READING_TYPES,
    REQUIRED_FIELDS,
    DeviceKind,
    Reading,
    Status,
)
from sensors.sparkplug_lean import LeanMetric, lean_data

__all__ = [
    "NAMESPACE",
    "MetricInput",
    "SparkplugDecoder",
    "encode_dbirth",
    "encode_ddata",
    "encode_nbirth",
    "encode_ndeath",
]

NAMESPACE: Final = "spBv1.0"
"""First topic segment of every Sparkplug B message (subscribe to ``spBv1.0/#``)."""

MetricInput = float | Sequence[float]
"""A value for the encoders: a number (sent as ``DOUBLE``) or a waveform (``DOUBLE_ARRAY``)."""

_MT = psp.MessageType
_ID: Final = re.compile(DEVICE_ID_PATTERN)
_MAX_TOPIC_LEN: Final = 256
_KINDS: Final = {k.value: k for k in DeviceKind}
# The message types of a group's topics (STATE is a host application's: spBv1.0/STATE/{host}).
_MESSAGE_TYPES: Final = {m.value: m for m in _MT if m is not _MT.STATE}
_NODE_TYPES: Final = frozenset({_MT.NBIRTH, _MT.NDATA, _MT.NDEATH, _MT.NCMD})
_NOT_TELEMETRY: Final = frozenset({_MT.STATE, _MT.NCMD, _MT.DCMD})
# Conventional Sparkplug folders of control and descriptive metrics (e.g. the `Node Control/Rebirth`
# every NBIRTH of a compliant edge node carries): not telemetry, never a reading field.
_SKIPPED_FOLDERS: Final = frozenset(
    {"Node Control", "Device Control", "Node Info", "Device Info", "Properties"}
)
_KIND_METRIC: Final = "kind"
_BD_SEQ_METRIC: Final = "bdSeq"
_SEQ_METRIC: Final = "seq"
_FIELDS: Final[dict[DeviceKind, frozenset[str]]] = {
    kind: frozenset(
        f.name for f in msgspec.structs.fields(cls) if f.name not in ("ts", "seq", "device_id")
    )
    for kind, cls in READING_TYPES.items()
}
# What pysparkplug (and protobuf below it) raise for bytes that are not a valid payload: corrupt
# wire format, a datatype it does not implement, a value out of its datatype's range, an array of
# the wrong length or encoding, a value in the wrong protobuf field, a missing timestamp.
_DECODE_ERRORS: Final = (
    DecodeError,
    ValueError,
    TypeError,
    OverflowError,
    NotImplementedError,
    IndexError,
    OSError,
)

_P = TypeVar("_P", psp.NBirth, psp.DBirth, psp.NData, psp.DData, psp.NDeath, psp.DDeath)

# Per kind: decoded readings and, per reading, its site, device and message index.
_Buckets = dict[DeviceKind, Rows]


class _Topic(NamedTuple):
    message_type: psp.MessageType
    group: str
    edge_node: str
    device: str | None


@dataclass(slots=True, frozen=True)
class _Born:
    """What a birth told about a device: its kind, and aliases and datatypes of its metrics."""

    kind: DeviceKind
    birth: psp.NBirth | psp.DBirth
    bd_seq: int | None = None


def _parse_topic(topic: str) -> _Topic:
    if len(topic) > _MAX_TOPIC_LEN:
        raise TopicError(f"longer than {_MAX_TOPIC_LEN} characters")
    parts = topic.split("/")
    form = f"{NAMESPACE}/{{group}}/{{message_type}}/{{edge_node}}[/{{device}}]"
    if parts[0] != NAMESPACE or len(parts) < 3:
        raise TopicError(f"{topic!r} is not of the form {form}")
    if parts[1] == _MT.STATE:
        if len(parts) != 3:
            raise TopicError(f"{topic!r} is not of the form {NAMESPACE}/STATE/{{host_id}}")
        return _Topic(_MT.STATE, "", parts[2], None)
    message_type = _MESSAGE_TYPES.get(parts[2])
    if message_type is None:
        raise TopicError(f"unknown message type {parts[2]!r}; known: {', '.join(_MESSAGE_TYPES)}")
    wanted = 4 if message_type in _NODE_TYPES else 5
    if len(parts) != wanted:
        shape = "{edge_node}" if wanted == 4 else "{edge_node}/{device}"
        raise TopicError(
            f"{topic!r}: a {message_type} topic is {NAMESPACE}/{{group}}/{message_type}/{shape}"
        )
    for what, value in zip(("group", "edge node", "device"), parts[1:2] + parts[3:], strict=False):
        if not _ID.fullmatch(value):
            raise TopicError(f"{what} {value!r} must be 1-64 characters of A-Z a-z 0-9 _ -")
    return _Topic(message_type, parts[1], parts[3], parts[4] if wanted == 5 else None)


class SparkplugDecoder:
    """Decodes Sparkplug B messages (topic, payload) into readings and statuses.

    Keeps the birth state of every edge node and device it has seen (kind, metric aliases), so use
    one decoder for the whole stream of a broker, in arrival order.

    Args:
        max_payload_bytes: Larger payloads are rejected without being parsed.
        max_future_ms: Readings further ahead of ``clock`` than this are rejected.
        clock: Seconds since the epoch (injected for tests).
        max_births: Bound of the birth state: edge nodes and devices remembered at once. A flood
            of births with made-up ids cannot grow memory past it.
    """

    def __init__(
        self,
        *,
        max_payload_bytes: int = MAX_PAYLOAD_BYTES,
        max_future_ms: int = MAX_FUTURE_MS,
        clock: Callable[[], float] = time.time,
        max_births: int = 1_000_000,
    ) -> None:
        self.max_payload_bytes = max_payload_bytes
        self.max_births = max_births
        self.max_future_ms = max_future_ms
        self._clock = clock
        # The JSON decoder builds the columns (one layout, one timestamp check for both codecs).
        self._json = TelemetryDecoder(
            max_payload_bytes=max_payload_bytes, max_future_ms=max_future_ms, clock=clock
        )
        # (group, edge node, device or None for the edge node itself) -> its birth.
        self._born: dict[tuple[str, str, str | None], _Born] = {}
        #: DATA messages decoded by :func:`sensors.sparkplug_lean.lean_data` (the rest went
        #: through pysparkplug).
        self.lean_messages = 0

    def decode(self, topic: str, payload: bytes) -> DecodedBatch:
        """Decode one message.

        Args:
            topic: The MQTT topic, ``spBv1.0/...``.
            payload: The Sparkplug B protobuf payload.

        Returns:
            Its readings (as columns) and statuses; ``commands == [0]`` for a message that is not
            telemetry (``STATE``, ``NCMD``, ``DCMD``).

        Raises:
            PayloadError: The message breaks the contract (names the field and the reason).
        """
        out = self.decode_batch(((topic, payload),))
        if out.errors:
            raise out.errors[0][1]
        return out

    def decode_batch(self, messages: Iterable[tuple[str, bytes]]) -> DecodedBatch:
        """Decode many messages, in arrival order; bad messages are reported, not raised.

        Args:
            messages: ``(topic, payload)`` pairs, in arrival order.

        Returns:
            Columns per kind, statuses, indexes of non-telemetry messages, and
            ``(index, PayloadError)`` for each rejected message. Never raises for any input bytes.
        """
        out = DecodedBatch()
        rows: _Buckets = {}
        n = 0
        for i, (topic, payload) in enumerate(messages):
            n = i + 1
            try:
                self._message(i, topic, payload, rows, out)
            except PayloadError as exc:
                out.errors.append((i, exc))
        out.count = n
        self._json.build_columns(rows, out)  # one layout and timestamp check for both codecs
        return out

    # -- one message ----------------------------------------------------------------------------

    def _message(
        self, i: int, topic_name: str, payload: bytes, rows: _Buckets, out: DecodedBatch
    ) -> None:
        if len(payload) > self.max_payload_bytes:
            raise PayloadError(
                "payload", f"{len(payload)} bytes is over the {self.max_payload_bytes}-byte limit"
            )
        topic = _parse_topic(topic_name)
        mt = topic.message_type
        if mt in _NOT_TELEMETRY:
            out.commands.append(i)
        elif mt is _MT.NDEATH:
            self._node_death(i, topic, payload, out)
        elif mt is _MT.DDEATH:
            self._device_death(i, topic, payload, out)
        elif mt is _MT.NBIRTH or mt is _MT.DBIRTH:
            self._birth(i, topic, payload, rows, out)
        else:
            self._data(i, topic, payload, rows)

    def _birth(
        self, i: int, topic: _Topic, payload: bytes, rows: _Buckets, out: DecodedBatch
    ) -> None:
        site, edge, device = topic.group, topic.edge_node, topic.device
        mt = topic.message_type
        birth: psp.NBirth | psp.DBirth = (
            _decode(psp.NBirth, mt, payload, None)
            if device is None
            else _decode(psp.DBirth, mt, payload, None)
        )
        metrics: tuple[psp.Metric, ...] = birth.metrics
        kind = _birth_kind(metrics, node=device is None)
        bd_seq = None
        for m in metrics:
            if m.name == _BD_SEQ_METRIC and type(m.value) is int:
                bd_seq = m.value
        readings = self._readings(kind, metrics, birth.timestamp, birth=True)
        status = Status(
            state="online",
            ts=_status_ts(birth.timestamp),
            boot_id=None if bd_seq is None or device is not None else str(bd_seq),
        )
        key = (site, edge, device)
        if key not in self._born and len(self._born) >= self.max_births:
            raise PayloadError(
                "topic",
                f"more than {self.max_births} edge nodes and devices are born; this birth is "
                "refused (raise max_births if the installation really is that large)",
            )
        # Everything is valid: commit. A new session of the edge node forgets its devices' births.
        if device is None:
            for key in [k for k in self._born if k[0] == site and k[1] == edge]:
                del self._born[key]
        self._born[site, edge, device] = _Born(kind, birth, bd_seq)
        dev = edge if device is None else device
        out.statuses.append(DeviceStatus(site, kind, dev, status, i))
        _add_rows(rows, kind, readings, site=site, device=dev, i=i)

    def _data(self, i: int, topic: _Topic, payload: bytes, rows: _Buckets) -> None:
        site, edge, device = topic.group, topic.edge_node, topic.device
        born = self._born.get((site, edge, device))
        if born is None:
            if device is None:
                reason = f"NDATA for edge node {edge!r} before its NBIRTH: aliases unknown"
            else:
                reason = f"DDATA for device {device!r} before its DBIRTH: kind and aliases unknown"
            raise PayloadError("payload", reason + " (request a rebirth)")
        mt = topic.message_type
        lean = lean_data(payload, born.birth)
        metrics: Sequence[_MetricLike]
        if lean is not None:
            ts, metrics = lean
            self.lean_messages += 1
        else:
            data: psp.NData | psp.DData = (
                _decode(psp.NData, mt, payload, born.birth)
                if device is None
                else _decode(psp.DData, mt, payload, born.birth)
            )
            ts, metrics = data.timestamp, data.metrics
        readings = self._readings(born.kind, metrics, ts, birth=False)
        dev = edge if device is None else device
        _add_rows(rows, born.kind, readings, site=site, device=dev, i=i)

    def _node_death(self, i: int, topic: _Topic, payload: bytes, out: DecodedBatch) -> None:
        site, edge = topic.group, topic.edge_node
        death = _decode(psp.NDeath, _MT.NDEATH, payload, None)
        born = self._born.get((site, edge, None))
        value = death.bd_seq_metric.value
        stale = born is not None and born.bd_seq is not None and value != born.bd_seq
        if stale and type(value) is int:
            return  # the will of an older session, delivered late: this session is alive
        offline = Status(state="offline")
        out.statuses.append(DeviceStatus(site, DeviceKind.GATEWAY, edge, offline, i))
        for key in [k for k in self._born if k[0] == site and k[1] == edge]:
            dev = key[2]
            if dev is not None:
                out.statuses.append(DeviceStatus(site, self._born[key].kind, dev, offline, i))
            del self._born[key]

    def _device_death(self, i: int, topic: _Topic, payload: bytes, out: DecodedBatch) -> None:
        death = _decode(psp.DDeath, _MT.DDEATH, payload, None)
        device = topic.device
        born = self._born.pop((topic.group, topic.edge_node, device), None)
        if born is None or device is None:
            return  # never born here: its kind is unknown, and it was not known to be online
        status = Status(state="offline", ts=_status_ts(death.timestamp) or None)
        out.statuses.append(DeviceStatus(topic.group, born.kind, device, status, i))

    # -- metrics to readings --------------------------------------------------------------------

    def _readings(
        self, kind: DeviceKind, metrics: Iterable[_MetricLike], payload_ts: int, *, birth: bool
    ) -> list[Reading]:
        groups, ts_where = _group_metrics(kind, metrics, payload_ts)
        if not groups:
            return []
        cls = READING_TYPES[kind]
        now_ms = int(self._clock() * 1000)
        readings: list[Reading] = []
        for ts, group in groups.items():
            values = {f: v for f, (_, v) in group.items() if f != _SEQ_METRIC}
            if not values:
                continue  # only a seq: nothing measured
            missing = [f for f in REQUIRED_FIELDS[kind] if f not in values]
            if missing:
                if birth:
                    continue  # a birth declaring metrics not measured yet
                raise PayloadError(
                    f"metrics[{missing[0]}]",
                    f"missing at timestamp {ts}: a {kind} reading always carries it",
                )
            self._check_ts(ts, now_ms, ts_where[ts])
            d: dict[str, Any] = {
                f: list(v) if isinstance(v, tuple) else v for f, v in values.items()
            }
            d["ts"] = ts
            d["seq"] = group[_SEQ_METRIC][1] if _SEQ_METRIC in group else ts
            try:
                readings.append(msgspec.convert(d, cls))
            except msgspec.ValidationError as exc:
                raise _validation_error(exc, group, ts_where[ts]) from None
        return readings

    def _check_ts(self, ts_ms: int, now_ms: int, where: str) -> None:
        # Checked here (not only when building columns) so a rejected message leaves no state.
        if ts_ms > now_ms + self.max_future_ms:
            raise PayloadError(where, f"timestamp {ts_ms} is more than a day in the future")
        if ts_ms < MIN_TS_MS:
            hint = " (seconds sent as milliseconds?)" if ts_ms > 0 else ""
            raise PayloadError(where, f"timestamp {ts_ms} is before 2000-01-01{hint}")


# A metric as pysparkplug decodes it, or as the lean path does (the same attributes).
_MetricLike = psp.Metric | LeanMetric
# Per timestamp: reading field -> (metric name as sent, value).
_Groups = dict[int, dict[str, tuple[str, Any]]]


def _group_metrics(
    kind: DeviceKind, metrics: Iterable[_MetricLike], payload_ts: int
) -> tuple[_Groups, dict[int, str]]:
    """Metrics mapped to reading fields and grouped by timestamp (one reading per timestamp).

    Returns:
        The groups, and per timestamp where it came from (for error messages).
    """
    fields = _FIELDS[kind]
    groups: _Groups = {}
    ts_where: dict[int, str] = {}
    for m in metrics:
        name = _name(m)
        folder, slash, _ = name.partition("/")
        if slash and folder in _SKIPPED_FOLDERS:
            continue
        field = name.rsplit("/", 1)[-1]
        if field in (_KIND_METRIC, _BD_SEQ_METRIC):
            continue
        if field != _SEQ_METRIC and field not in fields:
            raise PayloadError(
                f"metrics[{name}]",
                f"unknown metric for a {kind}: {field!r} is not one of its fields "
                f"({', '.join(sorted(fields))}, or seq)",
            )
        if m.is_null or m.value is None:
            continue  # not reported
        ts = payload_ts if m.timestamp is None else m.timestamp
        group = groups.setdefault(ts, {})
        if field in group:
            raise PayloadError(
                f"metrics[{name}]",
                f"{field!r} given twice for timestamp {ts} (also as {group[field][0]!r})",
            )
        group[field] = (name, m.value)
        ts_where.setdefault(
            ts, "timestamp" if m.timestamp is None else f"metrics[{name}].timestamp"
        )
    return groups, ts_where


def _status_ts(ts: int | None) -> int | None:
    """A birth's or death's own timestamp (epoch ms), inside the range a status may carry."""
    if ts is not None and not 0 <= ts <= MAX_TS_MS:
        raise PayloadError("timestamp", f"{ts} is not epoch milliseconds between 1970 and 9999")
    return ts


def _decode(
    cls: type[_P], mt: psp.MessageType, payload: bytes, birth: psp.NBirth | psp.DBirth | None
) -> _P:
    """``cls.decode`` with every failure of pysparkplug / protobuf as a PayloadError."""
    try:
        return cls.decode(payload, birth=birth)
    except KeyError as exc:  # the birth does not know an alias (int) or a metric's datatype (str)
        key = exc.args[0] if exc.args else None
        if isinstance(key, int):
            raise PayloadError(
                f"metrics[alias {key}]",
                "alias not declared in the birth and no name given (request a rebirth)",
            ) from None
        raise PayloadError(
            f"metrics[{key}]", "no datatype given and the metric is not declared in the birth"
        ) from None
    except IndexError as exc:
        if mt is _MT.NDEATH:
            raise PayloadError("payload", "an NDEATH must carry its bdSeq metric") from exc
        raise PayloadError("payload", f"not a valid Sparkplug B {mt} payload: {exc}") from exc
    except _DECODE_ERRORS as exc:
        reason = f"not a valid Sparkplug B {mt} payload: {exc}"
        if isinstance(exc, TypeError) and "'seq'" in str(exc):  # pysparkplug's payload classes
            reason = f"the {mt} payload has no Sparkplug seq (required)"
        raise PayloadError("payload", reason) from exc
    except Exception as exc:  # the library boundary, see below
        # Only pysparkplug and protobuf run inside this try, on bytes from the network, and
        # pysparkplug does not document what it raises on a crafted payload (e.g. an
        # AttributeError for a STRING_ARRAY metric whose value is a double). Our own code is
        # outside the try, so no bug of ours is hidden; the message is rejected and says which
        # exception it was.
        raise PayloadError(
            "payload", f"not a valid Sparkplug B {mt} payload ({type(exc).__name__}: {exc})"
        ) from exc


def _name(m: _MetricLike) -> str:
    """A metric's name; pysparkplug requires names in births and resolves aliases in DATA."""
    name: object = m.name
    if name is None:
        raise PayloadError(f"metrics[alias {m.alias}]", "metric without a name")
    if not isinstance(name, str):  # protobuf hands over a name that is not UTF-8 as bytes
        raise PayloadError(f"metrics[{name!r}]", "metric name is not UTF-8")
    return name


def _birth_kind(metrics: Iterable[psp.Metric], *, node: bool) -> DeviceKind:
    kind_metrics = [m for m in metrics if _name(m).rsplit("/", 1)[-1] == _KIND_METRIC]
    known = ", ".join(_KINDS)
    if not kind_metrics:
        if node:
            return DeviceKind.GATEWAY
        raise PayloadError(
            f"metrics[{_KIND_METRIC}]",
            f"a DBIRTH must carry a string metric `kind`: one of {known}",
        )
    m = kind_metrics[0]
    kind = _KINDS.get(m.value) if isinstance(m.value, str) else None
    if kind is None:
        raise PayloadError(
            f"metrics[{m.name}]", f"{m.value!r} is not a device kind; known: {known}"
        )
    if node and kind is not DeviceKind.GATEWAY:
        raise PayloadError(f"metrics[{m.name}]", f"an edge node is a gateway, not a {kind}")
    return kind


def _validation_error(
    exc: msgspec.ValidationError, group: Mapping[str, tuple[str, Any]], ts_where: str
) -> PayloadError:
    """msgspec's ``"... - at `$.preload_kn`"`` as a PayloadError naming the Sparkplug metric."""
    text, sep, rest = str(exc).partition(" - at `")
    if not sep:
        return PayloadError("metrics", text)
    path = rest.rstrip("`").removeprefix("$.")
    field, bracket, index = path.partition("[")
    if field == "ts":
        return PayloadError(ts_where, text)
    name, value = group.get(field, (field, None))
    if not bracket and isinstance(value, int | float | str | bool):
        text = f"{text} (got {value!r})"
    return PayloadError(f"metrics[{name}]" + bracket + index, text)


def _add_rows(
    rows: _Buckets, kind: DeviceKind, readings: list[Reading], *, site: str, device: str, i: int
) -> None:
    if not readings:
        return
    bucket = rows.get(kind)
    if bucket is None:
        bucket = rows[kind] = Rows([], [], [], [])
    k = len(readings)
    bucket[0].extend(readings)
    bucket[1].extend([site] * k)
    bucket[2].extend([device] * k)
    bucket[3].extend([i] * k)


# ---------------------------------------------------------------------------------------------
# Encoding (devices, the simulator, tests).


def _metric(name: str, value: MetricInput, ts_ms: int | None, alias: int | None) -> psp.Metric:
    if isinstance(value, int | float):
        return psp.Metric(
            timestamp=ts_ms,
            name=name,
            datatype=psp.DataType.DOUBLE,
            value=float(value),
            alias=alias,
        )
    return psp.Metric(
        timestamp=ts_ms,
        name=name,
        datatype=psp.DataType.DOUBLE_ARRAY,
        value=tuple(float(x) for x in value),
        alias=alias,
    )


def _value_metrics(
    metrics: Mapping[str, MetricInput], aliases: Mapping[str, int] | None
) -> list[psp.Metric]:
    aliases = aliases or {}
    return [_metric(name, value, None, aliases.get(name)) for name, value in metrics.items()]


def _seq_metric(seq: int) -> psp.Metric:
    return psp.Metric(timestamp=None, name=_SEQ_METRIC, datatype=psp.DataType.UINT64, value=seq)


def encode_nbirth(
    metrics: Mapping[str, MetricInput],
    ts_ms: int,
    *,
    bd_seq: int = 0,
    aliases: Mapping[str, int] | None = None,
) -> bytes:
    """An edge node's (gateway's) NBIRTH: its ``bdSeq``, ``Node Control/Rebirth`` and values.

    Args:
        metrics: Gateway reading fields and values (e.g. ``{"uptime_s": 12.0}``).
        ts_ms: Payload timestamp, epoch milliseconds UTC.
        bd_seq: Birth/death sequence number of this session (0..255); the NDEATH will carries the
            same.
        aliases: Optional alias per metric name, for NDATA to address metrics by number.
    """
    pb = [
        psp.Metric(timestamp=None, name=_BD_SEQ_METRIC, datatype=psp.DataType.INT64, value=bd_seq),
        psp.Metric(
            timestamp=None, name="Node Control/Rebirth", datatype=psp.DataType.BOOLEAN, value=False
        ),
        *_value_metrics(metrics, aliases),
    ]
    return bytes(psp.NBirth(timestamp=ts_ms, seq=0, metrics=tuple(pb)).encode())


def encode_ndeath(bd_seq: int = 0) -> bytes:
    """An edge node's NDEATH (its MQTT will), carrying the ``bdSeq`` of the NBIRTH it ends."""
    metric = psp.Metric(
        timestamp=None, name=_BD_SEQ_METRIC, datatype=psp.DataType.INT64, value=bd_seq
    )
    return bytes(psp.NDeath(timestamp=None, bd_seq_metric=metric).encode())


def encode_dbirth(
    kind: DeviceKind | str,
    metrics: Mapping[str, MetricInput],
    ts_ms: int,
    *,
    seq: int | None = None,
    aliases: Mapping[str, int] | None = None,
) -> bytes:
    """A device's DBIRTH: its ``kind`` and the current values of its reading fields.

    Args:
        kind: The device kind (sent as the string metric ``kind``).
        metrics: Reading fields and values, e.g. ``{"preload_kn": 42.0}``; a sequence of numbers
            is a waveform (``DOUBLE_ARRAY``).
        ts_ms: Payload timestamp, epoch milliseconds UTC (the reading's ``ts``).
        seq: The reading's ``seq`` (sent as a ``seq`` metric); without it the decoder uses
            ``ts_ms``.
        aliases: Optional alias per metric name, for DDATA to address metrics by number.
    """
    pb = [
        psp.Metric(
            timestamp=None,
            name=_KIND_METRIC,
            datatype=psp.DataType.STRING,
            value=str(DeviceKind(kind)),
        ),
        *_value_metrics(metrics, aliases),
    ]
    if seq is not None:
        pb.append(_seq_metric(seq))
    birth = psp.DBirth(timestamp=ts_ms, seq=0 if seq is None else seq % 256, metrics=tuple(pb))
    return bytes(birth.encode())


def encode_ddata(
    metrics: Mapping[str, MetricInput],
    ts_ms: int,
    seq: int | None = None,
    *,
    aliases: Mapping[str, int] | None = None,
) -> bytes:
    """A device's DDATA: one reading.

    Args:
        metrics: Reading fields and values (every required field of the kind included).
        ts_ms: Payload timestamp, epoch milliseconds UTC (the reading's ``ts``).
        seq: The reading's ``seq`` (a ``seq`` metric; also the payload's Sparkplug ``seq``,
            modulo 256). Without it the decoder uses ``ts_ms``.
        aliases: Aliases declared by the DBIRTH: those metrics are sent by alias, without name.
    """
    aliases = aliases or {}
    pb: list[psp.Metric] = []
    for name, value in metrics.items():
        alias = aliases.get(name)
        m = _metric(name, value, None, alias)
        if alias is not None:
            m = psp.Metric(
                timestamp=None, name=None, datatype=m.datatype, value=m.value, alias=alias
            )
        pb.append(m)
    if seq is not None:
        pb.append(_seq_metric(seq))
    data = psp.DData(timestamp=ts_ms, seq=0 if seq is None else seq % 256, metrics=tuple(pb))
    # Datatypes included: the message decodes even if the DBIRTH did not declare `seq`.
    return bytes(data.encode(include_dtypes=True))
