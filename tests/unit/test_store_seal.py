"""Sealed chunks (ingest/store/chunks.py, seal.py, sealed.py): a sealed store answers every read
exactly as the same store unsealed; redeliveries of sealed readings are still duplicates; late
readings into a sealed day are merged; retention drops sealed days; corrupt chunks are named."""

from __future__ import annotations

import io
import itertools
import math
import random
import sqlite3
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import msgspec
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from ingest.store import DAY_MS, HOUR_MS, Store, StoreError
from ingest.store.chunks import ChunkRows, decode_chunk, encode_chunk
from ingest.store.columns import ColumnError
from sensors.codec import TelemetryDecoder
from sensors.schema import DeviceKind

T0 = 1_772_323_200_000  # 2026-03-01T00:00:00Z
DAYS = 5
NOW_MS = T0 + DAYS * DAY_MS + 3 * HOUR_MS
_json = msgspec.json.Encoder()


def _message(kind: str, dev: str, site: str, channel: str, **fields: Any) -> tuple[str, bytes]:
    return f"boltwatch/v1/{site}/{kind}/{dev}/{channel}", _json.encode(fields)


def _history(seed: int) -> list[list[tuple[str, bytes]]]:
    """Batches of five days: three bolts (one moves site, fields sometimes missing, one
    tightening event), a mill with a waveform every hour."""
    rng = random.Random(seed)
    batches: list[list[tuple[str, bytes]]] = []
    for dev in ("b1", "b2", "b3"):
        ts, seq, batch = T0 + rng.randrange(60_000), 0, []
        while ts < NOW_MS - HOUR_MS:
            seq += 1
            site = "site-b" if dev == "b3" and ts > T0 + 2 * DAY_MS else "site-a"
            fields: dict[str, Any] = {
                "ts": ts,
                "seq": seq,
                "preload_kn": round(rng.gauss(60, 2), 2),
            }
            if rng.random() < 0.8:
                fields["temp_c"] = round(rng.uniform(-5, 30), 1)
            if rng.random() < 0.5:
                fields["battery_v"] = round(rng.uniform(3.3, 3.6), 3)
            batch.append(_message("cbolt", dev, site, "telemetry", **fields))
            if len(batch) == 40:
                batches.append(batch)
                batch = []
            ts += rng.choice((5, 10, 15, 17)) * 60_000 + rng.randrange(-900, 900)
        batches.append(batch)
    batches.append(
        [
            _message(
                "cbolt",
                "b1",
                "site-a",
                "event",
                type="tightened",
                ts=T0 + DAY_MS,
                seq=99,
                torque_nm=250.5,
                preload_kn=62,
            )
        ]
    )
    mill = []
    for i in range(DAYS * 24):
        wave = [round(rng.gauss(0, 1), 3) for _ in range(8)] if i % 3 else None
        fields = {"ts": T0 + i * HOUR_MS + 1_234, "seq": i + 1, "spindle_rpm": 9000.0 + i}
        if wave is not None:
            fields |= {"vib_ms2": wave, "fs_hz": 25_600.0}
        mill.append(_message("cnc_mill", "m1", "site-a", "telemetry", **fields))
    batches.append(mill)
    return batches


def _fill(store: Store, batches: list[list[tuple[str, bytes]]]) -> tuple[int, int]:
    dec = TelemetryDecoder(clock=lambda: NOW_MS / 1000)
    stored = duplicates = 0
    for i, messages in enumerate(batches):
        batch = dec.decode_batch(messages)
        assert batch.errors == []
        # Some batches arrive days late (flagged late), the others within seconds.
        first = min((c.ts_ms.min() for c in batch.telemetry.values() if len(c)), default=T0)
        received = NOW_MS if i % 4 == 0 else int(first) + 5_000
        result = store.write(batch, received_ms=received)
        stored += result.stored
        duplicates += result.duplicates
    return stored, duplicates


