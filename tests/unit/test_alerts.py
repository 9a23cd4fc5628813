"""The alert pipeline's lifecycle, routing, grouping, silences, inhibition and escalation.

Time is an injected clock, so every assertion is exact and nothing sleeps. Notifications go to a
recording channel (the test's own receiver at the Channel seam; real channels are tested against
real servers in tests/integration/test_channels.py).
"""

from __future__ import annotations

import asyncio
import dataclasses
import threading
import tomllib
from pathlib import Path
from typing import ClassVar

import pytest

from alerts.errors import RuleError
from alerts.model import AlertState, ChannelError, Notification, Silence
from alerts.pipeline import AlertPipeline, no_data_event
from alerts.rules import load_rules, parse_rules
from alerts.store import AlertStore
from detection.base import DetectionEvent, EventKind, Severity
from detection.events import BatchOutcome

T0 = 1_772_323_200_000
MIN = 60_000


class Clock:
    def __init__(self) -> None:
        self.ms = T0

    def __call__(self) -> int:
        return self.ms

    def advance(self, minutes: float) -> None:
        self.ms += int(minutes * MIN)


class Recorder:
    """Collects what it is sent; can be told to fail."""

    kind: ClassVar[str] = "recorder"

    def __init__(self) -> None:
        self.sent: list[Notification] = []
        self.fail: ChannelError | None = None

    async def send(self, notification: Notification) -> None:
        if self.fail is not None:
            raise self.fail
        self.sent.append(notification)

    async def aclose(self) -> None:
        return None


RULES = """
[defaults]
for = "0s"
clear_after = "10m"
repeat_interval = "1h"
group_wait = "1m"
flap_window = "1h"
flap_max = 3

[[rules]]
kinds = ["loosening"]
for = "2m"
clear_after = "30m"

[[rules]]
kinds = ["sensor_fault"]
min_severity = "warning"

[[routes]]
kinds = ["loosening", "preload_low"]
receivers = ["oncall", "manager"]
escalate_after = "15m"
group_by = "joint"

[[routes]]
receivers = ["oncall"]
group_by = "device"

[[inhibit]]
source_min_severity = "critical"
target_max_severity = "warning"
equal = "device"

[[inhibit]]
source_kinds = ["no_data"]
source_device_kinds = ["gateway"]
target_kinds = ["no_data"]
equal = "site"

[[receivers]]
name = "oncall"
channel = "console"

[[receivers]]
name = "manager"
channel = "console"
"""


def _event(
    device: str = "b1",
    kind: EventKind = EventKind.LOOSENING,
    sev: Severity = Severity.WARNING,
    site: str = "s1",
    device_kind: str = "cbolt",
) -> DetectionEvent:
    return DetectionEvent(
        device_id=device,
        kind=kind,
        severity=sev,
        ts_ms=T0,
        score=0.9,
        explanation=f"{kind.value} on {device}, 70 % expected in 38 h",
        detector="test",
        site=site,
        data={"hours_to_alarm_line": 38.0, "nan": float("nan")},
        device_kind=device_kind,
    )


Setup = tuple[AlertPipeline, Clock, dict[str, Recorder]]


@pytest.fixture
def setup(tmp_path: Path) -> Setup:
    clock = Clock()
    rec = {"oncall": Recorder(), "manager": Recorder()}
    store = AlertStore(tmp_path / "alerts.db")
    joints = {"b1": "flange-1", "b2": "flange-1", "b3": "flange-2"}
    pipe = AlertPipeline(
        parse_rules(tomllib.loads(RULES)),
        store,
        rec,
        clock=clock,
        group_of=lambda d: joints.get(d, ""),
    )
    return pipe, clock, rec


def _step(pipe: AlertPipeline) -> list[Notification]:
    notes = pipe.evaluate()
    asyncio.run(pipe.deliver())
    return notes


def _activate(pipe: AlertPipeline, clock: Clock) -> None:
    """Past the 2-minute ``for`` and the 1-minute group wait: notified."""
    clock.advance(2)
    _step(pipe)
    clock.advance(1)
    _step(pipe)


