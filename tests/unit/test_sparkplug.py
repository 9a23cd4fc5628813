"""Sparkplug B decoding: payloads from pysparkplug's own encoder become the contract's readings."""

from __future__ import annotations

import math

import numpy as np
import pysparkplug as psp
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from sensors.codec import MAX_PAYLOAD_BYTES, DecodedBatch
from sensors.errors import PayloadError, TopicError
from sensors.schema import DeviceKind
from sensors.sparkplug import (
    SparkplugDecoder,
    encode_dbirth,
    encode_ddata,
    encode_nbirth,
    encode_ndeath,
)

T0 = 1_772_323_500_000  # payload timestamps (ms)
NOW_S = T0 / 1000 + 3_600.0  # the receiver's clock: an hour later

DT = psp.DataType
MT = psp.MessageType


@pytest.fixture
def dec() -> SparkplugDecoder:
    return SparkplugDecoder(clock=lambda: NOW_S)


def topic(mt: psp.MessageType, device: str | None = "dev-1", edge: str = "edge-1") -> str:
    return str(psp.Topic(group_id="fablab", message_type=mt, edge_node_id=edge, device_id=device))


def metric(
    name: str | None,
    value: object,
    datatype: psp.DataType = DT.DOUBLE,
    *,
    alias: int | None = None,
    ts: int | None = None,
    historical: bool = False,
) -> psp.Metric:
    return psp.Metric(
        timestamp=ts,
        name=name,
        datatype=datatype,
        value=value,  # type: ignore[arg-type]
        alias=alias,
        is_historical=historical,
    )


def kind_metric(kind: str) -> psp.Metric:
    return metric("kind", kind, DT.STRING)


def dbirth(kind: str, *metrics: psp.Metric, ts: int = T0) -> bytes:
    return bytes(psp.DBirth(timestamp=ts, seq=1, metrics=(kind_metric(kind), *metrics)).encode())


def ddata(*metrics: psp.Metric, ts: int = T0 + 1_000, include_dtypes: bool = False) -> bytes:
    payload = psp.DData(timestamp=ts, seq=2, metrics=metrics)
    return bytes(payload.encode(include_dtypes=include_dtypes))


def nbirth(*metrics: psp.Metric, bd_seq: int = 7, ts: int = T0) -> bytes:
    all_metrics = (
        metric("bdSeq", bd_seq, DT.INT64),
        metric("Node Control/Rebirth", False, DT.BOOLEAN),
        *metrics,
    )
    return bytes(psp.NBirth(timestamp=ts, seq=0, metrics=all_metrics).encode())


def ndeath(bd_seq: int = 7) -> bytes:
    return bytes(
        psp.NDeath(timestamp=None, bd_seq_metric=metric("bdSeq", bd_seq, DT.INT64)).encode()
    )


def ddeath(ts: int = T0 + 5_000) -> bytes:
    return bytes(psp.DDeath(timestamp=ts, seq=3).encode())


def value(out: DecodedBatch, kind: DeviceKind, field: str) -> list[float]:
    return [float(x) for x in out.telemetry[kind].values[field]]


def rejected(dec: SparkplugDecoder, t: str, payload: bytes) -> PayloadError:
    with pytest.raises(PayloadError) as info:
        dec.decode(t, payload)
    return info.value


# -- births and data of every kind ---------------------------------------------------------------

# kind -> (birth metrics, data metrics), checked field by field after decoding.
CASES: dict[DeviceKind, tuple[dict[str, float], dict[str, float]]] = {
    DeviceKind.CBOLT: (
        {"preload_kn": 41.5, "temp_c": 18.0, "battery_v": 3.6, "rssi_dbm": -71.0},
        {"preload_kn": 41.2, "temp_c": 18.5},
    ),
    DeviceKind.PRINTER3D: (
        {"hotend_c": 24.0, "bed_c": 23.5},
        {"hotend_c": 181.2, "hotend_target_c": 215.0, "fan_pct": 40.0},
    ),
    DeviceKind.LASER_CUTTER: (
        {"chiller_water_c": 17.9, "flow_lpm": 3.2},
        {"chiller_water_c": 19.4, "tube_current_ma": 18.0, "laser_power_pct": 65.0},
    ),
    DeviceKind.CNC_MILL: (
        {"spindle_rpm": 0.0, "vib_rms_mms": 0.1},
        {"spindle_rpm": 12_000.0, "spindle_a": 4.2, "vib_rms_mms": 2.7},
    ),
}


