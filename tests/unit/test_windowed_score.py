"""The NAB-style windowed scorer on hand-made cases (perfect, null, all false positives...)."""

from __future__ import annotations

import numpy as np
import pytest

from boltwatch.evaluation import (
    REWARD_LOW_FN,
    STANDARD,
    LabelledSeries,
    Profile,
    ScoringError,
    anomaly_windows,
    label_onsets,
    null_scores,
    random_scores,
    scaled_sigmoid,
    score_at,
    sweep,
    windowed_gaussian,
)

N = 1000
TS = 1.7e9 + 60.0 * np.arange(N, dtype=np.float64)


def _series(*anomaly_rows: int, name: str = "s") -> LabelledSeries:
    return LabelledSeries.from_anomalies(name, TS, TS[list(anomaly_rows)])


def _spikes(*rows: int) -> np.ndarray:
    s = np.zeros(N)
    s[list(rows)] = 1.0
    return s


def test_windows_follow_nab_rules() -> None:
    # 10 % of 1000 rows over 2 anomalies: 50 rows each, centred.
    np.testing.assert_array_equal(anomaly_windows(N, [300, 700]), [[275, 325], [675, 725]])
    # Overlapping windows merge; windows are clipped to the series.
    np.testing.assert_array_equal(anomaly_windows(N, [500, 510]), [[475, 535]])
    np.testing.assert_array_equal(anomaly_windows(N, [990]), [[940, 999]])
    np.testing.assert_array_equal(anomaly_windows(N, [300], placement="after"), [[300, 400]])
    np.testing.assert_array_equal(label_onsets([0, 1, 1, 0, 0, 1, 0]), [1, 5])
    assert _series(500).windows.tolist() == [[450, 550]]


def test_scaled_sigmoid_matches_the_published_values() -> None:
    np.testing.assert_allclose(
        scaled_sigmoid([-1.0, -0.5, 0.0, 1.0]), [0.98661, 0.84828, 0.0, -0.98661], atol=1e-5
    )
    assert float(scaled_sigmoid(3.0)) == -1.0


def test_perfect_detector_scores_100() -> None:
    corpus = [_series(500, name="a"), _series(300, 800, name="b")]
    perfect = [_spikes(int(s.windows[k, 0])) for s in corpus for k in range(1)]
    perfect[1][corpus[1].windows[1, 0]] = 1.0
    best = sweep(corpus, perfect).best
    assert best.normalised == pytest.approx(100.0)
    assert (best.tp_windows, best.fn_windows, best.fp_detections) == (3, 0, 0)


def test_null_detector_scores_0_and_its_best_threshold_is_never_firing() -> None:
    corpus = [_series(500), _series(300, 800)]
    result = sweep(corpus, [null_scores(N), null_scores(N)])
    assert result.best.normalised == 0.0
    assert result.best_threshold == np.inf
    assert result.normalised[0] == 0.0  # the first threshold never fires
    assert (result.best.tp_windows, result.best.fn_windows) == (0, 3)


def test_all_false_positives_score_negative() -> None:
    corpus = [_series(500)]
    outside = _spikes(200, 250, 300, 350, 900)  # none in [450, 550]; probation is rows < 150
    got = score_at(corpus, [outside], 0.5)
    assert got.normalised < 0.0
    assert (got.tp_windows, got.fn_windows, got.fp_detections) == (0, 1, 5)
    # Before any window each costs the full A_FP; after one, less the closer it is.
    assert got.raw == pytest.approx(-1.0 + 4 * STANDARD.a_fp + 0.11 * float(scaled_sigmoid(3.5)))
    assert sweep(corpus, [outside]).best.normalised == 0.0  # never firing beats it


def test_an_early_detection_beats_a_late_one() -> None:
    corpus = [_series(500)]
    early = score_at(corpus, [_spikes(460)], 0.5)
    on_time = score_at(corpus, [_spikes(500)], 0.5)
    late = score_at(corpus, [_spikes(545)], 0.5)
    assert early.normalised > on_time.normalised > late.normalised > 0.0
    assert early.tp_windows == on_time.tp_windows == late.tp_windows == 1


def test_detections_after_the_first_in_a_window_do_not_count_twice() -> None:
    corpus = [_series(500)]
    once = score_at(corpus, [_spikes(480)], 0.5)
    many = score_at(corpus, [_spikes(480, 490, 500, 510, 520, 549)], 0.5)
    assert many.raw == once.raw
    assert many.fp_detections == 0
    # An earlier one among them is what counts.
    assert score_at(corpus, [_spikes(455, 480)], 0.5).raw > once.raw


def test_probation_rows_are_not_scored() -> None:
    corpus = [_series(500)]
    assert score_at(corpus, [_spikes(10, 100, 149)], 0.5).fp_detections == 0
    assert score_at(corpus, [_spikes(150)], 0.5).fp_detections == 1


def test_sweep_matches_direct_scoring_at_every_threshold() -> None:
    rng = np.random.default_rng(7)
    corpus = [_series(400, name="a"), _series(250, 700, name="b"), _series(900, name="c")]
    scores = [np.round(rng.random(N), 2) for _ in corpus]  # ties on purpose
    scores[1][300:310] = np.nan
    result = sweep(corpus, scores)
    assert np.all(np.diff(result.thresholds) < 0)
    for i in range(0, result.thresholds.shape[0], 7):
        direct = score_at(corpus, scores, float(result.thresholds[i]))
        assert direct.raw == pytest.approx(float(result.raw[i]), abs=1e-9)
        assert direct.tp_windows == result.tp_windows[i]
        assert direct.fp_detections == result.fp_detections[i]


def test_profiles_weigh_misses_and_false_positives() -> None:
    corpus = [_series(500)]
    miss = score_at(corpus, [null_scores(N)], 0.5, profile=REWARD_LOW_FN)
    assert miss.raw == -2.0
    assert miss.normalised == 0.0
    with pytest.raises(ScoringError) as err:
        Profile(a_tp=1.0, a_fp=0.11, a_fn=-1.0)
    assert err.value.key == "profile"


def test_bad_input_names_the_problem() -> None:
    with pytest.raises(ScoringError) as err:
        sweep([_series(500)], [np.zeros(N - 1)])
    assert err.value.key == "s"
    with pytest.raises(ScoringError) as err:
        sweep([_series(10)], [np.zeros(N)])  # the only window lies in the probation period
    assert err.value.key == "corpus"
    with pytest.raises(ScoringError):
        LabelledSeries("bad", TS, np.array([[10, 5]], np.int64))


def test_windowed_gaussian_is_causal_and_scores_a_spike() -> None:
    rng = np.random.default_rng(3)
    x = 5.0 + rng.normal(size=N)
    x[600] = 15.0
    x[700] = np.nan
    g = windowed_gaussian(x, window=200)
    assert g[600] > 0.999999
    assert g[700] == 0.0
    assert np.all((g >= 0) & (g <= 1))
    np.testing.assert_array_equal(windowed_gaussian(x[:650], window=200), g[:650])
    # Chance-level scores are reproducible.
    np.testing.assert_array_equal(random_scores(5, 1), random_scores(5, 1))
