"""JSON codec: every path, every error, round trips for every kind, columns."""

from __future__ import annotations

import math

import msgspec
import numpy as np
import pytest

from sensors import (
    READING_TYPES,
    CboltReading,
    CncMillReading,
    DeviceKind,
    PayloadError,
    TelemetryDecoder,
    TightenedEvent,
    TopicError,
    encode_event,
    encode_reading,
    encode_readings,
)
from sensors.codec import MIN_TS_MS, ReadingColumns, to_epoch_ms
from sensors.examples import EXAMPLES, T0

NOW_S = T0 / 1000 + 3_600.0  # the receiver's clock: an hour after the examples


@pytest.fixture
def dec() -> TelemetryDecoder:
    return TelemetryDecoder(clock=lambda: NOW_S)


def topic(kind: str, dev: str = "dev-1", channel: str = "telemetry", site: str = "site-a") -> str:
    return f"boltwatch/v1/{site}/{kind}/{dev}/{channel}"


# -- the documented examples ---------------------------------------------------------------------


@pytest.mark.parametrize("example", EXAMPLES, ids=[e.title for e in EXAMPLES])
def test_examples_decode_or_are_rejected_for_the_stated_reason(
    dec: TelemetryDecoder, example: object
) -> None:
    from sensors.examples import Example

    assert isinstance(example, Example)
    out = dec.decode_batch([(example.topic, example.payload)])
    if example.rejected_because:
        assert len(out.errors) == 1
        _, error = out.errors[0]
        assert example.rejected_because in str(error)
        assert out.readings == 0
    else:
        assert out.errors == []
        assert out.readings + len(out.events) + len(out.statuses) >= 1


# -- readings into columns -----------------------------------------------------------------------


def test_single_reading_becomes_one_row_with_nan_for_unreported(dec: TelemetryDecoder) -> None:
    out = dec.decode(topic("cbolt", "b1"), b'{"ts": %d, "seq": 4, "preload_kn": 50.25}' % T0)
    cols = out.telemetry[DeviceKind.CBOLT]
    assert len(cols) == 1
    assert cols.device_id.tolist() == ["b1"]
    assert cols.site.tolist() == ["site-a"]
    assert cols.ts_ms.tolist() == [T0]
    assert cols.seq.tolist() == [4]
    assert cols.values["preload_kn"].tolist() == [50.25]
    assert math.isnan(cols.values["temp_c"][0])
    assert cols.ts_ms.dtype == np.int64
    assert cols.values["preload_kn"].dtype == np.float64


def test_null_means_not_reported(dec: TelemetryDecoder) -> None:
    out = dec.decode(topic("cbolt"), b'{"ts": %d, "seq": 1, "preload_kn": 5, "temp_c": null}' % T0)
    assert math.isnan(out.telemetry[DeviceKind.CBOLT].values["temp_c"][0])


def test_rfc3339_and_epoch_ms_mix_in_one_column(dec: TelemetryDecoder) -> None:
    payload = (
        b'{"readings": [{"ts": "2026-03-01T00:05:00Z", "seq": 1, "preload_kn": 1},'
        b'{"ts": "2026-03-01T01:05:00.250+01:00", "seq": 2, "preload_kn": 2},'
        b'{"ts": %d, "seq": 3, "preload_kn": 3}]}' % (T0 + 7)
    )
    cols = dec.decode(topic("cbolt"), payload).telemetry[DeviceKind.CBOLT]
    assert cols.ts_ms.tolist() == [T0, T0 + 250, T0 + 7]


def test_batch_keeps_order_and_message_index(dec: TelemetryDecoder) -> None:
    msgs = [
        (topic("cbolt", f"b{i}"), b'{"ts": %d, "seq": %d, "preload_kn": %d}' % (T0 + i, i, i))
        for i in range(5)
    ]
    msgs.insert(2, (topic("cbolt", "bx"), b"garbage"))
    out = dec.decode_batch(msgs)
    cols = out.telemetry[DeviceKind.CBOLT]
    assert cols.device_id.tolist() == ["b0", "b1", "b2", "b3", "b4"]
    assert cols.message.tolist() == [0, 1, 3, 4, 5]
    assert [i for i, _ in out.errors] == [2]
    assert out.count == 6


