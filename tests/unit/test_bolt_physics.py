"""Smart-bolt physics invariants, sensor faults and climate."""

from __future__ import annotations

import numpy as np
import numpy.typing as npt
import pytest

from firmware_sim.bolts import (
    LOOSENING_FAULTS,
    SENSOR_FAULTS,
    BoltFault,
    BoltGroupSpec,
    BoltSeries,
    simulate_bolts,
)
from firmware_sim.climate import ClimateSpec, air_temperature, joint_temperature

START_MS = 1_772_323_200_000  # 2026-03-01T00:00:00Z
DAY_MS = 86_400_000


def grid(days: float, step_s: float = 300.0) -> npt.NDArray[np.int64]:
    return START_MS + np.arange(0, int(days * DAY_MS), int(step_s * 1000), dtype=np.int64)


def flat(t: npt.NDArray[np.int64], c: float = 10.0) -> npt.NDArray[np.float64]:
    return np.full(t.shape[0], c)


def run(
    spec: BoltGroupSpec,
    days: float = 30,
    temp: npt.NDArray[np.float64] | None = None,
    seed: int = 1,
) -> BoltSeries:
    t = grid(days)
    return simulate_bolts(spec, t, flat(t) if temp is None else temp, np.random.default_rng(seed))


# -- installation and embedding ------------------------------------------------------------------


def test_nut_factor_is_recovered_from_torque_and_preload_at_installation() -> None:
    spec = BoltGroupSpec(
        count=50, id_prefix="b", diameter_mm=16, target_preload_kn=62, noise_pct=0.0
    )
    out = run(spec, days=2)
    tightened = {e.device_id: e for e in out.events if e.type == "tightened"}
    assert len(tightened) == 50
    for truth in out.truth:
        e = tightened[truth.device_id]
        assert e.torque_nm is not None
        assert e.preload_kn is not None
        k = e.torque_nm / (e.preload_kn * 1000 * 0.016)
        assert k == pytest.approx(truth.nut_factor, rel=2e-3)
        assert 0.14 <= k <= 0.22
    # The torque is what the nominal K asks for: T = 0.18 * 62 kN * 16 mm.
    assert next(iter(tightened.values())).torque_nm == pytest.approx(0.18 * 62_000 * 0.016, abs=0.1)


def test_preload_scatters_with_the_nut_factor() -> None:
    out = run(BoltGroupSpec(count=200, id_prefix="b", noise_pct=0.0), days=1)
    f0 = out.true_preload_kn[:, 0]
    # K in 0.14..0.22 with K_nom 0.18: F0 spans 0.18/0.22 .. 0.18/0.14 of the target.
    assert f0.min() >= 62 * 0.18 / 0.22 - 0.01
    assert f0.max() <= 62 * 0.18 / 0.14 + 0.01
    assert f0.std() / f0.mean() > 0.05


def test_embedding_is_monotone_and_within_its_range() -> None:
    spec = BoltGroupSpec(count=30, id_prefix="b", embedding_pct=(5, 20), noise_pct=0.0)
    out = run(spec, days=5)
    true = out.true_preload_kn
    assert (np.diff(true, axis=1) <= 1e-9).all(), "embedding only ever loses preload"
    loss = 1 - true[:, -1] / true[:, 0]
    assert loss.min() >= 0.05 - 1e-3
    assert loss.max() <= 0.20 + 1e-3
    # Exponential with a time constant of hours: most of it happens in the first day.
    day1 = 1 - true[:, 288] / true[:, 0]
    assert (day1 >= 0.9 * loss).all()
    settled = np.array([t.settled_kn for t in out.truth])
    np.testing.assert_allclose(true[:, -1], settled, rtol=1e-3)


def test_bolts_installed_before_the_run_are_settled_and_send_no_tightened_event() -> None:
    out = run(BoltGroupSpec(count=5, id_prefix="b", install_s=-30 * 86_400, noise_pct=0.0), days=3)
    assert not out.events
    np.testing.assert_allclose(out.true_preload_kn[:, 0], out.true_preload_kn[:, -1], rtol=1e-6)


# -- temperature ----------------------------------------------------------------------------------


@pytest.mark.parametrize(("material", "per_c"), [("aluminium", 0.003), ("steel", 0.0)])
def test_thermal_sign_and_magnitude_per_joint_material(material: str, per_c: float) -> None:
    t = grid(4)
    temp = 10.0 + 10.0 * np.sin(np.linspace(0, 8 * np.pi, t.shape[0]))
    spec = BoltGroupSpec(
        count=40, id_prefix="b", joint_material=material, install_s=-30 * 86_400, noise_pct=0.0
    )
    out = simulate_bolts(spec, t, temp, np.random.default_rng(3))
    rel = out.true_preload_kn / out.true_preload_kn[:, :1] - 1
    d_temp = temp - temp[0]
    slopes = np.array([np.polyfit(d_temp, rel[i], 1)[0] for i in range(40)])
    assert np.median(slopes) == pytest.approx(per_c, abs=3e-4)
    if per_c > 0:
        assert (slopes > 0).all(), "steel in aluminium: tension rises when warm"


