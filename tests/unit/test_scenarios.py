"""Scenario files, the offline simulator's outputs and their ground truth."""

from __future__ import annotations

import csv
import json
import time
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

from boltwatch.cli import app
from firmware_sim.bolts import LOOSENING_FAULTS, SENSOR_FAULTS, BoltFault
from firmware_sim.offline import iso, write_outputs
from firmware_sim.scenario import (
    ScenarioError,
    list_scenarios,
    load_scenario,
    parse_duration,
    parse_scenario,
    run_scenario,
)

LIBRARY = list_scenarios()


def test_library_has_every_mode() -> None:
    faults: set[str] = set()
    machine_faults: set[str] = set()
    materials: set[str] = set()
    for name in LIBRARY:
        s = load_scenario(name)
        faults |= {b.fault for b in s.bolts}
        materials |= {b.joint_material for b in s.bolts}
        machine_faults |= {f.kind for m in s.machines for f in m.faults}
    assert {f.value for f in BoltFault} <= faults, "each bolt and sensor fault has a scenario"
    assert {"steel", "aluminium"} <= materials
    from firmware_sim.machines import FAULT_KINDS

    every = {f for kinds in FAULT_KINDS.values() for f in kinds}
    assert every <= machine_faults, f"missing machine faults: {every - machine_faults}"


@pytest.mark.parametrize("name", LIBRARY)
def test_every_library_scenario_runs(name: str, tmp_path: Path) -> None:
    s = load_scenario(name)
    # Long enough for every fault of the bolt scenarios; machines sample every second, so their
    # scenarios are cut to a few hours here (the fablab faults are tested in test_machines.py).
    duration = min(parse_duration(s.duration), 4 * 3_600.0 if s.machines else 2 * 86_400.0)
    result = run_scenario(s, seed=3, duration_s=duration)
    rows = write_outputs(result, tmp_path)
    truth = json.loads((tmp_path / "truth.json").read_text())
    assert truth["scenario"] == s.name
    assert len(truth["devices"]) == sum(b.count for b in s.bolts) + len(s.machines)
    assert rows["ground_truth.csv"] == len(truth["devices"])
    if s.bolts:
        assert rows["cbolt.csv"] > 0


def test_cbolt_csv_is_the_replay_format(tmp_path: Path) -> None:
    result = run_scenario(load_scenario("retightening"), seed=5, duration_s=2 * 86_400)
    write_outputs(result, tmp_path)
    with (tmp_path / "cbolt.csv").open() as fh:
        rows = list(csv.DictReader(fh))
    assert list(rows[0]) == [
        "timestamp",
        "device_id",
        "preload_kn",
        "temp_c",
        "torque_nm",
        "battery_v",
    ]
    # RFC 3339 UTC timestamps, in arrival order.
    assert rows[0]["timestamp"] == "2026-03-01T00:00:00Z"
    stamps = [r["timestamp"] for r in rows]
    assert stamps == sorted(stamps)
    # 8 bolts every 5 minutes for two days.
    assert len(rows) == 8 * 2 * 288
    # The installation torque is on each bolt's first row, nowhere else.
    with_torque = [r for r in rows if r["torque_nm"]]
    assert len(with_torque) == 8
    assert {r["timestamp"] for r in with_torque} == {"2026-03-01T00:00:00Z"}
    for r in rows[:50]:
        float(r["preload_kn"])
        float(r["temp_c"])
        float(r["battery_v"])


def test_dropouts_are_missing_rows_and_truth_is_complete(tmp_path: Path) -> None:
    result = run_scenario(load_scenario("sensor-faults"), seed=2)
    write_outputs(result, tmp_path)
    with (tmp_path / "cbolt.csv").open() as fh:
        per_device: dict[str, int] = {}
        for r in csv.DictReader(fh):
            per_device[r["device_id"]] = per_device.get(r["device_id"], 0) + 1
    full = 30 * 288
    assert per_device["healthy-b001"] == full
    assert per_device["dropout-b001"] < full
    with (tmp_path / "ground_truth.csv").open() as fh:
        truth = {r["device_id"]: r for r in csv.DictReader(fh)}
    assert truth["stuck-b001"]["fault"] == "stuck"
    assert truth["stuck-b001"]["onset"].startswith("2026-03-")
    assert truth["healthy-b001"]["onset"] == ""
    assert all(t["cross70"] == "" for t in truth.values()), "sensor faults are not loosening"
    assert truth["dropout-b002"]["end"] != ""
    events = (tmp_path / "events.csv").read_text()
    assert "battery_swap" in events


def test_loosening_ground_truth_has_the_70_percent_crossing() -> None:
    result = run_scenario(load_scenario("loosening-vibration"), seed=9)
    loose = [t for g in result.bolts for t in g.truth if t.fault in LOOSENING_FAULTS]
    assert len(loose) == 4
    for t in loose:
        assert t.onset_ms is not None
        assert t.cross70_ms is not None
        assert t.cross70_ms > t.onset_ms
    healthy = [t for g in result.bolts for t in g.truth if t.fault is BoltFault.NONE]
    assert healthy
    assert all(t.cross70_ms is None for t in healthy)
    assert all(t.fault not in SENSOR_FAULTS for t in loose)


