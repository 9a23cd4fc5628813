"""What every fuzz harness shares: the input framing, the properties checked, the seed inputs.

A fuzz input is one or more MQTT messages, framed so that a mutated input is still a list of
messages: per message one byte of topic length, the topic (UTF-8, invalid bytes replaced), two
bytes (big-endian) of payload length, the payload; a truncated tail is taken as it is. The same
properties are checked by the atheris harnesses (``make fuzz``) and by the Hypothesis tests and
the regression replay in ``tests/unit/test_decoder_properties.py`` (``make test``):

* a decoder's ``decode_batch`` returns a batch for any messages, never raises;
* every rejection is a :class:`~sensors.errors.PayloadError` (at most one per message);
* what is accepted is inside the contract's limits: timestamps in the window, ``seq`` unsigned,
  values finite or NaN (not reported), columns of equal length;
* an API body parser raises nothing but :class:`~alerts.api.ApiError`, and what it accepts fits
  the store (ids, times, text bounded).
"""

from __future__ import annotations

import json
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any, Final

import numpy as np

from alerts.api import MAX_NAME_CHARS, MAX_TEXT_CHARS, ApiError, parse_body, silence_from
from sensors.codec import DecodedBatch, TelemetryDecoder
from sensors.errors import PayloadError
from sensors.examples import EXAMPLES, T0
from sensors.limits import MAX_FUTURE_MS, MAX_SEQ, MAX_TS_MS, MIN_TS_MS
from sensors.schema import DeviceKind
from sensors.sparkplug import (
    SparkplugDecoder,
    encode_dbirth,
    encode_ddata,
    encode_nbirth,
    encode_ndeath,
)

__all__ = [
    "CORPUS",
    "NOW_S",
    "REGRESSIONS",
    "api_seeds",
    "check_api_body",
    "check_batch",
    "check_json",
    "check_sparkplug",
    "frame",
    "json_seeds",
    "sparkplug_seeds",
    "unframe",
]

FUZZ_DIR: Final = Path(__file__).parent
CORPUS: Final = FUZZ_DIR / "corpus"
"""Seed inputs per harness (``corpus/json``, ``corpus/sparkplug``, ``corpus/api``)."""
REGRESSIONS: Final = FUZZ_DIR / "regressions"
"""Inputs that once crashed a harness, per harness; replayed by ``make test``."""

NOW_S: Final = T0 / 1000 + 60.0
"""The decoders' clock in every harness (seconds): a minute after the examples' timestamps."""
_MAX_MESSAGES: Final = 8


def frame(messages: Sequence[tuple[str, bytes]]) -> bytes:
    """Messages as one fuzz input (see the module for the format)."""
    out = bytearray()
    for topic, payload in messages:
        t = topic.encode()[:255]
        p = payload[:65_535]
        out += bytes([len(t)]) + t + len(p).to_bytes(2, "big") + p
    return bytes(out)


def unframe(data: bytes) -> list[tuple[str, bytes]]:
    """A fuzz input as (topic, payload) messages (at most 8; see the module)."""
    messages: list[tuple[str, bytes]] = []
    at = 0
    while at < len(data) and len(messages) < _MAX_MESSAGES:
        n = data[at]
        topic = data[at + 1 : at + 1 + n].decode("utf-8", "replace")
        at += 1 + n
        size = int.from_bytes(data[at : at + 2], "big")
        payload = data[at + 2 : at + 2 + size]
        at += 2 + size
        messages.append((topic, payload))
    return messages


def check_batch(out: DecodedBatch, count: int, now_s: float = NOW_S) -> None:
    """The properties of a decoded batch of ``count`` messages (AssertionError when broken)."""
    assert out.count == count, (out.count, count)
    rejected = [i for i, _ in out.errors]
    assert rejected == sorted(set(rejected)), f"errors not one per message, in order: {rejected}"
    assert all(0 <= i < count for i in rejected), rejected
    for _, error in out.errors:
        assert isinstance(error, PayloadError), repr(error)
        assert error.field and error.reason, repr(error)
    hi = int(now_s * 1000) + MAX_FUTURE_MS
    bad = set(rejected)
    for kind, cols in out.telemetry.items():
        n = len(cols)
        assert cols.kind is kind
        assert n > 0
        shapes = [cols.site.shape, cols.device_id.shape, cols.seq.shape, cols.message.shape]
        assert all(s == (n,) for s in shapes), shapes
        assert cols.ts_ms.dtype == np.int64 and cols.seq.dtype == np.int64
        assert ((cols.ts_ms >= MIN_TS_MS) & (cols.ts_ms <= hi)).all(), cols.ts_ms
        assert ((cols.seq >= 0) & (cols.seq <= MAX_SEQ)).all(), cols.seq
        for name, values in cols.values.items():
            assert values.shape == (n,), name
            assert not np.isinf(values).any(), name  # finite, or NaN = not reported
        for name, arrays in cols.arrays.items():
            assert len(arrays) == n, name
            assert all(a is None or bool(np.isfinite(a).all()) for a in arrays), name
        messages = set(cols.message.tolist())
        assert messages.isdisjoint(bad), "a rejected message left readings"
        assert all(0 <= m < count for m in messages)
    for ev in out.events:
        assert 0 <= ev.message < count and ev.message not in bad
        assert MIN_TS_MS <= ev.ts_ms <= hi, ev.ts_ms
    for st in out.statuses:
        assert 0 <= st.message < count and st.message not in bad
        ts = st.status.ts
        assert ts is None or not isinstance(ts, int) or 0 <= ts <= MAX_TS_MS, ts
    assert all(0 <= i < count and i not in bad for i in out.commands)