@pytest.fixture
def pair(tmp_path: Path) -> Iterator[tuple[Store, Store]]:
    """The same history in two stores; the first one sealed."""
    with Store(tmp_path / "sealed", tail_days=2) as sealed, Store(tmp_path / "plain") as plain:
        history = _history(7)
        assert _fill(sealed, history) == _fill(plain, history)
        plain.rollup(now_ms=NOW_MS)
        done = sealed.seal(now_ms=NOW_MS)
        assert done.done
        assert done.readings > 0
        assert done.floor_ms == T0 + (DAYS - 2) * DAY_MS
        yield sealed, plain


def _same_columns(a: Any, b: Any) -> None:
    assert len(a) == len(b)
    for name in ("device_id", "site", "ts_ms", "seq", "message"):
        assert getattr(a, name).tolist() == getattr(b, name).tolist(), name
    assert set(a.values) == set(b.values)
    for f in a.values:
        np.testing.assert_array_equal(a.values[f], b.values[f], err_msg=f)
    assert set(a.arrays) == set(b.arrays)
    for f in a.arrays:
        for x, y in zip(a.arrays[f], b.arrays[f], strict=True):
            assert (x is None) == (y is None)
            if x is not None:
                np.testing.assert_array_equal(x, y)


def _export(store: Store, kind: DeviceKind, **filters: Any) -> str:
    out = io.StringIO()
    store.export_csv(out, kind, **filters)
    return out.getvalue()


_FILTERS: list[dict[str, Any]] = [
    {},
    {"device_id": "b1"},
    {"site": "site-b"},
    {"since_ms": T0 + DAY_MS + 5 * HOUR_MS, "until_ms": T0 + 4 * DAY_MS},
    {"since_ms": T0 + 3 * DAY_MS - 1},
    {"until_ms": T0 + DAY_MS + 1},
    {"late": True},
    {"late": False, "device_id": "b2"},
    {"limit": 17},
    {"limit": 500, "since_ms": T0 + 2 * DAY_MS + 7},
]


def _nulls(values: Any) -> list[float | None]:
    """NaN as None (two NaNs never compare equal)."""
    return [None if math.isnan(v) else v for v in values.tolist()]


def _approx(rollups: list[Any]) -> list[Any]:
    """Daily rollups with their means to 12 digits: a day's mean is summed from its hours' or
    from its readings, as the day is sealed or not."""
    return [
        (r.device_id, r.field, r.bucket_ms, r.n, r.min, round(r.mean, 9), r.max) for r in rollups
    ]


def _reads(store: Store) -> list[Any]:
    """Everything a user can read back, as comparable values."""
    out: list[Any] = [store.stats().readings_by_kind]
    for kind in (DeviceKind.CBOLT, DeviceKind.CNC_MILL):
        out.append(store.rollups(kind, resolution="1m"))
        out.append(store.rollups(kind, resolution="1h"))
        out.append(_approx(store.rollups(kind, resolution="1d")))
        out.append(_export(store, kind))
        out.append(_export(store, kind, device_id="b1", since_ms=T0 + DAY_MS - 1))
        out.append(_export(store, kind, until_ms=T0 + 4 * DAY_MS))
    for res in ("1h", "1d"):
        starts, means = store.rollup_means(DeviceKind.CBOLT, "b2", resolution=res)
        out.append((starts.tolist(), {k: _nulls(np.round(v, 9)) for k, v in means.items()}))
    latest = store.latest_waveform(DeviceKind.CNC_MILL, "m1", "vib_ms2")
    assert latest is not None
    out.append((latest[0], latest[1].tolist(), _nulls(np.array(list(latest[2].values())))))
    return out


