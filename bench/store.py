"""The embedded store's size and reads (issue 17): bytes per stored reading, and one bolt's year.

(1) 1,000 bolts x 30 days at one reading per 5 minutes (preload, temperature, battery, RSSI; the
    timestamps with a device's clock jitter), written as a fleet reporting at once (every bolt's
    reading of a step per write, received a second or two later), with the service's upkeep
    (rollups, sealing the days older than the tail) every hour of data, then checkpointed:
    bytes per reading of the database file (rollups, indexes and free pages included), and the
    share of each table.
(2) 10 3D printers x 3 days at 1 Hz with their 8 channels (with sensor noise): the same, and
    the bytes of a sealed reading (the first two days are sealed at the end: a store that keeps
    a month has 29 days of 30 sealed).
(3) One bolt's year at 5 minutes (105,120 readings): ``Store.readings`` over a year, a month and
    a day, ``Store.rollups`` of the year at 1 h and of a week at 1 min, and what the console
    draws at each of its zooms (raw up to a day, then 1-minute, hourly and daily means: the
    "any zoom" of issue 17's 50 ms target); ms, best of 5.

Reference in the same run: the readings' own payload as 8-byte columns (timestamp, seq and the
fields), what a plain array dump would take.

Usage: python bench/store.py [--quick]   (full run about 6 minutes, most of it writing case (1)'s
8.6 million readings; --quick: 100 bolts x 10 days, 2 printers, about 20 s)
"""

from __future__ import annotations

import argparse
import shutil
import sqlite3
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

# This file lives in bench/: drop that folder from sys.path (a script named like a package there
# would shadow it), and make the repository root importable.
_HERE = Path(__file__).resolve().parent
sys.path[:] = [p for p in sys.path if Path(p or ".").resolve() != _HERE]
if str(_HERE.parent) not in sys.path:
    sys.path.append(str(_HERE.parent))

import numpy as np  # noqa: E402
from rich.console import Console  # noqa: E402
from rich.table import Table  # noqa: E402

from ingest.store import DAY_MS, Store  # noqa: E402
from sensors.codec import DecodedBatch, ReadingColumns  # noqa: E402
from sensors.schema import DeviceKind  # noqa: E402

T0 = 1_772_323_200_000  # 2026-03-01
STEP_MS = 300_000


def _bolt_columns(
    devices: list[str], ts: np.ndarray, seq: np.ndarray, rng: np.random.Generator
) -> ReadingColumns:
    n = len(devices)
    phase = 2 * np.pi * (ts % DAY_MS) / DAY_MS
    base = 400.0 + (np.arange(n) % 97)
    values = {
        "preload_kn": np.round(base + 2.0 * np.sin(phase) + rng.normal(0, 0.8, n), 2),
        "temp_c": np.round(12 + 6 * np.sin(phase) + rng.normal(0, 0.05, n), 1),
        "battery_v": np.round(3.62 - (ts - T0) / 1e12, 3),
        "rssi_dbm": np.round(-71 + rng.normal(0, 1.5, n)),
    }
    return ReadingColumns(
        kind=DeviceKind.CBOLT,
        site=np.array(["bench"] * n, dtype=object),
        device_id=np.array(devices, dtype=object),
        ts_ms=ts.astype(np.int64),
        seq=seq.astype(np.int64),
        values=values,
        arrays={},
        message=np.arange(n, dtype=np.int64),
    )


def _printer_columns(
    devices: list[str], ts: np.ndarray, seq: np.ndarray, rng: np.random.Generator
) -> ReadingColumns:
    n = len(devices)
    t = (ts - T0) / 1000.0
    wave = np.sin(2 * np.pi * t / 600.0)

    def noise(sd: float) -> np.ndarray:
        return rng.normal(0, sd, n)

    values = {
        "hotend_c": np.round(215 + 0.6 * wave + noise(0.2), 1),
        "hotend_target_c": np.full(n, 215.0),
        "hotend_duty_pct": np.round(42 + 3 * wave + noise(1.0), 1),
        "bed_c": np.round(60 + 0.2 * wave + noise(0.1), 1),
        "bed_target_c": np.full(n, 60.0),
        "bed_duty_pct": np.round(18 + 2 * wave + noise(0.5), 1),
        "fan_pct": np.full(n, 100.0),
        "chamber_c": np.round(31 + 0.4 * wave + noise(0.1), 1),
    }
    return ReadingColumns(
        kind=DeviceKind.PRINTER3D,
        site=np.array(["bench"] * n, dtype=object),
        device_id=np.array(devices, dtype=object),
        ts_ms=ts.astype(np.int64),
        seq=seq.astype(np.int64),
        values=values,
        arrays={},
        message=np.arange(n, dtype=np.int64),
    )


