"""Machine detectors: printer, laser, CNC, vinyl cutter, embroidery (hand-made and simulated)."""

from __future__ import annotations

import functools
import math
from typing import Any

import numpy as np
import numpy.typing as npt
import pytest

from detection.base import DetectionError, Detector, EventKind, Frame, Severity
from detection.cnc import BearingParams, CncDetector, iso_zone, waveform_features
from detection.laser import LaserDetector, LaserParams
from detection.motors import EmbroideryDetector, VinylCutterDetector
from detection.printer import AlertScale, PrinterDetector, PrinterParams, concat_frames
from firmware_sim.machines import (
    DEFAULT_BEARING,
    MachineFault,
    MachineRun,
    MachineSpec,
    cnc_waveform,
    simulate_machine,
)
from sensors.schema import DeviceKind

FloatArray = npt.NDArray[np.float64]
HOUR = 3600.0
T0 = 1.77e9
DETECTORS: list[type[Detector[Any]]] = [
    PrinterDetector,
    LaserDetector,
    CncDetector,
    VinylCutterDetector,
    EmbroideryDetector,
]


@functools.lru_cache(maxsize=32)
def _sim(
    kind: DeviceKind, faults: tuple[MachineFault, ...] = (), hours: float = 6.0, step_s: float = 1.0
) -> MachineRun:
    t = np.arange(0.0, hours * HOUR, step_s)
    return simulate_machine(MachineSpec(kind, "dev-1", faults), t, np.random.default_rng(11))


def _frame(run: MachineRun) -> Frame:
    return Frame.single("dev-1", T0 + run.t_s, dict(run.values))


def _jobs(run: MachineRun) -> list[tuple[float, float]]:
    starts = [e.t_s for e in run.events if e.type == "job_start"]
    ends = [e.t_s for e in run.events if e.type == "job_end"]
    return list(zip(starts, ends, strict=False))


def _events_after(det: Detector[Any], frame: Frame, t_s: float) -> list[Any]:
    _, dec = det.process(frame)
    return [e for e in dec.events if e.ts_ms / 1000.0 >= T0 + t_s]


# ---------------------------------------------------------------------------------------------
# Shared properties (what the shared conformance test checks), on every detector's own case


@pytest.mark.parametrize("seed", [0, 1])
@pytest.mark.parametrize("cls", DETECTORS, ids=lambda c: c.name)
def test_conformance_properties(cls: type[Detector[Any]], seed: int) -> None:
    case = cls.conformance_case(seed)
    det = cls()
    s_norm, _ = det.process(case.normal)
    snap = det.snapshot()
    s_anom, _ = det.process(case.anomalous)
    for s in (s_norm, s_anom):
        assert np.all((s.score >= 0) & (s.score <= 1)), cls.name
        assert not np.any(np.isnan(s.score))
    # Anomalous rows score higher than normal rows: on average above every normal row, each
    # above the normal rows' average.
    normal = np.concatenate([s_norm.score, s_anom.score[~case.anomaly_rows]])
    anomalous = s_anom.score[case.anomaly_rows]
    assert float(anomalous.mean()) > float(normal.max()), cls.name
    assert float(anomalous.min()) > float(normal.mean()) + 0.3, cls.name
    # Snapshot / restore continues identically; a clone starts fresh with the same params.
    other = det.clone()
    assert other.params == det.params
    assert other.n_devices == 0
    other.restore(snap)
    s_again, _ = other.process(case.anomalous)
    np.testing.assert_array_equal(s_again.score, s_anom.score)
    # Causality: scores of a truncated anomalous frame equal the full run's first rows.
    cut = len(case.anomalous) // 2
    head = case.anomalous.take(np.arange(cut, dtype=np.int64))
    trunc = cls()
    trunc.process(case.normal)
    s_head, _ = trunc.process(head)
    np.testing.assert_array_equal(s_head.score, s_anom.score[:cut])


@pytest.mark.parametrize("cls", DETECTORS, ids=lambda c: c.name)
def test_params_kept_as_passed_and_errors_are_typed(cls: type[Detector[Any]]) -> None:
    params = cls.params_type()
    assert cls(params).params is params
    empty = Frame.single("x", np.arange(3.0), {"unrelated": np.zeros(3)})
    with pytest.raises(DetectionError):
        cls().process(empty)
    case = cls.conformance_case(1)
    reverse = case.normal.take(np.arange(len(case.normal) - 1, -1, -1, dtype=np.int64))
    with pytest.raises(DetectionError, match="slot"):
        cls().update(reverse)


