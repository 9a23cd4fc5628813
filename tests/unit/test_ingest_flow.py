"""Back-pressure (ingest/flow.py): the gate pauses reading at the high mark, resumes at the low
one, pauses again what something else resumed, and logs once per stretch of back-pressure."""

from __future__ import annotations

import logging
from types import SimpleNamespace

import pytest

from ingest.flow import ReadableTransport, ReadGate, gmqtt_transport, water_marks


class FakeTransport:
    """Records pause_reading / resume_reading like an asyncio transport."""

    def __init__(self) -> None:
        self.reading = True
        self.calls: list[str] = []

    def pause_reading(self) -> None:
        self.calls.append("pause")
        self.reading = False

    def resume_reading(self) -> None:
        self.calls.append("resume")
        self.reading = True

    def is_reading(self) -> bool:
        return self.reading


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def gate_for(
    transport: FakeTransport | None, high: int = 10, low: int = 5
) -> tuple[ReadGate, list[bool], Clock]:
    changes: list[bool] = []
    clock = Clock()
    gate = ReadGate(high, low, lambda: transport, on_change=changes.append, clock=clock)
    return gate, changes, clock


def test_pauses_at_the_high_mark_and_resumes_at_the_low_one() -> None:
    transport = FakeTransport()
    gate, changes, _ = gate_for(transport)
    for _ in range(10):  # the high mark: a broker keeping to its window never goes past it
        gate.arrived()
    assert transport.calls == []
    assert not gate.paused
    gate.arrived()  # 11 waiting: past the high mark
    assert transport.calls == ["pause"]
    assert gate.paused
    assert changes == [True]
    gate.arrived()  # what was already read still comes: no second pause while not reading
    assert gate.waiting == 12
    assert transport.calls == ["pause"]
    gate.settled(6)  # 6 left: above the low mark
    assert transport.calls == ["pause"]
    assert gate.paused
    gate.settled(1)  # 5 left: the low mark
    assert transport.calls == ["pause", "resume"]
    assert not gate.paused
    assert changes == [True, False]
    assert gate.pauses == 1


def test_pauses_again_what_the_stream_reader_resumed() -> None:
    transport = FakeTransport()
    gate, changes, _ = gate_for(transport)
    for _ in range(11):
        gate.arrived()
    transport.resume_reading()  # asyncio's StreamReader, once its own buffer is read
    gate.arrived()
    assert transport.calls == ["pause", "resume", "pause"]
    assert not transport.reading
    assert changes == [True]  # still one pause, as far as the metrics go
    assert gate.pauses == 1


def test_follows_the_current_transport_across_a_reconnect() -> None:
    first, second = FakeTransport(), FakeTransport()
    current: list[ReadableTransport | None] = [first]
    gate = ReadGate(4, 2, lambda: current[0])
    for _ in range(5):
        gate.arrived()
    current[0] = None  # connection lost: nothing to pause or resume
    gate.arrived()
    current[0] = second  # reconnected: a new transport, reading
    gate.arrived()
    assert first.calls == ["pause"]
    assert second.calls == ["pause"]
    gate.settled(7)
    assert second.calls == ["pause", "resume"]
    assert first.calls == ["pause"]
    assert gate.waiting == 0


def test_without_a_transport_it_still_counts() -> None:
    gate, changes, _ = gate_for(None, high=1, low=0)
    gate.arrived()
    gate.arrived()
    gate.settled(2)
    assert changes == [True, False]
    gate.settled(3)  # never below zero
    assert gate.waiting == 0


def test_logs_once_per_stretch_of_back_pressure(caplog: pytest.LogCaptureFixture) -> None:
    transport = FakeTransport()
    gate, _, clock = gate_for(transport, high=1, low=0)
    caplog.set_level(logging.INFO, logger="boltwatch.ingest")
    for _ in range(3):  # three pauses in one stretch
        gate.arrived()
        gate.arrived()
        clock.now += 1.0
        gate.settled(2)
    gate.idle()
    gate.idle()  # nothing more to say
    lines = [(r.levelno, r.getMessage()) for r in caplog.records]
    assert lines == [
        (
            logging.WARNING,
            "ingest is behind: 2 messages wait for their commit; reading from the broker "
            "paused until 0 are left (the broker keeps the rest)",
        ),
        (logging.INFO, "ingest caught up: reading from the broker was paused 3 times over 3.0 s"),
    ]
    assert gate.pauses == 3


def test_idle_while_paused_does_not_end_the_stretch(caplog: pytest.LogCaptureFixture) -> None:
    gate, _, _ = gate_for(FakeTransport(), high=1, low=0)
    caplog.set_level(logging.INFO, logger="boltwatch.ingest")
    gate.arrived()
    gate.arrived()
    gate.idle()
    assert [r.levelno for r in caplog.records] == [logging.WARNING]


def test_water_marks() -> None:
    assert water_marks(1_000, 1_000) == (2_000, 1_000)  # two groups
    assert water_marks(5_000, 1_000) == (5_000, 2_500)  # the Receive Maximum
    assert water_marks(1, 1) == (2, 1)
    with pytest.raises(ValueError, match="low < high"):
        ReadGate(3, 3, lambda: None)


def test_gmqtt_transport_reaches_the_connection_transport() -> None:
    transport = FakeTransport()
    client = SimpleNamespace(_connection=SimpleNamespace(_transport=transport))
    assert gmqtt_transport(client) is transport
    assert gmqtt_transport(SimpleNamespace(_connection=None)) is None
    assert gmqtt_transport(object()) is None