def check_json(decoder: TelemetryDecoder, messages: Sequence[tuple[str, bytes]]) -> None:
    """The JSON decoder's properties on these messages, decoded together."""
    check_batch(decoder.decode_batch(messages), len(messages), _clock(decoder))


def check_sparkplug(
    decoder: SparkplugDecoder, messages: Sequence[tuple[str, bytes]], *, fresh: bool = True
) -> None:
    """The Sparkplug B decoder's properties on these messages, decoded together.

    Args:
        decoder: The decoder (clock :data:`NOW_S`).
        messages: The messages, in arrival order.
        fresh: Forget every birth first, so that an input does not depend on the ones before
            (cheaper than a new decoder per input).
    """
    if fresh:
        decoder._born.clear()  # the harness resets the decoder's session state
    check_batch(decoder.decode_batch(messages), len(messages), NOW_S)


def check_api_body(raw: bytes, now_ms: int = T0) -> None:
    """The API's body parsers on one request body: only ApiError, and bounded results."""
    try:
        body = parse_body(raw)
    except ApiError as exc:
        assert 400 <= exc.status < 500, exc.status
        return
    assert isinstance(body, dict)
    try:
        silence = silence_from(body, now_ms)
    except ApiError as exc:
        assert 400 <= exc.status < 500 and exc.field, (exc.status, exc.field)
    else:
        assert 0 <= silence.starts_ms < silence.ends_ms <= MAX_TS_MS
        for text in (silence.author, silence.device_id, silence.site, silence.kind):
            assert len(text) <= MAX_NAME_CHARS
            text.encode("utf-8")
        assert len(silence.reason) <= MAX_TEXT_CHARS
    # The ack and comment bodies: their fields, as the handlers read them.
    from alerts.api_input import str_field  # the handlers' own field reader

    for name in ("by", "comment", "text"):
        try:
            value = str_field(body, name, required=False)
        except ApiError as exc:
            assert exc.status == 422 and exc.field == name
        else:
            assert len(value) <= MAX_TEXT_CHARS
            value.encode("utf-8")


def _clock(decoder: TelemetryDecoder) -> float:
    clock: Any = decoder._clock  # the properties are checked against the decoder's clock
    return float(clock())


# -- seeds ------------------------------------------------------------------------------------


def json_seeds() -> Iterator[tuple[str, bytes]]:
    """(name, input) of the JSON harness's seeds: every documented example, alone and together,
    and the inputs the issue reported (a timestamp beyond int64, deep nesting)."""
    for i, ex in enumerate(EXAMPLES):
        yield f"example-{i:02d}", frame([(ex.topic, ex.payload)])
    yield "examples-all", frame([(ex.topic, ex.payload) for ex in EXAMPLES[:_MAX_MESSAGES]])
    bolt = "boltwatch/v1/s1/cbolt/b1/telemetry"
    yield (
        "ts-beyond-int64",
        frame([(bolt, b'{"ts": 9223372036854775808, "seq": 1, "preload_kn": 40}')]),
    )
    deep = b'{"torque_nm":' + b"[" * 2000 + b"]" * 2000 + b',"type":"tightened"}'
    yield "deep-event", frame([("boltwatch/v1/s1/cbolt/b1/event", deep)])


def sparkplug_seeds() -> Iterator[tuple[str, bytes]]:
    """(name, input) of the Sparkplug B harness's seeds: a session of births, data and deaths."""
    g = "spBv1.0/fablab"
    ts = T0
    nbirth = encode_nbirth({"uptime_s": 12.0}, ts, bd_seq=3, aliases={"uptime_s": 1})
    dbirth = encode_dbirth(DeviceKind.CBOLT, {"preload_kn": 42.0, "temp_c": 11.0}, ts, seq=1)
    ddata = encode_ddata({"preload_kn": 41.9}, ts + 1000, seq=2)
    mill = encode_dbirth(DeviceKind.CNC_MILL, {"vib_ms2": [0.1, -0.2, 0.3], "fs_hz": 100.0}, ts)
    session = [
        (f"{g}/NBIRTH/edge-1", nbirth),
        (f"{g}/DBIRTH/edge-1/bolt-1", dbirth),
        (f"{g}/DDATA/edge-1/bolt-1", ddata),
        (f"{g}/DBIRTH/edge-1/mill-1", mill),
        (f"{g}/DDEATH/edge-1/bolt-1", encode_ndeath(3)),
        (f"{g}/NDEATH/edge-1", encode_ndeath(3)),
    ]
    yield "session", frame(session)
    for i, message in enumerate(session):
        yield f"message-{i}", frame([session[0], message] if i else [message])


def api_seeds() -> Iterator[tuple[str, bytes]]:
    """(name, body) of the API harness's seeds: the request bodies the API documents."""
    bodies: dict[str, Any] = {
        "silence-duration": {
            "author": "ana",
            "reason": "maintenance",
            "site": "s1",
            "duration": "2h",
        },
        "silence-ends": {
            "author": "ana",
            "reason": "retightening",
            "device_id": "bolt-7",
            "starts": "2026-03-01T00:00:00Z",
            "ends": 1772330000000,
        },
        "silence-1e300": {"author": "a", "reason": "r", "kind": "loosening", "ends": 1e300},
        "ack": {"by": "ana", "comment": "on it"},
        "comment": {"by": "ana", "text": "torqued to 210 N·m"},
    }
    for name, body in bodies.items():
        yield name, json.dumps(body).encode()
    yield "brackets", b"[" * 30_000