# -- loosening ------------------------------------------------------------------------------------


def test_vibration_loosening_has_two_stages_and_reaches_near_zero() -> None:
    spec = BoltGroupSpec(
        count=20,
        id_prefix="b",
        install_s=-30 * 86_400,
        fault=BoltFault.VIBRATION_LOOSENING,
        fault_onset_s=(2 * 86_400, 5 * 86_400),
        fault_params={"stage1_days": 5.0, "stage2_hours": 48.0},
        noise_pct=0.0,
    )
    out = run(spec, days=20)
    true = out.true_preload_kn
    t_s = (out.t_ms - START_MS) / 1000
    for i, truth in enumerate(out.truth):
        onset_s = (truth.onset_ms - START_MS) / 1000  # type: ignore[operator]
        before = true[i, t_s < onset_s]
        stage1_end = np.searchsorted(t_s, onset_s + 5 * 86_400) - 1
        stage1_loss = 1 - true[i, stage1_end] / before[-1]
        assert 0.02 <= stage1_loss <= 0.09, "stage 1: a few percent, no rotation"
        assert true[i, -1] <= 0.06 * before[-1], "stage 2 takes the preload to near zero"
        assert truth.cross70_ms is not None
        # The 70 % line is crossed in stage 2, after stage 1.
        assert truth.cross70_ms > truth.onset_ms + 5 * DAY_MS  # type: ignore[operator]


def test_creep_is_linear_and_sudden_loss_is_a_step() -> None:
    creep = run(
        BoltGroupSpec(
            count=5,
            id_prefix="c",
            install_s=-30 * 86_400,
            fault=BoltFault.CREEP,
            fault_onset_s=(86_400, 86_400),
            fault_params={"creep_pct_per_day": 1.0},
            noise_pct=0.0,
        ),
        days=11,
    )
    rel = creep.true_preload_kn[:, -1] / creep.true_preload_kn[:, 0]
    np.testing.assert_allclose(rel, 0.90, atol=0.005)
    hit = run(
        BoltGroupSpec(
            count=5,
            id_prefix="s",
            install_s=-30 * 86_400,
            fault=BoltFault.SUDDEN_LOSS,
            fault_onset_s=(3 * 86_400, 3 * 86_400),
            fault_params={"loss_pct": 60.0},
            noise_pct=0.0,
        ),
        days=6,
    )
    k = int(3 * 86_400 / 300)
    np.testing.assert_allclose(
        hit.true_preload_kn[:, k] / hit.true_preload_kn[:, k - 1], 0.4, atol=1e-6
    )
    assert all(t.cross70_ms == START_MS + 3 * DAY_MS for t in hit.truth)


def test_retightening_resets_preload_and_sends_tightened() -> None:
    spec = BoltGroupSpec(
        count=4,
        id_prefix="r",
        install_s=0.0,
        fault=BoltFault.VIBRATION_LOOSENING,
        fault_onset_s=(86_400, 86_400),
        fault_params={"stage1_days": 1.0, "stage2_hours": 24.0},
        retighten_s=10 * 86_400,
        noise_pct=0.0,
    )
    out = run(spec, days=15)
    k = int(10 * 86_400 / 300)
    assert (out.true_preload_kn[:, k - 1] < 0.1 * out.true_preload_kn[:, 0]).all()
    assert (out.true_preload_kn[:, k] > 0.8 * out.true_preload_kn[:, 0] * 0.8).all()
    tightened = [e for e in out.events if e.type == "tightened"]
    assert len(tightened) == 8  # installation and retightening, 4 bolts
    assert {e.ts_ms for e in tightened} == {START_MS, START_MS + 10 * DAY_MS}


# -- sensor faults never touch the true preload ---------------------------------------------------


