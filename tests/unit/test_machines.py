"""Fablab machine simulators: determinism, schema ranges, physics of each fault, ground truth."""

from __future__ import annotations

import functools
import math

import msgspec
import numpy as np
import numpy.typing as npt
import pytest
from scipy import signal

from firmware_sim.machines import (
    DEFAULT_BEARING,
    FAULT_KINDS,
    BearingGeometry,
    FaultInterval,
    MachineFault,
    MachineRun,
    MachineSpec,
    cnc_vib_rms_mms,
    cnc_waveform,
    simulate_machine,
)
from sensors.schema import EVENT_TYPES, FIELD_INFO, READING_TYPES, DeviceKind

FloatArray = npt.NDArray[np.float64]

HOUR = 3600.0
KINDS = list(FAULT_KINDS)
# Each kind at a typical reporting interval, s.
STEP_S = {
    DeviceKind.PRINTER3D: 1.0,
    DeviceKind.LASER_CUTTER: 1.0,
    DeviceKind.CNC_MILL: 5.0,
    DeviceKind.VINYL_CUTTER: 2.0,
    DeviceKind.EMBROIDERY: 5.0,
}
KIND_FAULTS = [(kind, fault) for kind in KINDS for fault in (None, *FAULT_KINDS[kind])]


@functools.lru_cache(maxsize=64)
def _run(
    kind: DeviceKind,
    faults: tuple[MachineFault, ...] = (),
    hours: float = 6.0,
    seed: int = 0,
    *,
    params: tuple[tuple[str, float], ...] = (),
    step_s: float | None = None,
) -> MachineRun:
    step = STEP_S[kind] if step_s is None else step_s
    t = np.arange(0.0, hours * HOUR, step)
    spec = MachineSpec(kind, "dev-1", faults, dict(params))
    return simulate_machine(spec, t, np.random.default_rng(seed))


def _job_spans(run: MachineRun) -> list[tuple[float, float]]:
    starts = [e.t_s for e in run.events if e.type == "job_start"]
    ends = [e.t_s for e in run.events if e.type == "job_end"]
    return list(zip(starts, ends, strict=False))


def _klipper_trip(temp: FloatArray, target: FloatArray) -> int | None:
    """Klipper's ``verify_heater`` at 1 s: index of the first fault, None if it never trips.

    Each second below (target - hysteresis) adds the shortfall to an error sum that faults at 120;
    while the target was just raised it instead expects +2 °C every 20 s.
    """
    hysteresis, max_error, gain_c, gain_s = 5.0, 120.0, 2.0, 20.0
    error = 0.0
    approaching = False
    last_target = 0.0
    goal_temp = goal_time = 0.0
    for i, (temp_c, target_c) in enumerate(zip(temp.tolist(), target.tolist(), strict=True)):
        if temp_c >= target_c - hysteresis or target_c <= 0:
            approaching = False
            if temp_c <= target_c + hysteresis:
                error = 0.0
            last_target = target_c
            continue
        error += (target_c - hysteresis) - temp_c
        if not approaching:
            if target_c != last_target:
                approaching = True
                goal_temp, goal_time = temp_c + gain_c, i + gain_s
            elif error >= max_error:
                return i
        elif temp_c >= goal_temp:
            error = 0.0
            goal_temp, goal_time = temp_c + gain_c, i + gain_s
        elif i >= goal_time:
            approaching = False
        last_target = target_c
    return None


def _longest_run(mask: npt.NDArray[np.bool_]) -> int:
    best = cur = 0
    for m in mask.tolist():
        cur = cur + 1 if m else 0
        best = max(best, cur)
    return best


# ---------------------------------------------------------------------------------------------
# Contract: determinism, schema, events, intervals, validation


@pytest.mark.parametrize("kind", KINDS)
def test_same_seed_same_run_other_seed_other_run(kind: DeviceKind) -> None:
    fault = MachineFault(FAULT_KINDS[kind][0], 2 * HOUR, HOUR)
    t = np.arange(0.0, 4 * HOUR, STEP_S[kind])
    spec = MachineSpec(kind, "d", (fault,))
    a = simulate_machine(spec, t, np.random.default_rng(7))
    b = simulate_machine(spec, t, np.random.default_rng(7))
    c = simulate_machine(spec, t, np.random.default_rng(8))
    for name, arr in a.values.items():
        np.testing.assert_array_equal(arr, b.values[name])
    assert a.events == b.events
    assert a.intervals == b.intervals
    assert any(
        not np.array_equal(arr, c.values[name], equal_nan=True) for name, arr in a.values.items()
    )