def test_gateway_batch_splits_by_kind_and_names_devices(dec: TelemetryDecoder) -> None:
    payload = (
        b'{"readings": ['
        b'{"kind": "cbolt", "device_id": "b1", "ts": %d, "seq": 1, "preload_kn": 10},'
        b'{"kind": "printer3d", "device_id": "p1", "ts": %d, "seq": 2, "hotend_c": 200},'
        b'{"kind": "gateway", "ts": %d, "seq": 3, "rssi_dbm": -60},'
        b'{"kind": "cbolt", "device_id": "b2", "ts": %d, "seq": 4, "preload_kn": 11}]}'
    ) % (T0, T0, T0, T0)
    out = dec.decode(topic("gateway", "gw1"), payload)
    assert out.telemetry[DeviceKind.CBOLT].device_id.tolist() == ["b1", "b2"]
    assert out.telemetry[DeviceKind.PRINTER3D].device_id.tolist() == ["p1"]
    assert out.telemetry[DeviceKind.GATEWAY].device_id.tolist() == ["gw1"]
    assert out.readings == 4


def test_gateway_reading_must_carry_kind(dec: TelemetryDecoder) -> None:
    with pytest.raises(PayloadError) as info:
        dec.decode(
            topic("gateway", "gw1"),
            b'{"readings": [{"device_id": "b1", "ts": %d, "seq": 1, "preload_kn": 10}]}' % T0,
        )
    assert info.value.field == "$.readings[0]"
    assert "kind" in info.value.reason


def test_gateway_cannot_speak_for_another_gateway(dec: TelemetryDecoder) -> None:
    with pytest.raises(PayloadError, match="spoofed"):
        dec.decode(
            topic("gateway", "gw1"),
            b'{"kind": "gateway", "device_id": "gw2", "ts": %d, "seq": 1}' % T0,
        )


def test_waveform_field_becomes_an_array(dec: TelemetryDecoder) -> None:
    out = dec.decode(
        topic("cnc_mill", "m1"),
        b'{"ts": %d, "seq": 1, "fs_hz": 1000, "vib_ms2": [1, 2.5, -3]}' % T0,
    )
    cols = out.telemetry[DeviceKind.CNC_MILL]
    wave = cols.arrays["vib_ms2"][0]
    assert wave is not None
    assert wave.tolist() == [1.0, 2.5, -3.0]
    assert cols.values["fs_hz"].tolist() == [1000.0]
    assert "vib_ms2" not in cols.values


def test_select_and_concat(dec: TelemetryDecoder) -> None:
    msgs = [
        (topic("cnc_mill", "m1"), b'{"ts": %d, "seq": %d, "vib_ms2": [%d]}' % (T0, i, i))
        for i in range(4)
    ]
    cols = dec.decode_batch(msgs).telemetry[DeviceKind.CNC_MILL]
    picked = cols.select(np.array([True, False, True, False]))
    assert picked.seq.tolist() == [0, 2]
    assert [a.tolist() for a in picked.arrays["vib_ms2"] if a is not None] == [[0.0], [2.0]]
    joined = ReadingColumns.concat([picked, cols.select(np.array([3]))])
    assert joined.seq.tolist() == [0, 2, 3]
    with pytest.raises(ValueError, match="at least one"):
        ReadingColumns.concat([])


# -- events and status ----------------------------------------------------------------------------


def test_tightened_event(dec: TelemetryDecoder) -> None:
    out = dec.decode(
        topic("cbolt", "b1", "event"),
        b'{"type": "tightened", "ts": %d, "seq": 2, "torque_nm": 200, "preload_kn": 62.5}' % T0,
    )
    (ev,) = out.events
    assert isinstance(ev.event, TightenedEvent)
    assert ev.event.torque_nm == 200.0
    assert (ev.device_id, ev.kind, ev.ts_ms) == ("b1", DeviceKind.CBOLT, T0)


