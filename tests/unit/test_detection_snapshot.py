"""The detection snapshot: written atomically (a failed write keeps the previous one), its write
failures logged once and survived by the service, and the faulted devices it records shown by
``boltwatch stats``, right after a restart too."""

from __future__ import annotations

import errno
import json
import logging
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from typer.testing import CliRunner

from boltwatch.cli import app
from boltwatch.wiring import Snapshots
from detection.base import DetectionError, Frame, Scores
from detection.engine import SNAPSHOT_FILE, Engine, snapshot_faults
from detection.preload import BoltPreloadDetector
from ingest.store import Store
from sensors.codec import TelemetryDecoder

T0_MS = 1_772_323_200_000
STEP_MS = 300_000
runner = CliRunner()


class FlakyPreload(BoltPreloadDetector):
    """The bolt detector with a bug: raises on any frame holding a device named ``bad-*``."""

    def update(self, frame: Frame) -> Scores:
        if any(str(d).startswith("bad-") for d in frame.device_id.tolist()):
            raise FloatingPointError("a bug that only these devices' data triggers")
        return super().update(frame)


def _feed(engine: Engine, devices: list[str], k: int) -> None:
    batch = TelemetryDecoder().decode_batch(
        (
            f"boltwatch/v1/site-1/cbolt/{dev}/telemetry",
            json.dumps({"ts": T0_MS + k * STEP_MS, "seq": k, "preload_kn": 50.0}).encode(),
        )
        for dev in devices
    )
    engine.process_batch(batch)


def _engine_with_faults(bad: int) -> Engine:
    engine = Engine({"cbolt": FlakyPreload()})
    devices = ["b-1", "b-2", *(f"bad-{i:02d}" for i in range(bad))]
    for k in range(3):
        _feed(engine, devices, k)
    return engine


def _enospc_savez(file: Any, *args: object, **kwargs: object) -> None:
    """``np.savez`` on a full disk: part of the file written, then ENOSPC."""
    file.write(b"PK\x03\x04 a partial zip")
    raise OSError(errno.ENOSPC, "No space left on device")


@pytest.fixture
def store_dir(tmp_path: Path) -> Path:
    path = tmp_path / "store"
    Store(path).close()
    return path


# -- atomic writes -------------------------------------------------------------------------------