@pytest.mark.parametrize("kind", list(CASES), ids=[k.value for k in CASES])
def test_dbirth_and_ddata_decode_to_readings(dec: SparkplugDecoder, kind: DeviceKind) -> None:
    born, data = CASES[kind]
    b = dec.decode(
        topic(MT.DBIRTH),
        dbirth(kind.value, *(metric(f"Telemetry/{n}", v) for n, v in born.items())),
    )
    assert [(s.site, s.kind, s.device_id, s.status.state, s.status.ts) for s in b.statuses] == [
        ("fablab", kind, "dev-1", "online", T0)
    ]
    cols = b.telemetry[kind]
    assert list(cols.site) == ["fablab"]
    assert list(cols.device_id) == ["dev-1"]
    assert cols.ts_ms.tolist() == [T0]
    assert cols.seq.tolist() == [T0]  # no `seq` metric: the timestamp
    for name, v in born.items():
        assert value(b, kind, name) == [v]
    unreported = set(cols.values) - set(born)
    assert all(math.isnan(cols.values[n][0]) for n in unreported)

    d = dec.decode(
        topic(MT.DDATA),
        ddata(
            *(metric(f"Telemetry/{n}", v) for n, v in data.items()),
            metric("seq", 42, DT.UINT64),
            include_dtypes=True,  # metrics the birth did not declare carry their datatype
        ),
    )
    assert d.statuses == []
    assert d.telemetry[kind].ts_ms.tolist() == [T0 + 1_000]
    assert d.telemetry[kind].seq.tolist() == [42]
    assert d.telemetry[kind].message.tolist() == [0]
    for name, v in data.items():
        assert value(d, kind, name) == [v]


def test_nbirth_and_ndata_are_the_edge_nodes_own_gateway_readings(dec: SparkplugDecoder) -> None:
    b = dec.decode(
        topic(MT.NBIRTH, None),
        nbirth(
            metric("uptime_s", 12.0, alias=1),
            metric("cpu_temp_c", 41.0, DT.FLOAT, alias=2),
            metric("Node Info/Firmware", "1.2.3", DT.STRING),
            bd_seq=7,
        ),
    )
    [status] = b.statuses
    assert (status.kind, status.device_id, status.status.state) == (
        DeviceKind.GATEWAY,
        "edge-1",
        "online",
    )
    assert status.status.boot_id == "7"
    assert value(b, DeviceKind.GATEWAY, "uptime_s") == [12.0]
    assert value(b, DeviceKind.GATEWAY, "cpu_temp_c") == [41.0]

    # NDATA by alias only, without datatypes (pysparkplug's default encoding).
    d = dec.decode(
        topic(MT.NDATA, None),
        bytes(
            psp.NData(
                timestamp=T0 + 1_000, seq=1, metrics=(metric(None, 13.0, DT.DOUBLE, alias=1),)
            ).encode()
        ),
    )
    cols = d.telemetry[DeviceKind.GATEWAY]
    assert list(cols.device_id) == ["edge-1"]
    assert value(d, DeviceKind.GATEWAY, "uptime_s") == [13.0]
    assert math.isnan(value(d, DeviceKind.GATEWAY, "cpu_temp_c")[0])


def test_ndata_before_nbirth_is_rejected(dec: SparkplugDecoder) -> None:
    payload = bytes(psp.NData(timestamp=T0, seq=1, metrics=(metric("uptime_s", 1.0),)).encode())
    err = rejected(dec, topic(MT.NDATA, None), payload)
    assert err.field == "payload"
    assert "before its NBIRTH" in err.reason


