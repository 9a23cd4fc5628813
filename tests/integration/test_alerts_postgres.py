"""The alert store on a real PostgreSQL (``alerts.store_pg``), held to the SQLite store's behaviour.

Every pipeline test of tests/unit/test_alerts.py that goes through the ``setup`` fixture runs
here again with a :class:`PgAlertStore` (lifecycle, grouping, escalation, silences, inhibition,
retries, bursts). Then what only a shared server can show: many connections upserting the same
alert make one; a notification recorded by a worker that died before sending it is sent once,
with its id, by the next worker; and a long random run of events, activity, acknowledgements and
timers leaves exactly the same alerts, history and outbox in both stores.
"""

from __future__ import annotations

import asyncio
import dataclasses
import threading
import tomllib
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from alerts.model import Notification
from alerts.pipeline import AlertPipeline
from alerts.rules import load_rules, parse_rules
from alerts.store import AlertStore
from alerts.store_pg import PgAlertStore, PgStoreError
from detection.base import DetectionEvent, EventKind, Severity
from detection.events import BatchOutcome
from tests.unit import test_alerts as unit
from tests.unit.test_alerts import RULES, T0, Clock, Recorder, Setup, _event, _step

# The pipeline tests of the unit suite, on PostgreSQL (they take ``setup`` from this module).
test_pending_then_active_then_notified_once = unit.test_pending_then_active_then_notified_once
test_severity_escalates_while_active_and_renotifies = (
    unit.test_severity_escalates_while_active_and_renotifies
)
test_clears_after_hysteresis_and_sends_resolved = (
    unit.test_clears_after_hysteresis_and_sends_resolved
)
test_reactivation_reopens_the_same_alert = unit.test_reactivation_reopens_the_same_alert
test_flapping_is_held_active_and_not_paged = unit.test_flapping_is_held_active_and_not_paged
test_grouping_one_notification_for_a_joint = unit.test_grouping_one_notification_for_a_joint
test_escalation_to_the_next_receiver_unless_acknowledged = (
    unit.test_escalation_to_the_next_receiver_unless_acknowledged
)
test_silence_by_site_mutes_then_expires = unit.test_silence_by_site_mutes_then_expires
test_inhibition_critical_mutes_warning_of_same_device = (
    unit.test_inhibition_critical_mutes_warning_of_same_device
)
test_gateway_offline_mutes_its_sites_no_data = unit.test_gateway_offline_mutes_its_sites_no_data
test_failing_receiver_does_not_block_others_and_retries = (
    unit.test_failing_receiver_does_not_block_others_and_retries
)
test_non_retryable_failure_is_marked_failed = unit.test_non_retryable_failure_is_marked_failed
test_a_faulted_detector_is_an_alert_that_reaches_a_receiver = (
    unit.test_a_faulted_detector_is_an_alert_that_reaches_a_receiver
)
test_notifications_are_marked_sent_in_bursts = unit.test_notifications_are_marked_sent_in_bursts


@pytest.fixture
def setup(pg_dsn: str) -> Setup:
    clock = Clock()
    rec = {"oncall": Recorder(), "manager": Recorder()}
    joints = {"b1": "flange-1", "b2": "flange-1", "b3": "flange-2"}
    pipe = AlertPipeline(
        parse_rules(tomllib.loads(RULES)),
        PgAlertStore(pg_dsn),
        rec,
        clock=clock,
        group_of=lambda d: joints.get(d, ""),
    )
    return pipe, clock, rec