def test_alert_scale_rejects_an_unordered_scale() -> None:
    with pytest.raises(DetectionError, match="scale"):
        AlertScale(warning=0.8, alarm=0.7)


# ---------------------------------------------------------------------------------------------
# Printer


def _printer_frame(ts: FloatArray, hotend: FloatArray, target: float, duty: float = 100.0) -> Frame:
    n = ts.size
    return Frame.single(
        "p",
        T0 + ts,
        {
            "hotend_c": hotend,
            "hotend_target_c": np.full(n, target),
            "hotend_duty_pct": np.full(n, duty),
            "bed_c": np.full(n, 60.0),
            "bed_target_c": np.full(n, 60.0),
            "fan_pct": np.full(n, 100.0),
            "chamber_c": np.full(n, 25.0),
        },
    )


def test_klipper_cusum_integrates_the_shortfall_over_irregular_dt() -> None:
    # Holding at 200 °C, then the reading sits 10 °C under target (5 °C under the hysteresis
    # band): the sum grows 5 °C·s per second of *real* time between readings.
    hold = np.arange(0.0, 30.0)
    rng = np.random.default_rng(3)
    gaps = rng.choice([0.5, 1.0, 2.0, 3.5], size=40)
    drop = hold[-1] + np.cumsum(gaps)
    ts = np.concatenate([hold, drop])
    temp = np.concatenate([np.full(hold.size, 200.0), np.full(drop.size, 190.0)])
    det = PrinterDetector()
    scores, dec = det.process(_printer_frame(ts, temp, 200.0))
    err = scores.extra["hotend_err_cs"]
    # Each reading under the band adds its shortfall times the time since the previous reading.
    expected = 5.0 * np.concatenate([np.zeros(hold.size), np.cumsum(gaps)])
    np.testing.assert_allclose(err, expected)
    trip = int(np.argmax(err >= 120.0))
    faults = [e for e in dec.events if e.severity >= Severity.MAJOR]
    assert faults, dec.events
    assert faults[0].kind is EventKind.HEATER_FAILURE  # cooled no faster than a block can
    assert faults[0].ts_ms == round((T0 + ts[trip]) * 1000)
    assert "10.0 °C under target 200 °C" in faults[0].explanation
    assert "duty 100 %" in faults[0].explanation


def test_max_dt_caps_a_gap_in_the_data() -> None:
    ts = np.array([0.0, 1.0, 2.0, 500.0])
    temp = np.array([200.0, 200.0, 190.0, 190.0])
    scores, _ = PrinterDetector().process(_printer_frame(ts, temp, 200.0))
    assert scores.extra["hotend_err_cs"][-1] == pytest.approx(5.0 * (1.0 + 30.0))


def test_healthy_heat_up_with_irregular_sampling_is_never_flagged() -> None:
    rng = np.random.default_rng(5)
    ts = np.cumsum(rng.uniform(0.3, 2.5, 800))
    # 2.5 °C/s towards 215 °C, sensor noise 0.25 °C.
    temp = 215.0 - 193.0 * np.exp(-ts / 77.0) + rng.normal(0.0, 0.25, ts.size)
    scores, dec = PrinterDetector().process(_printer_frame(ts, temp, 215.0, duty=100.0))
    assert dec.events == []
    assert float(scores.score.max()) < AlertScale().warning


def test_healthy_simulated_printer_day_has_no_alert() -> None:
    run = _sim(DeviceKind.PRINTER3D, hours=12.0)
    _, dec = PrinterDetector().process(_frame(run))
    assert dec.events == []


def _during_print(run: MachineRun, after_s: float) -> float:
    """A time 30 min into the first print that starts after ``after_s``."""
    for s, e in _jobs(run):
        if s > after_s and e - s > 2 * HOUR:
            return s + 0.5 * HOUR
    raise AssertionError("no long print")