def test_waveform_metric_fills_the_array_column(dec: SparkplugDecoder) -> None:
    dec.decode(topic(MT.DBIRTH), dbirth("cnc_mill", metric("spindle_rpm", 0.0)))
    wave = (0.5, -1.25, 2.0, 0.0)
    out = dec.decode(
        topic(MT.DDATA),
        ddata(
            metric("vib_ms2", wave, DT.DOUBLE_ARRAY),
            metric("fs_hz", 25_600.0),
            include_dtypes=True,
        ),
    )
    cols = out.telemetry[DeviceKind.CNC_MILL]
    [arr] = cols.arrays["vib_ms2"]
    assert arr is not None
    np.testing.assert_array_equal(arr, np.array(wave))
    assert value(out, DeviceKind.CNC_MILL, "fs_hz") == [25_600.0]


# -- aliases and births ----------------------------------------------------------------------------


def test_ddata_metrics_by_alias_resolve_through_the_dbirth(dec: SparkplugDecoder) -> None:
    dec.decode(
        topic(MT.DBIRTH),
        dbirth(
            "cbolt",
            metric("Telemetry/preload_kn", 40.0, alias=10),
            metric("Telemetry/temp_c", 20.0, DT.FLOAT, alias=11),
        ),
    )
    # No names, no datatypes: only the birth knows what alias 10 and 11 are.
    out = dec.decode(
        topic(MT.DDATA),
        ddata(metric(None, 39.5, DT.DOUBLE, alias=10), metric(None, 21.5, DT.FLOAT, alias=11)),
    )
    assert value(out, DeviceKind.CBOLT, "preload_kn") == [39.5]
    assert value(out, DeviceKind.CBOLT, "temp_c") == [21.5]


def test_an_alias_the_birth_did_not_declare_is_rejected(dec: SparkplugDecoder) -> None:
    dec.decode(topic(MT.DBIRTH), dbirth("cbolt", metric("preload_kn", 40.0, alias=10)))
    err = rejected(dec, topic(MT.DDATA), ddata(metric(None, 1.0, DT.DOUBLE, alias=99)))
    assert err.field == "metrics[alias 99]"
    assert "rebirth" in err.reason


def test_ddata_before_dbirth_is_rejected(dec: SparkplugDecoder) -> None:
    err = rejected(dec, topic(MT.DDATA), ddata(metric("preload_kn", 40.0), include_dtypes=True))
    assert err.field == "payload"
    assert err.reason == (
        "DDATA for device 'dev-1' before its DBIRTH: kind and aliases unknown (request a rebirth)"
    )


def test_nbirth_forgets_the_births_of_its_devices(dec: SparkplugDecoder) -> None:
    dec.decode(topic(MT.DBIRTH), dbirth("cbolt", metric("preload_kn", 40.0)))
    dec.decode(topic(MT.DBIRTH, "other-edge-dev", edge="edge-2"), dbirth("cbolt"))
    assert dec.decode(topic(MT.DDATA), ddata(metric("preload_kn", 40.5))).readings == 1

    dec.decode(topic(MT.NBIRTH, None), nbirth(bd_seq=8))
    err = rejected(dec, topic(MT.DDATA), ddata(metric("preload_kn", 40.5)))
    assert "before its DBIRTH" in err.reason
    # Another edge node's devices are not affected.
    other = dec.decode(
        topic(MT.DDATA, "other-edge-dev", edge="edge-2"),
        ddata(metric("preload_kn", 1.0), include_dtypes=True),
    )
    assert other.readings == 1
    # Born again, the device decodes again.
    dec.decode(topic(MT.DBIRTH), dbirth("cbolt", metric("preload_kn", 40.0)))
    assert dec.decode(topic(MT.DDATA), ddata(metric("preload_kn", 40.5))).readings == 1


def test_dbirth_needs_a_valid_kind(dec: SparkplugDecoder) -> None:
    no_kind = bytes(psp.DBirth(timestamp=T0, seq=0, metrics=(metric("preload_kn", 1.0),)).encode())
    err = rejected(dec, topic(MT.DBIRTH), no_kind)
    assert err.field == "metrics[kind]"
    assert "cbolt" in err.reason

    err = rejected(dec, topic(MT.DBIRTH), dbirth("toaster", metric("preload_kn", 1.0)))
    assert err.field == "metrics[kind]"
    assert "'toaster' is not a device kind" in err.reason


