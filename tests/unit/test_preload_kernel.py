"""The compiled preload recursion (detection/_preload_kernel.py) against the numpy step form.

Every field scenario (firmware_sim.field, parameters drawn across DOMAIN.md's full ranges) and the
conformance case run through ``BoltPreloadDetector()`` (the kernel) and the numpy form
(``PreloadParams(compiled=False)``, one vectorised step per reading rank): the same events, the
same alert and severity on every row, the same integer and boolean diagnostics, and floats equal
to 1e-12 relative or 1e-14 absolute (numpy's ``exp2`` is its own SIMD code, not the C library's,
so the decaying spike counter and the score may differ in the last bit).
"""

from __future__ import annotations

import itertools
from typing import Any

import numpy as np
import numpy.typing as npt
import pytest

from boltwatch.evaluation.field import field_frame
from detection.base import Decisions, Frame, Scores
from detection.preload import BoltPreloadDetector, PreloadParams
from firmware_sim.field import FIELD_SCENARIOS, FieldRanges, simulate_field


def _numpy_form() -> BoltPreloadDetector:
    return BoltPreloadDetector(PreloadParams(compiled=False))


def _same(name: str, a: npt.NDArray[Any], b: npt.NDArray[Any]) -> None:
    if a.dtype.kind == "f":
        np.testing.assert_allclose(a, b, rtol=1e-12, atol=1e-14, equal_nan=True, err_msg=name)
    else:
        np.testing.assert_array_equal(a, b, err_msg=name)


def _events(dec: Decisions) -> list[tuple[str, str, int, int, str]]:
    return [
        (e.device_id, e.kind.value, int(e.severity), e.ts_ms, e.explanation) for e in dec.events
    ]


def _compare(
    frame: Frame, fast: BoltPreloadDetector, slow: BoltPreloadDetector
) -> tuple[Scores, Decisions]:
    sf, df = fast.process(frame)
    ss, ds = slow.process(frame)
    assert sf.extra.keys() == ss.extra.keys()
    for name in sf.extra:
        _same(name, sf.extra[name], ss.extra[name])
    _same("score", sf.score, ss.score)
    np.testing.assert_array_equal(df.alert, ds.alert)
    np.testing.assert_array_equal(df.severity, ds.severity)
    assert _events(df) == _events(ds)
    a, b = fast.state.snapshot(), slow.state.snapshot()
    for name in a:
        _same(f"state {name}", a[name], b[name])
    return sf, df


@pytest.fixture(scope="module")
def fleet_frame() -> Frame:
    """Two bolts of every field scenario, 12 days each (about 100k readings)."""
    ranges = FieldRanges(days=12.0)
    bolts = [b for seed in (3, 4) for b in simulate_field(seed, len(FIELD_SCENARIOS), ranges)]
    return field_frame(bolts)


def test_every_field_scenario_matches_the_step_form(fleet_frame: Frame) -> None:
    _, dec = _compare(fleet_frame, BoltPreloadDetector(), _numpy_form())
    kinds = {e.kind.value for e in dec.events}
    # the comparison covers the alert paths, not only quiet bolts
    assert {"loosening", "preload_low", "sensor_fault"} <= kinds


def test_frames_of_any_size_give_the_same_result(fleet_frame: Frame) -> None:
    """Live (frames of a few minutes) equals replay (one frame), kernel against kernel."""
    whole = BoltPreloadDetector()
    _, dec_whole = whole.process(fleet_frame)
    live = BoltPreloadDetector()
    edges = np.arange(fleet_frame.ts_s.min(), fleet_frame.ts_s.max() + 7_200.0, 7_200.0)
    events = []
    for lo, hi in itertools.pairwise(edges):
        rows = np.flatnonzero((fleet_frame.ts_s >= lo) & (fleet_frame.ts_s < hi))
        if rows.size:
            _, dec = live.process(fleet_frame.take(rows))
            events.extend(dec.events)
    live_events = _events(Decisions(dec_whole.alert[:0], dec_whole.severity[:0], events))
    # the whole frame lists events device by device, the live frames hour by hour
    assert sorted(live_events) == sorted(_events(dec_whole))
    assert len(live_events) > 10
    a, b = whole.state.snapshot(), live.state.snapshot()
    for name in a:
        np.testing.assert_array_equal(a[name], b[name], err_msg=name)


@pytest.mark.parametrize("seed", [1, 2])
def test_conformance_case_matches_the_step_form(seed: int) -> None:
    case = BoltPreloadDetector.conformance_case(seed)
    fast, slow = BoltPreloadDetector(), _numpy_form()
    _compare(case.normal, fast, slow)
    _compare(case.anomalous, fast, slow)


def test_a_slot_without_state_is_refused_not_written() -> None:
    det = BoltPreloadDetector()
    frame = Frame(
        slot=np.array([3], np.int64),
        device_id=np.array(["b"], object),
        ts_s=np.zeros(1),
        values={"preload_kn": np.ones(1)},
    )
    with pytest.raises(IndexError, match="outside"):
        det.update(frame)
