"""Machine detectors replayed over the simulated fablab: every fault that shows is detected.

Measured on the full-day fablab scenario (seeds 1 and 2): every fault that changed the readings
was detected with a kind that names it, and no device had an event outside its fault windows
(plus the 30 min grace). ``motor_stall`` never shows in these seeds (the cutter has no job during
the 5-minute stall), so it is checked on its own in ``test_machine_detectors.py``.
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest

from boltwatch.evaluation.machines import (
    EXPECTED_KINDS,
    MachineResult,
    evaluate_machines,
    load_machine_csv,
)
from detection.base import DetectionError, EventKind
from firmware_sim.machines import MachineSpec, simulate_machine
from firmware_sim.offline import write_outputs
from firmware_sim.scenario import SimulationResult, load_scenario, run_scenario

SEEDS = (1, 2)


def _manifested(result: SimulationResult, seed: int) -> dict[tuple[str, str], bool]:
    """Per (device, fault): did the fault change any reading inside its interval?

    Each machine is simulated again without that one fault, from the same random stream (faults
    never change the draws), and the readings are compared inside the fault's interval.
    """
    scenario = load_scenario(result.scenario)
    _, *seeds = np.random.SeedSequence(seed).spawn(1 + len(scenario.bolts) + len(scenario.machines))
    machine_seeds = seeds[len(scenario.bolts) :]
    out: dict[tuple[str, str], bool] = {}
    for run, ss in zip(result.machines, machine_seeds, strict=True):
        for fault in run.spec.faults:
            ivs = [iv for iv in run.intervals if iv.kind == fault.kind]
            if not ivs:
                continue
            spec = MachineSpec(
                run.spec.kind,
                run.spec.device_id,
                tuple(f for f in run.spec.faults if f is not fault),
                dict(run.spec.params),
            )
            other = simulate_machine(spec, run.t_s, np.random.default_rng(ss))
            m = (run.t_s >= ivs[0].start_s) & (run.t_s <= ivs[0].end_s)
            out[run.spec.device_id, fault.kind] = any(
                not np.allclose(run.values[k][m], other.values[k][m], equal_nan=True)
                for k in run.values
            )
    return out


def _evaluate(seed: int, out_dir: Path) -> tuple[list[MachineResult], dict[tuple[str, str], bool]]:
    result = run_scenario(load_scenario("fablab"), seed)
    write_outputs(result, out_dir)
    return evaluate_machines(out_dir), _manifested(result, seed)


@pytest.fixture(scope="module")
def evaluations(
    tmp_path_factory: pytest.TempPathFactory,
) -> dict[int, tuple[list[MachineResult], dict[tuple[str, str], bool]]]:
    return {s: _evaluate(s, tmp_path_factory.mktemp(f"fablab-{s}")) for s in SEEDS}


@pytest.mark.parametrize("seed", SEEDS)
def test_every_fault_that_shows_is_detected_with_its_kind(
    evaluations: dict[int, tuple[list[MachineResult], dict[tuple[str, str], bool]]], seed: int
) -> None:
    results, shown = evaluations[seed]
    faults = [r for r in results if r.fault != "none"]
    assert {r.fault for r in faults} == set(EXPECTED_KINDS)
    for r in faults:
        if not shown[r.device_id, r.fault]:
            continue
        assert r.detected, r
        assert r.delay_s >= 0.0
        assert EventKind(r.event_kind) in EXPECTED_KINDS[r.fault]
    # A flow loss is caught within seconds (measured: < 10 s), as an alarm or worse.
    flow = next(r for r in faults if r.fault == "flow_loss")
    assert flow.delay_s < 60.0
    assert flow.severity >= 2


@pytest.mark.parametrize("seed", SEEDS)
def test_no_false_alarm_on_any_device(
    evaluations: dict[int, tuple[list[MachineResult], dict[tuple[str, str], bool]]], seed: int
) -> None:
    results, _ = evaluations[seed]
    assert [r for r in results if r.false_alarms] == []
    healthy = [r for r in results if r.fault == "none"]
    assert [r.device_id for r in healthy] == ["prusa-mk4-1"]
    assert healthy[0].events == 0
    assert not healthy[0].detected
    assert math.isnan(healthy[0].delay_s)


def test_load_machine_csv_builds_a_sorted_frame(tmp_path: Path) -> None:
    path = tmp_path / "laser_cutter.csv"
    path.write_text(
        "timestamp,device_id,chiller_water_c,flow_lpm\n"
        "2026-03-02T07:00:01Z,b,20.5,2.0\n"
        "2026-03-02T07:00:00Z,a,20.1,\n"
        "2026-03-02T07:00:00Z,b,20.4,1.9\n",
        encoding="utf-8",
    )
    frame, ids = load_machine_csv(path, "laser_cutter")
    assert ids == ["a", "b"]
    assert frame.slot.tolist() == [0, 1, 1]
    assert list(frame.device_id) == ["a", "b", "b"]
    assert frame.values["flow_lpm"][0] != frame.values["flow_lpm"][0]  # NaN when empty
    assert frame.ts_s[2] - frame.ts_s[1] == pytest.approx(1.0)


@pytest.mark.parametrize(
    ("text", "key"),
    [
        ("time,device_id,flow_lpm\n", "header"),
        ("timestamp,device_id,preload_kn\n", "preload_kn"),
        ("timestamp,device_id,flow_lpm\n2026-03-02T07:00:00Z,a,lots\n", "laser_cutter.csv"),
    ],
)
def test_load_machine_csv_errors_name_the_key(tmp_path: Path, text: str, key: str) -> None:
    path = tmp_path / "laser_cutter.csv"
    path.write_text(text, encoding="utf-8")
    with pytest.raises(DetectionError) as err:
        load_machine_csv(path, "laser_cutter")
    assert key in err.value.key
    with pytest.raises(DetectionError, match="kind"):
        load_machine_csv(path, "toaster")


def test_ground_truth_csv_is_used_without_truth_json(tmp_path: Path) -> None:
    (tmp_path / "embroidery.csv").write_text(
        "timestamp,device_id,motor_a,stitch_rate_spm,duty_pct,thread_tension_g\n"
        "2026-03-02T07:00:00Z,emb,0,0,0,\n",
        encoding="utf-8",
    )
    (tmp_path / "ground_truth.csv").write_text(
        "device_id,kind,fault,onset,end,cross70,settled_kn,nut_factor,joint,position\n"
        "emb,embroidery,motor_overload+tension_fault,2026-03-02T08:00:00Z,"
        "2026-03-02T09:00:00Z,,,,,\n",
        encoding="utf-8",
    )
    results = evaluate_machines(tmp_path)
    assert [(r.fault, r.detected, r.false_alarms) for r in results] == [
        ("motor_overload", False, 0),
        ("tension_fault", False, 0),
    ]
    assert results[0].end_s - results[0].onset_s == pytest.approx(3600.0)