def test_a_rejected_birth_leaves_no_state(dec: SparkplugDecoder) -> None:
    err = rejected(dec, topic(MT.DBIRTH), dbirth("cbolt", metric("preload_kn", 1e9)))
    assert err.field == "metrics[preload_kn]"
    err = rejected(dec, topic(MT.DDATA), ddata(metric("preload_kn", 1.0), include_dtypes=True))
    assert "before its DBIRTH" in err.reason


def test_a_birth_without_a_value_for_a_required_field_has_no_reading_but_counts(
    dec: SparkplugDecoder,
) -> None:
    null_preload = psp.Metric(
        timestamp=None, name="preload_kn", datatype=DT.DOUBLE, value=None, is_null=True
    )
    b = dec.decode(topic(MT.DBIRTH), dbirth("cbolt", null_preload, metric("temp_c", 20.0)))
    assert b.readings == 0
    assert [s.status.state for s in b.statuses] == ["online"]
    assert dec.decode(topic(MT.DDATA), ddata(metric("preload_kn", 40.0))).readings == 1


# -- errors name the metric ----------------------------------------------------------------------


def test_unknown_metric_is_rejected_naming_it(dec: SparkplugDecoder) -> None:
    dec.decode(topic(MT.DBIRTH), dbirth("printer3d", metric("hotend_c", 20.0)))
    err = rejected(
        dec,
        topic(MT.DDATA),
        ddata(metric("hotend_c", 200.0), metric("Telemetry/nozzle_k", 1.0), include_dtypes=True),
    )
    assert err.field == "metrics[Telemetry/nozzle_k]"
    assert "unknown metric for a printer3d" in err.reason
    assert "hotend_c" in err.reason  # lists the known fields


def test_out_of_range_value_is_rejected_naming_the_metric(dec: SparkplugDecoder) -> None:
    dec.decode(topic(MT.DBIRTH), dbirth("cbolt", metric("Telemetry/preload_kn", 40.0, alias=1)))
    err = rejected(dec, topic(MT.DDATA), ddata(metric(None, 12_000.0, DT.DOUBLE, alias=1)))
    assert err.field == "metrics[Telemetry/preload_kn]"
    assert "<= 10000.0" in err.reason
    assert "12000.0" in err.reason


@pytest.mark.parametrize(
    ("bad", "expected"),
    [
        (metric("temp_c", "warm", DT.STRING), "got `str`"),
        (metric("temp_c", True, DT.BOOLEAN), "got `bool`"),
        (metric("temp_c", math.nan), ">= -60.0"),
    ],
    ids=["string", "boolean", "nan"],
)
def test_value_of_the_wrong_type_is_rejected_naming_the_metric(
    dec: SparkplugDecoder, bad: psp.Metric, expected: str
) -> None:
    dec.decode(topic(MT.DBIRTH), dbirth("cbolt", metric("preload_kn", 40.0)))
    err = rejected(
        dec, topic(MT.DDATA), ddata(metric("preload_kn", 40.0), bad, include_dtypes=True)
    )
    assert err.field == "metrics[temp_c]"
    assert expected in err.reason


def test_a_data_reading_must_carry_the_required_fields(dec: SparkplugDecoder) -> None:
    dec.decode(topic(MT.DBIRTH), dbirth("cbolt", metric("preload_kn", 40.0)))
    err = rejected(dec, topic(MT.DDATA), ddata(metric("temp_c", 21.0), include_dtypes=True))
    assert err.field == "metrics[preload_kn]"
    assert "always carries it" in err.reason


def test_implausible_timestamps_are_rejected(dec: SparkplugDecoder) -> None:
    dec.decode(topic(MT.DBIRTH), dbirth("cbolt", metric("preload_kn", 40.0)))
    err = rejected(dec, topic(MT.DDATA), ddata(metric("preload_kn", 1.0), ts=1_772_323_500))
    assert err.field == "timestamp"
    assert "seconds sent as milliseconds" in err.reason
    future = T0 + 3 * 86_400_000
    err = rejected(dec, topic(MT.DDATA), ddata(metric("preload_kn", 1.0, ts=future)))
    assert err.field == "metrics[preload_kn].timestamp"
    assert "future" in err.reason


