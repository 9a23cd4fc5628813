"""Retightening campaigns: the store's validation and records, and the tracker that moves tasks
along as the bolts report (tightened events, re-embedding, overdue escalation)."""

from __future__ import annotations

import math
import tomllib
from pathlib import Path
from typing import Any, NamedTuple

import pytest

from alerts.campaign_tracker import RESETTLE_MS, CampaignTracker
from alerts.campaigns import CampaignError, CampaignStore, NoSuchCampaignError
from alerts.model import AlertState
from alerts.pipeline import AlertPipeline
from alerts.rules import parse_rules
from alerts.store import AlertStore
from detection.events import BatchOutcome, DetectionEvent, EventKind, Severity
from sensors.codec import DecodedBatch, DeviceEvent
from sensors.schema import DeviceKind, TightenedEvent

T0 = 1_772_323_200_000
H = 3_600_000
RULES = """
[defaults]
for = "0s"
clear_after = "10m"
group_wait = "0s"
"""


class State(NamedTuple):
    level_kn: float
    baseline_kn: float
    armed: bool
    t_last_s: float = T0 / 1000


class Clock:
    def __init__(self) -> None:
        self.ms = T0

    def __call__(self) -> int:
        return self.ms


@pytest.fixture
def world(tmp_path: Path) -> tuple[CampaignTracker, dict[str, State], Clock]:
    clock = Clock()
    pipe = AlertPipeline(
        parse_rules(tomllib.loads(RULES)), AlertStore(tmp_path / "alerts.db"), {}, clock=clock
    )
    states: dict[str, State] = {}
    tracker = CampaignTracker(
        CampaignStore(tmp_path / "campaigns.db"),
        pipe,
        lambda ids: {d: states[d] for d in ids if d in states},
        clock=clock,
        site_of=lambda _d: "bridge",
    )
    return tracker, states, clock


def _alert(pipe: AlertPipeline, device: str, kind: EventKind) -> int:
    ev = DetectionEvent(device, kind, Severity.MAJOR, T0, 0.9, f"{kind} of {device}", "test")
    (alert_id,) = pipe.take(BatchOutcome(events=[ev]))
    return alert_id


def _tightened(device: str, ms: int, torque: float = 180.0) -> DecodedBatch:
    event = TightenedEvent(ts=ms, seq=1, torque_nm=torque, preload_kn=61.0, operator="kim")
    return DecodedBatch(events=[DeviceEvent("bridge", DeviceKind.CBOLT, device, ms, event, 0)])


def test_opening_checks_each_field_and_writes_nothing_when_one_is_wrong(tmp_path: Path) -> None:
    store = CampaignStore(tmp_path / "c.db")
    good: dict[str, Any] = {
        "title": "Retighten F1",
        "devices": ["b1"],
        "before": {},
        "by": "ana",
        "ms": T0,
    }
    cases: list[tuple[dict[str, Any], str]] = [
        ({"title": "  "}, "title"),
        ({"devices": []}, "devices"),
        ({"devices": ["b1", "b1"]}, "devices"),
        ({"due_ms": T0 - 1}, "due_ms"),
        ({"assignee": "x" * 201}, "assignee"),
        ({"by": ""}, "by"),
        ({"reason": "bad\x00byte"}, "reason"),
    ]
    for change, key in cases:
        with pytest.raises(CampaignError) as err:
            store.open(**{**good, **change})
        assert err.value.key == key
    assert store.campaigns() == []
    made = store.open(**good, due_ms=T0 + H)
    assert made.id == 1
    assert made.state == "open"
    assert made.tasks[0].before_kn is None
    with pytest.raises(CampaignError) as err:
        store.retighten("b1", ms=T0, by="kim", torque_nm=-3.0)
    assert err.value.key == "torque_nm"
    with pytest.raises(NoSuchCampaignError):
        store.settle(1, "b1", after_kn=1.0, settled_kn=1.0, ms=T0)
    with pytest.raises(NoSuchCampaignError):
        store.cancel(99, by="ana", ms=T0)


