"""Back-pressure against a real Mosquitto: while the store holds its commits up, ingest stops
reading from the broker's connection (the broker keeps the rest), and reads again, losing
nothing, once the commits catch up (ingest/flow.py)."""

from __future__ import annotations

import asyncio
import json
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any

from boltwatch.config import parse_config
from ingest.flow import gmqtt_transport
from ingest.service import IngestService
from ingest.store import Store
from tests.integration.conftest import Collector, MosquittoServer
from tests.integration.test_ingest import T0, count, wait_until

MESSAGES = 2_000
PER_MESSAGE = 20
"""Readings per message (about 1 KB each: together more than the socket buffers hold)."""


def message(i: int) -> tuple[str, bytes]:
    readings = [
        {"ts": T0 + (i * PER_MESSAGE + k) * 10, "seq": i * PER_MESSAGE + k, "preload_kn": 60.0}
        for k in range(PER_MESSAGE)
    ]
    topic = "boltwatch/v1/site-a/cbolt/bolt-flow/telemetry"
    return topic, json.dumps({"readings": readings}).encode()


def held(store: Store, release: threading.Event) -> Callable[..., Any]:
    """``store.write`` that waits for ``release`` first (a store that cannot keep up)."""
    write = store.write

    def slow_write(*args: Any, **kwargs: Any) -> Any:
        release.wait(60)
        return write(*args, **kwargs)

    return slow_write


async def test_reading_pauses_while_commits_are_held_up_and_resumes_losing_nothing(
    mosquitto: MosquittoServer, tmp_path: Path
) -> None:
    store_dir = tmp_path / "store"
    # A Receive Maximum Mosquitto keeps to would bound the flight by itself: make it large, and
    # the gate's marks small, so that the gate is what bounds it here.
    cfg = parse_config(
        {
            "broker": {"url": mosquitto.url, "client_id": "ingest-flow", "receive_maximum": 65_535},
            "ingest": {"metrics_listen": "", "batch_max_ms": 20, "batch_max_messages": 10},
            "store": {"path": str(store_dir)},
        },
        environ={},
    )
    release = threading.Event()
    with Store(store_dir) as store:
        store.write = held(store, release)  # type: ignore[method-assign]
        try:
            async with IngestService(cfg, store) as svc:
                svc.read_gate.high, svc.read_gate.low = 50, 20
                await svc.wait_subscribed()
                messages = svc.metrics.messages
                async with Collector(mosquitto.url, ["unused/#"]) as pub:
                    for i in range(MESSAGES):
                        pub.publish(*message(i))
                    await wait_until(
                        lambda: svc.metrics.read_paused._value.get() == 1, 20, "reading paused"
                    )
                    transport = gmqtt_transport(svc._client)
                    assert transport is not None
                    assert not transport.is_reading()
                    await asyncio.sleep(1.0)  # a paused socket: nothing more comes meanwhile
                    received = messages._value.get()
                    assert received < MESSAGES / 2, f"{received:.0f} received while paused"
                    release.set()
                    await wait_until(
                        lambda: count(store_dir) == MESSAGES * PER_MESSAGE,
                        60,
                        "every reading stored",
                    )
                    await wait_until(lambda: not svc._queue, 10, "the last commit")
                    assert svc.metrics.read_paused._value.get() == 0
                    assert svc.metrics.read_pauses._value.get() >= 1
                    assert transport.is_reading()
        finally:
            release.set()
    assert count(store_dir) == MESSAGES * PER_MESSAGE