def test_a_sealed_store_reads_exactly_as_the_unsealed_one(pair: tuple[Store, Store]) -> None:
    sealed, plain = pair
    tail = sqlite3.connect(sealed.file).execute("SELECT count(*) FROM readings_cbolt").fetchone()
    chunks = sqlite3.connect(sealed.file).execute("SELECT count(*), sum(n) FROM chunks_cbolt")
    n_chunks, n_sealed = chunks.fetchone()
    assert n_chunks == 3  # a bolt's days of one month join one chunk
    assert n_sealed > tail[0]
    for kind in (DeviceKind.CBOLT, DeviceKind.CNC_MILL):
        for filters in _FILTERS:
            _same_columns(sealed.readings(kind, **filters), plain.readings(kind, **filters))
        _same_columns(sealed.readings(kind, waveforms=False), plain.readings(kind, waveforms=False))
    assert _reads(sealed) == _reads(plain)


def test_redelivered_and_late_readings_of_sealed_days(pair: tuple[Store, Store]) -> None:
    sealed, plain = pair
    history = _history(7)
    # Everything again (a redelivery after a restart): all duplicates, in both.
    assert _fill(sealed, history) == _fill(plain, history) == (0, sum(len(b) for b in history))
    # New readings of sealed days arrive late, with some repeats among them.
    late = [
        _message(
            "cbolt",
            "b2",
            "site-a",
            "telemetry",
            ts=T0 + d * DAY_MS + 77_777,
            seq=1000 + d,
            preload_kn=55.5,
        )
        for d in range(DAYS)
    ]
    assert _fill(sealed, [late, late[:2]]) == _fill(plain, [late, late[:2]]) == (DAYS, 2)
    sealed.rollup(now_ms=NOW_MS)
    plain.rollup(now_ms=NOW_MS)
    assert _reads(sealed) == _reads(plain)
    # The next seal merges them into their days' chunks; reads do not change.
    again = sealed.seal(now_ms=NOW_MS)
    assert (again.readings, again.chunks, again.done) == (DAYS - 2, DAYS - 2, True)
    assert _reads(sealed) == _reads(plain)
    _same_columns(sealed.readings(DeviceKind.CBOLT), plain.readings(DeviceKind.CBOLT))
    assert _fill(sealed, [late]) == (0, DAYS)


def test_a_device_keeps_its_newest_reading_in_the_tail(tmp_path: Path) -> None:
    dec = TelemetryDecoder(clock=lambda: NOW_MS / 1000)
    with Store(tmp_path / "s") as store:
        old = [
            _message(
                "cbolt", "quiet", "site-a", "telemetry", ts=T0 + i * HOUR_MS, seq=i, preload_kn=60.0
            )
            for i in range(5)
        ]
        store.write(dec.decode_batch(old), received_ms=NOW_MS)
        assert store.seal(now_ms=NOW_MS).readings == 4
        rows = sqlite3.connect(store.file).execute("SELECT seq FROM readings_cbolt").fetchall()
        assert rows == [(4,)]
        assert store.readings(DeviceKind.CBOLT).seq.tolist() == [0, 1, 2, 3, 4]


def test_seal_works_in_bounded_steps(tmp_path: Path) -> None:
    with Store(tmp_path / "s") as store:
        _fill(store, _history(3))
        total = store.stats().readings_by_kind["cbolt"]
        first = store.seal(now_ms=NOW_MS, max_readings=1)
        assert not first.done
        assert 0 < first.readings < total
        while not (step := store.seal(now_ms=NOW_MS, max_readings=1)).done:
            assert step.readings > 0
        assert store.stats().readings_by_kind["cbolt"] == total