def test_gateway_relays_an_event_of_its_bolt(dec: TelemetryDecoder) -> None:
    out = dec.decode(
        topic("gateway", "gw1", "event"),
        b'{"type": "battery_swap", "kind": "cbolt", "device_id": "b9", "ts": %d, "seq": 2}' % T0,
    )
    (ev,) = out.events
    assert (ev.kind, ev.device_id) == (DeviceKind.CBOLT, "b9")


@pytest.mark.parametrize(
    ("payload", "field", "words"),
    [
        (b'{"type": "exploded", "ts": 1, "seq": 1}', "$.type", "Invalid value"),
        (
            b'{"type": "tightened", "ts": %d, "seq": 1, "torque_nm": 1}' % T0,
            "payload",
            "preload_kn",
        ),
        (
            b'{"type": "battery_swap", "ts": %d, "seq": 1, "device_id": "other"}' % T0,
            "$.device_id",
            "spoofed",
        ),
        (
            b'{"type": "battery_swap", "ts": %d, "seq": 1, "kind": "printer3d"}' % T0,
            "$.kind",
            "differs",
        ),
        (b'{"type": "battery_swap", "ts": %d, "seq": 1}' % (T0 + 3 * 86_400_000), "$.ts", "future"),
    ],
)
def test_bad_events(dec: TelemetryDecoder, payload: bytes, field: str, words: str) -> None:
    with pytest.raises(PayloadError) as info:
        dec.decode(topic("cbolt", "b1", "event"), payload)
    assert info.value.field == field
    assert words in info.value.reason


@pytest.mark.parametrize(
    ("payload", "state"),
    [
        (b'{"state": "online", "boot_id": "x1", "interval_s": 60}', "online"),
        (b'{"state": "offline"}', "offline"),
        (b"offline", "offline"),
        (b"online\n", "online"),
    ],
)
def test_status(dec: TelemetryDecoder, payload: bytes, state: str) -> None:
    (st,) = dec.decode(topic("cbolt", "b1", "status"), payload).statuses
    assert st.status.state == state


def test_bad_status(dec: TelemetryDecoder) -> None:
    with pytest.raises(PayloadError, match="state"):
        dec.decode(topic("cbolt", "b1", "status"), b'{"state": "sleepy"}')


def test_cmd_channel_is_not_ingested(dec: TelemetryDecoder) -> None:
    out = dec.decode(topic("cbolt", "b1", "cmd"), b'{"cmd": "set_interval"}')
    assert out.commands == [0]
    assert out.readings == 0