@pytest.mark.parametrize(
    ("fault", "kind", "severity", "within_s"),
    [
        ("thermistor_detached", EventKind.THERMAL_RUNAWAY, Severity.CRITICAL, 30.0),
        ("heater_failure", EventKind.HEATER_FAILURE, Severity.MAJOR, 30.0),
        ("fan_failure", EventKind.COOLING_FAILURE, Severity.WARNING, 60.0),
    ],
)
def test_printer_faults_mid_print(
    fault: str, kind: EventKind, severity: Severity, within_s: float
) -> None:
    onset = _during_print(_sim(DeviceKind.PRINTER3D, hours=12.0), HOUR)
    run = _sim(DeviceKind.PRINTER3D, (MachineFault(fault, onset, HOUR),), hours=12.0)
    events = _events_after(PrinterDetector(), _frame(run), 0.0)
    assert events, fault
    first = events[0]
    assert onset <= first.ts_ms / 1000.0 - T0 <= onset + within_s
    assert first.kind is kind
    assert max(e.severity for e in events if e.kind is kind) >= severity


def test_maxtemp_is_critical_runaway() -> None:
    ts = np.arange(0.0, 60.0)
    temp = np.concatenate([np.full(30, 250.0), np.linspace(250.0, 290.0, 30)])
    _, dec = PrinterDetector().process(_printer_frame(ts, temp, 250.0, duty=0.0))
    crit = [e for e in dec.events if e.severity is Severity.CRITICAL]
    assert crit
    assert crit[0].kind is EventKind.THERMAL_RUNAWAY
    assert float(temp[int(np.argmax(temp >= 275.0))]) <= crit[0].data["hotend_c"] + 1e-9


def test_fan_check_can_be_disabled() -> None:
    params = PrinterParams(fan_expected_s=math.inf, fan_expected_job_s=math.inf)
    ts = np.arange(0.0, 3000.0, 2.0)
    frame = _printer_frame(ts, np.full(ts.size, 215.0), 215.0, duty=50.0)
    frame.values["fan_pct"] = np.zeros(ts.size)
    _, dec = PrinterDetector(params).process(frame)
    assert dec.events == []
    _, dec = PrinterDetector().process(frame)
    assert [e.kind for e in dec.events] == [EventKind.COOLING_FAILURE]


# ---------------------------------------------------------------------------------------------
# Laser


def test_laser_healthy_loop_is_quiet_and_supply_estimate_is_near_set_point() -> None:
    run = _sim(DeviceKind.LASER_CUTTER, hours=8.0)
    scores, dec = LaserDetector().process(_frame(run))
    assert dec.events == []
    supply = scores.extra["supply_c"]
    # The outlet reads up to ~24 °C while cutting; the estimated supply stays in the chiller band.
    assert float(np.nanmax(run.values["chiller_water_c"])) > 22.5
    assert float(np.nanmax(supply)) < 21.0


def test_laser_flow_loss_while_firing_is_critical_within_seconds() -> None:
    healthy = _sim(DeviceKind.LASER_CUTTER, hours=4.0)
    firing_at = healthy.t_s[np.flatnonzero(healthy.values["tube_current_ma"] > 0)[0]]
    run = _sim(DeviceKind.LASER_CUTTER, (MachineFault("flow_loss", firing_at, 600.0),), hours=4.0)
    events = _events_after(LaserDetector(), _frame(run), 0.0)
    assert events
    assert events[0].ts_ms / 1000.0 - T0 - firing_at <= 10.0
    crit = [e for e in events if e.severity is Severity.CRITICAL]
    assert crit
    assert "flow" in crit[0].explanation


def test_laser_chiller_failure_warns_before_the_critical_supply_temperature() -> None:
    run = _sim(DeviceKind.LASER_CUTTER, (MachineFault("chiller_failure", HOUR),), hours=5.0)
    _, dec = LaserDetector().process(_frame(run))
    assert dec.events
    first, worst = dec.events[0], max(dec.events, key=lambda e: e.severity)
    assert first.severity is Severity.WARNING
    assert first.kind is EventKind.COOLING_FAILURE
    assert first.data["supply_c"] < 25.0
    assert worst.severity is Severity.CRITICAL


@pytest.mark.parametrize("step_s", [5.0, 10.0])
def test_laser_sparse_readings_keep_the_supply_estimate_in_the_chiller_band(step_s: float) -> None:
    # Readings 5-10 s apart miss most cut/travel switches: one reading's current says little
    # about the heat since the last one, so a single supply estimate can be off by ~2 °C (the
    # unsmoothed estimate reached 22.1 / 22.8 °C here: 1 and 19 warnings in these 12 h).
    run = _sim(DeviceKind.LASER_CUTTER, hours=12.0, step_s=step_s)
    scores, dec = LaserDetector().process(_frame(run))
    assert dec.events == []
    assert float(np.nanmax(run.values["chiller_water_c"])) > 22.5
    assert float(np.nanmax(scores.extra["supply_c"])) < 21.0