def test_machine_outputs_and_intervals(tmp_path: Path) -> None:
    result = run_scenario(load_scenario("fablab"), seed=4, duration_s=6 * 3_600)
    write_outputs(result, tmp_path)
    for kind in ("printer3d", "laser_cutter", "cnc_mill", "vinyl_cutter", "embroidery"):
        with (tmp_path / f"{kind}.csv").open() as fh:
            reader = csv.reader(fh)
            header = next(reader)
            assert header[:2] == ["timestamp", "device_id"]
            assert next(reader)
    truth = json.loads((tmp_path / "truth.json").read_text())
    runaway = next(d for d in truth["devices"] if d["device_id"] == "prusa-mk4-2")
    assert runaway["fault"] == "thermistor_detached"
    assert runaway["intervals"][0]["start"] == "2026-03-02T12:00:00Z"  # 07:00 + 5 h


def test_same_seed_same_files(tmp_path: Path) -> None:
    s = load_scenario("mixed-fleet")
    for d in ("a", "b", "c"):
        write_outputs(run_scenario(s, seed=1 if d != "c" else 2, duration_s=86_400), tmp_path / d)
    a = (tmp_path / "a" / "cbolt.csv").read_bytes()
    assert a == (tmp_path / "b" / "cbolt.csv").read_bytes()
    assert a != (tmp_path / "c" / "cbolt.csv").read_bytes()
    assert (tmp_path / "a" / "laser_cutter.csv").read_bytes() == (
        tmp_path / "b" / "laser_cutter.csv"
    ).read_bytes()


def test_one_bolt_year_of_5_minute_samples_is_fast_enough_to_iterate_on() -> None:
    # Not a timing assertion (bench/simulate.py measures speed): a year must simply be feasible.
    data = {
        "name": "year",
        "duration": "365d",
        "interval": "5m",
        "bolts": [{"count": 1, "id_prefix": "y"}],
    }
    t0 = time.process_time()
    result = run_scenario(parse_scenario(data), seed=1)
    assert result.bolt_samples == 365 * 288
    assert np.isfinite(result.bolts[0].preload_kn).all()
    assert time.process_time() - t0 < 60


@pytest.mark.parametrize(
    ("data", "key", "words"),
    [
        ({"name": "x", "duration": "3 weeks"}, "duration", "not a duration"),
        ({"name": "x", "duration": "0s"}, "duration", "> 0"),
        (
            {"name": "x", "bolts": [{"count": 1, "id_prefix": "a", "fault": "rust"}]},
            "bolts[0].fault",
            "rust",
        ),
        ({"name": "x", "bolts": [{"count": 0, "id_prefix": "a"}]}, "bolts[0].count", ">= 1"),
        (
            {"name": "x", "bolts": [{"count": 1, "id_prefix": "a", "onset": ["5d", "1d"]}]},
            "bolts[0].onset",
            "above",
        ),
        (
            {"name": "x", "bolts": [{"count": 1, "id_prefix": "a", "joint_material": "wood"}]},
            "bolts[0]",
            "wood",
        ),
        (
            {
                "name": "x",
                "bolts": [{"count": 2, "id_prefix": "a"}, {"count": 1, "id_prefix": "a"}],
            },
            "bolts[1].id_prefix",
            "collide",
        ),
        (
            {"name": "x", "machines": [{"kind": "toaster", "id": "t"}]},
            "machines[0].kind",
            "toaster",
        ),
        (
            {
                "name": "x",
                "machines": [
                    {"kind": "printer3d", "id": "p", "faults": [{"kind": "rust", "onset": "1h"}]}
                ],
            },
            "machines[0].faults[0].kind",
            "rust",
        ),
        ({"name": "x", "climate": {"mean_c": 5, "fog": 1}}, "climate", "fog"),
        ({"name": "x", "colour": "red"}, "scenario", "colour"),
        ({"name": "x", "start": "yesterday"}, "start", "RFC 3339"),
    ],
)
def test_scenario_errors_name_the_key(data: dict[str, object], key: str, words: str) -> None:
    with pytest.raises(ScenarioError) as info:
        parse_scenario(data)
    assert info.value.key == key, str(info.value)
    assert words in info.value.reason, str(info.value)


def test_unknown_scenario_lists_the_library() -> None:
    with pytest.raises(ScenarioError, match="healthy-steel"):
        load_scenario("no-such-scenario")


def test_durations() -> None:
    assert parse_duration("30d") == 30 * 86_400
    assert parse_duration("1.5h") == 5_400
    assert parse_duration("250ms") == 0.25
    assert parse_duration(12) == 12.0
    assert iso(1_772_323_500_250) == "2026-03-01T00:05:00.250Z"


def test_cli_simulate_offline(tmp_path: Path) -> None:
    runner = CliRunner()
    listed = runner.invoke(app, ["simulate", "--list"], env={"COLUMNS": "200"})
    assert listed.exit_code == 0
    assert "loosening-vibration" in listed.output
    result = runner.invoke(
        app,
        [
            "simulate",
            "--scenario",
            "sudden-loss",
            "--seed",
            "3",
            "--duration",
            "1d",
            "--out",
            str(tmp_path),
        ],
        env={"COLUMNS": "200"},
    )
    assert result.exit_code == 0, result.output
    assert (tmp_path / "cbolt.csv").exists()
    assert "bolt samples simulated" in result.output
    bad = runner.invoke(app, ["simulate", "--scenario", "nope", "--out", str(tmp_path)])
    assert bad.exit_code == 2
    assert "library" in bad.output
