"""The multivariate detector: conformance properties, warm-up, channels, explanations."""

from __future__ import annotations

import numpy as np
import pytest

from detection.base import DetectionError, Float64, Frame
from detection.multivariate import MultivariateDetector, MultivariateParams
from tests.unit.test_univariate import check_conformance


@pytest.mark.parametrize("seed", [0, 1])
def test_conformance(seed: int) -> None:
    check_conformance(MultivariateDetector, seed)  # type: ignore[arg-type]


def rig(n: int, shift_from: int | None = None, seed: int = 0) -> Frame:
    rng = np.random.default_rng(seed)
    base = rng.normal(size=n)
    values: dict[str, Float64] = {
        "spindle_a": 3.0 + 0.2 * base + 0.05 * rng.normal(size=n),
        "coolant_c": 21.0 + 0.1 * rng.normal(size=n),
        "vib_rms": 0.5 + 0.02 * rng.normal(size=n),
    }
    if shift_from is not None:
        values["vib_rms"][shift_from:] += 0.2  # 10 sigma
    ts: Float64 = 1.7e9 + np.arange(n, dtype=np.float64)
    return Frame.single("cnc-1", ts, values)


def test_warmup_scores_zero_then_detects_and_explains() -> None:
    det = MultivariateDetector()
    scores, dec = det.process(rig(900, shift_from=700))
    assert np.all(scores.score[:400] == 0.0)
    assert not dec.alert[:700].any()
    assert dec.alert[720:].all()
    assert dec.events
    assert "vib_rms" in dec.events[0].explanation
    assert dec.events[0].data["z_sigma.vib_rms"] > 0


def test_channels_are_fixed_after_the_first_frame() -> None:
    det = MultivariateDetector()
    det.process(rig(50))
    frame = rig(10)
    frame.values["extra_v"] = np.ones(10)
    with pytest.raises(DetectionError) as err:
        det.process(frame)
    assert err.value.key == "extra_v"


def test_too_many_channels() -> None:
    frame = rig(5)
    for i in range(3):
        frame.values[f"c{i}"] = np.ones(5)
    with pytest.raises(DetectionError) as err:
        MultivariateDetector(MultivariateParams(max_channels=4)).process(frame)
    assert err.value.key == "values"


def test_snapshot_keeps_the_channel_names() -> None:
    det = MultivariateDetector()
    det.process(rig(450))
    other = MultivariateDetector()
    other.restore(det.snapshot())
    assert other.channels == ("coolant_c", "spindle_a", "vib_rms")


def test_all_nan_row_changes_nothing() -> None:
    det = MultivariateDetector()
    det.process(rig(450))
    before = det.snapshot()
    frame = rig(3)
    frame.values = {k: np.full(3, np.nan) for k in frame.values}
    scores, _ = det.process(frame)
    assert np.all(scores.score == 0.0)
    for key, arr in before.items():
        np.testing.assert_array_equal(arr, det.snapshot()[key])


def drifting_rig(n: int = 900, shift_from: int = 650) -> Frame:
    """A temperature that dips hard in the calibration half, and a flow that drops later."""
    rng = np.random.default_rng(3)
    temp = 70.0 + 0.05 * rng.normal(size=n)
    temp[250:330] -= 3.0  # a warm-up transient: inflates the joint T² limit
    flow = 32.0 + 0.2 * rng.normal(size=n)
    flow[shift_from:] -= 0.8  # 4 raw sigma, many smoothed sigma
    values: dict[str, Float64] = {
        "current_a": 2.0 + 0.05 * rng.normal(size=n),
        "flow_lpm": flow,
        "pressure_bar": 1.0 + 0.02 * rng.normal(size=n),
        "temp_c": temp,
    }
    ts: Float64 = 1.7e9 + np.arange(n, dtype=np.float64)
    return Frame.single("pump-1", ts, values)


def test_per_channel_limit_sees_a_shift_the_joint_limit_hides() -> None:
    scores, dec = MultivariateDetector().process(drifting_rig())
    assert not dec.alert[:650].any()
    assert dec.alert[700:].all()
    assert scores.extra["channel_ratio"][700:, 1].min() > 1.0  # flow_lpm, on its own limit
    assert scores.extra["t2_ratio"][700:].max() < 0.5  # the joint limit alone misses it
    assert dec.events
    assert dec.events[0].explanation.startswith("flow_lpm is")
    # Without per-channel limits the detector is the T²-only one and misses the drop.
    _, t2_only = MultivariateDetector(MultivariateParams(channel_factor=0.0)).process(
        drifting_rig()
    )
    assert not t2_only.alert.any()


def test_bad_channel_params() -> None:
    with pytest.raises(DetectionError) as err:
        MultivariateDetector(MultivariateParams(channel_floor=0.0))
    assert err.value.key == "channel_factor"