def machines_size(folder: Path, machines: int, hours: int) -> dict[str, Any]:
    """Case (2): printers at 1 Hz; bytes per reading, and per sealed reading."""
    rng = np.random.default_rng(3)
    devices = [f"printer-{i:02d}" for i in range(machines)]
    with Store(folder, durable=False, retention_days=3660) as store:
        for k in range(0, hours * 3600, 60):  # a minute of every printer a write
            ts = T0 + (k + np.repeat(np.arange(60), machines)) * 1000
            seq = k + np.repeat(np.arange(60), machines)
            cols = _printer_columns(devices * 60, ts, seq, rng)
            store.write(
                DecodedBatch(telemetry={DeviceKind.PRINTER3D: cols}),
                received_ms=int(ts.max()) + 500,
            )
            if k % 3600 == 3540:
                _maintain(store, int(ts.max()))
        _maintain(store, T0 + (hours + 2) * 3_600_000, final=True)
        readings = store.stats().readings
    db, wal = _db_bytes(folder)
    with sqlite3.connect(folder / "boltwatch.sqlite3") as conn:
        sealed = conn.execute("SELECT coalesce(sum(n), 0) FROM chunks_printer3d").fetchone()[0]
    tables = _tables(folder)
    chunk_bytes = sum(v for k, v in tables.items() if "chunks_printer3d" in k)
    return {
        "readings": readings,
        "db": db,
        "wal": wal,
        "tables": tables,
        "sealed": int(sealed),
        "chunk_bytes": chunk_bytes,
    }


def _tables(folder: Path) -> dict[str, int]:
    """Bytes of each table and index (SQLite's dbstat), biggest first."""
    with sqlite3.connect(folder / "boltwatch.sqlite3") as conn:
        rows = conn.execute(
            "SELECT name, sum(pgsize) FROM dbstat GROUP BY name ORDER BY 2 DESC"
        ).fetchall()
    return {str(name): int(size) for name, size in rows}


def _db_bytes(folder: Path) -> tuple[int, int]:
    db = folder / "boltwatch.sqlite3"
    with sqlite3.connect(db) as conn:
        conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    wal = folder / "boltwatch.sqlite3-wal"
    return db.stat().st_size, wal.stat().st_size if wal.exists() else 0


def fleet_size(folder: Path, bolts: int, days: int) -> dict[str, Any]:
    """Case (1): write the fleet, maintain, checkpoint; bytes per reading."""
    rng = np.random.default_rng(1)
    devices = [f"bolt-{i:05d}" for i in range(bolts)]
    steps = days * DAY_MS // STEP_MS
    started = time.perf_counter()
    with Store(folder, durable=False, retention_days=3660) as store:
        # Every bolt's reading of one step a write, received a second or two after it was taken
        # (as live ingest sees them); the upkeep once an hour of data.
        for k in range(steps):
            step = np.full(bolts, k)
            ts = T0 + step * STEP_MS + rng.integers(-40, 40, bolts)
            cols = _bolt_columns(devices, ts, step, rng)
            received = int(ts.max()) + int(rng.integers(500, 2_000))
            store.write(DecodedBatch(telemetry={DeviceKind.CBOLT: cols}), received_ms=received)
            if k % 12 == 11:
                _maintain(store, received)
        _maintain(store, T0 + days * DAY_MS + 2 * 3_600_000, final=True)
        readings = store.stats().readings
    write_s = time.perf_counter() - started
    db, wal = _db_bytes(folder)
    return {
        "readings": readings,
        "db": db,
        "wal": wal,
        "write_s": write_s,
        "tables": _tables(folder),
    }


def _maintain(store: Store, now_ms: int, *, final: bool = False) -> None:
    """The service's upkeep; ``final``: until everything sealable is sealed (the service does it
    a bounded step a minute)."""
    store.rollup(now_ms=now_ms)
    while not store.seal(now_ms=now_ms).done and final:
        pass


