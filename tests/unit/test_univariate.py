"""The univariate detector: conformance properties, spikes, level shifts, NaN, seasonality."""

from __future__ import annotations

import numpy as np
import pytest

from detection.base import DetectionError, Detector, EventKind, Float64, Frame
from detection.univariate import UnivariateDetector, UnivariateParams


def check_conformance(cls: type[Detector[object]], seed: int) -> None:
    """The shared conformance properties, checked locally."""
    case = cls.conformance_case(seed)
    det = cls()
    det.process(case.normal)
    snap = det.snapshot()
    scores, _ = det.process(case.anomalous)
    assert np.all((scores.score >= 0) & (scores.score <= 1))
    assert not np.isnan(scores.score).any()
    assert scores.score[case.anomaly_rows].mean() > scores.score[~case.anomaly_rows].mean() + 0.3
    # snapshot/restore into a clone continues identically
    other = det.clone()
    other.restore(snap)
    again, _ = other.process(case.anomalous)
    np.testing.assert_array_equal(again.score, scores.score)
    # causality: a prefix of every device scores the same as in the full run
    full = cls()
    full_scores, _ = full.process(case.normal)
    cut = cls()
    keep = np.flatnonzero(case.normal.ts_s <= np.median(case.normal.ts_s)).astype(np.int64)
    part, _ = cut.process(case.normal.take(keep))
    np.testing.assert_array_equal(part.score, full_scores.score[keep])


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_conformance(seed: int) -> None:
    check_conformance(UnivariateDetector, seed)  # type: ignore[arg-type]


def series(y: Float64, dt_s: float = 60.0, device: str = "d") -> Frame:
    ts: Float64 = 1.7e9 + dt_s * np.arange(y.shape[0], dtype=np.float64)
    return Frame.single(device, ts, {"value": y})


def test_spike_scores_high_without_moving_the_level() -> None:
    rng = np.random.default_rng(1)
    y = 50.0 + rng.normal(size=300)
    y[200] = 80.0
    det = UnivariateDetector()
    scores, dec = det.process(series(y))
    assert scores.score[200] > 0.99
    assert scores.score[201:].max() < 0.9
    assert abs(scores.extra["baseline"][201] - 50.0) < 1.0
    assert len(dec.events) == 1
    ev = dec.events[0]
    assert ev.kind is EventKind.ANOMALY
    assert "robust sigma above its level" in ev.explanation
    assert "80" in ev.explanation


def test_level_shift_alerts_then_readapts() -> None:
    rng = np.random.default_rng(2)
    y = 10.0 + 0.2 * rng.normal(size=2000)
    y[500:] += 3.0  # 15 sigma, for good
    det = UnivariateDetector()
    scores, dec = det.process(series(y))
    assert dec.alert[500] == "anomaly"
    assert not dec.alert[1500:].any()  # alert ended: the new level is the normal one
    assert scores.score[1500:].max() < 0.7
    starts = [e for e in dec.events if e.severity.name in {"WARNING", "CRITICAL", "MAJOR"}]
    assert 1 <= len(starts) <= 3  # edges only, not one event per row


def test_nan_scores_zero_and_changes_nothing() -> None:
    rng = np.random.default_rng(3)
    y = 5.0 + rng.normal(size=100)
    det = UnivariateDetector()
    det.process(series(y[:50]))
    before = det.snapshot()
    scores, _ = det.process(series(np.full(5, np.nan)))
    assert np.all(scores.score == 0.0)
    after = det.snapshot()
    for key, arr in before.items():
        np.testing.assert_array_equal(arr, after[key])


def test_vectorised_devices_match_single_runs() -> None:
    rng = np.random.default_rng(4)
    ys = [rng.normal(size=120) * s + m for s, m in ((1, 0), (3, 100), (0.1, 7))]
    frames = [series(y, device=f"d{i}") for i, y in enumerate(ys)]
    slot = np.repeat(np.arange(3, dtype=np.int64), 120)
    both = Frame(
        slot,
        np.concatenate([f.device_id for f in frames]),
        np.concatenate([f.ts_s for f in frames]),
        {"value": np.concatenate(ys)},
    )
    together, _ = UnivariateDetector().process(both)
    for i, f in enumerate(frames):
        alone, _ = UnivariateDetector().process(f)
        np.testing.assert_allclose(together.score[slot == i], alone.score)


def test_gap_and_irregular_sampling() -> None:
    rng = np.random.default_rng(5)
    ts = 1.7e9 + np.cumsum(rng.exponential(30.0, size=400))
    ts[200:] += 7 * 86400.0  # a week offline
    frame = Frame.single("d", ts, {"value": 3.0 + 0.1 * rng.normal(size=400)})
    scores, _ = UnivariateDetector().process(frame)
    assert scores.score.max() < 0.9


def test_daily_profile_is_learned_without_alerts() -> None:
    rng = np.random.default_rng(6)
    t: Float64 = 1.7e9 + 600.0 * np.arange(6 * 24 * 30, dtype=np.float64)  # 30 days, 10 min
    hour = (t % 86400.0) / 3600.0
    day = (hour > 8) & (hour < 18)  # a machine that runs in working hours
    y = (20.0 + 5.0 * day + 0.3 * rng.normal(size=t.shape[0])).astype(np.float64)
    det = UnivariateDetector(UnivariateParams(period_s=86400.0))
    _, dec = det.process(Frame.single("d", t, {"value": y}))
    assert not dec.alert[-6 * 24 * 5 :].any()  # the last five days: no alert
    profile = det.state["season"][0]
    assert profile[10:17].mean() > profile[19:24].mean()  # day bins above night bins


def test_bad_params_name_the_key() -> None:
    with pytest.raises(DetectionError) as err:
        UnivariateDetector(UnivariateParams(threshold=0.5, release=0.8))
    assert err.value.key == "threshold"