@pytest.mark.parametrize("step_s", [5.0, 10.0])
def test_laser_sparse_readings_still_catch_a_failing_chiller(step_s: float) -> None:
    run = _sim(
        DeviceKind.LASER_CUTTER, (MachineFault("chiller_failure", HOUR),), hours=5.0, step_s=step_s
    )
    _, dec = LaserDetector().process(_frame(run))
    assert dec.events
    first, worst = dec.events[0], max(dec.events, key=lambda e: e.severity)
    assert first.ts_ms / 1000.0 >= T0 + HOUR
    assert first.severity is Severity.WARNING
    assert worst.severity is Severity.CRITICAL


def test_laser_chunked_replay_equals_one_pass() -> None:
    # The smoothed supply and the last tube current are state: chunks continue where they stop.
    run = _sim(DeviceKind.LASER_CUTTER, (MachineFault("chiller_failure", HOUR),), 3.0, 10.0)
    frame = _frame(run)
    whole, _ = LaserDetector().process(frame)
    det = LaserDetector()
    parts = [
        det.process(frame.take(np.arange(a, min(a + 97, len(frame)), dtype=np.int64)))[0]
        for a in range(0, len(frame), 97)
    ]
    for key in ("supply_c", "trend_c_h"):
        got = np.concatenate([p.extra[key] for p in parts])
        np.testing.assert_allclose(got, whole.extra[key], rtol=0, atol=1e-9, equal_nan=True)
    np.testing.assert_allclose(np.concatenate([p.score for p in parts]), whole.score, atol=1e-12)


def test_laser_params_reject_a_supply_smoother_that_cannot_average() -> None:
    with pytest.raises(DetectionError, match="supply"):
        LaserParams(supply_tol_c=0.0)
    with pytest.raises(DetectionError, match="supply"):
        LaserParams(tube_max_ma=-1.0)


# ---------------------------------------------------------------------------------------------
# CNC: waveform features on the simulator's waveforms

FS = 25_600.0
N = 16_384


def _wave(
    faults: frozenset[str] = frozenset(), rpm: float = 12_000.0, fs: float = FS
) -> FloatArray:
    return cnc_waveform(rpm=rpm, fs_hz=fs, n=N, rng=np.random.default_rng(7), active_faults=faults)


@pytest.mark.parametrize("rpm", [9000.0, 15_000.0])
def test_welch_features_find_the_chatter_peak_off_the_harmonics(rpm: float) -> None:
    healthy = waveform_features(_wave(rpm=rpm), FS, rpm)
    chatter = waveform_features(_wave(frozenset({"chatter"}), rpm=rpm), FS, rpm)
    assert healthy.chatter_mms == 0.0
    assert math.isnan(healthy.chatter_hz)
    fr = rpm / 60.0
    assert 600.0 <= chatter.chatter_hz <= 900.0  # near the 750 Hz structural mode
    off = abs(chatter.chatter_hz / fr - round(chatter.chatter_hz / fr))
    assert off > 0.2  # not on a spindle harmonic, so not on tooth passing either
    assert chatter.chatter_mms > 4.0  # the simulator's 5 mm/s line
    assert iso_zone(chatter.vel_rms_mms) == "D"
    assert iso_zone(healthy.vel_rms_mms) == "A"


def test_welch_features_find_bpfo_and_bpfi_in_the_envelope() -> None:
    geo = BearingParams(
        n_balls=DEFAULT_BEARING.n_balls,
        ball_d_mm=DEFAULT_BEARING.ball_d_mm,
        pitch_d_mm=DEFAULT_BEARING.pitch_d_mm,
        contact_deg=DEFAULT_BEARING.contact_deg,
    )
    healthy = waveform_features(_wave(), FS, 12_000.0, bearing=geo)
    outer = waveform_features(_wave(frozenset({"bearing_outer"})), FS, 12_000.0, bearing=geo)
    inner = waveform_features(_wave(frozenset({"bearing_inner"})), FS, 12_000.0, bearing=geo)
    assert outer.bpfo_hz == pytest.approx(DEFAULT_BEARING.bpfo_hz(200.0))
    assert max(healthy.bpfo_snr_db, healthy.bpfi_snr_db) < 8.0
    assert outer.bpfo_snr_db > 25.0
    assert outer.bpfo_snr_db > outer.bpfi_snr_db + 15.0
    assert inner.bpfi_snr_db > 25.0
    assert inner.bpfi_snr_db > inner.bpfo_snr_db + 15.0
    # Bearing lines are not mistaken for chatter.
    assert outer.chatter_mms == 0.0
    assert inner.chatter_mms == 0.0


