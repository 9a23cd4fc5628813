"""Total decoders: for any input, a batch or the decoder's own typed error — nothing else.

The same properties as the atheris harnesses of ``fuzz/`` (:mod:`fuzz.common`), driven here by
Hypothesis for a few seconds in ``make test``: arbitrary bytes, JSON-like values with huge
integers, NaN and infinity, deep nesting, random topics, crafted Sparkplug B protobufs. The
seed corpus and every regression input that once crashed a harness are replayed too.
"""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from pysparkplug import _protobuf as pb

from fuzz.common import (
    CORPUS,
    NOW_S,
    REGRESSIONS,
    check_api_body,
    check_batch,
    check_json,
    check_sparkplug,
    unframe,
)
from sensors.codec import TelemetryDecoder, nesting_depth
from sensors.errors import PayloadError
from sensors.limits import MAX_NESTING_DEPTH, MAX_SEQ, MAX_TS_MS
from sensors.schema import FIELD_INFO, DeviceKind
from sensors.sparkplug import SparkplugDecoder

FAST = settings(max_examples=150, deadline=None, suppress_health_check=list(HealthCheck))
DEC = TelemetryDecoder(clock=lambda: NOW_S)
SP = SparkplugDecoder(clock=lambda: NOW_S)  # births are forgotten before each input
KINDS = [k.value for k in DeviceKind]
FIELDS = sorted({f.name for fields in FIELD_INFO.values() for f in fields})
KEYS = [*FIELDS, "ts", "seq", "kind", "device_id", "readings", "type", "state", "x"]
BIG = [0, -1, 2**31, 2**32, 2**53 + 1, 2**63 - 1, 2**63, 2**64, 2**64 + 1, 10**30, -(2**63) - 1]
UINT64_EDGES = [
    0,
    2**53 + 1,
    2**63 - 1,
    2**63,
    2**64 - 1,
    MAX_TS_MS,
    MAX_TS_MS + 1,
    int(NOW_S * 1000),
]

json_topics = st.builds(
    lambda site, kind, dev, ch: f"boltwatch/v1/{site}/{kind}/{dev}/{ch}",
    st.sampled_from(["s1", "site-a", "bad site", ""]),
    st.sampled_from([*KINDS, "nope"]),
    st.sampled_from(["d1", "b1", "d/2", "x" * 70]),
    st.sampled_from(["telemetry", "event", "status", "cmd", "other"]),
) | st.text(max_size=80)

huge_ints = st.sampled_from([*BIG, MAX_TS_MS, MAX_TS_MS + 1, MAX_SEQ]) | st.integers(
    -(2**256), 2**256
)
numbers = huge_ints | st.floats(allow_nan=True, allow_infinity=True)
timestamps = huge_ints | st.datetimes(
    min_value=datetime(1, 1, 2),  # noqa: DTZ001 - the zone is drawn separately
    max_value=datetime(9999, 12, 30),  # noqa: DTZ001
    timezones=st.sampled_from(
        [UTC, timezone(timedelta(hours=23, minutes=59)), timezone(-timedelta(hours=23))]
    ),
).map(datetime.isoformat)
json_values = st.recursive(
    st.none() | st.booleans() | numbers | st.text(max_size=20),
    lambda children: (
        st.lists(children, max_size=5)
        | st.dictionaries(st.sampled_from(KEYS) | st.text(max_size=8), children, max_size=8)
    ),
    max_leaves=30,
)


def _dumps(value: Any) -> bytes:
    # allow_nan: NaN and Infinity tokens are not JSON, and the decoder must say so.
    return json.dumps(value, allow_nan=True).encode()


@st.composite
def near_valid_readings(draw: st.DrawFn) -> tuple[str, bytes]:
    """A reading of a random kind with huge, non-finite or out-of-range numbers in its fields."""
    kind = draw(st.sampled_from(list(DeviceKind)))
    reading: dict[str, Any] = {"ts": draw(timestamps), "seq": draw(huge_ints)}
    for f in FIELD_INFO[kind]:
        if draw(st.booleans()):
            reading[f.name] = (
                draw(st.lists(numbers, max_size=4)) if f.name == "vib_ms2" else draw(numbers)
            )
    if kind is DeviceKind.GATEWAY and draw(st.booleans()):
        reading = {"readings": [{**reading, "kind": "cbolt", "device_id": "b1"}]}
    return f"boltwatch/v1/s1/{kind.value}/d1/telemetry", _dumps(reading)


