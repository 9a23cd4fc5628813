"""The embedded store on real SQLite files: round trips, idempotency, state, rollups, export."""

from __future__ import annotations

import io
import math
import os
import sqlite3
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import msgspec
import numpy as np
import pytest

from ingest.store import (
    DB_FILE,
    HOUR_MS,
    MINUTE_MS,
    SCHEMA_VERSION,
    DeadLetter,
    Store,
    StoreError,
)
from sensors.codec import DecodedBatch, TelemetryDecoder
from sensors.schema import FIELD_INFO, READING_TYPES, REQUIRED_FIELDS, DeviceKind

T0 = 1_772_323_500_000  # 2026-03-01T00:05:00Z
NOW_S = T0 / 1000 + 3_600.0  # the decoder's clock: an hour after T0
DAY_MS = 86_400_000

_json = msgspec.json.Encoder()


@pytest.fixture
def dec() -> TelemetryDecoder:
    return TelemetryDecoder(clock=lambda: NOW_S)


@pytest.fixture
def store(tmp_path: Path) -> Iterator[Store]:
    with Store(tmp_path / "store") as s:
        yield s


def topic(kind: str, dev: str, channel: str = "telemetry", site: str = "site-a") -> str:
    return f"boltwatch/v1/{site}/{kind}/{dev}/{channel}"


def reading(kind: str, dev: str, site: str = "site-a", **fields: Any) -> tuple[str, bytes]:
    return topic(kind, dev, "telemetry", site), _json.encode(fields)


def bolt(dev: str, ts: int, seq: int, preload_kn: float, **more: Any) -> tuple[str, bytes]:
    return reading("cbolt", dev, ts=ts, seq=seq, preload_kn=preload_kn, **more)


def decode(dec: TelemetryDecoder, *messages: tuple[str, bytes]) -> DecodedBatch:
    batch = dec.decode_batch(messages)
    assert batch.errors == []
    return batch


def raw(store: Store, sql: str, *params: Any) -> list[tuple[Any, ...]]:
    """What another process reading the file sees (committed data only)."""
    with sqlite3.connect(store.file) as conn:
        return conn.execute(sql, params).fetchall()


# -- round trips ----------------------------------------------------------------------------------


def _full_reading(kind: DeviceKind) -> dict[str, Any]:
    """Every field of the kind set, each to a different value inside its range."""
    out: dict[str, Any] = {}
    for j, info in enumerate(FIELD_INFO[kind]):
        if info.name == "vib_ms2":
            out[info.name] = [0.5, -1.25, 3.0, 1e-3]
        else:
            out[info.name] = min(max(info.lo, 0.0) + 1.5 + j, info.hi)
    return out


@pytest.mark.parametrize("kind", list(READING_TYPES))
def test_round_trip_every_kind(store: Store, dec: TelemetryDecoder, kind: DeviceKind) -> None:
    full = _full_reading(kind)
    sparse = {f: full[f] for f in REQUIRED_FIELDS[kind] if f != "device_id"}
    batch = decode(
        dec,
        reading(kind.value, "dev-1", ts=T0, seq=1, **full),
        reading(kind.value, "dev-1", ts=T0 + 1_000, seq=2, **sparse),
    )
    result = store.write(batch, received_ms=T0 + 2_000)
    assert (result.stored, result.duplicates, result.by_kind) == (2, 0, {kind.value: 2})

    cols = store.readings(kind)
    assert cols.kind is kind
    assert cols.device_id.tolist() == ["dev-1", "dev-1"]
    assert cols.site.tolist() == ["site-a", "site-a"]
    assert cols.ts_ms.tolist() == [T0, T0 + 1_000]
    assert cols.seq.tolist() == [1, 2]
    assert cols.ts_ms.dtype == np.int64
    decoded = batch.telemetry[kind]
    assert set(cols.values) == set(decoded.values)
    for name, values in cols.values.items():
        assert values.dtype == np.float64
        np.testing.assert_array_equal(values, decoded.values[name], err_msg=name)
    for name, arrays in cols.arrays.items():
        first, second = arrays
        assert first is not None
        np.testing.assert_array_equal(first, np.asarray(full[name], np.float32))
        assert second is None


def test_nan_is_stored_as_null_and_read_back_as_nan(store: Store, dec: TelemetryDecoder) -> None:
    store.write(decode(dec, bolt("b1", T0, 1, 50.0)), received_ms=T0)
    assert raw(store, "SELECT preload_kn, temp_c, battery_v, rssi_dbm FROM readings_cbolt") == [
        (50.0, None, None, None)
    ]
    cols = store.readings(DeviceKind.CBOLT)
    assert cols.values["preload_kn"].tolist() == [50.0]
    assert math.isnan(cols.values["temp_c"][0])