# -- errors ---------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("payload", "field", "words"),
    [
        (b"", "payload", "not valid JSON"),
        (b"[1, 2]", "payload", "Expected `object`"),
        (b'{"ts": %d, "seq": 1, "preload_kn": 1e999}' % T0, "$.preload_kn", "out of range"),
        (b'{"ts": %d, "seq": 1, "preload_kn": -1e999}' % T0, "$.preload_kn", "out of range"),
        (b'{"ts": %d, "seq": 1, "preload_kn": NaN}' % T0, "payload", "not valid JSON"),
        (b'{"ts": %d, "seq": 1, "preload_kn": Infinity}' % T0, "payload", "not valid JSON"),
        (b'{"ts": %d, "seq": -1, "preload_kn": 1}' % T0, "$.seq", ">= 0"),
        (b'{"ts": %d, "seq": 1.5, "preload_kn": 1}' % T0, "$.seq", "Expected `int`"),
        (b'{"ts": %d, "seq": 1, "preload_kn": true}' % T0, "$.preload_kn", "Expected `float"),
        (b'{"ts": %d, "seq": 1, "preload_kn": 1, "temp_c": 900}' % T0, "$.temp_c", "<= 600"),
        (b'{"ts": "yesterday", "seq": 1, "preload_kn": 1}', "$.ts", "Invalid RFC3339"),
        (b'{"ts": %d, "seq": 1}' % T0, "payload", "missing required field `preload_kn`"),
        (b'{"seq": 1, "preload_kn": 1}', "payload", "missing required field `ts`"),
        (b'{"ts": %d, "seq": 1, "preload_kn": 1, "x": 1}' % T0, "payload", "unknown field `x`"),
        (b'\xff\xfe{"ts": 1}', "payload", "not valid JSON"),
        (
            b'{"ts": %d, "seq": 1, "preload_kn": 1, "device_id": "a b"}' % T0,
            "$.device_id",
            "spoofed",
        ),
        (b'{"readings": [{"ts": %d, "seq": 1}]}' % T0, "$.readings[0]", "preload_kn"),
        (b'{"readings": {}}', "$.readings", "Expected `array`"),
        (b'{"readings": [], "extra": 1}', "payload", "unknown field `extra`"),
    ],
)
def test_payload_errors_name_the_field(
    dec: TelemetryDecoder, payload: bytes, field: str, words: str
) -> None:
    with pytest.raises(PayloadError) as info:
        dec.decode(topic("cbolt"), payload)
    assert info.value.field == field, str(info.value)
    assert words in info.value.reason, str(info.value)


def test_oversize_payload_rejected_unread(dec: TelemetryDecoder) -> None:
    big = b'{"ts": 1, "seq": 1, "preload_kn": 1, "pad": "' + b"x" * (256 * 1024) + b'"}'
    with pytest.raises(PayloadError) as info:
        dec.decode(topic("cbolt"), big)
    assert info.value.field == "payload"
    assert "262144-byte limit" in info.value.reason


def test_limit_is_configurable() -> None:
    small = TelemetryDecoder(max_payload_bytes=10, clock=lambda: NOW_S)
    with pytest.raises(PayloadError, match="10-byte limit"):
        small.decode(topic("cbolt"), b'{"ts": 1, "seq": 1, "preload_kn": 1}')


def test_future_timestamp_rejected_and_only_its_message(dec: TelemetryDecoder) -> None:
    future = int(NOW_S * 1000) + 86_400_000 + 1
    ok = int(NOW_S * 1000) + 86_400_000 - 1  # just inside a day ahead (clock skew is allowed)
    out = dec.decode_batch(
        [
            (topic("cbolt", "b1"), b'{"ts": %d, "seq": 1, "preload_kn": 1}' % future),
            (topic("cbolt", "b2"), b'{"ts": %d, "seq": 1, "preload_kn": 1}' % ok),
        ]
    )
    assert [i for i, _ in out.errors] == [0]
    assert "future" in out.errors[0][1].reason
    assert out.telemetry[DeviceKind.CBOLT].device_id.tolist() == ["b2"]


def test_one_bad_reading_rejects_its_whole_gateway_message_only(dec: TelemetryDecoder) -> None:
    gw = (
        b'{"readings": [{"kind": "cbolt", "device_id": "b1", "ts": %d, "seq": 1, "preload_kn": 1},'
        b'{"kind": "printer3d", "device_id": "p1", "ts": 5, "seq": 1, "hotend_c": 20}]}' % T0
    )
    out = dec.decode_batch(
        [
            (topic("gateway", "gw"), gw),
            (topic("cbolt", "b3"), b'{"ts": %d, "seq": 1, "preload_kn": 1}' % T0),
        ]
    )
    assert [i for i, _ in out.errors] == [0]
    assert "before 2000-01-01" in out.errors[0][1].reason
    assert list(out.telemetry) == [DeviceKind.CBOLT]
    assert out.telemetry[DeviceKind.CBOLT].device_id.tolist() == ["b3"]