@st.composite
def deep_payloads(draw: st.DrawFn) -> tuple[str, bytes]:
    """A deeply nested value where each decoder path would recurse into it."""
    depth = draw(st.integers(MAX_NESTING_DEPTH - 2, 5_000))
    opener, closer = draw(st.sampled_from([("[", "]"), ('{"a":', "}")]))
    inner = (opener * depth + "1" + closer * depth).encode()
    topic, template = draw(
        st.sampled_from(
            [
                ("boltwatch/v1/s1/cbolt/b1/event", b'{"torque_nm": %s, "type": "tightened"}'),
                ("boltwatch/v1/s1/cbolt/b1/event", b'{"readings": [{"x": %s, "type": "fault"}]}'),
                ("boltwatch/v1/s1/gateway/g1/telemetry", b'{"x": %s, "kind": "cbolt"}'),
                ("boltwatch/v1/s1/cbolt/b1/telemetry", b'{"preload_kn": %s}'),
                ("boltwatch/v1/s1/cbolt/b1/status", b'{"state": %s}'),
                ("boltwatch/v1/s1/cbolt/b1/telemetry", b"%s"),
            ]
        )
    )
    return topic, template % inner


@FAST
@given(topic=json_topics, payload=st.binary(max_size=400))
def test_json_decoder_on_arbitrary_bytes(topic: str, payload: bytes) -> None:
    check_json(DEC, [(topic, payload)])


@FAST
@given(topic=json_topics, value=json_values)
def test_json_decoder_on_json_like_values(topic: str, value: Any) -> None:
    check_json(DEC, [(topic, _dumps(value))])


@FAST
@given(message=near_valid_readings())
def test_json_decoder_on_huge_and_non_finite_numbers(message: tuple[str, bytes]) -> None:
    check_json(DEC, [message])


@settings(FAST, max_examples=60)
@given(message=deep_payloads())
def test_json_decoder_on_deep_nesting(message: tuple[str, bytes]) -> None:
    check_json(DEC, [message])


@settings(FAST, max_examples=100)
@given(
    messages=st.lists(
        near_valid_readings() | st.tuples(json_topics, json_values.map(_dumps)), max_size=8
    )
)
def test_json_decoder_on_batches_of_good_and_bad_messages(
    messages: list[tuple[str, bytes]],
) -> None:
    check_json(DEC, messages)


def test_the_issue_poison_messages_are_payload_errors() -> None:
    bolt = "boltwatch/v1/s1/cbolt/b1/telemetry"
    cases = [
        (bolt, b'{"ts": 9223372036854775808, "seq": 1, "preload_kn": 40}', "$.ts"),
        (bolt, b'{"ts": 922337203685477580, "seq": 1, "preload_kn": 40}', "$.ts"),
        (bolt, b'{"ts": 1700000000000, "seq": 18446744073709551616, "preload_kn": 40}', "$.seq"),
        (bolt, b'{"ts": 1700000000000, "seq": -1, "preload_kn": 40}', "$.seq"),
        (bolt, b'{"ts": 1700000000000, "seq": 1, "preload_kn": 1e999}', "$.preload_kn"),
        (bolt, b'{"ts": "9999-12-31T23:59:59-23:59", "seq": 1, "preload_kn": 40}', "$.ts"),
        (bolt, b'{"ts": 1700000000000, "seq": 1, "preload_kn": NaN}', "payload"),
        (
            "boltwatch/v1/s1/cbolt/b1/event",
            b'{"torque_nm":' + b"[" * 5000 + b"]" * 5000 + b',"type":"tightened"}',
            "payload",
        ),
    ]
    for topic, payload, where in cases:
        with pytest.raises(PayloadError) as info:
            DEC.decode(topic, payload)
        assert info.value.field == where, (payload[:60], info.value)
    # The first one, on the hot path together with a good message: only it is rejected.
    good = b'{"ts": %d, "seq": 2, "preload_kn": 40}' % (NOW_S * 1000 - 1000)
    out = DEC.decode_batch([(bolt, cases[0][1]), (bolt, good)])
    assert [i for i, _ in out.errors] == [0]
    assert out.readings == 1