def test_waveform_is_a_float32_little_endian_blob_with_its_rate(
    store: Store, dec: TelemetryDecoder
) -> None:
    wave = [0.25, -2.5, 9.75]
    batch = decode(dec, reading("cnc_mill", "m1", ts=T0, seq=1, vib_ms2=wave, fs_hz=25_600.0))
    store.write(batch, received_ms=T0)
    blob, fs_hz = raw(store, "SELECT vib_ms2, fs_hz FROM readings_cnc_mill")[0]
    assert blob == np.asarray(wave, "<f4").tobytes()
    assert fs_hz == 25_600.0


def test_filters_and_order(store: Store, dec: TelemetryDecoder) -> None:
    batch = decode(
        dec,
        bolt("b2", T0 + 2_000, 1, 2.0),
        reading("cbolt", "b1", site="site-b", ts=T0 + 2_000, seq=9, preload_kn=1.0),
        bolt("b2", T0, 0, 3.0),
    )
    store.write(batch, received_ms=T0 + 3_000)
    cols = store.readings(DeviceKind.CBOLT)
    assert list(zip(cols.ts_ms.tolist(), cols.device_id.tolist(), strict=True)) == [
        (T0, "b2"),
        (T0 + 2_000, "b1"),
        (T0 + 2_000, "b2"),
    ]
    assert store.readings(DeviceKind.CBOLT, device_id="b2").seq.tolist() == [0, 1]
    assert store.readings(DeviceKind.CBOLT, site="site-b").device_id.tolist() == ["b1"]
    assert len(store.readings(DeviceKind.CBOLT, since_ms=T0 + 1, until_ms=T0 + 2_001)) == 2
    assert len(store.readings(DeviceKind.CBOLT, until_ms=T0 + 2_000)) == 1
    assert store.readings(DeviceKind.CBOLT, limit=1).device_id.tolist() == ["b2"]
    assert len(store.readings(DeviceKind.LASER_CUTTER)) == 0


# -- idempotency ----------------------------------------------------------------------------------


def test_duplicates_are_ignored_and_counted_exactly(store: Store, dec: TelemetryDecoder) -> None:
    message = bolt("b1", T0, 7, 50.0)
    other = bolt("b1", T0 + 1_000, 8, 51.0)
    first = store.write(decode(dec, message, message, other), received_ms=T0 + 5_000)
    assert (first.stored, first.duplicates) == (2, 1)
    again = store.write(decode(dec, other, message, bolt("b2", T0, 1, 9.0)), received_ms=T0)
    assert (again.stored, again.duplicates, again.by_kind) == (1, 2, {"cbolt": 1})
    assert len(store.readings(DeviceKind.CBOLT)) == 3
    assert store.stats().readings == 3
    # The redelivered copy did not overwrite the stored one (its received_ms is the first's).
    assert raw(store, "SELECT received_ms FROM readings_cbolt WHERE seq = 7") == [(T0 + 5_000,)]


def test_large_batches_go_through_every_insert_size(store: Store, dec: TelemetryDecoder) -> None:
    # 150 readings: 2 INSERTs of 64 rows, 2 of 8 and 6 of 1; some with temp_c, two repeated.
    items = [
        {"ts": T0 + 1_000 * i, "seq": i, "preload_kn": float(i)}
        | ({"temp_c": i / 4} if i % 3 == 0 else {})
        for i in range(148)
    ]
    items += [items[70], items[147]]
    message = (topic("cbolt", "b1"), _json.encode({"readings": items}))
    result = store.write(decode(dec, message), received_ms=T0)
    assert (result.stored, result.duplicates) == (148, 2)
    cols = store.readings(DeviceKind.CBOLT)
    assert cols.seq.tolist() == list(range(148))
    assert cols.values["preload_kn"].tolist() == [float(i) for i in range(148)]
    temp = cols.values["temp_c"]
    assert [i for i in range(148) if not math.isnan(temp[i])] == list(range(0, 148, 3))
    assert temp[::3].tolist() == [i / 4 for i in range(0, 148, 3)]
    again = store.write(decode(dec, message), received_ms=T0)
    assert (again.stored, again.duplicates) == (0, 150)


def test_seq_reset_after_a_reboot_is_kept(store: Store, dec: TelemetryDecoder) -> None:
    store.write(
        decode(dec, bolt("b1", T0, 1, 50.0), bolt("b1", T0 + 10_000, 2, 50.1)), received_ms=T0
    )
    # Rebooted: seq starts again at 1, with a new timestamp.
    rebooted = store.write(decode(dec, bolt("b1", T0 + 60_000, 1, 49.9)), received_ms=T0)
    assert (rebooted.stored, rebooted.duplicates) == (1, 0)
    cols = store.readings(DeviceKind.CBOLT, device_id="b1")
    assert cols.seq.tolist() == [1, 2, 1]
    assert cols.values["preload_kn"].tolist() == [50.0, 50.1, 49.9]