def test_oversized_payload_is_rejected_unparsed(dec: SparkplugDecoder) -> None:
    err = rejected(dec, topic(MT.DBIRTH), b"\x00" * (MAX_PAYLOAD_BYTES + 1))
    assert err.field == "payload"
    assert "limit" in err.reason


@pytest.mark.parametrize(
    "bad_topic",
    [
        "spBv2.0/fablab/DDATA/edge-1/dev-1",
        "spBv1.0/fablab/XDATA/edge-1/dev-1",
        "spBv1.0/fablab/DDATA/edge-1",
        "spBv1.0/fablab/NDATA/edge-1/dev-1",
        "spBv1.0/fab lab/DDATA/edge-1/dev-1",
        "spBv1.0/fablab/DDATA/edge-1/dev.1",
        "spBv1.0/fablab/STATE/edge-1/dev-1",
        "spBv1.0/fablab",
        "spBv1.0/" + "x" * 300,
    ],
)
def test_malformed_topics_are_rejected(dec: SparkplugDecoder, bad_topic: str) -> None:
    err = rejected(dec, bad_topic, ddata(metric("preload_kn", 1.0)))
    assert isinstance(err, TopicError)
    assert err.field == "topic"


# -- several readings in one message -------------------------------------------------------------


def test_metrics_with_different_timestamps_are_separate_readings(dec: SparkplugDecoder) -> None:
    dec.decode(topic(MT.DBIRTH), dbirth("cbolt", metric("preload_kn", 40.0, alias=1)))
    t1, t2 = T0 + 10_000, T0 + 20_000
    out = dec.decode(
        topic(MT.DDATA),
        ddata(
            # Two historical readings replayed from the device's buffer, then the current one.
            metric("preload_kn", 40.1, ts=t1, historical=True),
            metric("temp_c", 20.1, ts=t1, historical=True),
            metric("preload_kn", 40.2, ts=t2, historical=True),
            metric("preload_kn", 40.3),
            ts=T0 + 30_000,
            include_dtypes=True,
        ),
    )
    cols = out.telemetry[DeviceKind.CBOLT]
    assert cols.ts_ms.tolist() == [t1, t2, T0 + 30_000]
    assert cols.seq.tolist() == [t1, t2, T0 + 30_000]
    assert value(out, DeviceKind.CBOLT, "preload_kn") == [40.1, 40.2, 40.3]
    temp = value(out, DeviceKind.CBOLT, "temp_c")
    assert temp[0] == 20.1
    assert math.isnan(temp[1])
    assert cols.message.tolist() == [0, 0, 0]


def test_a_metric_twice_at_one_timestamp_is_rejected(dec: SparkplugDecoder) -> None:
    dec.decode(topic(MT.DBIRTH), dbirth("cbolt", metric("preload_kn", 40.0)))
    err = rejected(
        dec,
        topic(MT.DDATA),
        ddata(metric("preload_kn", 1.0), metric("Telemetry/preload_kn", 2.0), include_dtypes=True),
    )
    assert err.field == "metrics[Telemetry/preload_kn]"


# -- deaths, commands, batches -------------------------------------------------------------------


def test_ndeath_reports_the_edge_node_and_its_devices_offline(dec: SparkplugDecoder) -> None:
    dec.decode(topic(MT.NBIRTH, None), nbirth(bd_seq=7))
    dec.decode(topic(MT.DBIRTH), dbirth("cbolt", metric("preload_kn", 40.0)))
    dec.decode(topic(MT.DBIRTH, "prusa-1"), dbirth("printer3d", metric("hotend_c", 20.0)))

    # A late will of an older session (bdSeq 6) is ignored: this session is alive.
    stale = dec.decode(topic(MT.NDEATH, None), ndeath(bd_seq=6))
    assert stale.statuses == []
    assert stale.errors == []
    assert dec.decode(topic(MT.DDATA), ddata(metric("preload_kn", 40.5))).readings == 1

    out = dec.decode(topic(MT.NDEATH, None), ndeath(bd_seq=7))
    assert [(s.kind, s.device_id, s.status.state) for s in out.statuses] == [
        (DeviceKind.GATEWAY, "edge-1", "offline"),
        (DeviceKind.CBOLT, "dev-1", "offline"),
        (DeviceKind.PRINTER3D, "prusa-1", "offline"),
    ]
    assert out.readings == 0
    err = rejected(dec, topic(MT.DDATA), ddata(metric("preload_kn", 40.5), include_dtypes=True))
    assert "before its DBIRTH" in err.reason


