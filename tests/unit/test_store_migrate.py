"""``boltwatch store migrate`` on a store written by the previous release (schema version 1,
tests/data/store_v1.sqlite3.gz, made by tests/data/make_store_v1.py): every reading, rollup
and export reads back the same after migrating, and the file shrinks."""

from __future__ import annotations

import gzip
import io
import shutil
import sqlite3
from pathlib import Path

import numpy as np
from typer.testing import CliRunner

from boltwatch.cli import app
from ingest.store import Store
from sensors.schema import DeviceKind

V1 = Path(__file__).parents[1] / "data" / "store_v1.sqlite3.gz"


def _v1(folder: Path) -> Path:
    folder.mkdir()
    with gzip.open(V1) as src, open(folder / "boltwatch.sqlite3", "wb") as dst:
        shutil.copyfileobj(src, dst)
    return folder


def _version(folder: Path) -> int:
    with sqlite3.connect(folder / "boltwatch.sqlite3") as conn:
        return int(conn.execute("SELECT max(version) FROM schema_version").fetchone()[0])


def _everything(folder: Path) -> list[object]:
    out: list[object] = []
    with Store(folder) as store:
        out.append(store.stats().readings_by_kind)
        for kind in (DeviceKind.CBOLT, DeviceKind.CNC_MILL):
            cols = store.readings(kind)
            out += [cols.device_id.tolist(), cols.ts_ms.tolist(), cols.seq.tolist()]
            out += [np.nan_to_num(v, nan=-1e300).tolist() for v in cols.values.values()]
            out += [[None if w is None else w.tolist() for w in a] for a in cols.arrays.values()]
            out.append(
                [
                    (r.device_id, r.field, r.bucket_ms, r.n, r.mean)
                    for r in store.rollups(kind, resolution="1h")
                ]
            )
            csv = io.StringIO()
            store.export_csv(csv, kind)
            out.append(csv.getvalue())
    return out


def _bolt_bytes(folder: Path) -> int:
    """Bytes of the bolts' readings (rows, chunks and their indexes; SQLite's dbstat), without
    the empty pages of the other kinds' new tables (16 KiB each, a fixed cost of a new store)."""
    with sqlite3.connect(folder / "boltwatch.sqlite3") as conn:
        (n,) = conn.execute(
            "SELECT sum(payload) FROM dbstat WHERE name IN "
            "(SELECT name FROM sqlite_schema WHERE tbl_name IN ('readings_cbolt', 'chunks_cbolt'))"
        ).fetchone()
    return int(n)


def test_migrate_a_store_of_the_previous_release(tmp_path: Path) -> None:
    assert _version(_v1(tmp_path / "reference")) == 1
    folder = _v1(tmp_path / "store")
    before = _bolt_bytes(folder)
    want = _everything(tmp_path / "reference")  # opened by this release, not sealed

    result = CliRunner().invoke(app, ["store", "migrate", "--store", str(folder)])
    assert result.exit_code == 0, result.output
    assert "sealed 1,293 readings into 18 chunks" in result.output
    assert "done: " in result.output
    assert _version(folder) == 2
    with sqlite3.connect(folder / "boltwatch.sqlite3") as conn:
        chunks, sealed = conn.execute("SELECT count(*), sum(n) FROM chunks_cbolt").fetchone()
        (tail,) = conn.execute("SELECT count(*) FROM readings_cbolt").fetchone()
    assert chunks == 2  # one per bolt: six days of March
    assert (sealed, tail) == (2 * 6 * 96 - 2, 2)  # each bolt's newest reading stays a row
    assert _bolt_bytes(folder) < before / 4
    assert _everything(folder) == want
    # Again: nothing left to do.
    again = CliRunner().invoke(app, ["store", "migrate", "--store", str(folder), "--no-vacuum"])
    assert again.exit_code == 0, again.output
    assert "done: 0 readings sealed" in again.output


def test_migrate_refuses_what_is_not_a_store_and_a_store_in_use(tmp_path: Path) -> None:
    from boltwatch.store_lock import StoreLock

    missing = CliRunner().invoke(app, ["store", "migrate", "--store", str(tmp_path / "nope")])
    assert missing.exit_code == 2
    assert "holds no boltwatch store" in missing.output
    folder = _v1(tmp_path / "store")
    with StoreLock(folder):
        busy = CliRunner().invoke(app, ["store", "migrate", "--store", str(folder)])
    assert busy.exit_code == 2
    assert "in use by another boltwatch" in busy.output
    assert _version(folder) == 1, "a store in use is left as it was"