def test_late_readings_are_flagged(store: Store, dec: TelemetryDecoder) -> None:
    received = T0 + 2 * HOUR_MS
    batch = decode(
        dec,
        bolt("b1", T0, 1, 50.0),  # two hours old: backfilled after an outage
        bolt("b1", received - HOUR_MS, 2, 50.0),  # exactly the limit: not late
        bolt("b1", received - 1_000, 3, 50.0),
    )
    store.write(batch, received_ms=received)
    assert store.readings(DeviceKind.CBOLT, late=True).seq.tolist() == [1]
    assert store.readings(DeviceKind.CBOLT, late=False).seq.tolist() == [2, 3]
    store.write(decode(dec, bolt("b1", T0, 4, 50.0)), received_ms=T0 + 10, late_after_ms=5)
    assert store.readings(DeviceKind.CBOLT, late=True).seq.tolist() == [1, 4]


# -- events, dead letters, device state -----------------------------------------------------------


def test_events_are_stored_once_with_their_fields(store: Store, dec: TelemetryDecoder) -> None:
    tightened = (
        topic("cbolt", "b1", "event"),
        b'{"type": "tightened", "ts": %d, "seq": 3, "torque_nm": 250, "preload_kn": 61.5}' % T0,
    )
    swap = (topic("cbolt", "b1", "event"), b'{"type": "battery_swap", "ts": %d, "seq": 3}' % T0)
    result = store.write(decode(dec, tightened, swap, tightened), received_ms=T0 + 1)
    assert (result.events, result.duplicates) == (2, 1)
    assert store.write(decode(dec, swap), received_ms=T0 + 2).duplicates == 1
    events = store.events(device_id="b1")
    assert [e["type"] for e in events] == ["battery_swap", "tightened"]
    first = store.events(event_type="tightened")[0]
    assert first["kind"] is DeviceKind.CBOLT
    assert (first["site"], first["ts_ms"], first["seq"], first["received_ms"]) == (
        "site-a",
        T0,
        3,
        T0 + 1,
    )
    event = first["event"]
    assert isinstance(event, dict)
    assert (event["torque_nm"], event["preload_kn"]) == (250.0, 61.5)
    assert store.events(kind=DeviceKind.CNC_MILL) == []
    assert store.events(since_ms=T0 + 1) == []


def test_dead_letters_keep_raw_bytes_and_can_be_filtered_and_replayed(
    store: Store, dec: TelemetryDecoder
) -> None:
    messages = [
        (topic("cbolt", "b1"), b"\xff\xfe not json"),
        (topic("cbolt", "b1"), b'{"readings": [{"ts": %d, "seq": 1}]}' % T0),
        ("boltwatch/v1/site-a/toaster/t1/telemetry", b"{}"),
        (
            topic("cbolt", "b1"),
            b'{"readings": [{"ts": %d, "seq": 1, "preload_kn": 1},'
            b' {"ts": 5, "seq": 2, "preload_kn": 1}]}' % T0,
        ),
    ]
    batch = dec.decode_batch(messages)
    dead = [
        DeadLetter(*messages[i], field=e.field, reason=e.reason, received_ms=T0 + i)
        for i, e in batch.errors
    ]
    assert len(dead) == 4
    assert store.write(batch, dead, received_ms=T0).dead_letters == 4

    listed = store.dead_letters()
    assert [d.payload for d in listed] == [m[1] for m in messages]
    assert [d.received_ms for d in listed] == [T0, T0 + 1, T0 + 2, T0 + 3]
    assert all(d.id is not None and d.replayed_ms is None for d in listed)
    assert listed[0].field == "payload"
    assert [d.topic for d in store.dead_letters(reason="topic")] == [messages[2][0]]
    assert len(store.dead_letters(reason="$.readings[")) == 2
    assert len(store.dead_letters(limit=1)) == 1

    by_reason = store.stats().dead_letters_by_reason
    assert by_reason == {"payload": 1, "$.readings[]": 1, "topic": 1, "$.readings[].ts": 1}

    ids = [d.id for d in listed[:2] if d.id is not None]
    store.mark_replayed(ids, at_ms=T0 + 99)
    assert [d.topic for d in store.dead_letters()] == [messages[2][0], messages[3][0]]
    everything = store.dead_letters(include_replayed=True)
    assert [d.replayed_ms for d in everything] == [T0 + 99, T0 + 99, None, None]
    stats = store.stats()
    assert (stats.dead_letters, stats.dead_letters_pending) == (4, 2)