@pytest.mark.parametrize(
    ("name", "words"),
    [
        ("boltwatch/v1/s/cbolt/b", "is not of the form"),
        ("boltwatch/v2/s/cbolt/b/telemetry", "is not of the form"),
        ("boltwatch/v1/s/rocket/b/telemetry", "unknown device kind 'rocket'"),
        ("boltwatch/v1/s/cbolt/b/stuff", "unknown channel 'stuff'"),
        ("boltwatch/v1/s p/cbolt/b/telemetry", "site 's p'"),
        ("boltwatch/v1/s/cbolt/" + "b" * 65 + "/telemetry", "device_id"),
        ("boltwatch/v1/s/cbolt/+/telemetry", "device_id '+'"),
        ("x" * 300, "longer than 256"),
    ],
)
def test_bad_topics(dec: TelemetryDecoder, name: str, words: str) -> None:
    with pytest.raises(TopicError) as info:
        dec.decode(name, b"{}")
    assert info.value.field == "topic"
    assert words in info.value.reason
    # The cache must give the same answer the second time.
    with pytest.raises(TopicError, match="topic"):
        dec.decode(name, b"{}")


def test_errors_survive_pickling() -> None:
    import pickle

    e = pickle.loads(pickle.dumps(PayloadError("$.x", "bad")))
    assert (e.field, e.reason) == ("$.x", "bad")
    t = pickle.loads(pickle.dumps(TopicError("nope")))
    assert (t.field, t.reason) == ("topic", "nope")


def test_to_epoch_ms() -> None:
    from datetime import UTC, datetime, timedelta, timezone

    assert to_epoch_ms(5) == 5
    assert to_epoch_ms(datetime(2026, 3, 1, 0, 5, tzinfo=UTC)) == T0
    plus2 = timezone(timedelta(hours=2))
    assert to_epoch_ms(datetime(2026, 3, 1, 2, 5, 0, 1000, tzinfo=plus2)) == T0 + 1
    assert to_epoch_ms(datetime(2000, 1, 1, tzinfo=UTC)) == MIN_TS_MS


# -- round trips for every kind --------------------------------------------------------------------


def _sample(kind: DeviceKind, seq: int) -> msgspec.Struct:
    """A reading of ``kind`` with every field set to a distinct in-range value."""
    from sensors.schema import FIELD_INFO

    values: dict[str, object] = {"ts": T0 + seq, "seq": seq}
    for k, f in enumerate(FIELD_INFO[kind]):
        lo = max(f.lo, -1000.0)
        hi = min(f.hi, 1000.0)
        if f.name == "vib_ms2":
            values[f.name] = [0.5, -0.25, float(seq)]
        else:
            values[f.name] = lo + (hi - lo) * ((k + 1) / (len(FIELD_INFO[kind]) + 2))
    return msgspec.convert(values, READING_TYPES[kind])


@pytest.mark.parametrize("kind", list(DeviceKind))
def test_round_trip_every_kind(dec: TelemetryDecoder, kind: DeviceKind) -> None:
    readings = [_sample(kind, s) for s in range(3)]
    own = dec.decode(topic(kind.value, "d1"), encode_readings(readings))  # type: ignore[arg-type]
    single = dec.decode(topic(kind.value, "d1"), encode_reading(readings[0]))  # type: ignore[arg-type]
    relayed_readings = [msgspec.structs.replace(r, device_id="d1") for r in readings]
    relayed = dec.decode(
        topic("gateway", "d1" if kind is DeviceKind.GATEWAY else "gw"),
        encode_readings(relayed_readings, with_kind=True),  # type: ignore[arg-type]
    )
    for out, n in ((own, 3), (single, 1), (relayed, 3)):
        cols = out.telemetry[kind]
        assert len(cols) == n
        for i in range(n):
            r = readings[i]
            assert cols.seq[i] == r.seq  # type: ignore[attr-defined]
            assert cols.ts_ms[i] == r.ts  # type: ignore[attr-defined]
            for name, column in cols.values.items():
                assert column[i] == getattr(r, name), name
            for name, arrays in cols.arrays.items():
                wave = arrays[i]
                assert wave is not None
                assert wave.tolist() == getattr(r, name)


