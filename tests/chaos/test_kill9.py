"""kill -9 of ``boltwatch run`` at seeded moments under a QoS 1 load, one of them while the alert
outbox is sending to a webhook.

Short: 5,000 readings, 2 kills; full (``CHAOS_FULL=1``): 50,000 readings, 10 kills. Some bolts
have stuck sensors (one ``sensor_fault`` alert each, one notification each). After the last kill
the service runs on until everything is drained, then stops cleanly. Then:

* every reading is stored exactly once: rows = distinct (device, seq) = the store's own count =
  readings published;
* every notification of the outbox was delivered at least once, every repeat carries the id and
  the body of the first delivery (a receiver drops it by ``X-Boltwatch-Notification-Id``), the
  one cut off by the kill was sent again with the same id, and each alert was notified under one
  id only.
"""

from __future__ import annotations

import asyncio
import random
import time
from collections import Counter
from pathlib import Path

import pytest

from tests.chaos.harness import (
    SEED,
    Fleet,
    Publisher,
    Service,
    counts,
    missing,
    outbox,
    size,
    stored,
    wait_until,
    webhook_receiver,
    write_config,
    write_webhook_rules,
)
from tests.integration.conftest import MosquittoServer, Reaper

pytestmark = [pytest.mark.integration, pytest.mark.chaos]

DEVICES = size(100, 500)
PER_DEVICE = size(50, 100)
KILLS = size(2, 10)
RATE = size(700.0, 1_000.0)
"""Messages per second of the load."""
STUCK = size(8, 30)
"""Bolts whose sensor is stuck from (about) their first reading: one alert each."""
LAST_KILL_AT = 0.65
"""No kill after this fraction of the readings is stored: a stuck bolt whose detector state a
kill reset (it is snapshotted every 60 s) still gets 12 identical readings after the last kill."""


async def test_kill9_under_load_stores_each_reading_once_and_delivers_each_notification(
    mosquitto: MosquittoServer, reaper: Reaper, tmp_path: Path
) -> None:
    rng = random.Random(SEED)
    stuck = dict.fromkeys(rng.sample(range(DEVICES), STUCK), 0)
    for dev in stuck:
        stuck[dev] = rng.randrange(0, 6)
    fleet = Fleet(DEVICES, PER_DEVICE, int(time.time() * 1000) - 60_000, stuck)
    total = fleet.total
    store_dir = tmp_path / "data"
    # The notification (counted from 1) during whose delivery the outbox kill happens.
    outbox_kill_on = rng.randint(1, 3)
    with webhook_receiver(delay_s=0.05) as hook:
        rules = write_webhook_rules(tmp_path / "rules.toml", hook.url)
        config = write_config(
            tmp_path / "boltwatch.toml", broker_url=mosquitto.url, store=store_dir, rules=rules
        )
        svc = Service(reaper, config, tmp_path / "run.log")
        svc.start()
        await svc.ready()
        cut_off: str | None = None  # the id of the notification in flight at the outbox kill
        async with Publisher(mosquitto.url, "chaos-kill9-pub") as pub:
            stream = asyncio.create_task(
                pub.stream((fleet.message(i) for i in range(total)), RATE), name="load"
            )
            # 1. The outbox kill: the receiver holds the n-th notification unanswered; kill -9.
            await wait_until(
                lambda: len(hook.ids()) >= outbox_kill_on - 1, 120, "the first notifications"
            )
            hook.hold()
            await wait_until(lambda: bool(hook.held), 120, "a notification in flight")
            cut_off = hook.held[0]
            await asyncio.sleep(rng.uniform(0.0, 0.2))
            await svc.kill9()
            hook.release()
            svc.start()
            await svc.ready()
            # 2. The other kills, when the store holds a seeded number of readings.
            low = max(stored(store_dir), int(0.1 * total))
            high = int(LAST_KILL_AT * total)
            thresholds = sorted(rng.sample(range(low, max(high, low + KILLS)), KILLS - 1))
            for threshold in thresholds:
                await wait_until(
                    lambda t=threshold: stored(store_dir) >= t,  # type: ignore[misc]
                    120,
                    f"{threshold:,} readings stored",
                )
                await asyncio.sleep(rng.uniform(0.0, 0.1))  # any instant: mid-commit is likely
                await svc.kill9()
                svc.start()
                await svc.ready()
            await stream
            await pub.wait_acked()
        # The last start is the final run: it drains the broker's backlog and the outbox.
        await wait_until(lambda: stored(store_dir) >= total, 180, f"all {total:,} readings")

        def outbox_done() -> bool:
            rows = outbox(store_dir)
            return bool(rows) and all(status == "sent" for _, status, _ in rows)

        await wait_until(outbox_done, 120, "the outbox sent")
        assert await svc.sigterm() == 0, svc.run_output()
        got = counts(store_dir)
        ids = hook.ids()
        firing = hook.firing_devices()
        rows = outbox(store_dir)
    output = svc.output()
    assert "Traceback" not in output, output[-5000:]
    assert svc.kills == KILLS
    # Every reading stored exactly once.
    assert missing(store_dir, fleet) == [], f"readings lost (seed {SEED})"
    assert got.rows == got.distinct == got.counted == total, f"{got} for {total} (seed {SEED})"
    # Every notification delivered at least once, repeats recognisable by their id.
    sent = {note_id for note_id, _, _ in rows}
    assert sent <= set(ids), f"not delivered: {sorted(sent - set(ids))} (seed {SEED})"
    assert set(ids) <= sent, "the receiver got a notification the outbox does not know"
    assert hook.repeats_consistent(), "a repeated id came with another body"
    repeats = Counter(ids)
    assert cut_off is not None
    assert repeats[cut_off] >= 2, "the notification cut off by the kill was not sent again"
    expected = fleet.stuck_devices()
    assert firing == expected, f"alerted {sorted(firing)}, stuck {sorted(expected)} (seed {SEED})"
    per_device: dict[str, set[str]] = {}
    for delivery in hook.deliveries:
        for alert in delivery.body["alerts"]:
            per_device.setdefault(alert["device_id"], set()).add(delivery.id)
    twice = {d: sorted(i) for d, i in per_device.items() if len(i) > 1}
    assert not twice, f"an alert notified under several ids: {twice} (seed {SEED})"
    print(
        f"\nchaos kill9: {total:,} readings, {svc.kills} kills, stored {got.rows:,} "
        f"(distinct {got.distinct:,}), lost {total - got.distinct}, duplicates "
        f"{got.rows - got.distinct}; notifications {len(sent)}, deliveries {len(ids)} "
        f"({len(ids) - len(set(ids))} repeats, dropped by id), seed {SEED}"
    )