def test_device_state_from_statuses_and_readings(store: Store, dec: TelemetryDecoder) -> None:
    birth = (
        topic("cbolt", "b1", "status"),
        b'{"state": "online", "boot_id": "boot-1", "fw_version": "1.2.0"}',
    )
    store.write(decode(dec, birth), received_ms=T0)
    (b1,) = store.devices()
    assert (b1.device_id, b1.kind, b1.site, b1.state) == (
        "b1",
        DeviceKind.CBOLT,
        "site-a",
        "online",
    )
    assert (b1.boot_id, b1.fw_version, b1.last_status_ms, b1.last_seen_ms) == (
        "boot-1",
        "1.2.0",
        T0,
        None,
    )

    # Readings out of order: last_seen is the largest timestamp, also across writes.
    batch = decode(dec, bolt("b1", T0 + 5_000, 2, 50.0), bolt("b1", T0 + 1_000, 1, 50.0))
    store.write(batch, received_ms=T0 + 6_000)
    store.write(decode(dec, bolt("b1", T0 + 2_000, 3, 50.0)), received_ms=T0 + 7_000)
    # A bolt relayed by a gateway never sends a status: known from its readings alone.
    relayed = (
        topic("gateway", "gw1"),
        b'{"kind": "cbolt", "device_id": "b2", "ts": %d, "seq": 1, "preload_kn": 40}' % T0,
    )
    store.write(decode(dec, relayed), received_ms=T0 + 8_000)
    b1, b2 = store.devices()
    assert (b1.last_seen_ms, b1.updated_ms, b1.state) == (T0 + 5_000, T0 + 7_000, "online")
    assert (b2.device_id, b2.state, b2.last_seen_ms, b2.boot_id) == ("b2", None, T0, None)

    # The last will: offline, keeping what the birth message said.
    store.write(decode(dec, (topic("cbolt", "b1", "status"), b"offline")), received_ms=T0 + 9_000)
    b1 = store.devices()[0]
    assert (b1.state, b1.boot_id, b1.last_status_ms, b1.last_seen_ms) == (
        "offline",
        "boot-1",
        T0 + 9_000,
        T0 + 5_000,
    )


def test_stats(store: Store, dec: TelemetryDecoder) -> None:
    empty = store.stats()
    assert empty.readings == 0
    assert empty.readings_by_kind == {k.value: 0 for k in READING_TYPES}
    assert (empty.devices, empty.events, empty.dead_letters, empty.rollup_watermark_ms) == (
        0,
        0,
        0,
        None,
    )
    batch = decode(
        dec,
        bolt("b1", T0, 1, 50.0),
        bolt("b2", T0, 1, 50.0),
        reading("printer3d", "p1", ts=T0, seq=1, hotend_c=210.0),
        (topic("printer3d", "p1", "event"), b'{"type": "job_start", "ts": %d, "seq": 2}' % T0),
    )
    store.write(batch, received_ms=T0)
    stats = store.stats()
    assert stats.readings == 3
    assert stats.readings_by_kind["cbolt"] == 2
    assert stats.readings_by_kind["printer3d"] == 1
    assert (stats.devices, stats.events) == (3, 1)


# -- rollups and retention ------------------------------------------------------------------------


def test_rollup_min_mean_max_exact_and_incremental(store: Store, dec: TelemetryDecoder) -> None:
    hour = T0 - T0 % HOUR_MS
    batch = decode(
        dec,
        bolt("b1", T0, 1, 10.0, temp_c=4.0),
        bolt("b1", T0 + 20_000, 2, 20.0),
        bolt("b1", T0 + 40_000, 3, 30.0, temp_c=6.0),
        bolt("b1", T0 + 60_000, 4, 5.0),
        bolt("b2", T0 - HOUR_MS, 1, 1.0),  # another device, the hour before
    )
    store.write(batch, received_ms=T0 + 61_000)
    # Hours of a few readings: only the hourly rows are stored (b1: preload and temp; b2:
    # preload), and their days'; their minutes are computed from the raw readings when asked.
    assert store.rollup(now_ms=T0 + 120_000) == (2 + 1) * 2
    assert raw(store, "SELECT count(*) FROM rollup_1m") == [(0,)]
    minutes = store.rollups(DeviceKind.CBOLT, device_id="b1")
    assert [(r.field, r.bucket_ms, r.n, r.min, r.mean, r.max) for r in minutes] == [
        ("preload_kn", T0, 3, 10.0, 20.0, 30.0),
        ("preload_kn", T0 + MINUTE_MS, 1, 5.0, 5.0, 5.0),
        ("temp_c", T0, 2, 4.0, 5.0, 6.0),
    ]
    hours = store.rollups(DeviceKind.CBOLT, resolution="1h", field="preload_kn")
    assert [(r.device_id, r.bucket_ms, r.n, r.min, r.mean, r.max) for r in hours] == [
        ("b1", hour, 4, 5.0, 16.25, 30.0),
        ("b2", hour - HOUR_MS, 1, 1.0, 1.0, 1.0),
    ]
    assert store.stats().rollup_watermark_ms == T0 + 120_000

    # Nothing written since: nothing to do.
    assert store.rollup(now_ms=T0 + 180_000) == 0
    # A late reading of b1: only b1's hour is recomputed (b2's is not touched).
    store.write(decode(dec, bolt("b1", T0 + 61_000, 5, 7.0)), received_ms=T0 + 200_000)
    assert store.rollup(now_ms=T0 + 240_000) == 2 * 2
    minute = store.rollups(
        DeviceKind.CBOLT, device_id="b1", field="preload_kn", since_ms=T0 + MINUTE_MS
    )
    assert [(r.n, r.min, r.mean, r.max) for r in minute] == [(2, 5.0, 6.0, 7.0)]
    (b1_hour,) = store.rollups(
        DeviceKind.CBOLT, resolution="1h", device_id="b1", field="preload_kn"
    )
    assert (b1_hour.n, b1_hour.min, b1_hour.mean, b1_hour.max) == (5, 5.0, 14.4, 30.0)
    days = store.rollups(DeviceKind.CBOLT, resolution="1d", field="preload_kn")
    assert [(r.device_id, r.bucket_ms, r.n, r.min, r.mean, r.max) for r in days] == [
        ("b1", T0 - T0 % DAY_MS, 5, 5.0, 14.4, 30.0),
        ("b2", T0 - T0 % DAY_MS - DAY_MS, 1, 1.0, 1.0, 1.0),
    ]
    assert store.rollups(DeviceKind.CBOLT, until_ms=hour - HOUR_MS) == []


