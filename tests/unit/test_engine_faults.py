"""A detector that raises on one device's readings faults that device only; the rest go on."""

from __future__ import annotations

import json
import logging

import numpy as np
import pytest

from detection.base import Decisions, EventKind, Frame, Scores, Severity
from detection.engine import Engine
from detection.preload import BoltPreloadDetector
from sensors.codec import TelemetryDecoder

T0_MS = 1_772_323_200_000
STEP_MS = 300_000


class FlakyPreload(BoltPreloadDetector):
    """The bolt detector with a bug: raises on any frame holding device ``bad``."""

    def update(self, frame: Frame) -> Scores:
        if (frame.device_id == "bad").any():
            raise FloatingPointError("a bug that only this device's data triggers")
        return super().update(frame)


def _batch(devices: dict[str, float], k: int) -> list[tuple[str, bytes]]:
    return [
        (
            f"boltwatch/v1/site-1/cbolt/{dev}/telemetry",
            json.dumps({"ts": T0_MS + k * STEP_MS, "seq": k, "preload_kn": level}).encode(),
        )
        for dev, level in devices.items()
    ]


def test_a_raising_detector_faults_only_that_device(caplog: pytest.LogCaptureFixture) -> None:
    engine = Engine({"cbolt": FlakyPreload()})
    decoder = TelemetryDecoder()
    levels = {"b1": 50.0, "bad": 50.0, "b2": 45.0}
    with caplog.at_level(logging.ERROR, logger="detection.engine"):
        first = engine.process_batch(decoder.decode_batch(_batch(levels, 0)))
        later = [engine.process_batch(decoder.decode_batch(_batch(levels, k))) for k in (1, 2)]
    (fault,) = first.events
    assert fault.kind is EventKind.INTERNAL_ERROR
    assert fault.device_id == "bad"
    assert fault.device_kind == "cbolt"
    assert fault.severity is Severity.MAJOR
    assert fault.site == "site-1"
    assert "FloatingPointError" in fault.explanation
    assert [o.events for o in later] == [[], []]  # later batches raise nothing new
    assert engine.faulted["cbolt"] == {"bad"}
    assert engine.stats.faults == 1
    # The good devices were evaluated in every batch; the faulted one only in the first attempt.
    assert engine.stats.readings == 2 * 3
    # What alerts hear: the good devices' activity; all three seen (their readings are stored).
    assert all(set(o.active) == {"b1", "b2"} for o in [first, *later])
    assert all(o.seen == {"b1", "b2", "bad"} for o in [first, *later])
    assert sum(r.exc_info is not None for r in caplog.records) == 1
    # Cleared: evaluated again (and, the bug still there, faulted again).
    assert engine.clear_fault("cbolt", "bad")
    again = engine.process_batch(decoder.decode_batch(_batch(levels, 3)))
    assert [e.kind for e in again.events] == [EventKind.INTERNAL_ERROR]


def test_the_good_devices_keep_their_state_and_decisions() -> None:
    """A detector that fails on the whole frame but not per device: nobody is faulted."""

    class FailsOnBigFrames(BoltPreloadDetector):
        def decide(self, frame: Frame, scores: Scores) -> Decisions:
            if len(np.unique(frame.slot)) > 1:
                raise IndexError("a bug in batching")
            return super().decide(frame, scores)

    engine = Engine({"cbolt": FailsOnBigFrames()})
    decoder = TelemetryDecoder()
    outcome = engine.process_batch(decoder.decode_batch(_batch({"b1": 50.0, "b2": 50.0}, 0)))
    assert outcome.events == []
    assert engine.faulted["cbolt"] == set()
    assert engine.stats.readings == 2