def test_retention_drops_whole_sealed_days(pair: tuple[Store, Store]) -> None:
    sealed, plain = pair
    before = sealed.stats().readings_by_kind["cbolt"]
    day1 = len(sealed.readings(DeviceKind.CBOLT, until_ms=T0 + DAY_MS))
    mill1 = len(sealed.readings(DeviceKind.CNC_MILL, until_ms=T0 + DAY_MS))
    # Retention of 400 days at T0 + 401 days + 1 h: day 0 is wholly past, day 1 is not.
    now = T0 + 401 * DAY_MS + HOUR_MS
    assert sealed.enforce_retention(now_ms=now) == day1 + mill1
    assert sealed.stats().readings_by_kind["cbolt"] == before - day1
    assert len(sealed.readings(DeviceKind.CBOLT, until_ms=T0 + DAY_MS)) == 0
    assert len(sealed.readings(DeviceKind.CBOLT, until_ms=T0 + 2 * DAY_MS)) > 0
    # The dropped day's rollups stay, as an unsealed store's would.
    for res in ("1m", "1h", "1d"):
        got = sealed.rollups(DeviceKind.CBOLT, resolution=res, until_ms=T0 + DAY_MS)
        want = plain.rollups(DeviceKind.CBOLT, resolution=res, until_ms=T0 + DAY_MS)
        if res == "1m":  # computed from the raw readings when asked: gone with them
            assert got == []
            assert want
        else:
            assert _approx(got) == _approx(want)


def test_a_corrupt_chunk_is_a_store_error_naming_it(pair: tuple[Store, Store]) -> None:
    sealed, _ = pair
    with sqlite3.connect(sealed.file) as conn:
        (start,) = conn.execute(
            "SELECT start_ms FROM chunks_cbolt WHERE device_id = 'b2'"
        ).fetchone()
        conn.execute("UPDATE chunks_cbolt SET data = x'00ff' WHERE device_id = 'b2'")
    with pytest.raises(StoreError, match=rf"chunk of b2 starting at {start} is corrupt"):
        sealed.readings(DeviceKind.CBOLT, device_id="b2")
    # The other devices' readings are still there, and so are b2's newer ones.
    assert len(sealed.readings(DeviceKind.CBOLT, device_id="b1")) > 0
    assert len(sealed.readings(DeviceKind.CBOLT, device_id="b2", since_ms=T0 + 3 * DAY_MS)) > 0


def test_an_older_release_refuses_a_sealed_store(tmp_path: Path) -> None:
    with Store(tmp_path / "s"):
        pass
    with sqlite3.connect(tmp_path / "s" / "boltwatch.sqlite3") as conn:
        assert conn.execute("SELECT max(version) FROM schema_version").fetchone() == (2,)


# -- the chunk codec ------------------------------------------------------------------------------

_floats = st.one_of(
    st.floats(allow_nan=False, width=64),
    st.decimals(min_value=-1e6, max_value=1e6, places=3, allow_nan=False).map(float),
    st.just(float("nan")),
)


@settings(max_examples=60, deadline=None)
@given(
    n=st.integers(0, 40),
    data=st.data(),
)
def test_chunks_round_trip_exactly(n: int, data: st.DataObject) -> None:
    steps = data.draw(st.lists(st.integers(0, 10**7), min_size=n, max_size=n))
    ts = np.cumsum(np.array(steps, np.int64)) + T0
    seq = np.arange(n, dtype=np.int64)
    sites = data.draw(st.lists(st.sampled_from(["a", "b", "site-ç"]), min_size=n, max_size=n))
    waves = data.draw(
        st.lists(
            st.none() | st.lists(st.floats(width=32, allow_nan=False), max_size=5),
            min_size=n,
            max_size=n,
        )
    )
    rows = ChunkRows(
        ts_ms=ts,
        seq=seq,
        site=np.array(sites, dtype=object),
        received_ms=ts
        + np.array(
            data.draw(st.lists(st.integers(-(10**9), 10**9), min_size=n, max_size=n)), np.int64
        ),
        late=np.array(data.draw(st.lists(st.booleans(), min_size=n, max_size=n)), bool),
        values={
            "x": np.array(data.draw(st.lists(_floats, min_size=n, max_size=n)), np.float64),
            "y": np.full(n, np.nan),
        },
        arrays={"w": [None if w is None else np.array(w, np.float64) for w in waves]},
    )
    back = decode_chunk(encode_chunk(rows), ("x", "y", "z"), ("w", "v"))
    assert back.ts_ms.tolist() == rows.ts_ms.tolist()
    assert back.seq.tolist() == seq.tolist()
    assert back.site.tolist() == sites
    assert back.received_ms.tolist() == rows.received_ms.tolist()
    assert back.late.tolist() == rows.late.tolist()
    np.testing.assert_array_equal(
        back.values["x"].view(np.uint64)[~np.isnan(rows.values["x"])],
        rows.values["x"].view(np.uint64)[~np.isnan(rows.values["x"])],
    )
    assert np.isnan(back.values["x"]).tolist() == np.isnan(rows.values["x"]).tolist()
    assert np.isnan(back.values["y"]).all()
    assert np.isnan(back.values["z"]).all()
    for got, want in zip(back.arrays["w"], rows.arrays["w"], strict=True):
        assert (got is None) == (want is None)
        if want is not None:
            assert got is not None
            assert got.tolist() == want.tolist()
    assert back.arrays["v"] == [None] * n