def test_fast_hours_store_their_minutes_and_slow_ones_are_computed_alike(
    store: Store, dec: TelemetryDecoder
) -> None:
    hour = T0 - T0 % HOUR_MS
    # m1: 120 readings in one hour (every 30 s), then 3 in the next; b1: 3 in the first.
    fast = [
        reading("laser_cutter", "m1", ts=hour + 30_000 * i, seq=i, flow_lpm=float(i % 7))
        for i in range(120)
    ]
    slow = [
        reading("laser_cutter", "m1", ts=hour + HOUR_MS + 600_000 * i, seq=200 + i, flow_lpm=2.0)
        for i in range(3)
    ]
    store.write(decode(dec, *fast, *slow), received_ms=hour + 2 * HOUR_MS)
    store.rollup(now_ms=hour + 2 * HOUR_MS)
    stored = raw(store, "SELECT count(*), min(bucket_ms), max(bucket_ms) FROM rollup_1m")
    assert stored == [(60, hour, hour + HOUR_MS - MINUTE_MS)]  # the fast hour's 60 minutes
    minutes = store.rollups(DeviceKind.LASER_CUTTER, device_id="m1", field="flow_lpm")
    assert len(minutes) == 60 + 3
    assert [(r.bucket_ms, r.n) for r in minutes[:2]] == [(hour, 2), (hour + MINUTE_MS, 2)]
    assert (minutes[0].min, minutes[0].mean, minutes[0].max) == (0.0, 0.5, 1.0)
    assert [(r.bucket_ms - hour - HOUR_MS, r.n, r.mean) for r in minutes[60:]] == [
        (0, 1, 2.0),
        (600_000, 1, 2.0),
        (1_200_000, 1, 2.0),
    ]
    # The same with no device named, and within a range.
    everyone = store.rollups(DeviceKind.LASER_CUTTER, field="flow_lpm")
    assert everyone == minutes
    later = store.rollups(
        DeviceKind.LASER_CUTTER, device_id="m1", since_ms=hour + HOUR_MS - MINUTE_MS
    )
    assert [r.bucket_ms - hour for r in later] == [
        HOUR_MS - MINUTE_MS,
        HOUR_MS,
        HOUR_MS + 600_000,
        HOUR_MS + 1_200_000,
    ]


def test_rollup_means_are_the_rollups_as_aligned_columns(
    store: Store, dec: TelemetryDecoder
) -> None:
    hour = T0 - T0 % HOUR_MS
    batch = decode(
        dec,
        bolt("b1", hour + 1_000, 1, 10.0, temp_c=4.0),
        bolt("b1", hour + 61_000, 2, 20.0),
        bolt("b1", hour + HOUR_MS, 3, 30.0, temp_c=6.0),
        bolt("b2", hour, 1, 99.0),
    )
    store.write(batch, received_ms=hour + 2 * HOUR_MS)
    store.rollup(now_ms=hour + 2 * HOUR_MS)
    for resolution in ("1m", "1h"):
        starts, means = store.rollup_means(DeviceKind.CBOLT, "b1", resolution=resolution)
        rows = store.rollups(DeviceKind.CBOLT, resolution=resolution, device_id="b1")
        assert starts.tolist() == sorted({r.bucket_ms for r in rows})
        for r in rows:
            assert means[r.field][starts.tolist().index(r.bucket_ms)] == r.mean
        assert set(means) == {"preload_kn", "temp_c"}
    starts, means = store.rollup_means(DeviceKind.CBOLT, "b1", resolution="1h")
    assert starts.tolist() == [hour, hour + HOUR_MS]
    assert means["preload_kn"].tolist() == [15.0, 30.0]
    assert means["temp_c"].tolist() == [4.0, 6.0]
    starts, means = store.rollup_means(DeviceKind.CBOLT, "b1", resolution="1m")
    assert starts.tolist() == [hour, hour + MINUTE_MS, hour + HOUR_MS]
    assert np.isnan(means["temp_c"][1])
    later, _ = store.rollup_means(DeviceKind.CBOLT, "b1", since_ms=hour + 1)
    assert later.tolist() == [hour + HOUR_MS]
    assert store.rollup_means(DeviceKind.CBOLT, "nobody")[0].size == 0