def test_waveform_features_without_the_resonance_band_or_spindle() -> None:
    low = waveform_features(_wave(frozenset({"bearing_outer"}), fs=5000.0), 5000.0, 12_000.0)
    assert math.isnan(low.bpfo_snr_db)  # 8 kHz resonance above Nyquist
    off = waveform_features(_wave(rpm=0.0), FS, 0.0)
    assert math.isnan(off.chatter_hz)
    assert off.vel_rms_mms < 0.2
    with pytest.raises(DetectionError, match="fs_hz"):
        waveform_features(_wave(), 0.0, 12_000.0)
    with pytest.raises(DetectionError, match="vib_ms2"):
        waveform_features(np.ones(10), FS, 12_000.0)


def test_iso_zones() -> None:
    assert [iso_zone(v) for v in (0.9, 1.4, 2.0, 3.7, 5.3, math.nan)] == [
        "A",
        "B",
        "B",
        "C",
        "D",
        "?",
    ]


def _mill_frame(
    n: int, faults: frozenset[str], vib: float, amps: float = 3.0, waves_every: int = 1
) -> Frame:
    rpm, feed = 12_000.0, 2400.0
    ts = np.arange(n) * 5.0
    frame = Frame.single(
        "mill",
        T0 + ts,
        {
            "spindle_rpm": np.full(n, rpm),
            "spindle_a": np.full(n, amps),
            "vib_rms_mms": np.full(n, vib),
            "feed_mm_min": np.full(n, feed),
            "fs_hz": np.full(n, FS),
        },
    )
    rng = np.random.default_rng(1)
    frame.arrays["vib_ms2"] = [
        cnc_waveform(rpm=rpm, fs_hz=FS, n=4096, rng=rng, active_faults=faults, feed_mm_min=feed)
        if i % waves_every == 0
        else None
        for i in range(n)
    ]
    return frame


@pytest.mark.parametrize(
    ("fault", "kind"),
    [("chatter", EventKind.CHATTER), ("bearing_outer", EventKind.BEARING)],
)
def test_cnc_detector_names_chatter_and_bearing_from_waveforms(fault: str, kind: EventKind) -> None:
    healthy = _mill_frame(6, frozenset(), vib=0.9)
    faulty = _mill_frame(6, frozenset({fault}), vib=0.9)  # a waveform-only verdict
    faulty.ts_s = faulty.ts_s + 60.0
    det = CncDetector()
    _, dec = det.process(healthy)
    assert dec.events == []
    _, dec = det.process(faulty)
    kinds = {e.kind for e in dec.events}
    assert kind in kinds
    assert all(e.severity >= Severity.MAJOR for e in dec.events if e.kind is kind)


def test_cnc_vibration_zones_from_summary_readings_and_spindle_stops() -> None:
    ts = np.arange(12) * 5.0
    vib = np.array([0.9, 0.9, 3.5, 3.6, 0.1, 0.1, 3.6, 5.2, 5.3, 0.9, 0.9, 0.9])
    rpm = np.array([12e3, 12e3, 12e3, 12e3, 0, 0, 12e3, 12e3, 12e3, 12e3, 12e3, 12e3])
    frame = Frame.single(
        "mill",
        T0 + ts,
        {
            "spindle_rpm": rpm,
            "spindle_a": np.where(rpm > 0, 3.0, 0.0),
            "vib_rms_mms": vib,
            "feed_mm_min": np.where(rpm > 0, 2000.0, 0.0),
        },
    )
    _, dec = CncDetector().process(frame)
    # Warning in zone C, kept while the spindle is off, escalated to an alarm in zone D.
    assert [(e.kind, e.severity) for e in dec.events] == [
        (EventKind.VIBRATION, Severity.WARNING),
        (EventKind.VIBRATION, Severity.MAJOR),
    ]
    assert "zone C" in dec.events[0].explanation
    assert list(dec.alert[4:6]) == ["vibration", "vibration"]
    assert dec.alert[-1] == ""