def test_chunk_codec_refuses_disorder_and_garbage() -> None:
    rows = ChunkRows(
        ts_ms=np.array([2, 1], np.int64),
        seq=np.array([0, 1], np.int64),
        site=np.array(["a", "a"], dtype=object),
        received_ms=np.array([2, 2], np.int64),
        late=np.zeros(2, bool),
        values={},
        arrays={},
    )
    with pytest.raises(ValueError, match="order"):
        encode_chunk(rows)
    good = encode_chunk(
        ChunkRows(
            ts_ms=np.array([1, 1], np.int64),
            seq=np.array([0, 1], np.int64),
            site=np.array(["a", "a"], dtype=object),
            received_ms=np.array([2, 2], np.int64),
            late=np.zeros(2, bool),
            values={"x": np.array([1.5, 2.5])},
            arrays={},
        )
    )
    assert decode_chunk(good, ("x",), ()).values["x"].tolist() == [1.5, 2.5]
    for bad in (b"", b"\x00", good[:-3], good[:5] + b"\xff" + good[6:]):
        with pytest.raises(ColumnError):
            decode_chunk(bad, ("x",), ())


def test_a_chunk_of_a_bolt_day_is_small() -> None:
    """Five-minute readings of a bolt for a day: what sealing gains (issue 17's target is 16 bytes
    a reading, everything included)."""
    rng = np.random.default_rng(1)
    n = 288
    ts = T0 + np.arange(n, dtype=np.int64) * 300_000 + rng.integers(-500, 500, n)
    rows = ChunkRows(
        ts_ms=ts,
        seq=np.arange(n, dtype=np.int64) + 10_000,
        site=np.full(n, "bridge-7", dtype=object),
        received_ms=ts + rng.integers(20, 400, n),
        late=np.zeros(n, bool),
        values={
            "preload_kn": np.round(60 + rng.normal(0, 0.6, n), 2),
            "temp_c": np.round(12 + 6 * np.sin(np.arange(n) / 46) + rng.normal(0, 0.1, n), 1),
            "battery_v": np.round(3.6 - np.arange(n) * 1e-5, 3),
            "rssi_dbm": np.round(-90 + rng.normal(0, 2, n)),
        },
        arrays={},
    )
    size = len(encode_chunk(rows))
    assert size / n < 10, size / n


# -- Grafana's SQLite datasource on a sealed store ------------------------------------------------