@FAST
@given(value=json_values)
def test_nesting_depth_is_the_parsers_depth(value: Any) -> None:
    def depth(v: Any) -> int:
        if isinstance(v, list):
            return 1 + max(map(depth, v), default=0)
        if isinstance(v, dict):
            return 1 + max(map(depth, v.values()), default=0)
        return 0

    # limit=0: always scanned (the cheap bound is skipped); strings may hold brackets and quotes.
    assert nesting_depth(_dumps(value), 0) == depth(value)


# -- Sparkplug B --------------------------------------------------------------------------------

sp_topics = st.builds(
    lambda group, mt, edge, dev: "/".join(["spBv1.0", group, mt, edge, *([dev] if dev else [])]),
    st.sampled_from(["fablab", "g", "bad group"]),
    st.sampled_from(["NBIRTH", "DBIRTH", "NDATA", "DDATA", "NDEATH", "DDEATH", "NCMD", "STATE"]),
    st.sampled_from(["edge-1", "e"]),
    st.sampled_from([None, "bolt-1", "mill-1"]),
) | st.text(max_size=60)

_VALUE_FIELDS = {
    "int_value": st.integers(0, 2**32 - 1),
    "long_value": st.integers(0, 2**64 - 1),
    "float_value": st.floats(width=32),
    "double_value": st.floats(),
    "boolean_value": st.booleans(),
    "string_value": st.text(max_size=12),
    "bytes_value": st.binary(max_size=40),
}


@st.composite
def sp_metrics(draw: st.DrawFn, payload: Any) -> None:
    m = payload.metrics.add()
    name = draw(st.sampled_from([None, "kind", "bdSeq", "seq", "Node Control/Rebirth", *FIELDS]))
    if name is not None:
        m.name = name
    if draw(st.booleans()):
        m.alias = draw(st.integers(0, 2**64 - 1))
    if draw(st.booleans()):
        m.timestamp = draw(st.integers(0, 2**64 - 1) | st.sampled_from(UINT64_EDGES))
    m.datatype = draw(st.integers(0, 40))
    if draw(st.booleans()):
        m.is_null = True
    field = draw(st.sampled_from([None, *_VALUE_FIELDS]))
    if field == "string_value" and name == "kind":
        m.string_value = draw(st.sampled_from([*KINDS, "toaster"]))
    elif field is not None:
        setattr(m, field, draw(_VALUE_FIELDS[field]))
    if draw(st.integers(0, 5)) == 0:
        m.metadata.description = draw(st.text(max_size=5))


@st.composite
def sp_payloads(draw: st.DrawFn) -> bytes:
    """A protobuf Sparkplug B payload with crafted metrics (any datatype with any value)."""
    payload = pb.Payload()
    if draw(st.integers(0, 4)):
        payload.timestamp = draw(st.integers(0, 2**64 - 1) | st.sampled_from(UINT64_EDGES))
    if draw(st.booleans()):
        payload.seq = draw(st.integers(0, 2**64 - 1))
    for _ in range(draw(st.integers(0, 6))):
        draw(sp_metrics(payload))
    data: bytes = payload.SerializeToString()
    return data


@FAST
@given(
    messages=st.lists(
        st.tuples(sp_topics, st.binary(max_size=200) | sp_payloads()), min_size=1, max_size=8
    )
)
def test_sparkplug_decoder_on_arbitrary_and_crafted_payloads(
    messages: list[tuple[str, bytes]],
) -> None:
    check_sparkplug(SP, messages)


@settings(FAST, max_examples=60)
@given(births=st.lists(sp_payloads(), min_size=1, max_size=3), data=st.lists(sp_payloads()))
def test_sparkplug_decoder_on_crafted_sessions(births: list[bytes], data: list[bytes]) -> None:
    g = "spBv1.0/fablab"
    messages = [(f"{g}/NBIRTH/edge-1", births[0])]
    messages += [(f"{g}/DBIRTH/edge-1/bolt-1", b) for b in births[1:]]
    messages += [(f"{g}/DDATA/edge-1/bolt-1", d) for d in data[:4]]
    check_sparkplug(SP, messages)