@pytest.mark.parametrize(("kind", "fault"), KIND_FAULTS)
def test_values_inside_schema_ranges(kind: DeviceKind, fault: str | None) -> None:
    faults = () if fault is None else (MachineFault(fault, HOUR, 3 * HOUR),)
    run = _run(kind, faults)
    infos = {f.name: f for f in FIELD_INFO[kind] if f.name != "vib_ms2"}
    assert set(run.values) == set(infos)
    for name, arr in run.values.items():
        assert arr.shape == run.t_s.shape
        finite = arr[~np.isnan(arr)]
        assert np.all(np.isfinite(finite)), name
        assert np.all((finite >= infos[name].lo) & (finite <= infos[name].hi)), name
        if name != "fs_hz":
            assert finite.size > 0, f"{name} never reported"
    # And the schema's own decoder accepts a sample of rows (NaN = not reported = null).
    cls = READING_TYPES[kind]
    for i in range(0, run.t_s.size, max(1, run.t_s.size // 200)):
        row: dict[str, object] = {"ts": int(run.t_s[i] * 1000), "seq": i}
        row.update({k: (None if math.isnan(v[i]) else float(v[i])) for k, v in run.values.items()})
        msgspec.convert(row, cls)


@pytest.mark.parametrize("kind", KINDS)
def test_events_are_sorted_schema_valid_and_jobs_pair_up(kind: DeviceKind) -> None:
    faults = tuple(MachineFault(f, HOUR, 2 * HOUR) for f in FAULT_KINDS[kind])
    run = _run(kind, faults, hours=12.0)
    times = [e.t_s for e in run.events]
    assert times == sorted(times)
    assert all(run.t_s[0] <= t <= run.t_s[-1] + 1.0 for t in times)
    for i, ev in enumerate(run.events):
        wire = {"type": ev.type, "ts": int(ev.t_s * 1000), "seq": i, **ev.fields}
        msgspec.convert(wire, EVENT_TYPES[ev.type])
    jobs = [e for e in run.events if e.type in ("job_start", "job_end")]
    assert jobs, "no job in 12 h"
    for k, ev in enumerate(jobs):
        assert ev.type == ("job_start" if k % 2 == 0 else "job_end")
        if ev.type == "job_end":
            assert ev.fields["job_id"] == jobs[k - 1].fields["job_id"]
            assert ev.t_s > jobs[k - 1].t_s


def test_fault_intervals_are_exact_and_clipped() -> None:
    t = np.arange(100.0, 7300.0, 5.0)
    faults = (
        MachineFault("chatter", 1000.0, 500.0),
        MachineFault("tool_wear", 0.0, 2000.0),  # starts before the run
        MachineFault("bearing_outer", 5000.0),  # until the end
        MachineFault("bearing_inner", 9000.0, 60.0),  # after the run: no interval
        MachineFault("chatter", 7000.0, 5000.0),  # ends after the run
    )
    run = simulate_machine(
        MachineSpec(DeviceKind.CNC_MILL, "m", faults), t, np.random.default_rng(0)
    )
    assert run.intervals == [
        FaultInterval("chatter", 1000.0, 1500.0),
        FaultInterval("tool_wear", 100.0, 2000.0),
        FaultInterval("bearing_outer", 5000.0, 7295.0),
        FaultInterval("chatter", 7000.0, 7295.0),
    ]


# The fields where each fault must show (others may change too).
_FAULT_SHOWS_IN = {
    "thermistor_detached": ("hotend_c", "hotend_duty_pct"),
    "heater_failure": ("hotend_c", "hotend_duty_pct"),
    "fan_failure": ("fan_pct", "hotend_duty_pct"),
    "flow_loss": ("flow_lpm", "chiller_water_c"),
    "chiller_failure": ("chiller_water_c",),
    "chatter": ("vib_rms_mms",),
    "bearing_outer": ("vib_rms_mms",),
    "bearing_inner": ("vib_rms_mms",),
    "tool_wear": ("spindle_a", "vib_rms_mms"),
    "blade_wear": ("blade_force_g", "motor_a"),
    "motor_stall": ("motor_a", "cut_speed_mm_s"),
    "tension_fault": ("thread_tension_g",),
    "motor_overload": ("motor_a", "stitch_rate_spm"),
}


@pytest.mark.parametrize(("kind", "fault"), [kf for kf in KIND_FAULTS if kf[1] is not None])
def test_fault_changes_nothing_before_its_onset(kind: DeviceKind, fault: str) -> None:
    onset = 3 * HOUR
    healthy = _run(kind, hours=9.0)
    faulty = _run(kind, (MachineFault(fault, onset),), hours=9.0)
    before = healthy.t_s < onset
    for name, arr in healthy.values.items():
        np.testing.assert_array_equal(arr[before], faulty.values[name][before], err_msg=name)
    assert [e for e in healthy.events if e.t_s < onset] == [
        e for e in faulty.events if e.t_s < onset
    ]
    changed = [
        name
        for name, arr in healthy.values.items()
        if not np.array_equal(arr, faulty.values[name], equal_nan=True)
    ]
    assert changed, f"{fault} had no effect in 6 h"
    assert all(name in changed for name in _FAULT_SHOWS_IN[fault]), changed


# After the interval, the vectorised simulators are back to the healthy run exactly once the
# 60 s duty window (and, for embroidery, re-threading stops of up to 150 s) have passed.
@pytest.mark.parametrize(
    ("kind", "fault", "margin_s"),
    [(DeviceKind.CNC_MILL, f, 0.0) for f in FAULT_KINDS[DeviceKind.CNC_MILL]]
    + [(DeviceKind.VINYL_CUTTER, f, 60.0) for f in FAULT_KINDS[DeviceKind.VINYL_CUTTER]]
    + [(DeviceKind.EMBROIDERY, f, 600.0) for f in FAULT_KINDS[DeviceKind.EMBROIDERY]],
)
def test_fault_leaves_no_trace_after_its_interval(
    kind: DeviceKind, fault: str, margin_s: float
) -> None:
    healthy = _run(kind, hours=12.0)
    faulty = _run(kind, (MachineFault(fault, 2 * HOUR, 4 * HOUR),), hours=12.0)
    after = healthy.t_s >= 6 * HOUR + margin_s
    for name, arr in healthy.values.items():
        np.testing.assert_array_equal(arr[after], faulty.values[name][after], err_msg=name)


def test_unknown_fault_kind_is_rejected_by_name() -> None:
    with pytest.raises(ValueError, match="chatter"):
        MachineSpec(DeviceKind.PRINTER3D, "p", (MachineFault("chatter", 0.0),))
    with pytest.raises(ValueError, match="unknown cnc_mill fault kind 'melt'"):
        _wave(frozenset({"melt"}))


def test_unknown_or_out_of_range_param_is_rejected_by_key() -> None:
    with pytest.raises(ValueError, match="'hotend_targte_c'"):
        MachineSpec(DeviceKind.PRINTER3D, "p", params={"hotend_targte_c": 200.0})
    with pytest.raises(ValueError, match="'teeth'"):
        MachineSpec(DeviceKind.PRINTER3D, "p", params={"teeth": 4.0})  # a cnc_mill parameter
    with pytest.raises(ValueError, match="'hotend_target_c'"):
        MachineSpec(DeviceKind.PRINTER3D, "p", params={"hotend_target_c": 400.0})
    with pytest.raises(ValueError, match="'teeth'"):
        MachineSpec(DeviceKind.CNC_MILL, "m", params={"teeth": 2.5})


def test_non_machine_kinds_and_bad_inputs_are_rejected() -> None:
    with pytest.raises(ValueError, match="'cbolt' is not a machine kind"):
        MachineSpec(DeviceKind.CBOLT, "b")
    with pytest.raises(ValueError, match="severity"):
        MachineFault("chatter", 0.0, severity=-1.0)
    with pytest.raises(ValueError, match="duration_s"):
        MachineFault("chatter", 0.0, duration_s=0.0)
    spec = MachineSpec(DeviceKind.CNC_MILL, "m")
    with pytest.raises(ValueError, match="increasing"):
        simulate_machine(spec, np.array([0.0, 2.0, 1.0]), np.random.default_rng(0))
    with pytest.raises(ValueError, match="non-empty"):
        simulate_machine(spec, np.array([]), np.random.default_rng(0))


def test_params_override_the_model() -> None:
    run = _run(
        DeviceKind.PRINTER3D,
        hours=3.0,
        params=(("hotend_target_c", 230.0), ("bed_target_c", 70.0), ("fan_pct", 40.0)),
    )
    hot = run.values["hotend_target_c"]
    assert set(np.unique(hot)) == {0.0, 230.0}
    assert set(np.unique(run.values["bed_target_c"])) == {0.0, 70.0}
    fan = run.values["fan_pct"]
    assert abs(float(np.median(fan[fan > 0])) - 40.0) < 1.0


# ---------------------------------------------------------------------------------------------
# 3D printer


def test_healthy_printer_reaches_and_holds_target() -> None:
    run = _run(DeviceKind.PRINTER3D, hours=24.0, seed=3)
    v = run.values
    spans = _job_spans(run)
    assert len(spans) >= 3
    for start, end in spans:
        s, e = int(start), int(end)
        target, bed_target = v["hotend_target_c"][s + 1], v["bed_target_c"][s + 1]
        assert 190.0 <= target <= 250.0
        assert 55.0 <= bed_target <= 100.0
        hot, bed = v["hotend_c"][s:e], v["bed_c"][s:e]
        # Heats up within minutes (hotend ~2.5 °C/s, bed slower).
        assert np.argmax(np.abs(hot - target) < 2.0) < 240
        assert np.argmax(np.abs(bed - bed_target) < 2.0) < 480
        # Holds within a few °C while printing, at a partial duty.
        settled = slice(s + 900, e)
        assert np.max(np.abs(v["hotend_c"][settled] - target)) < 3.0
        assert np.max(np.abs(v["bed_c"][settled] - bed_target)) < 1.5
        assert 30.0 < np.mean(v["hotend_duty_pct"][settled]) < 80.0
        assert np.all(v["fan_pct"][settled] > 10.0)  # every material runs the part fan
    assert _klipper_trip(v["hotend_c"], v["hotend_target_c"]) is None
    assert _klipper_trip(v["bed_c"], v["bed_target_c"]) is None
    idle = v["hotend_target_c"] == 0
    assert np.all(v["hotend_duty_pct"][idle] == 0)


def _mid_print_onset(seed: int) -> tuple[float, MachineRun]:
    healthy = _run(DeviceKind.PRINTER3D, hours=8.0, seed=seed, params=(("print_h", 3.0),))
    start, _ = _job_spans(healthy)[0]
    return start + 1800.0, healthy


def test_thermistor_detached_is_a_klipper_thermal_runaway() -> None:
    onset, healthy = _mid_print_onset(seed=1)
    fault = MachineFault("thermistor_detached", onset, 1200.0)
    run = _run(DeviceKind.PRINTER3D, (fault,), hours=8.0, seed=1, params=(("print_h", 3.0),))
    v = run.values
    i0, i1 = int(onset), int(onset + 1200.0)
    target = v["hotend_target_c"][i0]
    # The reading falls towards ambient while the heater is driven flat out.
    assert v["hotend_c"][i0] > target - 3.0
    assert v["hotend_c"][i0 + 300] < target - 100.0
    assert np.all(v["hotend_c"][i0 + 300 : i1] < 80.0)
    assert np.all(v["hotend_duty_pct"][i0 + 30 : i1] == 100.0)
    # Klipper's verify_heater trips within two minutes of the fault, never on healthy data, and
    # not on this run's data after the fault has cleared and the block has cooled back.
    trip = _klipper_trip(v["hotend_c"], v["hotend_target_c"])
    assert trip is not None
    assert i0 <= trip <= i0 + 120
    assert _klipper_trip(healthy.values["hotend_c"], healthy.values["hotend_target_c"]) is None
    after = slice(i1 + 1200, None)
    assert _klipper_trip(v["hotend_c"][after], v["hotend_target_c"][after]) is None


def test_heater_failure_trips_the_prusa_rule() -> None:
    onset, healthy = _mid_print_onset(seed=2)
    fault = MachineFault("heater_failure", onset, 900.0)
    run = _run(DeviceKind.PRINTER3D, (fault,), hours=8.0, seed=2, params=(("print_h", 3.0),))

    def prusa_rule(values: dict[str, FloatArray]) -> int:
        low = values["hotend_c"] < values["hotend_target_c"] - 15.0
        return _longest_run(
            low & (values["hotend_duty_pct"] == 100.0) & (values["hotend_target_c"] > 0)
        )

    i0, i1 = int(onset), int(onset + 900.0)
    window = {k: a[i0:i1] for k, a in run.values.items()}
    assert prusa_rule(window) > 45
    assert window["hotend_c"][-1] < 60.0  # cooled most of the way to ambient
    printing = np.zeros(healthy.t_s.size, dtype=bool)
    for start, end in _job_spans(healthy):
        printing[int(start) + 600 : int(end)] = True
    assert printing.sum() > HOUR
    assert prusa_rule({k: a[printing] for k, a in healthy.values.items()}) == 0


def test_fan_failure_reads_zero_and_lowers_hotend_duty() -> None:
    onset, _ = _mid_print_onset(seed=4)
    params = (("print_h", 3.0), ("fan_pct", 100.0))
    healthy = _run(DeviceKind.PRINTER3D, hours=8.0, seed=4, params=params)
    fault = MachineFault("fan_failure", onset, 1800.0)
    run = _run(DeviceKind.PRINTER3D, (fault,), hours=8.0, seed=4, params=params)
    i0, i1 = int(onset), int(onset + 1800.0)
    assert np.all(run.values["fan_pct"][i0:i1] == 0.0)
    assert np.all(healthy.values["fan_pct"][i0:i1] > 90.0)
    settled = slice(i0 + 300, i1)
    drop = np.mean(healthy.values["hotend_duty_pct"][settled]) - np.mean(
        run.values["hotend_duty_pct"][settled]
    )
    assert 3.0 < drop < 20.0
    assert (
        np.max(np.abs(run.values["hotend_c"][settled] - run.values["hotend_target_c"][settled]))
        < 3.0
    )


# ---------------------------------------------------------------------------------------------
# Laser cutter


def _longest_laser_job(seed: int) -> tuple[float, float]:
    healthy = _run(DeviceKind.LASER_CUTTER, hours=8.0, seed=seed)
    return max(_job_spans(healthy), key=lambda span: span[1] - span[0])


def test_laser_flow_loss_stops_flow_and_heats_the_water() -> None:
    start, end = _longest_laser_job(seed=5)
    assert end - start > 900.0
    onset, duration = start + 120.0, 600.0
    run = _run(DeviceKind.LASER_CUTTER, (MachineFault("flow_loss", onset, duration),), 8.0, 5)
    healthy = _run(DeviceKind.LASER_CUTTER, hours=8.0, seed=5)
    v = run.values
    i0, i1 = int(onset), int(onset + duration)
    assert np.all(v["flow_lpm"][i0 + 15 : i1] < 0.3)
    assert np.all(healthy.values["flow_lpm"] > 1.0)
    lasing = np.mean(v["tube_current_ma"][i0:i1] > 0)
    assert lasing > 0.5
    water = v["chiller_water_c"][i0:i1]
    assert water[-1] > water[0] + 10.0
    slope = np.polyfit(np.arange(water.size), water, 1)[0]
    assert slope > 0.02  # K/s
    assert np.max(healthy.values["chiller_water_c"]) < 25.0


def test_laser_chiller_failure_warms_the_water_steadily() -> None:
    onset, duration = 2 * HOUR, 3 * HOUR
    run = _run(DeviceKind.LASER_CUTTER, (MachineFault("chiller_failure", onset, duration),), 8.0, 6)
    healthy = _run(DeviceKind.LASER_CUTTER, hours=8.0, seed=6)
    i0, i1 = int(onset), int(onset + duration)
    water = run.values["chiller_water_c"][i0:i1]
    half_hours = water.reshape(-1, 1800).mean(axis=1)
    assert half_hours[0] > water[0]
    assert np.min(half_hours[1:]) > 25.0
    assert half_hours.max() > water[0] + 8.0
    assert np.polyfit(np.arange(5400) / HOUR, water[:5400], 1)[0] > 3.0  # K/h
    assert np.all(run.values["flow_lpm"][i0:i1] > 1.0)
    assert np.max(healthy.values["chiller_water_c"]) < 25.0
    # Back at the set point an hour after the chiller is repaired.
    assert abs(run.values["chiller_water_c"][i1 + int(HOUR)] - 20.0) < 2.0


# ---------------------------------------------------------------------------------------------
# CNC mill: waveform and vibration severity

FS = 25_600.0
N = 65_536
RPM = 12_000.0
FR = RPM / 60.0


def _wave(
    faults: frozenset[str] = frozenset(), seed: int = 0, *, rpm: float = RPM, fs_hz: float = FS
) -> FloatArray:
    return cnc_waveform(
        rpm=rpm, fs_hz=fs_hz, n=N, rng=np.random.default_rng(seed), active_faults=faults
    )


def _peaks(x: FloatArray, fs: float = FS) -> tuple[FloatArray, FloatArray, float]:
    """Welch PSD peaks (frequencies, heights) 30 dB above the median, and the median."""
    f, p = signal.welch(x, fs=fs, nperseg=8192)
    floor = float(np.median(p))
    idx, _ = signal.find_peaks(p, height=1000 * floor)
    return f[idx], p[idx], floor


def _off_harmonic_hz(freq: float, fr: float = FR) -> float:
    return abs(freq - round(freq / fr) * fr)


def _band_velocity_rms_mms(x: FloatArray, fs: float) -> float:
    """Velocity RMS over 10-1000 Hz by integrating the acceleration spectrum, mm/s."""
    spec = np.fft.rfft(x)
    f = np.fft.rfftfreq(x.size, 1 / fs)
    band = (f >= 10.0) & (f <= 1000.0)
    vel = spec[band] / (2j * np.pi * f[band])
    return float(1000 * np.sqrt(2 * np.sum(np.abs(vel) ** 2)) / x.size)


def test_bearing_defect_frequencies() -> None:
    b = BearingGeometry(n_balls=9, ball_d_mm=7.94, pitch_d_mm=39.04, contact_deg=0.0)
    ratio = 7.94 / 39.04
    assert b.bpfo_hz(30.0) == pytest.approx(4.5 * 30.0 * (1 - ratio))
    assert b.bpfi_hz(30.0) == pytest.approx(4.5 * 30.0 * (1 + ratio))
    assert b.bpfo_hz(30.0) + b.bpfi_hz(30.0) == pytest.approx(9 * 30.0)
    with pytest.raises(ValueError, match="ball_d_mm"):
        BearingGeometry(n_balls=9, ball_d_mm=40.0, pitch_d_mm=39.0, contact_deg=0.0)


def test_healthy_spectrum_has_spindle_and_tooth_passing_harmonics_only() -> None:
    freqs, heights, floor = _peaks(_wave())
    assert freqs.size >= 3
    assert all(_off_harmonic_hz(f) < 5.0 for f in freqs.tolist())
    f, p = signal.welch(_wave(), fs=FS, nperseg=8192)
    for line in (FR, 4 * FR, 8 * FR):  # 1x, tooth passing (4 teeth) and its 2nd harmonic
        assert p[np.argmin(np.abs(f - line))] > 1000 * floor, line
    tooth = 4 * FR
    assert p[np.argmin(np.abs(f - tooth))] == pytest.approx(heights.max())


def test_chatter_adds_a_strong_peak_off_the_harmonics() -> None:
    healthy_f, healthy_p = signal.welch(_wave(seed=3), fs=FS, nperseg=8192)
    freqs, heights, _ = _peaks(_wave(frozenset({"chatter"}), seed=3))
    top = float(freqs[np.argmax(heights)])
    assert 600.0 <= top <= 900.0
    assert _off_harmonic_hz(top) > 20.0  # not at k·f_r, so not at tooth passing either
    assert heights.max() > 100 * healthy_p[np.argmin(np.abs(healthy_f - top))]
    # The chatter frequency moves with the mode, not with the spindle: same mode at 9000 rpm.
    f9, h9, _ = _peaks(_wave(frozenset({"chatter"}), rpm=9000.0))
    top9 = float(f9[np.argmax(h9)])
    assert 600.0 <= top9 <= 900.0
    assert _off_harmonic_hz(top9, 150.0) > 20.0


def _envelope_spectrum(x: FloatArray) -> tuple[FloatArray, FloatArray]:
    sos = signal.butter(4, [5000.0, 11000.0], btype="bandpass", fs=FS, output="sos")
    env = np.abs(signal.hilbert(signal.sosfiltfilt(sos, x)))
    f, p = signal.welch(env - env.mean(), fs=FS, nperseg=16384)
    return f, p


def _energy(f: FloatArray, p: FloatArray, centre: float, half_width: float = 4.0) -> float:
    return float(p[np.abs(f - centre) <= half_width].sum())


def test_bearing_outer_shows_bpfo_in_the_envelope_spectrum() -> None:
    bpfo = DEFAULT_BEARING.bpfo_hz(FR)
    fh, ph = _envelope_spectrum(_wave(seed=1))
    ff, pf = _envelope_spectrum(_wave(frozenset({"bearing_outer"}), seed=1))
    for k in (1, 2):
        assert _energy(ff, pf, k * bpfo) > 50 * _energy(fh, ph, k * bpfo), k
        assert _energy(ff, pf, k * bpfo) > 100 * 5 * float(np.median(pf)), k
    # Not at the inner-race frequency.
    bpfi = DEFAULT_BEARING.bpfi_hz(FR)
    assert _energy(ff, pf, bpfi) < 0.01 * _energy(ff, pf, bpfo)


def test_bearing_inner_shows_bpfi_with_shaft_sidebands() -> None:
    bpfi = DEFAULT_BEARING.bpfi_hz(FR)
    ff, pf = _envelope_spectrum(_wave(frozenset({"bearing_inner"}), seed=2))
    fh, ph = _envelope_spectrum(_wave(seed=2))
    line = _energy(ff, pf, bpfi)
    assert line > 50 * _energy(fh, ph, bpfi)
    assert line > 1000 * 5 * float(np.median(pf))
    # The defect passes through the load zone once per turn: sidebands at BPFI ± f_r and a line
    # at f_r itself, each a sizeable share of the BPFI line (80 % modulation).
    for sideband in (bpfi - FR, bpfi + FR):
        assert _energy(ff, pf, sideband) > 0.05 * line, sideband
    assert _energy(ff, pf, FR) > 0.5 * line


@pytest.mark.parametrize(
    "faults",
    [frozenset(), *(frozenset({f}) for f in FAULT_KINDS[DeviceKind.CNC_MILL])],
    ids=lambda fs: "+".join(sorted(fs)) or "healthy",
)
@pytest.mark.parametrize("fs_hz", [FS, 5000.0])
def test_vib_rms_matches_the_waveform(faults: frozenset[str], fs_hz: float) -> None:
    for rpm in (9000.0, 15000.0):
        x = _wave(faults, seed=4, rpm=rpm, fs_hz=fs_hz)
        expected = cnc_vib_rms_mms(rpm=rpm, active_faults=faults)
        assert _band_velocity_rms_mms(x, fs_hz) == pytest.approx(expected, rel=0.05)


@pytest.mark.parametrize("rpm", [8000.0, 12000.0, 15000.0, 18000.0])
def test_vib_rms_iso_10816_zones(rpm: float) -> None:
    def vib(*faults: str) -> float:
        return cnc_vib_rms_mms(rpm=rpm, active_faults=frozenset(faults))

    assert vib() < 1.4  # zone A
    assert vib() < vib("tool_wear") < 2.8
    assert 2.8 <= vib("bearing_outer") < 4.5  # zone C
    assert 2.8 <= vib("bearing_inner") < 4.5
    assert vib("chatter") > 4.5  # zone D
    assert cnc_vib_rms_mms(rpm=0.0) < 0.2


# ---------------------------------------------------------------------------------------------
# CNC mill: runs


def test_cnc_run_vibration_zones_by_fault() -> None:
    healthy = _run(DeviceKind.CNC_MILL, hours=24.0, seed=9)
    cutting = healthy.values["feed_mm_min"] > 0
    assert cutting.mean() > 0.1
    assert np.all(np.isnan(healthy.values["fs_hz"]))
    assert np.max(healthy.values["vib_rms_mms"]) < 1.4
    spindle = healthy.values["spindle_rpm"][cutting]
    assert spindle.min() > 7900.0
    assert spindle.max() < 18100.0
    window = (healthy.t_s >= 2 * HOUR) & (healthy.t_s < 20 * HOUR)
    for fault, lo, hi in (("chatter", 4.5, 8.0), ("bearing_outer", 2.8, 4.5)):
        run = _run(DeviceKind.CNC_MILL, (MachineFault(fault, 2 * HOUR, 18 * HOUR),), 24.0, 9)
        vib = run.values["vib_rms_mms"][window & cutting]
        assert lo < np.median(vib) < hi, fault


def test_tool_wear_raises_spindle_current_over_the_interval() -> None:
    onset, duration = 2 * HOUR, 20 * HOUR
    healthy = _run(DeviceKind.CNC_MILL, hours=24.0, seed=10)
    run = _run(DeviceKind.CNC_MILL, (MachineFault("tool_wear", onset, duration),), 24.0, 10)
    t = healthy.t_s
    cutting = healthy.values["feed_mm_min"] > 0
    inside = cutting & (t >= onset) & (t < onset + duration)
    ratio = run.values["spindle_a"][inside] / healthy.values["spindle_a"][inside]
    first, last = ratio[: ratio.size // 10].mean(), ratio[-ratio.size // 10 :].mean()
    assert first < 1.05
    assert 1.2 < last < 1.4
    assert np.polyfit(t[inside] / HOUR, ratio, 1)[0] > 0.01  # per hour
    # Vibration rises slightly, staying out of the alarm zones.
    vib_h = healthy.values["vib_rms_mms"][inside][-ratio.size // 10 :]
    vib_f = run.values["vib_rms_mms"][inside][-ratio.size // 10 :]
    assert vib_f.mean() > 1.05 * vib_h.mean()
    assert vib_f.max() < 2.8
    # At equal feed the worn tool draws more: the same operation in two jobs, early and late.
    feed = healthy.values["feed_mm_min"]
    early = inside & (t < onset + 0.4 * duration)
    late = inside & (t > onset + 0.6 * duration)
    common = np.intersect1d(np.unique(feed[early]), np.unique(feed[late]))
    assert common.size > 0
    f0 = common[0]

    def growth(values: dict[str, FloatArray]) -> float:
        amps = values["spindle_a"]
        return float(np.median(amps[late & (feed == f0)]) / np.median(amps[early & (feed == f0)]))

    # Wear progressed by at least 20 % of the interval between the windows: >= +6 % expected.
    assert growth(run.values) > 1.04
    assert abs(growth(healthy.values) - 1.0) < 0.02


# ---------------------------------------------------------------------------------------------
# Vinyl cutter and embroidery machine


def test_vinyl_motor_stall_and_blade_wear() -> None:
    healthy = _run(DeviceKind.VINYL_CUTTER, hours=12.0, seed=11)
    start, end = max(_job_spans(healthy), key=lambda s: s[1] - s[0])
    assert end - start > 120.0
    onset = start + 60.0
    faults = (
        MachineFault("motor_stall", onset, 30.0),
        MachineFault("blade_wear", 0.0, 12 * HOUR),
    )
    run = _run(DeviceKind.VINYL_CUTTER, faults, 12.0, 11)
    t = run.t_s
    stall = (t >= onset) & (t < onset + 30.0)
    assert np.all(run.values["cut_speed_mm_s"][stall] == 0.0)
    assert np.all(run.values["motor_a"][stall] > 2.5)
    assert np.max(healthy.values["motor_a"]) < 2.5
    codes = [e for e in run.events if e.type == "fault"]
    assert len(codes) == 1
    assert codes[0].fields["code"] == "motor_stall"
    assert onset <= codes[0].t_s <= onset + 1.0
    cutting = (healthy.values["blade_force_g"] > 0) & ~stall
    force = run.values["blade_force_g"][cutting] / healthy.values["blade_force_g"][cutting]
    assert force[: force.size // 10].mean() < 1.1
    assert force[-force.size // 10 :].mean() > 1.4
    motor = run.values["motor_a"][cutting] / healthy.values["motor_a"][cutting]
    assert motor[-motor.size // 10 :].mean() > 1.15


def _breaks_per_stitch_hour(run: MachineRun, step_s: float) -> float:
    stitching_h = float(np.sum(run.values["stitch_rate_spm"] > 0)) * step_s / HOUR
    return sum(e.type == "thread_break" for e in run.events) / stitching_h


def test_tension_fault_makes_thread_breaks_frequent_and_tension_erratic() -> None:
    step = STEP_S[DeviceKind.EMBROIDERY]
    healthy = _run(DeviceKind.EMBROIDERY, hours=48.0, seed=12)
    run = _run(DeviceKind.EMBROIDERY, (MachineFault("tension_fault", 0.0),), 48.0, 12)
    rate_h = _breaks_per_stitch_hour(healthy, step)
    rate_f = _breaks_per_stitch_hour(run, step)
    assert 0.05 < rate_h < 1.5  # ~1 per few hours of stitching
    assert rate_f > 5 * rate_h
    needles = {e.fields["needle"] for e in run.events if e.type == "thread_break"}
    assert needles <= set(range(1, 7))
    sd_h = np.nanstd(
        healthy.values["thread_tension_g"] / np.nanmedian(healthy.values["thread_tension_g"])
    )
    sd_f = np.nanstd(run.values["thread_tension_g"] / np.nanmedian(run.values["thread_tension_g"]))
    assert sd_f > 2 * sd_h
    # Tension is only reported while stitching.
    stitching = run.values["stitch_rate_spm"] > 0
    assert np.all(np.isnan(run.values["thread_tension_g"][~stitching]))
    assert not np.any(np.isnan(run.values["thread_tension_g"][stitching]))


def test_embroidery_motor_overload_raises_current_and_slows_stitching() -> None:
    healthy = _run(DeviceKind.EMBROIDERY, hours=12.0, seed=13)
    run = _run(DeviceKind.EMBROIDERY, (MachineFault("motor_overload", 0.0),), 12.0, 13)
    both = (healthy.values["stitch_rate_spm"] > 0) & (run.values["stitch_rate_spm"] > 0)
    assert run.values["motor_a"][both].mean() > 1.2 * healthy.values["motor_a"][both].mean()
    rate = run.values["stitch_rate_spm"][both] / healthy.values["stitch_rate_spm"][both]
    assert 0.6 < np.median(rate) < 0.7