def test_grafana_draws_rollups_where_days_are_sealed(tmp_path: Path) -> None:
    """The SQLite flavour's "over time" query (run here by SQLite itself, as the plugin does):
    a day view of a sealed day draws hourly means, of the tail raw readings."""
    from dashboards.grafana.queries import SQLiteQuery
    from dashboards.grafana.series import DEVICE_VAR, Scope
    from dashboards.grafana.sqlite import SQLiteSeries

    dec = TelemetryDecoder(clock=lambda: NOW_MS / 1000)
    with Store(tmp_path / "s", tail_days=2) as store:
        messages = [
            _message("cbolt", "b1", "site-a", "telemetry", ts=t, seq=i, preload_kn=60 + i % 7)
            for i, t in enumerate(range(T0, NOW_MS, 300_000))
        ]
        for at in range(0, len(messages), 500):
            store.write(dec.decode_batch(messages[at : at + 500]), received_ms=NOW_MS)
        assert store.seal(now_ms=NOW_MS).done
    query = SQLiteSeries().over_time(DeviceKind.CBOLT, "preload_kn", Scope.DEVICE).build()
    assert isinstance(query, SQLiteQuery)
    sql = query.sql
    conn = sqlite3.connect(f"file:{tmp_path / 's' / 'boltwatch.sqlite3'}?mode=ro", uri=True)

    def draw(start: int, span: int) -> list[tuple[float, float]]:
        text = sql.replace("$__from", str(start)).replace("$__to", str(start + span))
        return conn.execute(text.replace(f"${DEVICE_VAR}", "b1")).fetchall()

    noon = (T0 + DAY_MS + DAY_MS // 2) / 1000
    assert [t for t, _ in draw(T0 + DAY_MS, DAY_MS - 1)] == [noon]  # a sealed day: its mean
    (mean,) = [m for t, m in draw(T0, 3 * DAY_MS) if t == noon]
    day = store_means(tmp_path / "s", T0 + DAY_MS)
    assert mean == pytest.approx(day)
    tail_day = draw(T0 + 4 * DAY_MS, DAY_MS - 1)
    assert len(tail_day) == 288
    # Three days: one sealed (its noon), two of the tail (their 1-minute values: raw here).
    three_days = draw(T0 + 2 * DAY_MS, 3 * DAY_MS)
    assert len(three_days) == 1 + 2 * 288 + 1
    year = draw(NOW_MS - 365 * DAY_MS, 365 * DAY_MS)  # sealed days, then the tail's hours
    assert len(year) == 3 + 2 * 24 + 3


def store_means(folder: Path, day: int) -> float:
    with Store(folder) as store:
        (r,) = store.rollups(
            DeviceKind.CBOLT, resolution="1d", field="preload_kn", since_ms=day, until_ms=day + 1
        )
        cols = store.readings(DeviceKind.CBOLT, since_ms=day, until_ms=day + DAY_MS)
    assert r.n == 288
    assert r.mean == pytest.approx(float(np.mean(cols.values["preload_kn"])))
    return r.mean


@pytest.mark.parametrize("cap", [50_000, 600])
def test_chunks_hold_days_of_one_month_up_to_a_size(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, cap: int
) -> None:
    """Days join their month's chunk (a year reads from a dozen chunks) until the chunk holds
    ``cap`` readings; a new month starts a new chunk. Reads do not change."""
    import ingest.store.seal as seal_module

    monkeypatch.setattr(seal_module, "_CHUNK_READINGS", cap)
    start, now = T0 - 3 * DAY_MS, T0 + 5 * DAY_MS  # Feb 26 to Mar 6
    dec = TelemetryDecoder(clock=lambda: now / 1000)
    messages = [
        _message("cbolt", "b1", "site-a", "telemetry", ts=t, seq=i, preload_kn=50 + i % 11)
        for i, t in enumerate(range(start, now - DAY_MS, 300_000))
    ]
    with Store(tmp_path / "sealed", tail_days=2) as sealed, Store(tmp_path / "plain") as plain:
        for store in (sealed, plain):
            for at in range(0, len(messages), 1000):
                store.write(dec.decode_batch(messages[at : at + 1000]), received_ms=now)
        for day in range(start + 3 * DAY_MS, now + 1, DAY_MS):  # upkeep as the days go by
            sealed.seal(now_ms=day)
        plain.rollup(now_ms=now)
        spans = (
            sqlite3.connect(sealed.file)
            .execute("SELECT start_ms, first_ms, last_ms, n FROM chunks_cbolt ORDER BY start_ms")
            .fetchall()
        )
        # Feb 26-28, then March 1-3 (the floor is Mar 4): by month, 288 a day.
        want = [3 * 288, 3 * 288] if cap == 50_000 else [576, 288, 576, 288]
        assert [n for *_, n in spans] == want
        assert all(b[0] > a[2] for a, b in itertools.pairwise(spans))  # no overlap
        _same_columns(sealed.readings(DeviceKind.CBOLT), plain.readings(DeviceKind.CBOLT))
        for res in ("1h", "1d"):
            assert _approx(sealed.rollups(DeviceKind.CBOLT, resolution=res)) == _approx(
                plain.rollups(DeviceKind.CBOLT, resolution=res)
            )
        assert _export(sealed, DeviceKind.CBOLT) == _export(plain, DeviceKind.CBOLT)
        assert _export(sealed, DeviceKind.CBOLT, device_id="b1", since_ms=T0 - 7) == _export(
            plain, DeviceKind.CBOLT, device_id="b1", since_ms=T0 - 7
        )


# -- edges found in review ------------------------------------------------------------------------


def _pair_of(tmp_path: Path, name: str) -> tuple[Store, Store]:
    return Store(tmp_path / f"{name}-sealed"), Store(tmp_path / f"{name}-plain")


def _write_both(stores: tuple[Store, ...], messages: list[tuple[str, bytes]], now: int) -> None:
    dec = TelemetryDecoder(clock=lambda: now / 1000)
    for store in stores:
        batch = dec.decode_batch(messages)
        assert batch.errors == []
        store.write(batch, received_ms=now)


def test_a_backfill_that_meets_a_chunk_joins_it_and_stays_counted_once(tmp_path: Path) -> None:
    """A chunk starts at 00:10 on March 1st; a backfill brings 00:00 and 12:00 of that day: one
    chunk spans them all (no overlap), and 12:00 delivered again is a duplicate."""
    now = T0 + 5 * DAY_MS
    sealed, plain = _pair_of(tmp_path, "backfill")
    with sealed, plain:
        first = [
            _message(
                "cbolt",
                "b1",
                "site-a",
                "telemetry",
                ts=T0 + 600_000 + i * HOUR_MS,
                seq=i,
                preload_kn=60.0 + i,
            )
            for i in range(30)
        ]
        _write_both((sealed, plain), first, now)
        assert sealed.seal(now_ms=now).done
        late = [
            _message("cbolt", "b1", "site-a", "telemetry", ts=T0, seq=100, preload_kn=1.0),
            _message(
                "cbolt", "b1", "site-a", "telemetry", ts=T0 + 12 * HOUR_MS, seq=101, preload_kn=2.0
            ),
        ]
        _write_both((sealed, plain), late, now)
        assert sealed.seal(now_ms=now).readings == 2
        spans = (
            sqlite3.connect(sealed.file)
            .execute("SELECT start_ms, last_ms FROM chunks_cbolt ORDER BY start_ms")
            .fetchall()
        )
        assert all(b[0] > a[1] for a, b in itertools.pairwise(spans))
        assert spans[0][0] == T0
        dec = TelemetryDecoder(clock=lambda: now / 1000)
        again = sealed.write(dec.decode_batch(late[1:]), received_ms=now)
        assert (again.stored, again.duplicates) == (0, 1)
        _same_columns(sealed.readings(DeviceKind.CBOLT), plain.readings(DeviceKind.CBOLT))
        assert sealed.stats().readings == plain.stats().readings == 32


def test_the_newest_waveform_can_be_a_sealed_one(tmp_path: Path) -> None:
    now = T0 + 5 * DAY_MS
    wave = [0.5, -1.25, 3.0, 7.5]
    messages = [
        _message(
            "cnc_mill",
            "m1",
            "site-a",
            "telemetry",
            ts=T0 + HOUR_MS,
            seq=1,
            spindle_rpm=9000.0,
            vib_ms2=wave,
            fs_hz=25_600.0,
        ),
        # The newest reading carries no waveform: it stays a row, the waveform is sealed.
        _message(
            "cnc_mill", "m1", "site-a", "telemetry", ts=T0 + 2 * HOUR_MS, seq=2, spindle_rpm=9100.0
        ),
    ]
    with Store(tmp_path / "s") as store:
        _write_both((store,), messages, now)
        store.seal(now_ms=now)
        got = store.latest_waveform(DeviceKind.CNC_MILL, "m1", "vib_ms2")
        assert got is not None
        ts, samples, values = got
        assert ts == T0 + HOUR_MS
        assert samples.tolist() == wave
        assert values["spindle_rpm"] == 9000.0


def test_a_fast_device_that_stops_keeps_every_minute_of_its_last_hour(tmp_path: Path) -> None:
    """A 1 Hz printer stops at 16:59:59: its newest reading stays a row, and the minutes of
    16:00-16:59 are still there after the seal (stored or computed, as before)."""
    now = T0 + 5 * DAY_MS
    stop = T0 + 17 * HOUR_MS - 1_000
    messages = [
        _message("printer3d", "p1", "site-a", "telemetry", ts=t, seq=i, hotend_c=200.0 + i % 9)
        for i, t in enumerate(range(stop - 2 * HOUR_MS + 1_000, stop + 1, 1_000))
    ]
    sealed, plain = _pair_of(tmp_path, "fast")
    with sealed, plain:
        for at in range(0, len(messages), 2_000):
            _write_both((sealed, plain), messages[at : at + 2_000], now)
        plain.rollup(now_ms=now)
        sealed.seal(now_ms=now)
        for res in ("1m", "1h", "1d"):
            got = sealed.rollups(DeviceKind.PRINTER3D, resolution=res)
            want = plain.rollups(DeviceKind.PRINTER3D, resolution=res)
            assert _approx(got) == _approx(want), res
        assert len(sealed.rollups(DeviceKind.PRINTER3D, resolution="1m")) == 120


def test_hours_of_sealed_days_start_at_or_after_since(pair: tuple[Store, Store]) -> None:
    sealed, plain = pair
    for since, until in ((T0 + 90 * 60_000, T0 + DAY_MS + 7), (T0 + 1, None)):
        got = sealed.rollups(DeviceKind.CBOLT, resolution="1h", since_ms=since, until_ms=until)
        want = plain.rollups(DeviceKind.CBOLT, resolution="1h", since_ms=since, until_ms=until)
        assert got == want
        a = sealed.rollup_means(DeviceKind.CBOLT, "b1", since_ms=since, until_ms=until)
        b = plain.rollup_means(DeviceKind.CBOLT, "b1", since_ms=since, until_ms=until)
        assert a[0].tolist() == b[0].tolist()


def test_waveforms_are_cut_into_chunks_a_decoder_accepts(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import ingest.store.seal as seal_module

    monkeypatch.setattr(seal_module, "_WAVE_SAMPLES", 40)  # 5 records of 8 samples a chunk
    now = T0 + 5 * DAY_MS
    messages = [
        _message(
            "cnc_mill",
            "m1",
            "site-a",
            "telemetry",
            ts=T0 + i * 600_000,
            seq=i,
            spindle_rpm=9000.0 + i,
            vib_ms2=[float(i + k) for k in range(8)],
            fs_hz=25_600.0,
        )
        for i in range(24)
    ]
    sealed, plain = _pair_of(tmp_path, "waves")
    with sealed, plain:
        _write_both((sealed, plain), messages, now)
        sealed.seal(now_ms=now)
        sizes = [
            n
            for (n,) in sqlite3.connect(sealed.file).execute(
                "SELECT n FROM chunks_cnc_mill ORDER BY start_ms"
            )
        ]
        assert sizes == [5, 5, 5, 5, 3]  # the newest stays a row
        _same_columns(sealed.readings(DeviceKind.CNC_MILL), plain.readings(DeviceKind.CNC_MILL))