@pytest.mark.parametrize("fault", sorted(SENSOR_FAULTS))
def test_sensor_faults_change_the_measurement_only(fault: BoltFault) -> None:
    healthy = run(BoltGroupSpec(count=6, id_prefix="s", install_s=-30 * 86_400.0), seed=7)
    faulty = run(
        BoltGroupSpec(
            count=6,
            id_prefix="s",
            install_s=-30 * 86_400.0,
            fault=fault,
            fault_onset_s=(5 * 86_400, 10 * 86_400),
        ),
        seed=7,
    )
    np.testing.assert_allclose(faulty.true_preload_kn, healthy.true_preload_kn)
    assert all(t.cross70_ms is None for t in faulty.truth)
    onset = np.array([(t.onset_ms - START_MS) / 300_000 for t in faulty.truth])  # type: ignore[operator]
    k = int(onset.min())
    # Before the onset the measurement is the healthy one.
    np.testing.assert_array_equal(faulty.preload_kn[:, :k], healthy.preload_kn[:, :k])
    changed = (
        ~np.isclose(faulty.preload_kn, healthy.preload_kn, equal_nan=False)
        | (faulty.ts_ms != healthy.ts_ms)
        | np.isnan(faulty.preload_kn)
    )
    assert changed.any(axis=1).all(), "every faulty sensor shows its fault"


def test_stuck_sensor_has_zero_variance() -> None:
    out = run(
        BoltGroupSpec(count=3, id_prefix="s", fault=BoltFault.STUCK, fault_onset_s=(86_400, 86_400))
    )
    assert np.ptp(out.preload_kn[:, 288:], axis=1).max() == 0.0
    assert np.ptp(out.preload_kn[:, :288], axis=1).min() > 0.0


def test_battery_swap_offset_comes_with_its_event() -> None:
    out = run(
        BoltGroupSpec(
            count=3,
            id_prefix="s",
            fault=BoltFault.BATTERY_SWAP_OFFSET,
            fault_onset_s=(86_400, 86_400),
        )
    )
    swaps = [e for e in out.events if e.type == "battery_swap"]
    assert len(swaps) == 3
    assert all(e.ts_ms == START_MS + DAY_MS for e in swaps)


def test_categories_do_not_overlap() -> None:
    assert not LOOSENING_FAULTS & SENSOR_FAULTS
    assert BoltFault.NONE not in LOOSENING_FAULTS | SENSOR_FAULTS


def test_deterministic_per_seed() -> None:
    spec = BoltGroupSpec(count=5, id_prefix="d", fault=BoltFault.SPIKES, fault_onset_s=(0, 86_400))
    a, b, c = run(spec, seed=11), run(spec, seed=11), run(spec, seed=12)
    np.testing.assert_array_equal(a.preload_kn, b.preload_kn)
    assert a.truth == b.truth
    assert not np.array_equal(a.preload_kn, c.preload_kn)


def test_bad_specs_are_refused() -> None:
    with pytest.raises(ValueError, match="joint_material"):
        BoltGroupSpec(count=1, id_prefix="x", joint_material="cheese")
    with pytest.raises(ValueError, match="count"):
        BoltGroupSpec(count=0, id_prefix="x")
    with pytest.raises(ValueError, match="nut_factor"):
        BoltGroupSpec(count=1, id_prefix="x", nut_factor=(0.3, 0.1))


# -- climate --------------------------------------------------------------------------------------


def test_climate_has_daily_and_seasonal_cycles() -> None:
    year = (
        START_MS - 59 * DAY_MS + np.arange(0, 365 * DAY_MS, 3_600_000, dtype=np.int64)
    )  # from Jan 1
    spec = ClimateSpec(weather_sigma_c=0.0, cold_snaps_per_month=0.0)
    air = air_temperature(spec, year, np.random.default_rng(0))
    by_month = air[: 360 * 24].reshape(12, 30 * 24).mean(axis=1)
    assert by_month.argmin() in (0, 11)  # coldest in winter
    assert by_month.argmax() in (5, 6, 7)  # warmest in summer
    day = air[: 24 * 30].reshape(30, 24).mean(axis=0)
    assert 13 <= day.argmax() <= 17  # warmest in the afternoon
    assert day.max() - day.min() == pytest.approx(2 * spec.daily_amplitude_c, rel=0.1)


def test_joint_temperature_lags_the_air() -> None:
    t = grid(2, step_s=60)
    air = np.where(t >= START_MS + DAY_MS, 20.0, 0.0)
    joint = joint_temperature(air, t, tau_s=3_600)
    k = int(np.searchsorted(t, START_MS + DAY_MS))
    assert joint[k] < 1.0
    assert joint[k + 60] == pytest.approx(20 * (1 - np.exp(-1)), abs=0.5)
    assert joint[-1] == pytest.approx(20.0, abs=0.1)


def test_indoor_climate_is_steady() -> None:
    t = grid(10, step_s=600)
    air = air_temperature(ClimateSpec(indoor=True, mean_c=21.0), t, np.random.default_rng(0))
    assert abs(air.mean() - 21.0) < 0.5
    assert np.ptp(air) < 5.0