def test_ddeath_reports_the_device_offline_and_forgets_its_birth(dec: SparkplugDecoder) -> None:
    dec.decode(topic(MT.DBIRTH), dbirth("laser_cutter", metric("flow_lpm", 3.0)))
    out = dec.decode(topic(MT.DDEATH), ddeath(ts=T0 + 5_000))
    [status] = out.statuses
    assert (status.site, status.kind, status.device_id) == (
        "fablab",
        DeviceKind.LASER_CUTTER,
        "dev-1",
    )
    assert (status.status.state, status.status.ts) == ("offline", T0 + 5_000)
    err = rejected(dec, topic(MT.DDATA), ddata(metric("flow_lpm", 3.0), include_dtypes=True))
    assert "before its DBIRTH" in err.reason
    # The death of a device never born: nothing to report, not an error.
    assert dec.decode(topic(MT.DDEATH, "ghost"), ddeath()).statuses == []


def test_ndeath_without_bdseq_is_rejected(dec: SparkplugDecoder) -> None:
    err = rejected(dec, topic(MT.NDEATH, None), b"")
    assert err.field == "payload"
    assert "bdSeq" in err.reason


@pytest.mark.parametrize(
    "t",
    ["spBv1.0/STATE/scada-host", "spBv1.0/fablab/NCMD/edge-1", "spBv1.0/fablab/DCMD/edge-1/dev-1"],
)
def test_state_and_commands_are_not_telemetry_and_never_raise(
    dec: SparkplugDecoder, t: str
) -> None:
    out = dec.decode(t, b"\xff not protobuf, not json")
    assert out.commands == [0]
    assert out.readings == 0
    assert out.statuses == []


def test_decode_batch_reports_bad_messages_and_keeps_the_good(dec: SparkplugDecoder) -> None:
    out = dec.decode_batch(
        [
            (topic(MT.DBIRTH), dbirth("cbolt", metric("preload_kn", 40.0))),
            (topic(MT.DDATA), b"\xff\xff garbage"),
            (topic(MT.DDATA), ddata(metric("preload_kn", 40.5))),
            (topic(MT.DDATA, "unborn"), ddata(metric("preload_kn", 1.0))),
            ("spBv1.0/fablab/DCMD/edge-1/dev-1", b""),
        ]
    )
    assert out.count == 5
    assert [i for i, _ in out.errors] == [1, 3]
    assert out.errors[0][1].field == "payload"
    assert out.commands == [4]
    cols = out.telemetry[DeviceKind.CBOLT]
    assert cols.message.tolist() == [0, 2]
    assert value(out, DeviceKind.CBOLT, "preload_kn") == [40.0, 40.5]


# -- our encoder (the simulator's) ---------------------------------------------------------------