def year_reads(folder: Path) -> dict[str, float]:
    """Case (3): one bolt's year, then its reads (best of 5, ms)."""
    rng = np.random.default_rng(2)
    n = 365 * DAY_MS // STEP_MS
    ts = T0 + np.arange(n) * STEP_MS + rng.integers(-40, 40, n)
    with Store(folder, durable=False, retention_days=3660) as store:
        for lo in range(0, n, 2016):  # a week a write
            part = slice(lo, min(n, lo + 2016))
            cols = _bolt_columns(
                ["year-bolt"] * (part.stop - part.start), ts[part], np.arange(n)[part], rng
            )
            store.write(DecodedBatch(telemetry={DeviceKind.CBOLT: cols}), received_ms=int(ts[-1]))
            _maintain(store, int(ts[part][-1]) + 3_600_000)
        _maintain(store, int(ts[-1]) + 2 * DAY_MS, final=True)
        end = int(ts[-1]) + 1
        out: dict[str, float] = {}
        for name, span in (("year", 365 * DAY_MS), ("month", 30 * DAY_MS), ("day", DAY_MS)):
            out[f"readings {name}"] = _best(
                lambda s=span: store.readings(
                    DeviceKind.CBOLT, device_id="year-bolt", since_ms=end - s, until_ms=end
                )
            )
        out["rollups 1h year"] = _best(
            lambda: store.rollups(
                DeviceKind.CBOLT,
                resolution="1h",
                device_id="year-bolt",
                since_ms=end - 365 * DAY_MS,
            )
        )
        out["rollup means 1h year"] = _best(
            lambda: store.rollup_means(
                DeviceKind.CBOLT, "year-bolt", resolution="1h", since_ms=end - 365 * DAY_MS
            )
        )
        # What the console draws at each zoom (dashboards/console/source.py picks it).
        out["console 1y: daily means"] = _best(
            lambda: store.rollup_means(
                DeviceKind.CBOLT, "year-bolt", resolution="1d", since_ms=end - 365 * DAY_MS
            )
        )
        out["console 30d: hourly means"] = _best(
            lambda: store.rollup_means(
                DeviceKind.CBOLT, "year-bolt", resolution="1h", since_ms=end - 30 * DAY_MS
            )
        )
        out["console 7d: 1-minute means"] = _best(
            lambda: store.rollup_means(
                DeviceKind.CBOLT, "year-bolt", resolution="1m", since_ms=end - 7 * DAY_MS
            )
        )
        out["console 1d: raw readings"] = _best(
            lambda: store.readings(
                DeviceKind.CBOLT, device_id="year-bolt", since_ms=end - DAY_MS, waveforms=False
            )
        )
        out["rollups 1m week"] = _best(
            lambda: store.rollups(
                DeviceKind.CBOLT, device_id="year-bolt", since_ms=end - 7 * DAY_MS
            )
        )
    return out


def _best(work: object, runs: int = 5) -> float:
    times = []
    for _ in range(runs):
        t = time.perf_counter()
        work()  # type: ignore[operator]
        times.append((time.perf_counter() - t) * 1000)
    return min(times)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true")
    args = parser.parse_args()
    bolts, days, printers = (100, 10, 2) if args.quick else (1000, 30, 10)
    machine_days = 3  # days 1 and 2 sealed at the end, the third still rows
    console = Console()
    tmp = Path(tempfile.mkdtemp(prefix="bench-store-"))
    try:
        fleet = fleet_size(tmp / "fleet", bolts, days)
        machines = machines_size(tmp / "machines", printers, 24 * machine_days)
        reads = year_reads(tmp / "year")
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    n = fleet["readings"]
    payload = n * 8 * 6  # ts, seq and four fields as float64/int64
    table = Table(title=f"store: {bolts:,} bolts x {days} days at 5 min ({n:,.0f} readings)")
    for col in ("what", "figure", "reference (float64 columns)", "ratio", "target"):
        table.add_column(col)
    per = fleet["db"] / n
    table.add_row(
        "(1) database file after a checkpoint, per reading",
        f"{per:.1f} B",
        f"{payload / n:.1f} B",
        f"{per / (payload / n):.2f}",
        "<= 16 B",
    )
    table.add_row("(1) WAL after the checkpoint", f"{fleet['wal']:,} B", "", "", "")
    table.add_row(
        "(1) writing the fleet (with upkeep)", f"{n / fleet['write_s']:,.0f} readings/s", "", "", ""
    )
    m = machines["readings"]
    mper = machines["db"] / m
    mref = 8 * (2 + 8)
    table.add_row(
        f"(2) {printers} printers x {machine_days} days at 1 Hz, 8 channels "
        f"({m:,.0f} readings), per reading",
        f"{mper:.1f} B",
        f"{mref:.1f} B",
        f"{mper / mref:.2f}",
        "<= 16 B",
    )
    if machines["sealed"]:
        cper = machines["chunk_bytes"] / machines["sealed"]
        table.add_row(
            f"(2) per sealed reading ({machines['sealed']:,} sealed: the steady state)",
            f"{cper:.1f} B",
            f"{mref:.1f} B",
            f"{cper / mref:.2f}",
            "",
        )
    for name, ms in reads.items():
        target = "<= 50 ms" if name.startswith("console") else ""
        table.add_row(f"(3) one bolt's year: {name}", f"{ms:.1f} ms", "", "", target)
    console.print(table)
    for label, case, count in (("(1)", fleet, n), ("(2)", machines, m)):
        parts = ", ".join(
            f"{name} {size / count:.1f}" for name, size in list(case["tables"].items())[:6]
        )
        console.print(f"{label} bytes per reading by table: {parts}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