def test_pending_then_active_then_notified_once(setup: Setup) -> None:
    pipe, clock, rec = setup
    pipe.take(BatchOutcome(events=[_event()]))
    assert _step(pipe) == []
    (alert,) = pipe.store.alerts()
    assert alert.state is AlertState.PENDING
    clock.advance(2)
    _step(pipe)  # active now, waiting group_wait for its siblings
    assert pipe.store.alerts()[0].state is AlertState.ACTIVE
    assert rec["oncall"].sent == []
    clock.advance(1)
    notes = _step(pipe)
    assert [n.receiver for n in notes] == ["oncall"]
    assert rec["oncall"].sent[0].title == "[warning] loosening on b1 (s1)"
    assert "70 % expected in 38 h" in rec["oncall"].sent[0].text()
    assert "nan" not in rec["oncall"].sent[0].alerts[0]["data"]
    clock.advance(1)
    pipe.take(BatchOutcome(events=[_event()]))  # the same condition again: no new notification
    assert _step(pipe) == []


def test_concurrent_events_make_one_alert(tmp_path: Path) -> None:
    """Many threads, each with its own connection to the same file: still one alert."""
    path = tmp_path / "alerts.db"
    AlertStore(path).close()
    rules = load_rules(None)

    def hammer() -> None:
        with AlertStore(path) as store:
            pipe = AlertPipeline(rules, store, {}, clock=lambda: T0)
            for _ in range(50):
                pipe.take(BatchOutcome(events=[_event(), _event(sev=Severity.MAJOR)]))

    threads = [threading.Thread(target=hammer) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    with AlertStore(path) as store:
        alerts = store.alerts()
        assert len(alerts) == 1
        assert alerts[0].severity is Severity.MAJOR
        assert len([h for h in store.history(alerts[0].id) if h[1] == "event"]) == 800


def test_severity_escalates_while_active_and_renotifies(setup: Setup) -> None:
    pipe, clock, rec = setup
    pipe.take(BatchOutcome(events=[_event()]))
    _activate(pipe, clock)
    assert len(rec["oncall"].sent) == 1
    pipe.take(BatchOutcome(events=[_event(sev=Severity.CRITICAL)]))
    clock.advance(0.1)
    _step(pipe)
    assert len(rec["oncall"].sent) == 2
    assert rec["oncall"].sent[1].title.startswith("[critical]")
    pipe.take(BatchOutcome(events=[_event(sev=Severity.WARNING)]))  # does not de-escalate
    assert pipe.store.alerts()[0].severity is Severity.CRITICAL


def test_clears_after_hysteresis_and_sends_resolved(setup: Setup) -> None:
    pipe, clock, rec = setup
    pipe.take(BatchOutcome(events=[_event()]))
    _activate(pipe, clock)
    pipe.take(BatchOutcome(active={"b1": []}))  # the detector no longer reports it
    clock.advance(29)
    _step(pipe)
    assert pipe.store.alerts()[0].state is AlertState.ACTIVE
    pipe.take(BatchOutcome(active={"b1": []}))  # still not reported: inactive since the first time
    clock.advance(2)
    _step(pipe)
    (alert,) = pipe.store.alerts()
    assert alert.state is AlertState.CLEARED
    assert [n.status for n in rec["oncall"].sent] == ["firing", "resolved"]


def test_reactivation_reopens_the_same_alert(setup: Setup) -> None:
    pipe, clock, _ = setup
    first = pipe.take(BatchOutcome(events=[_event()]))
    clock.advance(3)
    _step(pipe)
    pipe.take(BatchOutcome(active={"b1": []}))
    clock.advance(31)
    _step(pipe)
    again = pipe.take(BatchOutcome(events=[_event()]))
    assert again == first
    (alert,) = pipe.store.alerts()
    assert alert.state is AlertState.PENDING


def test_flapping_is_held_active_and_not_paged(setup: Setup) -> None:
    pipe, clock, rec = setup
    for _ in range(5):
        pipe.take(BatchOutcome(events=[_event(kind=EventKind.SENSOR_FAULT)]))
        _step(pipe)
        clock.advance(1.5)
        _step(pipe)
        pipe.take(BatchOutcome(active={"b1": []}))
        clock.advance(10.5)
        _step(pipe)
    (alert,) = pipe.store.alerts()
    assert alert.flapping
    assert alert.state is AlertState.ACTIVE
    firing = [n for n in rec["oncall"].sent if n.status == "firing"]
    assert len(firing) == 4  # 3 allowed activations + the one that declared flapping


def test_grouping_one_notification_for_a_joint(setup: Setup) -> None:
    pipe, clock, rec = setup
    pipe.take(BatchOutcome(events=[_event("b1"), _event("b2"), _event("b3")]))
    _activate(pipe, clock)
    titles = sorted(n.title for n in rec["oncall"].sent)
    assert len(rec["oncall"].sent) == 2  # flange-1 (b1 + b2) and flange-2 (b3)
    assert any("and 1 more" in t for t in titles)
    groups = sorted(n.group for n in rec["oncall"].sent)
    assert groups == ["flange-1", "flange-2"]


def test_escalation_to_the_next_receiver_unless_acknowledged(setup: Setup) -> None:
    pipe, clock, rec = setup
    pipe.take(BatchOutcome(events=[_event("b1"), _event("b3")]))
    _activate(pipe, clock)
    (b1,) = pipe.store.alerts(device_id="b1")
    pipe.store.acknowledge(b1.id, "alice", clock(), "on my way")
    clock.advance(16)
    _step(pipe)
    assert [n.alerts[0]["device_id"] for n in rec["manager"].sent] == ["b3"]
    b1 = pipe.store.alerts(device_id="b1")[0]
    assert b1.ack_by == "alice"
    assert b1.comments[0][2] == "on my way"
    # repeat interval: unacknowledged b3 is repeated to both, acknowledged b1 is not
    clock.advance(61)
    _step(pipe)
    assert sum(1 for n in rec["oncall"].sent if n.alerts[0]["device_id"] == "b1") == 1
    assert sum(1 for n in rec["oncall"].sent if n.alerts[0]["device_id"] == "b3") == 2


def test_silence_by_site_mutes_then_expires(setup: Setup) -> None:
    pipe, clock, rec = setup
    pipe.store.add_silence(Silence(0, clock(), clock() + 30 * MIN, "bob", "maintenance", site="s1"))
    pipe.take(BatchOutcome(events=[_event()]))
    clock.advance(3)
    _step(pipe)
    assert rec["oncall"].sent == []
    assert pipe.store.alerts()[0].state is AlertState.ACTIVE  # silenced, not suppressed
    clock.advance(30)
    _step(pipe)
    assert len(rec["oncall"].sent) == 1


def test_inhibition_critical_mutes_warning_of_same_device(setup: Setup) -> None:
    pipe, clock, rec = setup
    pipe.take(
        BatchOutcome(
            events=[
                _event(kind=EventKind.PRELOAD_LOW, sev=Severity.CRITICAL),
                _event(kind=EventKind.SENSOR_FAULT, sev=Severity.WARNING),
            ]
        )
    )
    _activate(pipe, clock)
    kinds = [n.alerts[0]["kind"] for n in rec["oncall"].sent]
    assert kinds == ["preload_low"]


def test_gateway_offline_mutes_its_sites_no_data(setup: Setup) -> None:
    pipe, clock, rec = setup
    silent = [("gw-1", "gateway", "s1"), ("b1", "cbolt", "s1"), ("b9", "cbolt", "s2")]
    pipe.take(
        BatchOutcome(
            events=[no_data_event(d, k, site, clock() - 20 * MIN, clock()) for d, k, site in silent]
        )
    )
    _activate(pipe, clock)
    devices = sorted(n.alerts[0]["device_id"] for n in rec["oncall"].sent)
    assert devices == ["b9", "gw-1"]
    pipe.take(BatchOutcome(seen=frozenset(["b9"])))
    clock.advance(11)
    _step(pipe)
    assert pipe.store.alerts(device_id="b9")[0].state is AlertState.CLEARED


def test_failing_receiver_does_not_block_others_and_retries(setup: Setup) -> None:
    pipe, clock, rec = setup
    rec["oncall"].fail = ChannelError("HTTP 503", retryable=True)
    pipe.take(BatchOutcome(events=[_event("b1")]))
    _activate(pipe, clock)
    clock.advance(16)  # escalated to the manager, whose channel works
    _step(pipe)
    assert len(rec["manager"].sent) == 1
    (pending,) = [r for r in pipe.store.outbox("pending") if r.notification.receiver == "oncall"]
    assert pending.attempts >= 1
    rec["oncall"].fail = None
    clock.advance(10)
    _step(pipe)
    assert len(rec["oncall"].sent) == 1
    assert rec["oncall"].sent[0].id == pending.notification.id


def test_non_retryable_failure_is_marked_failed(setup: Setup) -> None:
    pipe, clock, rec = setup
    rec["oncall"].fail = ChannelError("HTTP 404", retryable=False)
    pipe.take(BatchOutcome(events=[_event(kind=EventKind.SENSOR_FAULT)]))
    _activate(pipe, clock)
    (row,) = pipe.store.outbox("failed")
    assert "404" in row.last_error


def test_outbox_survives_a_crash_between_record_and_send(tmp_path: Path) -> None:
    """Recorded but not sent (the process died): sent after restart, with the same id, once."""
    clock = Clock()
    rules = parse_rules(tomllib.loads(RULES))
    store = AlertStore(tmp_path / "a.db")
    recorded: list[Notification] = []

    def crash(notes: list[Notification]) -> None:
        recorded.extend(notes)
        raise SystemExit("killed between record and send")

    pipe = AlertPipeline(rules, store, {"oncall": Recorder()}, clock=clock, on_record=crash)
    pipe.take(BatchOutcome(events=[_event(kind=EventKind.SENSOR_FAULT)]))
    pipe.evaluate()  # active, waiting for the group
    clock.advance(3)
    with pytest.raises(SystemExit):
        pipe.evaluate()
    store.close()
    rec = Recorder()
    restarted = AlertPipeline(rules, AlertStore(tmp_path / "a.db"), {"oncall": rec}, clock=clock)
    _step(restarted)
    _step(restarted)
    assert [n.id for n in rec.sent] == [recorded[0].id]


def test_rules_errors_name_the_key() -> None:
    with pytest.raises(RuleError, match=r"routes\[0\]\.receivers"):
        parse_rules({"routes": [{"receivers": ["nobody"]}]})
    with pytest.raises(RuleError, match=r"rules\[0\]\.for"):
        parse_rules({"rules": [{"for": "soon"}]})
    with pytest.raises(RuleError, match=r"silences\[0\]"):
        parse_rules(
            {
                "silences": [
                    {
                        "starts": "2026-01-01T00:00:00Z",
                        "ends": "2026-01-02T00:00:00Z",
                        "author": "a",
                        "reason": "r",
                    }
                ]
            }
        )
    with pytest.raises(RuleError, match=r"defaults\.bogus"):
        parse_rules({"defaults": {"bogus": 1}})
    with pytest.raises(RuleError, match="severity"):
        parse_rules({"rules": [{"min_severity": "urgent"}]})


def test_sample_rules_file_loads_and_builds_every_receiver(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from alerts.channels import make_channel

    monkeypatch.setenv("BOLTWATCH_WEBHOOK_SECRET", "s")
    monkeypatch.setenv("BOLTWATCH_SMTP_PASSWORD", "p")
    sample = Path(__file__).resolve().parents[2] / "alerts" / "samples" / "rules.toml"
    rules = load_rules(sample)
    assert rules.routes
    assert rules.silences
    names = {r.name for r in rules.receivers}
    assert names >= {r for route in rules.routes for r in route.receivers}
    for r in rules.receivers:
        assert make_channel(r.channel, r.options, r.key).kind == r.channel


def test_a_faulted_detector_is_an_alert_that_reaches_a_receiver(setup: Setup) -> None:
    """Issue 14: a detector that raised on one device gives that device an ``internal_error``
    event (tests/unit/test_engine_faults.py); it becomes an alert like any other, listed by the
    store behind the API and ``boltwatch alerts list``, and sent to the default route."""
    pipe, clock, rec = setup
    pipe.take(BatchOutcome(events=[_event("b7", EventKind.INTERNAL_ERROR, Severity.MAJOR)]))
    _step(pipe)
    clock.advance(1)
    _step(pipe)
    (alert,) = pipe.store.alerts()
    assert alert.kind == "internal_error"
    assert alert.device_id == "b7"
    assert alert.state is AlertState.ACTIVE
    assert [n.alerts[0]["kind"] for n in rec["oncall"].sent] == ["internal_error"]


def test_no_data_goes_the_way_of_every_detection_event(tmp_path: Path) -> None:
    """Issue 12: a silent device is a detection event through ``on_events``: counted like the
    others, and its rule applies (here: raised to major)."""
    rules = RULES + '\n[[rules]]\nkinds = ["no_data"]\nseverity = "major"\n'
    clock = Clock()
    pipe = AlertPipeline(parse_rules(tomllib.loads(rules)), AlertStore(tmp_path / "a.db"), {})
    pipe.clock = clock
    pipe.take(
        BatchOutcome(events=[no_data_event("b1", "cbolt", "s1", clock() - 20 * MIN, clock())])
    )
    (alert,) = pipe.store.alerts()
    assert alert.kind == "no_data"
    assert alert.severity is Severity.MAJOR
    assert "no data for 20 min" in alert.explanation
    counted = pipe.metrics.registry.get_sample_value(
        "boltwatch_detection_events_total", {"kind": "no_data", "severity": "warning"}
    )
    assert counted == 1
    pipe.take(
        BatchOutcome(seen=frozenset(["b1"]))
    )  # reported again: inactive, then cleared after clear_after
    clock.advance(11)
    pipe.evaluate()
    assert pipe.store.alerts()[0].state is AlertState.CLEARED


def test_events_of_an_open_alert_update_it_in_memory_exactly_as_the_store_does(
    setup: Setup, tmp_path: Path
) -> None:
    """A second event of an open alert takes the batched path (no reload): what the pipeline
    holds equals what a fresh store reads back, severity escalation and all."""
    pipe, clock, _ = setup
    (first,) = pipe.take(BatchOutcome(events=[_event("b1")]))
    _activate(pipe, clock)
    worse = dataclasses.replace(
        _event("b1", sev=Severity.MAJOR, site="s9"), explanation="now major"
    )
    clock.advance(1)
    (again,) = pipe.take(BatchOutcome(events=[worse, _event("b2")]))[:1]
    assert again == first
    assert first in pipe._touched  # refreshed in memory, not marked for a reload
    assert first not in pipe.store.take_dirty()
    held = pipe._cache[first].alert  # type: ignore[index]
    with AlertStore(tmp_path / "alerts.db") as fresh:
        stored = fresh.get(first)
    assert stored is not None
    for name in ("severity", "last_event_ms", "explanation", "data", "late", "site", "group"):
        assert getattr(held, name) == getattr(stored.alert, name), name
    assert held.severity is Severity.MAJOR
    assert held.site == "s9"
    # The refreshed alert is evaluated like any other: the escalation goes out.
    notes = _step(pipe)
    assert any("[major]" in n.title for n in notes)
    assert [h[1] for h in pipe.store.history(first)].count("event") == 2


def test_new_alerts_are_held_in_memory_exactly_as_the_store_reads_them_back(
    setup: Setup, tmp_path: Path
) -> None:
    """New alerts are built from the rows they were written from (only their ids are read):
    what the pipeline holds equals a fresh store's read, for a batch with several events of one
    new alert (the later ones update it), and next to a cleared alert raised again."""
    pipe, clock, _ = setup
    (old,) = pipe.take(BatchOutcome(events=[_event("b0")]))
    with pipe.store._tx() as db:  # another writer cleared it
        db.execute("UPDATE alerts SET state = 'cleared' WHERE id = ?", (old,))
    pipe.store.take_dirty()
    pipe._cache = None  # the pipeline starts again: b0's alert is not held any more
    clock.advance(1)
    batch = [
        _event("b1"),
        dataclasses.replace(_event("b1", sev=Severity.MAJOR, site="s9"), explanation="worse"),
        _event("b1", sev=Severity.WARNING),
        _event("b2", kind=EventKind.SENSOR_FAULT),
        _event("b0"),
    ]
    ids = pipe.take(BatchOutcome(events=batch))
    assert ids[0] == ids[1] == ids[2] != ids[3]
    assert ids[4] == old
    assert pipe._cache is not None
    with AlertStore(tmp_path / "alerts.db") as fresh:
        for i in set(ids):
            held, stored = pipe._cache[i], fresh.get(i)
            assert stored is not None
            assert held.alert == stored.alert, i
            assert (held.device_kind, held.inactive_ms) == (stored.device_kind, stored.inactive_ms)
    assert pipe._cache[ids[0]].alert.severity is Severity.MAJOR
    assert pipe._cache[ids[0]].alert.explanation == batch[2].explanation


def test_an_alert_cleared_behind_the_pipelines_back_is_raised_again(setup: Setup) -> None:
    """The batched update only touches open alerts; one found cleared is upserted (pending
    again) and reloaded."""
    pipe, clock, _ = setup
    (first,) = pipe.take(BatchOutcome(events=[_event("b1")]))
    _activate(pipe, clock)
    with pipe.store._tx() as db:  # another writer cleared it
        db.execute("UPDATE alerts SET state = 'cleared' WHERE id = ?", (first,))
    assert pipe.take(BatchOutcome(events=[_event("b1")])) == [first]
    assert first in pipe.store.take_dirty()
    stored = pipe.store.get(first)
    assert stored is not None
    assert stored.alert.state is AlertState.PENDING


def test_notifications_are_marked_sent_in_bursts(setup: Setup) -> None:
    pipe, clock, rec = setup
    pipe.take(
        BatchOutcome(events=[_event(f"d{i}", kind=EventKind.SENSOR_FAULT) for i in range(250)])
    )
    _step(pipe)  # active; the group wait starts
    clock.advance(1)
    assert len(pipe.evaluate()) == 250  # one notification per device (grouped by device)
    sent = asyncio.run(pipe.deliver())
    assert sent == len(rec["oncall"].sent) == 250
    assert {r.status for r in pipe.store.outbox()} == {"sent"}