def test_our_encoders_round_trip(dec: SparkplugDecoder) -> None:
    aliases = {"preload_kn": 1, "temp_c": 2}
    n = dec.decode(topic(MT.NBIRTH, None), encode_nbirth({"uptime_s": 5.0}, T0, bd_seq=3))
    assert n.statuses[0].status.boot_id == "3"
    b = dec.decode(
        topic(MT.DBIRTH),
        encode_dbirth(
            DeviceKind.CBOLT, {"preload_kn": 40.0, "temp_c": 18.0}, T0, seq=9, aliases=aliases
        ),
    )
    assert b.telemetry[DeviceKind.CBOLT].seq.tolist() == [9]
    d = dec.decode(
        topic(MT.DDATA),
        encode_ddata({"preload_kn": 40.5, "temp_c": 19.0}, T0 + 1_000, 300, aliases=aliases),
    )
    cols = d.telemetry[DeviceKind.CBOLT]
    assert cols.seq.tolist() == [300]
    assert value(d, DeviceKind.CBOLT, "temp_c") == [19.0]
    psp_payload = psp.DData.decode(encode_ddata({"preload_kn": 1.0}, T0, 300))
    assert psp_payload.seq == 300 % 256
    wave = dec.decode(
        topic(MT.DBIRTH, "mill"), encode_dbirth("cnc_mill", {"vib_ms2": [1.0, 2.0]}, T0)
    )
    [arr] = wave.telemetry[DeviceKind.CNC_MILL].arrays["vib_ms2"]
    assert arr is not None
    assert arr.tolist() == [1.0, 2.0]
    out = dec.decode(topic(MT.NDEATH, None), encode_ndeath(3))
    assert [s.device_id for s in out.statuses] == ["edge-1", "dev-1", "mill"]


# -- robustness ----------------------------------------------------------------------------------

_VALID = [
    nbirth(metric("uptime_s", 12.0, alias=1)),
    dbirth(
        "cnc_mill",
        metric("spindle_rpm", 1.0, alias=1),
        metric("vib_ms2", (1.0, 2.0), DT.DOUBLE_ARRAY, alias=2),
    ),
    ddata(metric(None, 5.0, DT.DOUBLE, alias=1), metric("vib_ms2", (3.0,), DT.DOUBLE_ARRAY)),
    ddata(metric("seq", 5, DT.UINT64), metric("Telemetry/spindle_rpm", 2.0, ts=T0)),
    ndeath(),
    ddeath(),
]
_TOPICS = [
    topic(MT.NBIRTH, None),
    topic(MT.NDATA, None),
    topic(MT.NDEATH, None),
    topic(MT.DBIRTH),
    topic(MT.DDATA),
    topic(MT.DDEATH),
]


@st.composite
def payloads(draw: st.DrawFn) -> bytes:
    """Random bytes, or a valid payload with some bytes changed (reaches deeper decode paths)."""
    if draw(st.booleans()):
        return draw(st.binary(max_size=200))
    data = bytearray(draw(st.sampled_from(_VALID)))
    for _ in range(draw(st.integers(1, 4))):
        pos = draw(st.integers(0, len(data) - 1))
        data[pos] = draw(st.integers(0, 255))
    return bytes(data)


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(t=st.sampled_from(_TOPICS), payload=payloads())
def test_any_bytes_decode_or_raise_payload_error_only(t: str, payload: bytes) -> None:
    dec = SparkplugDecoder(clock=lambda: NOW_S)
    # Births first, so DATA payloads also go through alias and datatype resolution.
    dec.decode(topic(MT.NBIRTH, None), _VALID[0])
    dec.decode(topic(MT.DBIRTH), _VALID[1])
    try:
        dec.decode(t, payload)
    except PayloadError as exc:
        error: PayloadError | None = exc
    else:
        error = None
    assert error is None or (error.field and error.reason)
    out = dec.decode_batch([(t, payload), (topic(MT.DDATA), payload)])
    assert out.count == 2


def test_birth_state_is_bounded() -> None:
    dec = SparkplugDecoder(clock=lambda: NOW_S, max_births=3)
    dec.decode(topic(MT.NBIRTH, None), encode_nbirth({}, T0, bd_seq=1))
    for dev in ("a", "b"):
        dec.decode(topic(MT.DBIRTH, dev), encode_dbirth(DeviceKind.PRINTER3D, {}, T0))
    with pytest.raises(PayloadError, match="more than 3"):
        dec.decode(topic(MT.DBIRTH, "c"), encode_dbirth(DeviceKind.PRINTER3D, {}, T0))
    # A device born again (a rebirth) is not a new entry and is still accepted.
    dec.decode(topic(MT.DBIRTH, "a"), encode_dbirth(DeviceKind.PRINTER3D, {"bed_c": 20.0}, T0))