def test_retention_deletes_only_old_raw_readings(tmp_path: Path, dec: TelemetryDecoder) -> None:
    now = T0
    hour = now - now % HOUR_MS
    with Store(tmp_path / "s", retention_days=1) as store:
        batch = decode(
            dec,
            bolt("b1", now - 3 * DAY_MS, 1, 1.0),
            bolt("b1", now - DAY_MS - 1, 2, 2.0),
            bolt("b1", now - DAY_MS, 3, 3.0),
            bolt("b2", now - 2 * DAY_MS, 1, 4.0),
            bolt("b2", now - HOUR_MS, 2, 5.0),
            reading("laser_cutter", "l1", ts=now - 2 * DAY_MS, seq=1, flow_lpm=3.0),
        )
        store.write(batch, received_ms=now)
        assert store.enforce_retention(now_ms=now) == 4
        assert store.readings(DeviceKind.CBOLT).seq.tolist() == [3, 2]
        assert len(store.readings(DeviceKind.LASER_CUTTER)) == 0
        stats = store.stats()
        assert (stats.readings, stats.readings_by_kind["laser_cutter"]) == (2, 0)
        # The rollups were computed before the raw rows went, and stay: b1's hour a day ago
        # still counts the reading deleted from it.
        hours = store.rollups(DeviceKind.CBOLT, resolution="1h")
        assert [(r.device_id, r.bucket_ms, r.n, r.mean) for r in hours] == [
            ("b1", hour - 3 * DAY_MS, 1, 1.0),
            ("b1", hour - DAY_MS, 2, 2.5),
            ("b2", hour - 2 * DAY_MS, 1, 4.0),
            ("b2", hour - HOUR_MS, 1, 5.0),
        ]
        assert store.enforce_retention(now_ms=now) == 0


# -- export ---------------------------------------------------------------------------------------


def test_export_cbolt_is_the_replay_format_with_torque(store: Store, dec: TelemetryDecoder) -> None:
    tightened = (
        topic("cbolt", "b1", "event"),
        b'{"type": "tightened", "ts": %d, "seq": 9, "torque_nm": 250.5, "preload_kn": 62}'
        % (T0 + 30_000),
    )
    batch = decode(
        dec,
        bolt("b1", T0, 1, 61.84, temp_c=11.5, battery_v=3.58, rssi_dbm=-97),
        bolt("b1", T0 + 60_000, 2, 61.8, battery_v=3.58),
        bolt("b2", T0 + 60_500, 1, 40.0, temp_c=12),
        bolt("b1", T0 + 120_000, 3, 61.7, temp_c=11.4, battery_v=3.57),
        tightened,
    )
    store.write(batch, received_ms=T0 + 121_000)
    out = io.StringIO()
    assert store.export_csv(out, DeviceKind.CBOLT) == 4
    assert out.getvalue() == (
        "timestamp,device_id,preload_kn,temp_c,torque_nm,battery_v\n"
        "2026-03-01T00:05:00Z,b1,61.84,11.5,,3.58\n"
        "2026-03-01T00:06:00Z,b1,61.8,,250.5,3.58\n"
        "2026-03-01T00:06:00.500Z,b2,40,12,,\n"
        "2026-03-01T00:07:00Z,b1,61.7,11.4,,3.57\n"
    )
    # Filters; the torque stays on its row when the export starts after the event.
    one = io.StringIO()
    assert store.export_csv(one, DeviceKind.CBOLT, device_id="b1", since_ms=T0 + 45_000) == 2
    assert one.getvalue().splitlines()[1:] == [
        "2026-03-01T00:06:00Z,b1,61.8,,250.5,3.58",
        "2026-03-01T00:07:00Z,b1,61.7,11.4,,3.57",
    ]
    none = io.StringIO()
    assert store.export_csv(none, DeviceKind.CBOLT, until_ms=T0) == 0
    assert none.getvalue() == "timestamp,device_id,preload_kn,temp_c,torque_nm,battery_v\n"


