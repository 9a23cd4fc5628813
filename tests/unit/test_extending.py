"""Adding a detector is one module plus one registry line: a toy one, registered here, runs in the
engine with no engine change (its kind, its hooks, its snapshot), and a kind's facts live in
:data:`sensors.schema.KINDS` alone."""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar

import numpy as np
import numpy.typing as npt
import pytest

from detection.base import (
    ConformanceCase,
    Decisions,
    DetectionError,
    DetectionEvent,
    Detector,
    EventKind,
    Frame,
    Scores,
    Severity,
    steps,
)
from detection.engine import Engine
from detection.registry import DETECTORS, default_detectors, register
from sensors.codec import TelemetryDecoder
from sensors.schema import KINDS, READING_TYPES, DeviceKind

T0_MS = 1_772_323_200_000


@dataclass(frozen=True, slots=True)
class BacklogParams:
    limit: float = 100.0


class BacklogDetector(Detector[BacklogParams]):
    """A toy: a gateway whose buffered backlog passes a limit (an edge per crossing), counting the
    battery swaps the engine marks on its readings."""

    name: ClassVar[str] = "toy_backlog"
    kinds: ClassVar[tuple[str, ...]] = ("gateway",)
    params_type: ClassVar[type[Any]] = BacklogParams
    state_spec: ClassVar[dict[str, tuple[npt.DTypeLike, float, tuple[int, ...]]]] = {
        "over": (np.bool_, 0, ()),
        "swaps": (np.int64, 0, ()),
    }
    optional_columns: ClassVar[dict[str, float]] = {"backlog_readings": 0.0}
    event_marks: ClassVar[dict[str, str]] = {"battery_swap": "swapped"}

    def update(self, frame: Frame) -> Scores:
        backlog = frame.column("backlog_readings")
        np.add.at(self.state["swaps"], frame.slot, frame.column("swapped").astype(np.int64))
        return Scores(np.clip(backlog / (2 * self.params.limit), 0.0, 1.0), {"backlog": backlog})

    def decide(self, frame: Frame, scores: Scores) -> Decisions:
        over = scores.extra["backlog"] > self.params.limit
        events: list[DetectionEvent] = []
        for rows in steps(frame.slot):
            slots = frame.slot[rows]
            rising = over[rows] & ~self.state["over"][slots]
            self.state["over"][slots] = over[rows]
            events += [
                DetectionEvent(
                    device_id=str(frame.device_id[i]),
                    kind=EventKind.ANOMALY,
                    severity=Severity.WARNING,
                    ts_ms=round(float(frame.ts_s[i]) * 1000),
                    score=float(scores.score[i]),
                    explanation=f"backlog {scores.extra['backlog'][i]:.0f} readings",
                    detector=self.name,
                )
                for i in rows[rising].tolist()
            ]
        alert = np.where(over, "anomaly", "").astype(object)
        severity = np.where(over, int(Severity.WARNING), 0).astype(np.int8)
        return Decisions(alert, severity, events)

    @classmethod
    def conformance_case(cls, seed: int) -> ConformanceCase:
        normal = Frame.single("gw", np.arange(10.0), {"backlog_readings": np.full(10, 5.0)})
        anomalous = Frame.single(
            "gw", np.arange(10.0, 20.0), {"backlog_readings": np.full(10, 500.0)}
        )
        return ConformanceCase(normal, anomalous, np.ones(10, np.bool_))


@pytest.fixture
def toy() -> Iterator[type[BacklogDetector]]:
    register(BacklogDetector)
    try:
        yield BacklogDetector
    finally:
        DETECTORS.pop(BacklogDetector.name, None)


def _gateway(ts_ms: int, seq: int, backlog: float) -> tuple[str, bytes]:
    body = {"ts": ts_ms, "seq": seq, "backlog_readings": backlog, "rssi_dbm": -70.0}
    return ("boltwatch/v1/site-1/gateway/gw-1/telemetry", json.dumps(body).encode())


def test_a_registered_detector_runs_in_the_engine_with_no_engine_change(
    toy: type[BacklogDetector], tmp_path: Path
) -> None:
    assert default_detectors()["gateway"] == toy.name
    engine = Engine()
    assert isinstance(engine.detectors["gateway"], toy)
    decoder = TelemetryDecoder()
    swap = (
        "boltwatch/v1/site-1/gateway/gw-1/event",
        json.dumps({"ts": T0_MS, "seq": 1, "type": "battery_swap"}).encode(),
    )
    first = engine.process_batch(decoder.decode_batch([swap, _gateway(T0_MS + 1000, 2, 10.0)]))
    assert first.events == []
    assert first.active == {"gw-1": []}
    events = engine.process_batch(
        decoder.decode_batch([_gateway(T0_MS + 2000 + k, 3 + k, 50.0 * k) for k in range(5)])
    ).events
    assert [(e.device_id, e.device_kind, e.explanation) for e in events] == [
        ("gw-1", "gateway", "backlog 150 readings")
    ]
    det = engine.detectors["gateway"]
    assert int(det.state["swaps"][engine.slots["gateway"]["gw-1"]]) == 1  # marked once only
    # its state goes into the engine's snapshot and back
    engine.save(tmp_path / "state.npz")
    again = Engine()
    again.load(tmp_path / "state.npz")
    outcome = again.process_batch(decoder.decode_batch([_gateway(T0_MS + 9000, 9, 300.0)]))
    assert outcome.events == []  # still over the limit: no second edge
    assert outcome.active == {"gw-1": ["anomaly"]}


def test_two_detectors_cannot_both_watch_a_kind_by_default(toy: type[BacklogDetector]) -> None:
    class Rival(BacklogDetector):
        name: ClassVar[str] = "toy_rival"

    with pytest.raises(DetectionError, match="both watch"):
        register(Rival)
    assert "toy_rival" not in DETECTORS


def test_without_the_toy_gateways_have_no_detector() -> None:
    assert "gateway" not in default_detectors()
    assert "gateway" not in Engine().detectors


def test_every_kind_is_declared_once_with_its_facts() -> None:
    assert set(KINDS) == set(DeviceKind)
    assert all(spec.kind is kind for kind, spec in KINDS.items())
    assert {kind: spec.reading for kind, spec in KINDS.items()} == READING_TYPES
    for spec in KINDS.values():
        assert spec.reading.__struct_config__.tag == spec.kind.value
        assert spec.display_name
        assert spec.silent_after_s > 0