def test_encode_omits_unreported_fields() -> None:
    r = CboltReading(ts=T0, seq=1, preload_kn=2.0)
    assert encode_reading(r) == b'{"ts":%d,"seq":1,"preload_kn":2.0}' % T0
    assert encode_reading(r, with_kind=True).startswith(b'{"kind":"cbolt"')
    m = CncMillReading(ts=T0, seq=1, vib_ms2=[1.0])
    assert b"spindle_rpm" not in encode_reading(m)


def test_event_round_trip(dec: TelemetryDecoder) -> None:
    ev = TightenedEvent(ts=T0, seq=3, torque_nm=210.0, preload_kn=61.0, operator="a.b")
    out = dec.decode(topic("cbolt", "b1", "event"), encode_event(ev))
    assert out.events[0].event == ev


@pytest.mark.parametrize("bad_id", ["a b", "x" * 65, "", "b/1", "é"])
def test_gateway_relayed_device_ids_are_checked(dec: TelemetryDecoder, bad_id: str) -> None:
    import json

    payload = json.dumps(
        {
            "readings": [
                {"kind": "cbolt", "device_id": "ok-1", "ts": T0, "seq": 1, "preload_kn": 1},
                {"kind": "cbolt", "device_id": bad_id, "ts": T0, "seq": 1, "preload_kn": 1},
            ]
        }
    ).encode()
    with pytest.raises(PayloadError) as info:
        dec.decode(topic("gateway", "gw"), payload)
    assert info.value.field == "$.readings[1].device_id", str(info.value)
    # The same id in a mixed-kind batch, and in a relayed event, is refused the same way.
    mixed = payload.replace(
        b'"kind": "cbolt", "device_id": "ok-1"', b'"kind": "printer3d", "device_id": "ok-1"'
    )
    mixed = mixed.replace(b', "preload_kn": 1}, {', b"}, {", 1)
    with pytest.raises(PayloadError, match="device_id"):
        dec.decode(topic("gateway", "gw"), mixed)
    event = json.dumps(
        {"type": "battery_swap", "kind": "cbolt", "device_id": bad_id, "ts": T0, "seq": 1}
    )
    with pytest.raises(PayloadError, match="device_id"):
        dec.decode(topic("gateway", "gw", "event"), event.encode())


def test_batches_with_white_space_and_mixed_kinds_keep_arrival_order(dec: TelemetryDecoder) -> None:
    one = b'{"ts": %d, "seq": %d, "preload_kn": 1}'
    msgs = [
        (topic("cbolt", "b1"), one % (T0, 1)),
        (topic("printer3d", "p1"), b'{"ts": %d, "seq": 7, "hotend_c": 20}' % T0),
        # A batch whose key does not start right after the brace: found on the careful path.
        (topic("cbolt", "b2"), b' {\n  "readings": [%s, %s]}' % (one % (T0, 2), one % (T0, 3))),
        (topic("cbolt", "b3"), one % (T0, 4)),
        (topic("cbolt", "b4"), b'{"readings": [%s]}' % (one % (T0, 5))),
        (topic("cbolt", "b5"), b'{"ts": %d, "seq": 6, "readings_kn": 1}' % T0),
    ]
    out = dec.decode_batch(msgs)
    cbolt = out.telemetry[DeviceKind.CBOLT]
    assert cbolt.seq.tolist() == [1, 2, 3, 4, 5]
    assert cbolt.device_id.tolist() == ["b1", "b2", "b2", "b3", "b4"]
    assert cbolt.message.tolist() == [0, 2, 2, 3, 4]
    assert out.telemetry[DeviceKind.PRINTER3D].seq.tolist() == [7]
    assert [(i, e.field) for i, e in out.errors] == [(5, "payload")]
    assert "readings_kn" in out.errors[0][1].reason