def test_export_machine_kind(store: Store, dec: TelemetryDecoder) -> None:
    batch = decode(
        dec,
        reading("laser_cutter", "l1", ts=T0, seq=1, chiller_water_c=18.25, flow_lpm=3.5),
        reading("laser_cutter", "l1", ts=T0 + 1_001, seq=2, tube_current_ma=22, ambient_c=21.0),
    )
    store.write(batch, received_ms=T0 + 2_000)
    out = io.StringIO()
    assert store.export_csv(out, DeviceKind.LASER_CUTTER) == 2
    assert out.getvalue() == (
        "timestamp,device_id,chiller_water_c,flow_lpm,tube_current_ma,laser_power_pct,ambient_c\n"
        "2026-03-01T00:05:00Z,l1,18.25,3.5,,,\n"
        "2026-03-01T00:05:01.001Z,l1,,,22,,21\n"
    )


# -- durability, atomicity, reopening, errors -----------------------------------------------------


def test_reopening_keeps_everything(tmp_path: Path, dec: TelemetryDecoder) -> None:
    path = tmp_path / "store"
    batch = decode(
        dec,
        bolt("b1", T0, 1, 50.0, temp_c=3.0),
        reading("cnc_mill", "m1", ts=T0, seq=1, vib_ms2=[1.0, 2.0], fs_hz=100.0),
        (topic("cbolt", "b1", "status"), b"online"),
        (topic("cbolt", "b1", "event"), b'{"type": "battery_swap", "ts": %d, "seq": 2}' % T0),
    )
    dead = [DeadLetter("t", b"\x00\x01", "payload", "not JSON", T0)]
    with Store(path) as first:
        first.write(batch, dead, received_ms=T0 + 1)
        first.rollup(now_ms=T0 + 2)
        before = (first.stats(), first.devices(), first.events(), first.dead_letters())
    with Store(path) as again:
        assert (again.stats(), again.devices(), again.events(), again.dead_letters()) == before
        cols = again.readings(DeviceKind.CNC_MILL)
        assert cols.arrays["vib_ms2"][0] is not None
        assert cols.arrays["vib_ms2"][0].tolist() == [1.0, 2.0]
        assert again.readings(DeviceKind.CBOLT).values["temp_c"].tolist() == [3.0]
        assert len(again.rollups(DeviceKind.CBOLT)) == 2
        # Idempotent across restarts too.
        assert again.write(batch, received_ms=T0 + 5).duplicates == 3
    assert raw(again, "PRAGMA journal_mode") == [("wal",)]


def test_a_field_added_to_a_kind_gets_its_column_on_open(tmp_path: Path) -> None:
    path = tmp_path / "store"
    Store(path).close()
    with sqlite3.connect(path / DB_FILE) as conn:  # as a store made before rssi_dbm existed
        conn.execute("ALTER TABLE readings_cbolt DROP COLUMN rssi_dbm")
    with Store(path) as store:
        columns = [row[1] for row in raw(store, "PRAGMA table_info(readings_cbolt)")]
        assert columns[-1] == "rssi_dbm"


def test_durable_is_synchronous_full(tmp_path: Path) -> None:
    with Store(tmp_path / "a") as durable, Store(tmp_path / "b", durable=False) as fast:
        assert durable._conn().execute("PRAGMA synchronous").fetchone() == (2,)  # FULL
        assert fast._conn().execute("PRAGMA synchronous").fetchone() == (1,)  # NORMAL


def test_a_failed_write_commits_nothing(
    store: Store, dec: TelemetryDecoder, monkeypatch: pytest.MonkeyPatch
) -> None:
    store.write(decode(dec, bolt("b0", T0, 1, 1.0)), received_ms=T0)
    before = store.stats()
    batch = decode(
        dec,
        bolt("b1", T0, 1, 50.0),
        (topic("cbolt", "b1", "status"), b"online"),
        (topic("cbolt", "b1", "event"), b'{"type": "battery_swap", "ts": %d, "seq": 2}' % T0),
    )
    dead = [DeadLetter("t", b"x", "payload", "not JSON", T0)]

    def crash(*_: object) -> int:
        raise RuntimeError("power cut after the readings were inserted")

    monkeypatch.setattr(store, "_insert_events", crash)
    with pytest.raises(RuntimeError, match="power cut"):
        store.write(batch, dead, received_ms=T0)
    assert store.stats() == before
    assert store.readings(DeviceKind.CBOLT).device_id.tolist() == ["b0"]
    assert [d.device_id for d in store.devices()] == ["b0"]
    assert store.dead_letters() == []
    assert raw(store, "SELECT count(*) FROM rollup_dirty") == [(1,)]

    def disk_full(*_: object) -> int:
        raise sqlite3.OperationalError("database or disk is full")

    monkeypatch.setattr(store, "_insert_events", disk_full)
    with pytest.raises(StoreError, match="disk is full") as info:
        store.write(batch, dead, received_ms=T0)
    assert info.value.path == store.file
    assert store.stats() == before

    monkeypatch.undo()
    assert store.write(batch, dead, received_ms=T0).stored == 1  # the store still works


