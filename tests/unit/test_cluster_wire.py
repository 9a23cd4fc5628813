"""The cluster's log records (ingest/cluster/wire.py) and partitions (ingest/cluster/partitions.py).

A batch decoded from MQTT, cut into records and decoded again on the other side of the log, must
give the same columns, events and statuses as the MQTT decoder gave: every documented example of
every kind is sent through. A record that is not ours is a typed error naming it, never an
exception.
"""

from __future__ import annotations

import math
import subprocess
import sys

import msgspec
import numpy as np
import pytest

from ingest.cluster import WIRE_VERSION, decode_records, encode_batch, partition_of, registry_key
from sensors import TelemetryDecoder
from sensors.codec import DecodedBatch
from sensors.examples import EXAMPLES, T0

NOW_S = T0 / 1000 + 3_600.0


@pytest.fixture
def dec() -> TelemetryDecoder:
    return TelemetryDecoder(clock=lambda: NOW_S)


def _same_columns(a: DecodedBatch, b: DecodedBatch) -> None:
    assert a.telemetry.keys() == b.telemetry.keys()
    for kind, ca in a.telemetry.items():
        cb = b.telemetry[kind]
        assert ca.site.tolist() == cb.site.tolist()
        assert ca.device_id.tolist() == cb.device_id.tolist()
        np.testing.assert_array_equal(ca.ts_ms, cb.ts_ms)
        np.testing.assert_array_equal(ca.seq, cb.seq)
        assert ca.values.keys() == cb.values.keys()
        for name, col in ca.values.items():
            np.testing.assert_array_equal(col, cb.values[name], err_msg=f"{kind}.{name}")
        for name, arrays in ca.arrays.items():
            for x, y in zip(arrays, cb.arrays[name], strict=True):
                assert (x is None) == (y is None)
                if x is not None and y is not None:
                    np.testing.assert_array_equal(x, y)


def test_every_valid_example_crosses_the_log_unchanged(dec: TelemetryDecoder) -> None:
    valid = [(e.topic, e.payload) for e in EXAMPLES if not e.rejected_because]
    before = dec.decode_batch(valid)
    assert before.readings > 5
    assert before.events
    assert before.statuses
    records = encode_batch(before)
    after = decode_records([r.data for r in records], dec)
    assert after.errors == []
    _same_columns(before, after)
    assert [(e.device_id, e.ts_ms, e.event) for e in before.events] == [
        (e.device_id, e.ts_ms, e.event) for e in after.events
    ]
    assert [(s.device_id, s.status) for s in before.statuses] == [
        (s.device_id, s.status) for s in after.statuses
    ]
    # Each reading's id is the store's key, so the stream deduplicates as the store does.
    ids = [r.msg_id for r in records if r.msg_id and r.msg_id.startswith("r:")]
    assert len(ids) == before.readings == len(set(ids))


def test_unreported_fields_stay_unreported(dec: TelemetryDecoder) -> None:
    topic = "boltwatch/v1/site-a/cbolt/b1/telemetry"
    before = dec.decode(topic, b'{"ts": %d, "seq": 3, "preload_kn": 40.5}' % T0)
    after = decode_records([r.data for r in encode_batch(before)], dec)
    cols = after.telemetry[next(iter(after.telemetry))]
    assert cols.values["preload_kn"].tolist() == [40.5]
    assert math.isnan(float(cols.values["temp_c"][0]))
    records = encode_batch(before)
    assert records[0].msg_id == f"r:b1:{T0}:3"
    assert records[0].device_id == "b1"


@pytest.mark.parametrize(
    ("data", "field", "words"),
    [
        (b"", "record", "not a boltwatch log record"),
        (b"\xc1garbage", "record", "not a boltwatch log record"),
        (msgspec.msgpack.encode([9, WIRE_VERSION, "s"]), "record", "Invalid value 9"),
        (msgspec.msgpack.encode([1, WIRE_VERSION + 1, "s", {"kind": "cbolt"}]), "record", ""),
        (
            msgspec.msgpack.encode(
                [1, WIRE_VERSION, "s", {"kind": "cbolt", "ts": T0, "seq": 1, "preload_kn": 5.0}]
            ),
            "record.reading.device_id",
            "missing",
        ),
        (
            msgspec.msgpack.encode(
                [
                    1,
                    WIRE_VERSION,
                    "s",
                    {"kind": "cbolt", "device_id": "b", "ts": T0, "seq": 1, "preload_kn": -9e9},
                ]
            ),
            "record[3].preload_kn",
            "Expected `float`",
        ),
    ],
)
def test_a_foreign_record_is_a_typed_error(
    dec: TelemetryDecoder, data: bytes, field: str, words: str
) -> None:
    good = encode_batch(
        dec.decode(
            "boltwatch/v1/s/cbolt/b1/telemetry", b'{"ts": %d, "seq": 1, "preload_kn": 5}' % T0
        )
    )[0].data
    out = decode_records([good, data, good], dec)
    assert [i for i, _ in out.errors] == [1]
    error = out.errors[0][1]
    assert error.field.startswith(field.split("[", maxsplit=1)[0]), error
    assert words in error.reason, error
    assert out.readings == 2  # the neighbours are kept
    assert out.count == 3


def test_a_wrong_version_is_named(dec: TelemetryDecoder) -> None:
    reading = {"kind": "cbolt", "device_id": "b", "ts": T0, "seq": 1, "preload_kn": 5.0}
    out = decode_records([msgspec.msgpack.encode([1, WIRE_VERSION + 1, "s", reading])], dec)
    ((_, error),) = out.errors
    assert error.field == "record.version"
    assert str(WIRE_VERSION + 1) in error.reason


def test_partitions_are_stable_across_processes() -> None:
    keys = [f"joint:T{i}" for i in range(50)] + [f"bolt-{i:04d}" for i in range(50)]
    here = [partition_of(k, 64) for k in keys]
    code = f"from ingest.cluster import partition_of;print([partition_of(k, 64) for k in {keys!r}])"
    other = subprocess.run(  # another interpreter: another string-hash salt
        [sys.executable, "-c", code], capture_output=True, text=True, check=True
    ).stdout
    assert other.strip() == str(here)
    assert len(set(here)) > 32  # spread over the partitions
    assert all(0 <= p < 64 for p in here)
    with pytest.raises(ValueError, match="partitions"):
        partition_of("x", 0)


def test_bolts_of_a_joint_share_a_partition() -> None:
    joints = {"b1": "T1-flange", "b2": "T1-flange", "m1": None}
    key = registry_key(joints.get)
    assert key("b1") == key("b2") == "joint:T1-flange"
    assert key("m1") == "m1"
    assert key("unknown") == "unknown"