def test_sparkplug_library_errors_are_payload_errors() -> None:
    """pysparkplug raises AttributeError for a STRING_ARRAY metric holding a double."""
    payload = pb.Payload(timestamp=int(NOW_S * 1000), seq=0)
    m = payload.metrics.add()
    m.name, m.datatype, m.double_value = "kind", 33, 1.5
    out = SP.decode_batch([("spBv1.0/g/DBIRTH/e/d", payload.SerializeToString())])
    check_batch(out, 1)
    assert "AttributeError" in out.errors[0][1].reason


# -- API bodies -----------------------------------------------------------------------------------


@FAST
@given(body=json_values.map(_dumps) | st.binary(max_size=200))
def test_api_body_parsers_on_arbitrary_bodies(body: bytes) -> None:
    check_api_body(body)


@FAST
@given(
    body=st.fixed_dictionaries(
        {"author": st.text(max_size=300), "reason": st.text(max_size=10)},
        optional={
            "site": st.text(max_size=5),
            "starts": timestamps | numbers,
            "ends": timestamps | numbers,
            "duration": numbers | st.text(max_size=8),
            "by": st.text(max_size=5),
            "text": st.text(max_size=5),
        },
    )
)
def test_api_silence_bodies_with_huge_times(body: dict[str, Any]) -> None:
    check_api_body(_dumps(body))


# -- the seed corpus and the regressions of fuzz/ ------------------------------------------------


def _inputs(harness: str) -> list[Path]:
    return sorted(
        p
        for folder in (CORPUS / harness, REGRESSIONS / harness)
        if folder.is_dir()
        for p in folder.iterdir()
        if p.is_file() and not p.name.startswith(".")
    )


@pytest.mark.parametrize("path", _inputs("json"), ids=lambda p: p.name)
def test_json_corpus_and_regressions(path: Path) -> None:
    check_json(DEC, unframe(path.read_bytes()))


@pytest.mark.parametrize("path", _inputs("sparkplug"), ids=lambda p: p.name)
def test_sparkplug_corpus_and_regressions(path: Path) -> None:
    check_sparkplug(SP, unframe(path.read_bytes()))


@pytest.mark.parametrize("path", _inputs("api"), ids=lambda p: p.name)
def test_api_corpus_and_regressions(path: Path) -> None:
    check_api_body(path.read_bytes())


def test_decoder_state_stays_bounded_whatever_topics_and_ids_arrive() -> None:
    """A client inventing topics and gateway device ids cannot grow the decoder without bound
    (what keeps a long fuzz run, and a service under a hostile client, flat)."""
    from sensors.codec import _TOPIC_CACHE_MAX

    dec = TelemetryDecoder(clock=lambda: NOW_S)
    n = _TOPIC_CACHE_MAX + 5_000
    body = b'{"ts": 1772323500000, "seq": 1, "preload_kn": 40}'
    for start in range(0, n, 5_000):
        topics = [f"boltwatch/v1/s1/cbolt/b{i}/telemetry" for i in range(start, start + 5_000)]
        dec.decode_batch([(t, body) for t in topics])
        gateway = []
        for first in range(start, start + 5_000, 100):
            reading = {"kind": "cbolt", "ts": 1772323500000, "seq": 1, "preload_kn": 1}
            relayed = [{**reading, "device_id": f"g{i}"} for i in range(first, first + 100)]
            payload = json.dumps({"readings": relayed}).encode()
            gateway.append(("boltwatch/v1/s1/gateway/gw1/telemetry", payload))
        out = dec.decode_batch(gateway)
        assert not out.errors, out.errors[:1]
    assert 0 < len(dec._topics) <= _TOPIC_CACHE_MAX
    assert 0 < len(dec._fast_topics) <= _TOPIC_CACHE_MAX
    assert 0 < len(dec._valid_ids) <= _TOPIC_CACHE_MAX + 5_000