def test_not_a_store_is_refused_naming_the_path(tmp_path: Path) -> None:
    text = tmp_path / "text"
    text.mkdir()
    (text / DB_FILE).write_text("hello, not a database\n" * 100)
    with pytest.raises(StoreError, match="not a boltwatch store") as info:
        Store(text)
    assert info.value.path == text / DB_FILE
    assert str(text / DB_FILE) in str(info.value)

    other = tmp_path / "other"
    other.mkdir()
    with sqlite3.connect(other / DB_FILE) as conn:
        conn.execute("CREATE TABLE songs (title TEXT)")
    with pytest.raises(StoreError, match="another application"):
        Store(other)

    a_file = tmp_path / "file"
    a_file.write_text("x")
    with pytest.raises(StoreError, match="not a folder") as info:
        Store(a_file)
    assert info.value.path == a_file
    with pytest.raises(StoreError, match="cannot create") as info:
        Store(a_file / "store")
    assert str(a_file / "store") in str(info.value)


def test_a_newer_schema_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "store"
    Store(path).close()
    with sqlite3.connect(path / DB_FILE) as conn:
        conn.execute("INSERT INTO schema_version VALUES (?, 0)", (SCHEMA_VERSION + 1,))
    with pytest.raises(StoreError, match=f"schema version {SCHEMA_VERSION + 1}"):
        Store(path)


def test_a_read_only_folder_is_refused(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    folder = tmp_path / "ro"
    folder.mkdir()
    folder.chmod(0o555)
    if os.geteuid() == 0:
        # root writes into read-only folders: only the permission check can be seen failing.
        monkeypatch.setattr(os, "access", lambda *_, **__: False)
    try:
        with pytest.raises(StoreError, match="not writable") as info:
            Store(folder)
        assert info.value.path == folder
        assert str(folder) in str(info.value)
    finally:
        folder.chmod(0o755)


def test_closed_store_and_bad_arguments(tmp_path: Path) -> None:
    store = Store(tmp_path / "s")
    store.close()
    store.close()
    with pytest.raises(StoreError, match="closed"):
        store.write(DecodedBatch(), received_ms=T0)
    with pytest.raises(StoreError, match="closed"):
        store.stats()
    with pytest.raises(ValueError, match="retention_days"):
        Store(tmp_path / "s", retention_days=0)
    with Store(tmp_path / "s") as again, pytest.raises(StoreError, match="unknown device kind"):
        again.readings("toaster")  # type: ignore[arg-type]


def test_the_wal_stays_bounded_while_readers_keep_overlapping(
    tmp_path: Path, dec: TelemetryDecoder, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Readers that always overlap (a dashboard polling, the chaos tests' progress checks) keep
    SQLite's passive checkpoint from ever resetting the WAL: it grew to 37.8 GB in the full
    chaos overload. Past a size, the store checkpoints with TRUNCATE."""
    import threading

    import ingest.store.writer as store_module

    monkeypatch.setattr(store_module, "_WAL_RESTART_BYTES", 2 * 1024 * 1024)
    wal = tmp_path / "s" / "boltwatch.sqlite3-wal"
    stop = threading.Event()
    largest = 0

    def readers() -> None:  # two connections taking turns, so one is always reading
        conns = [sqlite3.connect(tmp_path / "s" / "boltwatch.sqlite3") for _ in range(2)]
        i = 0
        conns[0].execute("BEGIN")
        conns[0].execute("SELECT count(*) FROM reading_counts").fetchall()
        while not stop.is_set():
            nxt, cur = conns[(i + 1) % 2], conns[i % 2]
            nxt.execute("BEGIN")
            nxt.execute("SELECT count(*) FROM reading_counts").fetchall()
            cur.execute("COMMIT")
            i += 1
        for c in conns:
            c.close()

    with Store(tmp_path / "s") as s:
        s.write(decode(dec, bolt("b0", T0, 0, 40.0)), received_ms=T0)
        thread = threading.Thread(target=readers, daemon=True)
        thread.start()
        try:
            for k in range(60):
                messages = [bolt(f"b{d}", T0 + k * 1000, k, 40.0 + d) for d in range(500)]
                s.write(decode(dec, *messages), received_ms=T0)
                largest = max(largest, wal.stat().st_size)
        finally:
            stop.set()
            thread.join(10)
        written = s.stats().readings
    assert written == 60 * 500  # b0 of the first write is the same reading as the next
    assert largest <= 16 * 1024 * 1024, f"the WAL reached {largest / 1e6:.1f} MB"