def test_a_failed_write_keeps_the_previous_snapshot(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    engine = _engine_with_faults(bad=1)
    path = tmp_path / SNAPSHOT_FILE
    engine.save(path)
    before = path.read_bytes()
    _feed(engine, ["b-1", "b-2", "b-3"], 3)  # newer state, which the failed write would hold
    monkeypatch.setattr(np, "savez", _enospc_savez)
    with pytest.raises(OSError, match="No space left") as failed:
        engine.save(path)
    assert failed.value.errno == errno.ENOSPC
    assert path.read_bytes() == before, "the previous snapshot was not touched"
    assert list(tmp_path.iterdir()) == [path], "the partial temporary file was removed"
    monkeypatch.undo()
    restarted = Engine({"cbolt": FlakyPreload()})
    restarted.load(path)
    assert set(restarted.slots["cbolt"]) == {"b-1", "b-2", "bad-00"}


def test_a_truncated_snapshot_is_a_detection_error(tmp_path: Path) -> None:
    path = tmp_path / SNAPSHOT_FILE
    _engine_with_faults(bad=1).save(path)
    path.write_bytes(path.read_bytes()[:200])  # a zip cut short: not an OSError nor ValueError
    with pytest.raises(DetectionError, match="not a readable snapshot"):
        Engine({"cbolt": FlakyPreload()}).load(path)
    with pytest.raises(DetectionError, match="not a readable snapshot"):
        snapshot_faults(path)


# -- the service's snapshots: a failed write is one log line, and the service goes on ------------


def test_the_service_logs_a_failed_write_once_and_goes_on(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    path = tmp_path / SNAPSHOT_FILE
    engine = _engine_with_faults(bad=1)
    snapshots = Snapshots(engine, path)
    assert snapshots.save()
    before = path.read_bytes()
    monkeypatch.setattr(np, "savez", _enospc_savez)
    with caplog.at_level(logging.INFO, logger="boltwatch"):
        assert not snapshots.save()
        assert not snapshots.save()  # still full: not logged again
        monkeypatch.undo()
        assert snapshots.save()  # space is back
    lines = [r for r in caplog.records if r.name == "boltwatch"]
    assert [r.levelno for r in lines] == [logging.ERROR, logging.INFO]
    failed = lines[0].getMessage()
    assert str(path) in failed
    assert "ENOSPC" in failed
    assert "previous snapshot is kept" in failed
    assert lines[0].exc_info is None, "one line, no traceback"
    assert "again" in lines[1].getMessage()
    assert path.read_bytes() != before, "written again once space returned"


def test_a_new_fault_is_written_within_seconds_and_the_rest_every_minute(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    now = [1_000.0]
    monkeypatch.setattr("boltwatch.run.time.monotonic", lambda: now[0])
    path = tmp_path / SNAPSHOT_FILE
    engine = Engine({"cbolt": FlakyPreload()})
    writes: list[float] = []
    save = engine.save

    def counted(to: Path) -> None:
        writes.append(now[0])
        save(to)

    monkeypatch.setattr(engine, "save", counted)
    snapshots = Snapshots(engine, path)
    snapshots.restore()  # at start: nothing to restore, written
    assert writes == [1_000.0]

    def saved_at(t: float) -> dict[str, list[str]] | None:
        """Advance the clock to ``t``; the faults written then (None: nothing written)."""
        now[0] = 1_000.0 + t
        count = len(writes)
        snapshots.save_if_due()
        return snapshot_faults(path).faulted if len(writes) > count else None

    _feed(engine, ["b-1", "bad-00"], 0)
    assert saved_at(1.0) is None, "a burst of faults is not one write per batch"
    assert saved_at(6.0) == {"cbolt": ["bad-00"]}
    _feed(engine, ["b-1"], 1)
    assert saved_at(40.0) is None, "no new fault: once a minute"
    assert saved_at(67.0) == {"cbolt": ["bad-00"]}


# -- boltwatch stats -----------------------------------------------------------------------------


def test_stats_shows_the_faulted_devices(store_dir: Path) -> None:
    _engine_with_faults(bad=2).save(store_dir / SNAPSHOT_FILE)
    as_json = runner.invoke(app, ["stats", "--store", str(store_dir), "--json"])
    assert as_json.exit_code == 0, as_json.output
    data = json.loads(as_json.stdout)
    assert data["detector_faults"] == {"cbolt": {"count": 2, "devices": ["bad-00", "bad-01"]}}
    assert isinstance(data["detector_faults_as_of_ms"], int)
    text = runner.invoke(app, ["stats", "--store", str(store_dir)], env={"COLUMNS": "200"})
    assert text.exit_code == 0, text.output
    assert "detector faults 2  (snapshot of 20" in text.stdout
    assert "cbolt" in text.stdout.split("detector faults", 1)[1]
    assert "bad-00, bad-01" in text.stdout


def test_stats_names_a_bounded_number_of_faulted_devices(store_dir: Path) -> None:
    _engine_with_faults(bad=25).save(store_dir / SNAPSHOT_FILE)
    data = json.loads(runner.invoke(app, ["stats", "--store", str(store_dir), "--json"]).stdout)
    faults = data["detector_faults"]["cbolt"]
    assert faults["count"] == 25
    assert faults["devices"] == [f"bad-{i:02d}" for i in range(20)]
    text = runner.invoke(app, ["stats", "--store", str(store_dir)], env={"COLUMNS": "400"})
    assert "detector faults 25" in text.stdout
    assert "bad-19, … (+5)" in text.stdout
    assert "bad-20" not in text.stdout


def test_stats_after_a_restart_shows_no_stale_fault(store_dir: Path) -> None:
    """A restart evaluates faulted devices again: the snapshot, rewritten at start, says so."""
    path = store_dir / SNAPSHOT_FILE
    _engine_with_faults(bad=1).save(path)
    restarted = Engine({"cbolt": FlakyPreload()})
    Snapshots(restarted, path).restore()
    assert restarted.faulted["cbolt"] == set()
    data = json.loads(runner.invoke(app, ["stats", "--store", str(store_dir), "--json"]).stdout)
    assert data["detector_faults"] == {}
    # The bug is still there: the device faults again, and stats shows it again.
    _feed(restarted, ["b-1", "bad-00"], 5)
    restarted.save(path)
    data = json.loads(runner.invoke(app, ["stats", "--store", str(store_dir), "--json"]).stdout)
    assert data["detector_faults"] == {"cbolt": {"count": 1, "devices": ["bad-00"]}}


def test_stats_without_a_snapshot_or_with_a_broken_one(store_dir: Path) -> None:
    data = json.loads(runner.invoke(app, ["stats", "--store", str(store_dir), "--json"]).stdout)
    assert data["detector_faults"] == {}
    assert data["detector_faults_as_of_ms"] is None
    text = runner.invoke(app, ["stats", "--store", str(store_dir)])
    assert "detector faults unknown (no detection snapshot in the store)" in text.stdout
    (store_dir / SNAPSHOT_FILE).write_bytes(b"not a snapshot")
    broken = runner.invoke(app, ["stats", "--store", str(store_dir), "--json"])
    assert broken.exit_code == 0
    assert json.loads(broken.stdout)["detector_faults"] == {}
    assert "warning: detector faults unknown" in broken.stderr


# -- snapshots as bytes (a cluster's checkpoints) -------------------------------------------------


def _bolt_batch(k0: int, n: int, factor: float) -> Any:
    rng = np.random.default_rng(k0)
    return TelemetryDecoder(clock=lambda: (T0_MS + 2_000 * STEP_MS) / 1000).decode_batch(
        (
            f"boltwatch/v1/site-1/cbolt/b{i}/telemetry",
            json.dumps(
                {
                    "ts": T0_MS + k * STEP_MS,
                    "seq": k,
                    "preload_kn": round(
                        (50.0 + i) * (factor if i == 2 else 1.0) * (1 + rng.normal(0, 0.004)), 3
                    ),
                }
            ).encode(),
        )
        for k in range(k0, k0 + n)
        for i in range(4)
    )


def test_an_engine_restored_from_bytes_goes_on_as_the_original() -> None:
    first = Engine({"cbolt": BoltPreloadDetector()})
    first.process_batch(_bolt_batch(0, 300, 1.0))
    data = first.dumps()
    restored = Engine({"cbolt": BoltPreloadDetector()})
    restored.loads(data)
    later = _bolt_batch(300, 300, 0.9)
    went_on = first.process_batch(later).events
    assert [(e.device_id, e.kind) for e in went_on if e.kind.value == "loosening"]
    assert restored.process_batch(later).events == went_on
    # A fresh engine learns the loosened level as the baseline: it would miss the loosening.
    fresh = Engine({"cbolt": BoltPreloadDetector()}).process_batch(later).events
    assert not [e for e in fresh if e.kind.value == "loosening"]


def test_bytes_that_are_not_a_snapshot_are_a_detection_error() -> None:
    with pytest.raises(DetectionError, match="checkpoint of partition 3: not a readable"):
        Engine({"cbolt": BoltPreloadDetector()}).loads(b"nope", source="checkpoint of partition 3")