def test_connections_racing_on_one_alert_make_one(pg_dsn: str) -> None:
    """Eight threads, each with its own connection, upsert the same two events 50 times."""
    PgAlertStore(pg_dsn).close()
    rules = load_rules(None)

    def hammer() -> None:
        with PgAlertStore(pg_dsn) as store:
            pipe = AlertPipeline(rules, store, {}, clock=lambda: T0)
            for _ in range(50):
                pipe.take(BatchOutcome(events=[_event(), _event(sev=Severity.MAJOR)]))

    threads = [threading.Thread(target=hammer) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    with PgAlertStore(pg_dsn) as store:
        (alert,) = store.alerts()
        assert alert.severity is Severity.MAJOR
        assert len([h for h in store.history(alert.id) if h[1] == "event"]) == 800


def test_a_notification_recorded_by_a_dead_worker_is_sent_once_by_the_next(pg_dsn: str) -> None:
    clock = Clock()
    rules = parse_rules(tomllib.loads(RULES))
    recorded: list[Notification] = []

    def crash(notes: list[Notification]) -> None:
        recorded.extend(notes)
        raise SystemExit("killed between record and send")

    first = PgAlertStore(pg_dsn)
    pipe = AlertPipeline(rules, first, {"oncall": Recorder()}, clock=clock, on_record=crash)
    pipe.take(BatchOutcome(events=[_event(kind=EventKind.SENSOR_FAULT)]))
    pipe.evaluate()
    clock.advance(3)
    with pytest.raises(SystemExit):
        pipe.evaluate()
    first.close()
    rec = Recorder()
    # The next worker: its own connection, the same database.
    other = AlertPipeline(rules, PgAlertStore(pg_dsn), {"oncall": rec}, clock=clock)
    _step(other)
    _step(other)
    assert [n.id for n in rec.sent] == [recorded[0].id]
    # Recording the same notification again (a worker replaying) records nothing.
    assert other.store.record(recorded, []) == 0


def test_an_unreachable_server_is_a_typed_error() -> None:
    with pytest.raises(PgStoreError, match="PostgreSQL"):
        PgAlertStore("postgresql://nobody@127.0.0.1:1/none", connect_timeout_s=2)


def _random_run(pipe: AlertPipeline, clock: Clock, seed: int) -> None:
    """Events, activity, acknowledgements and timers in a random order (same seed, same run)."""
    rng = np.random.default_rng(seed)
    kinds = [EventKind.LOOSENING, EventKind.SENSOR_FAULT, EventKind.PRELOAD_LOW]
    devices = [f"b{i}" for i in range(1, 13)]
    for step in range(400):
        action = rng.integers(0, 10)
        dev = devices[int(rng.integers(0, len(devices)))]
        if action < 5:
            events: list[DetectionEvent] = []
            for _ in range(int(rng.integers(1, 4))):
                kind = kinds[int(rng.integers(0, len(kinds)))]
                sev = [Severity.WARNING, Severity.MAJOR, Severity.CRITICAL][int(rng.integers(0, 3))]
                events.append(
                    dataclasses.replace(
                        _event(dev, kind=kind, sev=sev, site=f"s{int(rng.integers(1, 3))}"),
                        ts_ms=clock.ms,
                        explanation=f"step {step}",
                    )
                )
            pipe.take(BatchOutcome(events=events))
        elif action < 7:
            shown = [k.value for k in kinds if rng.random() < 0.3]
            pipe.take(BatchOutcome(active={dev: shown}, seen=frozenset([dev])))
        elif action == 7:
            open_ = pipe.store.alerts(state="active")
            if open_:
                pipe.store.acknowledge(open_[0].id, "op", clock.ms, "on it")
        else:
            clock.advance(float(rng.integers(1, 20)))
        _step(pipe)


def _state(store: AlertStore | PgAlertStore) -> dict[str, Any]:
    alerts = sorted(store.alerts(limit=100_000), key=lambda a: (a.device_id, a.kind))
    return {
        "alerts": [{**dataclasses.asdict(a), "id": None} for a in alerts],
        "history": [store.history(a.id) for a in alerts],
        # Notification ids hash the alert ids, which differ (PostgreSQL's identity advances on
        # every upsert): the same notifications, told apart by what they say.
        "outbox": sorted(
            (r.notification.created_ms, r.notification.receiver, r.notification.title, r.status)
            for r in store.outbox()
        ),
        "counts": store.counts(),
    }


def test_a_random_run_leaves_the_same_state_in_both_stores(pg_dsn: str, tmp_path: Path) -> None:
    joints = {f"b{i}": f"flange-{i % 3}" for i in range(1, 13)}
    states = []
    for store in (AlertStore(tmp_path / "alerts.db"), PgAlertStore(pg_dsn)):
        clock = Clock()
        rec = {"oncall": Recorder(), "manager": Recorder()}
        pipe = AlertPipeline(
            parse_rules(tomllib.loads(RULES)),
            store,
            rec,
            clock=clock,
            group_of=lambda d: joints.get(d, ""),
        )
        _random_run(pipe, clock, seed=7)
        states.append(_state(store))
        sent = {k: sorted((n.created_ms, n.title) for n in r.sent) for k, r in rec.items()}
        states[-1]["sent"] = sent
        asyncio.run(pipe.aclose())
        store.close()
    sqlite, pg = states
    assert sqlite["counts"].get("outbox_sent", 0) > 10  # the run did notify, escalate, clear
    assert sqlite["counts"].get("alerts_cleared", 0) > 0
    for key in ("alerts", "history", "outbox", "counts", "sent"):
        assert pg[key] == sqlite[key], key
