"""The univariate score is a calibrated tail probability: synthetic changes with known onsets.

Each case is normal noise, then one change at a known row. The score must cross the detector's
own alert threshold within a bounded delay of the onset, never in the normal stretch before it
(after the warm-up), and — for a lasting change — fall back below the release level soon after:
the new behaviour is then normal.
"""

from __future__ import annotations

import numpy as np
import pytest

from detection.base import DetectionError, Float64, Frame
from detection.univariate import UnivariateDetector, UnivariateParams

N, ONSET, SIGMA = 1500, 800, 0.2
P = UnivariateParams()
WARM = P.warmup_samples + P.likelihood_warmup  # rows that score 0 by design
SEEDS = (0, 1, 2)


def _scores(y: Float64, *, dt_s: float = 60.0, params: UnivariateParams | None = None) -> Float64:
    ts = 1.7e9 + dt_s * np.arange(y.shape[0], dtype=np.float64)
    scores, _ = UnivariateDetector(params).process(Frame.single("d", ts, {"value": y}))
    assert np.all((scores.score >= 0.0) & (scores.score <= 1.0))
    return scores.score


def _noise(seed: int, n: int = N) -> Float64:
    return 10.0 + SIGMA * np.random.default_rng(seed).normal(size=n)


def _detections(score: Float64) -> np.ndarray:
    return np.flatnonzero(score >= P.threshold)


def _check_onset(score: Float64, onset: int, max_delay: int) -> int:
    det = _detections(score)
    assert not np.any((det >= WARM) & (det < onset)), f"false alarm at {det[det < onset]}"
    after = det[det >= onset]
    assert after.size, "the change was never detected"
    delay = int(after[0] - onset)
    assert delay <= max_delay, f"detected {delay} rows after the onset"
    return delay


@pytest.mark.parametrize("seed", SEEDS)
def test_level_shift_is_detected_at_onset_and_then_is_normal(seed: int) -> None:
    y = _noise(seed)
    y[ONSET:] += 5 * SIGMA  # for good
    score = _scores(y)
    _check_onset(score, ONSET, max_delay=3)
    # The new level is the normal one: no detection, and scores like those of plain noise.
    assert score[ONSET + 60 :].max() < P.threshold
    assert np.median(score[ONSET + 60 :]) < 0.1
    assert _detections(score).size <= 4  # few detections, not one per shifted row


@pytest.mark.parametrize("seed", SEEDS)
def test_new_variance_is_detected(seed: int) -> None:
    y = _noise(seed)
    y[ONSET:] = 10.0 + 5 * SIGMA * np.random.default_rng(100 + seed).normal(size=N - ONSET)
    score = _scores(y)
    _check_onset(score, ONSET, max_delay=5)
    assert np.count_nonzero(score[ONSET + 300 :] >= P.threshold) <= 1  # learnt by then


@pytest.mark.parametrize("seed", SEEDS)
def test_spike_scores_high_once(seed: int) -> None:
    y = _noise(seed)
    y[ONSET] += 10 * SIGMA
    score = _scores(y)
    _check_onset(score, ONSET, max_delay=0)
    assert score[ONSET] > 0.9
    assert score[ONSET + 1 :].max() < P.threshold  # one detection, the baseline did not move


@pytest.mark.parametrize("seed", SEEDS)
def test_slow_drift_is_detected(seed: int) -> None:
    y = _noise(seed)
    y[ONSET:] += 0.05 * SIGMA * np.arange(N - ONSET)  # 1 sigma every 20 readings
    _check_onset(_scores(y), ONSET, max_delay=120)


@pytest.mark.parametrize("seed", SEEDS)
def test_change_of_daily_pattern_is_detected(seed: int) -> None:
    """A machine that ran 8-18 h for 20 days now runs 14-24 h (readings every 10 min)."""
    t = 600.0 * np.arange(6 * 24 * 23, dtype=np.float64)
    hour, day = (t % 86400.0) / 3600.0, t // 86400.0
    running = np.where(day < 20, (hour >= 8) & (hour < 18), (hour >= 14) & (hour < 24))
    y = 20.0 + 5.0 * running + 0.3 * np.random.default_rng(seed).normal(size=t.shape[0])
    score = _scores(y, dt_s=600.0, params=UnivariateParams(period_s=86400.0))
    onset = int(np.flatnonzero((day == 20) & (hour >= 8))[0])  # it does not start at 8 h
    det = _detections(score)
    assert not np.any((det >= 6 * 24 * 10) & (det < onset))  # profile learnt: days 10-19 quiet
    after = det[det >= onset]
    assert after.size
    assert after[0] - onset <= 6  # within the hour


def test_the_score_is_a_tail_probability() -> None:
    """On pure noise, rows past the threshold (p <= 1e-5) are rare: calibrated, not 1 for long."""
    alarms = 0
    for seed in range(5):
        score = _scores(_noise(seed, 3000))
        alarms += int(np.count_nonzero(score >= P.threshold))
        assert np.median(score[WARM:]) < 0.1
    assert alarms <= 3  # of 15,000 rows


def test_relearning_can_be_switched_off() -> None:
    y = _noise(4)
    y[ONSET:] += 5 * SIGMA
    off = _scores(y, params=UnivariateParams(relearn_score=0.0))
    on = _scores(y)
    assert np.count_nonzero(off >= P.threshold) > np.count_nonzero(on >= P.threshold)


def test_bad_likelihood_params_name_the_key() -> None:
    with pytest.raises(DetectionError) as err:
        UnivariateDetector(UnivariateParams(likelihood_short=2000.0))
    assert err.value.key == "likelihood_short"
    with pytest.raises(DetectionError) as err:
        UnivariateDetector(UnivariateParams(relearn_score=1.5))
    assert err.value.key == "relearn_score"
