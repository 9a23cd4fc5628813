"""Outages around a running ``boltwatch run``, all during one QoS 1 stream: the broker restarted
twice, the webhook receiver down (short: 10 s; full: 10 min), VictoriaMetrics (the ``[influx]``
sink) down (short: 10 s; full: 2 min).

Nothing is lost: every reading is stored once and reaches VictoriaMetrics, every notification
raised while the receiver was down is delivered once it is back.
"""

from __future__ import annotations

import asyncio
import random
import shutil
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.chaos.harness import (
    SEED,
    SITE,
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
from tests.integration.vm import BINARY, VictoriaMetrics

pytestmark = [pytest.mark.integration, pytest.mark.chaos]

HOOK_DOWN_S = size(10.0, 600.0)
VM_DOWN_S = size(10.0, 120.0)
STREAM_S = size(12.0, 640.0)
"""How long the stream lasts: across both outages and both broker restarts."""
RATE = size(300.0, 100.0)
DEVICES = size(60, 100)
STUCK = size(6, 10)
DELIVERY_S = 120.0 + 1.5 * HOOK_DOWN_S
"""Deadline for the notifications once the receiver is back: the outbox backs off (up to 60 s,
times a jitter of 0.5-1.5: ``alerts.pipeline.MAX_BACKOFF_S``) while it is down."""


@pytest.fixture
def victoria_or_none(tmp_path: Path) -> Iterator[VictoriaMetrics | None]:
    """A VictoriaMetrics as in ``tests/integration/vm.py``, or None when it is not installed
    (the test then runs the other outages and reports the VictoriaMetrics part as skipped)."""
    if shutil.which(BINARY) is None:
        yield None
        return
    workdir = tmp_path / "victoria-metrics"
    workdir.mkdir()
    server = VictoriaMetrics(workdir)
    server.start()
    try:
        yield server
    finally:
        server.stop()


def vm_readings(vm: VictoriaMetrics) -> int:
    """Distinct (device, timestamp) of ``cbolt_preload_kn`` in VictoriaMetrics (a batch may
    reach it twice; VictoriaMetrics keeps both samples)."""
    vm.flush()
    seen: set[tuple[str, int]] = set()
    for series in vm.export(f'{{__name__="cbolt_preload_kn",site="{SITE}"}}'):
        device = series["metric"]["device_id"]
        seen.update((device, int(ts)) for ts in series["timestamps"])
    return len(seen)


async def test_broker_restarts_webhook_and_vm_outages_lose_nothing(
    mosquitto: MosquittoServer,
    victoria_or_none: VictoriaMetrics | None,
    reaper: Reaper,
    tmp_path: Path,
) -> None:
    rng = random.Random(SEED)
    vm = victoria_or_none
    per_device = int(STREAM_S * RATE / DEVICES)
    stuck = {dev: rng.randrange(0, 4) for dev in rng.sample(range(DEVICES), STUCK)}
    fleet = Fleet(DEVICES, per_device, int(time.time() * 1000) - 60_000, stuck, prefix="out")
    total = fleet.total
    store_dir = tmp_path / "data"
    # Seeded moments, as fractions of the stream: the two broker restarts and the VM outage.
    restarts = sorted(rng.uniform(0.15, 0.6) for _ in range(2))
    vm_down_at = rng.uniform(0.05, 0.2)
    with webhook_receiver() as hook:
        rules = write_webhook_rules(tmp_path / "rules.toml", hook.url)
        config = write_config(
            tmp_path / "boltwatch.toml",
            broker_url=mosquitto.url,
            store=store_dir,
            rules=rules,
            influx_url=vm.url if vm is not None else None,
        )
        svc = Service(reaper, config, tmp_path / "run.log")
        svc.start()
        await svc.ready()
        hook.stop()  # down before the first alert
        hook_down = time.monotonic()
        async with Publisher(mosquitto.url, "chaos-outages-pub") as pub:
            progress = [0]
            stream = asyncio.create_task(
                pub.stream(
                    (fleet.message(i) for i in range(total)),
                    RATE,
                    lambda n: progress.__setitem__(0, n),
                ),
                name="load",
            )
            vm_down = vm_up = 0.0
            for at in [vm_down_at, *restarts]:
                await wait_until(
                    lambda a=at: progress[0] >= a * total,  # type: ignore[misc]
                    STREAM_S * 3,
                    f"{at:.0%} of the stream published",
                )
                if at == vm_down_at and vm is not None:
                    await asyncio.to_thread(vm.stop)
                    vm_down = time.monotonic()
                elif at != vm_down_at:
                    await asyncio.to_thread(mosquitto.restart)
                back = vm_down and not vm_up and time.monotonic() - vm_down >= VM_DOWN_S
                if vm is not None and back:
                    await asyncio.to_thread(vm.start)
                    vm_up = time.monotonic()
            if vm is not None and not vm_up:
                await asyncio.sleep(max(0.0, vm_down + VM_DOWN_S - time.monotonic()))
                await asyncio.to_thread(vm.start)
                vm_up = time.monotonic()
            await asyncio.sleep(max(0.0, hook_down + HOOK_DOWN_S - time.monotonic()))
            failing = [row for row in outbox(store_dir) if row[2] > 0]
            hook.start()
            hook_up = time.monotonic()
            await stream
            await pub.wait_acked()
        await wait_until(lambda: stored(store_dir) >= total, 120, f"all {total:,} readings")

        def delivered() -> bool:
            rows = outbox(store_dir)
            return bool(rows) and all(status == "sent" for _, status, _ in rows)

        await wait_until(delivered, DELIVERY_S, "every notification after the receiver's return")
        delivered_after_s = max(d.at for d in hook.deliveries) - hook_up
        vm_points = 0
        if vm is not None:
            await wait_until(lambda: vm_readings(vm) >= total, 120, "every reading in VM")
            vm_points = vm_readings(vm)
        assert await svc.sigterm() == 0, svc.run_output()
    got = counts(store_dir)
    output = svc.output()
    assert "Traceback" not in output, output[-5000:]
    assert missing(store_dir, fleet) == [], f"readings lost (seed {SEED})"
    assert got.rows == got.distinct == got.counted == total, f"{got} for {total} (seed {SEED})"
    assert output.count("broker connection lost") >= 2, "the broker restarts went unnoticed"
    assert failing, "no notification was tried while the receiver was down"
    assert hook.firing_devices() == fleet.stuck_devices()
    sent = {note_id for note_id, _, _ in outbox(store_dir)}
    assert sent == set(hook.ids()), f"not delivered: {sorted(sent - set(hook.ids()))}"
    print(
        f"\nchaos outages: {total:,} readings, stored {got.rows:,} (distinct {got.distinct:,}), "
        f"lost {total - got.distinct}; broker restarted 2x; webhook down {HOOK_DOWN_S:.0f} s: "
        f"{len(sent)} notifications, all delivered {delivered_after_s:.1f} s after its return "
        f"({len(hook.ids()) - len(sent)} repeats); VictoriaMetrics "
        + (
            f"down {vm_up - vm_down:.0f} s: {vm_points:,} readings there"
            if vm is not None
            else "not installed"
        )
        + f"; seed {SEED}"
    )
    if vm is None:
        pytest.skip(
            f"the broker and webhook outages passed; the VictoriaMetrics outage needs {BINARY} "
            "(Debian package victoria-metrics)"
        )