def test_a_campaign_from_open_to_done_with_before_after_and_alerts_acknowledged(
    world: tuple[CampaignTracker, dict[str, State], Clock],
) -> None:
    tracker, states, clock = world
    pipe, store = tracker.pipeline, tracker.store
    low1 = _alert(pipe, "b1", EventKind.PRELOAD_LOW)
    low2 = _alert(pipe, "b2", EventKind.PRELOAD_LOW)
    joint = _alert(pipe, "flange-1", EventKind.JOINT)
    made = store.open(
        title="Retighten flange-1",
        devices=["b1", "b2"],
        before={"b1": (44.0, T0 - 60_000), "b2": (47.5, T0 - 30_000)},
        by="ana",
        ms=T0,
        scope="joint:flange-1",
        assignee="kim",
        due_ms=T0 + 48 * H,
        alert_ids=[low1, low2, joint],
    )
    assert made.joint == "flange-1"
    assert [t.before_kn for t in made.tasks] == [44.0, 47.5]

    clock.ms = T0 + H
    tracker.after_batch(_tightened("b1", clock.ms))
    c = store.get(made.id)
    assert c is not None
    t1 = c.task("b1")
    assert t1 is not None
    assert (t1.state, t1.retightened_by, t1.torque_nm) == ("retightened", "kim", 180.0)
    a1 = pipe.store.get(low1)
    a2 = pipe.store.get(low2)
    aj = pipe.store.get(joint)
    assert a1 is not None
    assert a2 is not None
    assert aj is not None
    assert a1.alert.acknowledged
    assert a1.alert.ack_by == "campaign #1 (ana)"
    assert "campaign #1: b1 retightened by kim at 180 N·m" in a1.alert.comments[-1][2]
    assert not a2.alert.acknowledged
    assert not aj.alert.acknowledged  # b2 still to do

    # The detector relearns after the tightening (settling), then arms with a new baseline.
    states["b1"] = State(58.0, math.nan, armed=False)
    tracker.check()
    t1 = store.task(1, "b1")
    assert t1 is not None
    assert (t1.state, t1.settling_seen) == ("retightened", True)
    clock.ms = T0 + 30 * H
    states["b1"] = State(55.1, 55.0, armed=True)
    tracker.check()
    t1 = store.task(1, "b1")
    assert t1 is not None
    assert (t1.state, t1.after_kn, t1.settled_kn, t1.after_ms) == ("done", 55.1, 55.0, clock.ms)
    assert t1.gain_pct == pytest.approx((55.1 / 44.0 - 1) * 100)

    tracker.after_batch(_tightened("b2", clock.ms))
    aj = pipe.store.get(joint)
    assert aj is not None
    assert aj.alert.acknowledged  # every bolt retightened: the joint's finding too
    states["b2"] = State(50.0, math.nan, armed=False)
    tracker.check()
    states["b2"] = State(56.3, 56.0, armed=True)
    tracker.check()
    done = store.get(1)
    assert done is not None
    assert done.state == "done"
    assert done.closed_ms == clock.ms
    aj = pipe.store.get(joint)
    assert aj is not None
    assert (
        "campaign #1 done: b1 44.0 kN -> 55.1 kN, b2 47.5 kN -> 56.3 kN" in aj.alert.comments[-1][2]
    )
    log = [text for _ms, _who, text in store.log(1)]
    assert log[0].startswith("opened for 2 bolt(s)")
    assert log[-1] == "done: every bolt retightened and settled"


def test_a_retightening_the_detector_never_saw_is_settled_a_day_later(
    world: tuple[CampaignTracker, dict[str, State], Clock],
) -> None:
    tracker, states, clock = world
    tracker.store.open(title="t", devices=["b1"], before={"b1": (40.0, T0)}, by="ana", ms=T0)
    states["b1"] = State(40.0, 50.0, armed=True)  # still the old baseline
    tracker.retightened("b1", ms=T0, by="kim", torque_nm=150.0)
    # A day of the service's time without the bolt's readings settles nothing ...
    clock.ms = T0 + 2 * RESETTLE_MS
    tracker.check()
    task = tracker.store.task(1, "b1")
    assert task is not None
    assert task.state == "retightened"
    # ... a day of its readings does.
    states["b1"] = State(40.0, 50.0, armed=True, t_last_s=(T0 + RESETTLE_MS - 1) / 1000)
    tracker.check()
    task = tracker.store.task(1, "b1")
    assert task is not None
    assert task.state == "retightened"
    states["b1"] = State(40.0, 50.0, armed=True, t_last_s=(T0 + RESETTLE_MS) / 1000)
    tracker.check()
    task = tracker.store.task(1, "b1")
    assert task is not None
    assert task.state == "done"


def test_an_overdue_task_raises_one_alert_that_clears_when_the_task_is_done(
    world: tuple[CampaignTracker, dict[str, State], Clock],
) -> None:
    tracker, states, clock = world
    pipe = tracker.pipeline
    tracker.store.open(
        title="Retighten", devices=["b1", "b2"], before={}, by="ana", ms=T0, due_ms=T0 + H
    )
    tracker.check()
    assert pipe.store.find("b1", "maintenance_overdue") is None
    clock.ms = T0 + 2 * H
    tracker.check()
    tracker.check()
    found = pipe.store.find("b1", "maintenance_overdue")
    assert found is not None
    assert found.alert.severity == Severity.MAJOR
    assert found.alert.site == "bridge"
    assert "campaign #1 (Retighten): b1 not retightened, 1.0 h past due" in found.alert.explanation
    assert len(pipe.store.history(found.alert.id)) >= 1
    # A reading of the bolt (its detector shows nothing) does not clear it ...
    pipe.take(BatchOutcome(active={"b1": []}))
    pipe.evaluate()
    assert pipe.store.get(found.alert.id).alert.state is AlertState.ACTIVE  # type: ignore[union-attr]
    # ... the task done does.
    tracker.retightened("b1", ms=clock.ms, by="kim")
    states["b1"] = State(50.0, math.nan, armed=False)
    tracker.check()
    states["b1"] = State(50.0, 50.0, armed=True)
    tracker.check()
    clock.ms += 11 * 60_000
    pipe.evaluate()
    cleared = pipe.store.get(found.alert.id)
    assert cleared is not None
    assert cleared.alert.state is AlertState.CLEARED
    other = pipe.store.find("b2", "maintenance_overdue")
    assert other is not None
    assert other.alert.state is AlertState.ACTIVE
    # Cancelling the campaign clears the rest.
    tracker.cancelled(tracker.store.cancel(1, by="ana", ms=clock.ms, reason="bridge closed"))
    clock.ms += 11 * 60_000
    pipe.evaluate()
    assert pipe.store.get(other.alert.id).alert.state is AlertState.CLEARED  # type: ignore[union-attr]
    c = tracker.store.get(1)
    assert c is not None
    assert [t.state for t in c.tasks] == ["done", "cancelled"]
    assert c.state == "cancelled"