def test_cnc_tool_wear_from_current_at_equal_operations() -> None:
    rng = np.random.default_rng(2)
    ops = [(12_000.0, 2400.0, 4.0), (9000.0, 1500.0, 2.5), (15_000.0, 3600.0, 5.0)]
    rows: list[tuple[float, float, float]] = []
    for rep in range(6):  # the same three operations, six times; the tool wears from rep 3
        wear = 1.0 + max(rep - 2, 0) * 0.06
        for rpm, feed, amps in ops:
            rows += [(rpm, feed, amps * wear * (1 + 0.05 * rng.standard_normal()))] * 1
            rows += [
                (rpm, feed, amps * wear * (1 + 0.05 * rng.standard_normal())) for _ in range(79)
            ]
    arr = np.array(rows)
    n = arr.shape[0]
    frame = Frame.single(
        "mill",
        T0 + 5.0 * np.arange(n),
        {
            "spindle_rpm": arr[:, 0],
            "feed_mm_min": arr[:, 1],
            "spindle_a": arr[:, 2],
            "vib_rms_mms": np.full(n, 0.9),
        },
    )
    scores, dec = CncDetector().process(frame)
    wear_events = [e for e in dec.events if e.kind is EventKind.TOOL_WEAR]
    assert wear_events
    start_of_wear = 3 * len(ops) * 80
    assert wear_events[0].ts_ms / 1000.0 - T0 > 5.0 * start_of_wear
    assert float(np.max(np.abs(scores.extra["wear_ratio"][:start_of_wear]))) < 0.05


# ---------------------------------------------------------------------------------------------
# Vinyl cutter and embroidery machine


def test_vinyl_stall_in_a_job_is_a_motor_alarm() -> None:
    healthy = _sim(DeviceKind.VINYL_CUTTER, hours=6.0, step_s=2.0)
    start = next(s for s, e in _jobs(healthy) if e - s > 300.0)
    run = _sim(
        DeviceKind.VINYL_CUTTER,
        (MachineFault("motor_stall", start + 60.0, 120.0),),
        hours=6.0,
        step_s=2.0,
    )
    events = _events_after(VinylCutterDetector(), _frame(run), 0.0)
    stall = [e for e in events if e.kind is EventKind.MOTOR]
    assert stall
    assert 0.0 <= stall[0].ts_ms / 1000.0 - T0 - (start + 60.0) <= 10.0
    assert max(e.severity for e in stall) >= Severity.MAJOR
    assert "motor stall" in stall[0].explanation
    _, dec = VinylCutterDetector().process(_frame(healthy))
    assert dec.events == []


def test_vinyl_blade_wear_raises_tool_wear() -> None:
    run = _sim(
        DeviceKind.VINYL_CUTTER, (MachineFault("blade_wear", 8 * HOUR),), hours=24.0, step_s=5.0
    )
    scores, dec = VinylCutterDetector().process(_frame(run))
    wear = [e for e in dec.events if e.kind is EventKind.TOOL_WEAR]
    assert wear
    assert wear[0].ts_ms / 1000.0 - T0 > 8 * HOUR
    assert [e for e in dec.events if e.ts_ms / 1000.0 - T0 < 8 * HOUR] == []
    assert np.isfinite(scores.extra["expected_a"][-1])


@pytest.mark.parametrize("fault", ["motor_overload", "tension_fault"])
def test_embroidery_faults_are_motor_events(fault: str) -> None:
    run = _sim(
        DeviceKind.EMBROIDERY, (MachineFault(fault, 6 * HOUR, 4 * HOUR),), hours=12.0, step_s=5.0
    )
    healthy = _sim(DeviceKind.EMBROIDERY, hours=12.0, step_s=5.0)
    _, dec = EmbroideryDetector().process(_frame(healthy))
    assert dec.events == []
    _, dec = EmbroideryDetector().process(_frame(run))
    assert dec.events
    assert all(e.kind is EventKind.MOTOR for e in dec.events)
    assert all(6 * HOUR <= e.ts_ms / 1000.0 - T0 <= 10.5 * HOUR for e in dec.events)
    word = "overload" if fault == "motor_overload" else "tension"
    assert word in dec.events[0].explanation


def test_devices_are_independent_in_one_frame() -> None:
    case = EmbroideryDetector.conformance_case(3)
    both = concat_frames([case.normal, case.anomalous])
    alone = EmbroideryDetector()
    s_all, _ = EmbroideryDetector().process(both)
    first = both.take(np.flatnonzero(both.slot == 0).astype(np.int64))
    s_one, _ = alone.process(first)
    np.testing.assert_array_equal(s_all.score[both.slot == 0], s_one.score)
