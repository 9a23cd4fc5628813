"""The one conformance test every registered detector passes (river's checks, adapted to arrays)."""

from __future__ import annotations

import numpy as np
import pytest

from detection.base import Detector, Frame
from detection.registry import DETECTORS, detector_class, make_detector

detector_class("cbolt")  # fills the registry
NAMES = sorted(DETECTORS)


def _concat(a: Frame, b: Frame) -> Frame:
    """Two frames of the same devices as one, sorted by slot (time order kept per device)."""
    merged = Frame(
        slot=np.r_[a.slot, b.slot],
        device_id=np.r_[a.device_id, b.device_id],
        ts_s=np.r_[a.ts_s, b.ts_s],
        values={k: np.r_[a.column(k), b.column(k)] for k in a.values.keys() | b.values.keys()},
        arrays={
            k: list(a.arrays.get(k, [None] * len(a))) + list(b.arrays.get(k, [None] * len(b)))
            for k in a.arrays.keys() | b.arrays.keys()
        },
    )
    return merged.take(np.argsort(merged.slot, kind="stable").astype(np.int64))


def _run(det: Detector[object], frame: Frame) -> tuple[np.ndarray, list[str]]:
    scores, dec = det.process(frame)
    return scores.score, [str(a) for a in dec.alert]


def test_every_detector_is_registered() -> None:
    assert {"cbolt", "univariate", "multivariate", "printer3d", "laser_cutter", "cnc_mill"} <= set(
        NAMES
    )


@pytest.mark.parametrize("name", NAMES)
def test_clone_keeps_params_and_forgets_state(name: str) -> None:
    det = make_detector(name)
    case = det.conformance_case(0)
    det.process(case.normal)
    clone = det.clone()
    assert clone.params == det.params
    assert clone.params is not det.params
    assert det.n_devices > 0
    assert clone.n_devices == 0


@pytest.mark.parametrize("name", NAMES)
def test_scores_in_range_and_anomalies_score_higher(name: str) -> None:
    det = make_detector(name)
    case = det.conformance_case(1)
    normal, _ = _run(det, case.normal)
    anomalous, alerts = _run(det, case.anomalous)
    for s in (normal, anomalous):
        assert np.all(np.isfinite(s))
        assert np.all((s >= 0.0) & (s <= 1.0))
    bad = case.anomaly_rows
    assert bad.any()
    assert anomalous[bad].mean() > anomalous[~bad].mean() + 0.1
    assert anomalous[bad].max() > np.quantile(normal, 0.99)
    assert any(alerts[i] for i in np.flatnonzero(bad))


@pytest.mark.parametrize("name", NAMES)
def test_snapshot_restore_continues_identically(name: str) -> None:
    det = make_detector(name)
    case = det.conformance_case(2)
    det.process(case.normal)
    snap = det.snapshot()
    expected, expected_alerts = _run(det, case.anomalous)
    again = det.clone()
    again.restore(snap)
    got, got_alerts = _run(again, case.anomalous)
    np.testing.assert_array_equal(got, expected)
    assert got_alerts == expected_alerts


@pytest.mark.parametrize("name", NAMES)
def test_causal_by_truncation(name: str) -> None:
    """Row i's score is the same whether or not the rows after it exist."""
    case = make_detector(name).conformance_case(3)
    full_det = make_detector(name)
    full_det.process(case.normal)
    full, _ = _run(full_det, case.anomalous)
    cut_t = float(np.quantile(case.anomalous.ts_s, 0.6))
    keep = np.flatnonzero(case.anomalous.ts_s <= cut_t).astype(np.int64)
    part_det = make_detector(name)
    part_det.process(case.normal)
    part, _ = _run(part_det, case.anomalous.take(keep))
    np.testing.assert_allclose(part, full[keep], rtol=0, atol=1e-12)


@pytest.mark.parametrize("name", NAMES)
def test_one_frame_or_two_gives_the_same_scores(name: str) -> None:
    """Batching does not change results: the per-device recursion is the same."""
    case = make_detector(name).conformance_case(4)
    split = make_detector(name)
    a, _ = _run(split, case.normal)
    b, _ = _run(split, case.anomalous)
    whole = make_detector(name)
    merged = _concat(case.normal, case.anomalous)
    m, _ = _run(whole, merged)
    expected = _concat(
        Frame(case.normal.slot, case.normal.device_id, case.normal.ts_s, {"s": a}),
        Frame(case.anomalous.slot, case.anomalous.device_id, case.anomalous.ts_s, {"s": b}),
    ).values["s"]
    np.testing.assert_allclose(m, expected, rtol=1e-9, atol=1e-9)
