"""no_data: silent devices are found by a store query in the store's thread and reported on the
event loop, where the alert pipeline lives; time comes from the injected clock."""

from __future__ import annotations

import asyncio
import json
import threading
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from boltwatch.config import Config, parse_config
from ingest.service import IngestService, NoDataEvent
from ingest.store import Store
from tests.integration.conftest import Collector, MosquittoServer

pytestmark = pytest.mark.integration

T0_S = time.time() - 86_400.0  # the injected clock starts yesterday
BOLT = ("cbolt", "bolt-1")  # silent after 3 h
PRINTER = ("printer3d", "printer-1")  # silent after 10 min


def config_for(mosquitto: MosquittoServer, store: Path, client_id: str) -> Config:
    return parse_config(
        {
            "broker": {"url": mosquitto.url, "client_id": client_id},
            "ingest": {"metrics_listen": "", "batch_max_ms": 20},
            "store": {"path": str(store)},
        },
        environ={},
    )


async def wait_until(predicate: Callable[[], bool], timeout: float, what: str) -> None:  # noqa: ASYNC109
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout} s waiting for {what}")
        await asyncio.sleep(0.02)


def known(store_dir: Path) -> int:
    """Devices in the store, read through a second connection (the service owns its own)."""
    with Store(store_dir) as reader:
        return len(reader.devices())


def publish(pub: Collector, device: tuple[str, str], ts_s: float, seq: int) -> None:
    kind, device_id = device
    field = "preload_kn" if kind == "cbolt" else "hotend_c"
    payload = {"ts": int(ts_s * 1000), "seq": seq, field: 60.0}
    pub.publish(f"boltwatch/v1/site-a/{kind}/{device_id}/telemetry", json.dumps(payload).encode())


class Reports:
    """What ``on_no_data`` received, and on which thread and event loop."""

    def __init__(self) -> None:
        self.events: list[NoDataEvent] = []
        self.threads: set[int] = set()
        self.loops: set[int] = set()

    def __call__(self, event: NoDataEvent) -> None:
        self.events.append(event)
        self.threads.add(threading.get_ident())
        self.loops.add(id(asyncio.get_running_loop()))  # raises off the loop

    def devices(self) -> list[str]:
        return [e.device_id for e in self.events]


async def test_silent_devices_are_reported_on_the_event_loop_once_each(
    mosquitto: MosquittoServer, tmp_path: Path
) -> None:
    now = [T0_S]
    reports = Reports()
    store_dir = tmp_path / "store"
    with Store(store_dir) as store:
        service = IngestService(
            config_for(mosquitto, store_dir, "no-data-loop"),
            store,
            on_no_data=reports,
            clock=lambda: now[0],
            silence_check_s=0.02,
        )
        async with service as svc, Collector(mosquitto.url, ["unused/#"]) as pub:
            await svc.wait_subscribed()
            publish(pub, BOLT, T0_S, 1)
            publish(pub, PRINTER, T0_S, 1)
            await wait_until(lambda: known(store_dir) == 2, 20, "both devices stored")
            now[0] = T0_S + 11 * 60  # past the printer's 10 minutes, not the bolt's 3 hours
            await wait_until(lambda: reports.devices() == ["printer-1"], 20, "the printer")
            assert await svc.check_silence() == [], "reported once, until it speaks again"
            now[0] = T0_S + 3 * 3_600 + 60
            await wait_until(lambda: len(reports.events) == 2, 20, "the bolt too")
            loop_thread = threading.get_ident()
            loop = id(asyncio.get_running_loop())
    assert reports.devices() == ["printer-1", "bolt-1"]
    assert reports.threads == {loop_thread}, "called on the event loop's thread"
    assert reports.loops == {loop}
    printer = reports.events[0]
    assert printer.last_seen_ms == int(T0_S * 1000)
    assert printer.at_ms == int((T0_S + 11 * 60) * 1000)


async def test_by_receipt_a_lagging_clock_raises_nothing_a_silent_device_still_counts(
    mosquitto: MosquittoServer, tmp_path: Path
) -> None:
    """Faster than real time (the demo), ingest trails the data by simulated minutes: judged by
    receipt, a device is silent only when the others were heard from without it."""
    now = [T0_S + 3_600.0]  # the clock an hour ahead of the data: ingest lagging
    reports = Reports()
    store_dir = tmp_path / "store"
    with Store(store_dir) as store:
        service = IngestService(
            config_for(mosquitto, store_dir, "no-data-receipt"),
            store,
            on_no_data=reports,
            clock=lambda: now[0],
            silence_check_s=0.02,
            silence_by_receipt=True,
        )
        async with service as svc, Collector(mosquitto.url, ["unused/#"]) as pub:
            await svc.wait_subscribed()
            publish(pub, BOLT, T0_S, 1)
            publish(pub, PRINTER, T0_S, 1)
            await wait_until(lambda: known(store_dir) == 2, 20, "both devices stored")
            assert await svc.check_silence() == [], "an hour of lag is not silence"
            now[0] += 11 * 60  # the bolt is heard from again, the printer is not
            publish(pub, BOLT, T0_S + 11 * 60, 2)
            await wait_until(lambda: reports.devices() == ["printer-1"], 20, "the printer")
            now[0] += 24 * 3_600  # nobody heard from since: the service, not the devices
            assert await svc.check_silence() == []
    assert reports.devices() == ["printer-1"]
