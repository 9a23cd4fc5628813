"""The detection engine fed decoded MQTT batches, as ingest hands them over."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from detection.base import DetectionError, DetectionEvent, EventKind
from detection.engine import Engine
from detection.preload import BoltPreloadDetector
from sensors.codec import TelemetryDecoder
from sensors.registry import SAMPLE_REGISTRY_PATH, load_registry

T0_MS = 1_772_323_200_000
STEP_MS = 300_000


def _messages(
    device_levels: dict[str, float],
    start: int,
    count: int,
    *,
    factor: dict[str, float] | None = None,
    site: str = "site-1",
) -> list[tuple[str, bytes]]:
    rng = np.random.default_rng(start)
    out = []
    for k in range(start, start + count):
        for dev, level in device_levels.items():
            f = (factor or {}).get(dev, 1.0)
            reading = {
                "ts": T0_MS + k * STEP_MS,
                "seq": k,
                "preload_kn": round(level * f * (1 + rng.normal(0, 0.004)), 3),
                "temp_c": 12.0,
                "battery_v": 3.6,
            }
            out.append((f"boltwatch/v1/{site}/cbolt/{dev}/telemetry", json.dumps(reading).encode()))
    return out


def _feed(
    engine: Engine, messages: list[tuple[str, bytes]], chunk: int = 50
) -> list[DetectionEvent]:
    decoder = TelemetryDecoder()
    events: list[DetectionEvent] = []
    for i in range(0, len(messages), chunk):
        batch = decoder.decode_batch(messages[i : i + chunk])
        assert not batch.errors
        events += engine.process_batch(batch).events
    return events


def test_batches_of_many_devices_and_new_devices_midway() -> None:
    engine = Engine({"cbolt": BoltPreloadDetector()})
    levels = {f"b{i:02d}": 40.0 + i for i in range(8)}
    assert _feed(engine, _messages(levels, 0, 300)) == []
    more = {**levels, "late-comer": 70.0}
    events = _feed(engine, _messages(more, 300, 400, factor={"b03": 0.9}))
    assert len(engine.slots["cbolt"]) == 9
    loose = [e for e in events if e.kind is EventKind.LOOSENING]
    assert [e.device_id for e in loose] == ["b03"]
    assert loose[0].site == "site-1"
    assert engine.stats.readings == 8 * 300 + 9 * 400


def test_late_readings_are_evaluated_and_marked() -> None:
    engine = Engine({"cbolt": BoltPreloadDetector()})
    levels = {"b1": 50.0, "b2": 50.0}
    _feed(engine, _messages(levels, 0, 400))
    # b2 goes silent while its preload drops; b1 keeps reporting
    _feed(engine, _messages({"b1": 50.0}, 400, 200))
    # b2's store-and-forward backlog arrives after b1's newer readings: older than "now"
    decoder = TelemetryDecoder()
    backlog = _messages({"b2": 50.0}, 400, 200, factor={"b2": 0.6})
    batch = decoder.decode_batch(backlog)
    events = engine.process_batch(batch, now_ms=T0_MS + 700 * STEP_MS).events
    assert events
    assert all(e.late for e in events)
    assert {e.kind for e in events} >= {EventKind.LOOSENING}
    assert engine.stats.late == 200


def test_tightened_event_relearns_and_checks_the_nut_factor() -> None:
    registry = load_registry(SAMPLE_REGISTRY_PATH)
    bolt = next(iter(registry.joints)).bolts[0]
    info = registry.bolt(bolt.device_id)
    assert info is not None
    engine = Engine({"cbolt": BoltPreloadDetector()}, registry=registry)
    site = info.site
    msgs = _messages({bolt.device_id: 60.0}, 0, 100, site=site)
    d = info.profile.nominal_diameter_mm
    # torque giving K = 0.45 (dirty thread) at 60 kN
    tightened = {
        "type": "tightened",
        "ts": T0_MS + 100 * STEP_MS,
        "seq": 100,
        "torque_nm": round(0.45 * 60.0 * d, 1),
        "preload_kn": 60.0,
    }
    msgs.append(
        (f"boltwatch/v1/{site}/cbolt/{bolt.device_id}/event", json.dumps(tightened).encode())
    )
    events = _feed(engine, msgs, chunk=1000)
    inst = [e for e in events if e.kind is EventKind.INSTALLATION]
    assert len(inst) == 1
    assert inst[0].data["nut_factor"] == pytest.approx(0.45, abs=0.01)


def test_snapshot_restore_keeps_baselines_and_does_not_realert(tmp_path: Path) -> None:
    levels = {"b1": 50.0, "b2": 60.0}
    engine = Engine({"cbolt": BoltPreloadDetector()})
    _feed(engine, _messages(levels, 0, 300))
    first = _feed(engine, _messages(levels, 300, 200, factor={"b1": 0.85}))
    assert any(e.kind is EventKind.LOOSENING for e in first)
    path = tmp_path / "state.npz"
    engine.save(path)
    restarted = Engine({"cbolt": BoltPreloadDetector()})
    restarted.load(path)
    assert restarted.slots == engine.slots
    base = engine.detectors["cbolt"].state["baseline"][:2]
    np.testing.assert_array_equal(restarted.detectors["cbolt"].state["baseline"][:2], base)
    # same data continues: the still-loose bolt is not alerted again, the healthy one stays quiet
    after = _feed(restarted, _messages(levels, 500, 100, factor={"b1": 0.85}))
    assert [e for e in after if e.kind is EventKind.LOOSENING] == []


def test_load_rejects_a_foreign_file(tmp_path: Path) -> None:
    bad = tmp_path / "x.npz"
    bad.write_bytes(b"not a snapshot")
    with pytest.raises(DetectionError, match="snapshot"):
        Engine({"cbolt": BoltPreloadDetector()}).load(bad)


def test_joint_events_name_bolts_and_positions() -> None:
    registry = load_registry(SAMPLE_REGISTRY_PATH)
    joint = max(registry.joints, key=lambda j: len(j.bolts))
    assert len(joint.bolts) >= 3
    ids = [b.device_id for b in joint.bolts]
    info = registry.bolt(ids[0])
    assert info is not None
    engine = Engine({"cbolt": BoltPreloadDetector()}, registry=registry)
    levels = dict.fromkeys(ids, 60.0)
    _feed(engine, _messages(levels, 0, 300, site=info.site))
    events = _feed(
        engine, _messages(levels, 300, 100, factor={ids[0]: 0.8}, site=info.site), chunk=500
    )
    joint_events = [e for e in events if e.kind is EventKind.JOINT]
    assert joint_events
    assert f"joint {joint.id}" in joint_events[0].explanation
    assert f"position {joint.bolts[0].position}" in joint_events[0].explanation
    assert joint_events[0].device_id == ids[0]
