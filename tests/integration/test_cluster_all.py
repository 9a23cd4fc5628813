"""Cluster role ``all``: every role in one process, on real Mosquitto, NATS JetStream (3 nodes)
and PostgreSQL.

Eight bolts publish over MQTT; one loosens in the second phase. One ``boltwatch run --role all``
ingests them into the stream, evaluates them, stores every reading once in its SQLite store and
notifies the loosening at a webhook; its alerts are those of one engine over every reading.
SIGTERM ends it cleanly within 10 s, every role included.
"""

from __future__ import annotations

import asyncio
import functools
import signal
import threading
import time
from http.server import ThreadingHTTPServer
from pathlib import Path
from typing import Any

from alerts.store_pg import PgAlertStore
from ingest.settings import ClusterConfig
from tests.integration.conftest import Collector, MosquittoServer, Reaper, stored_readings, wait_for
from tests.integration.natscluster import NatsCluster, start_member
from tests.integration.test_cluster_alerts import (
    _events_drained,
    _Hook,
    _rules,
    loosening_notified,
)
from tests.integration.test_cluster_detect import (
    PARTITIONS,
    PHASE_1,
    PHASE_2,
    _caught_up,
    _reference,
)


def _config(
    tmp: Path, mosquitto: MosquittoServer, nats: NatsCluster, dsn: str, rules: Path
) -> Path:
    path = tmp / "all.toml"
    urls = ", ".join(f'"{u}"' for u in nats.urls)
    path.write_text(
        f'[broker]\nurl = "{mosquitto.url}"\nclient_id = "all-1"\n'
        'topics = ["$share/ingest/boltwatch/v1/+/+/+/+"]\n'
        '[ingest]\nmetrics_listen = ""\nbatch_max_ms = 20\n'
        f'[store]\npath = "{tmp / "data"}"\n'
        f'[alerts]\nrules = "{rules}"\napi_listen = ""\ninterval_s = 0.2\n'
        f'[cluster]\nurls = [{urls}]\nname = "all-1"\nrole = "all"\n'
        f'partitions = {PARTITIONS}\nlease_ttl_s = 3.0\ncheckpoint_s = 0.5\nalerts_db = "{dsn}"\n'
    )
    return path


async def _publish(url: str, messages: list[tuple[str, bytes]]) -> None:
    async with Collector(url, ("test/unused",)) as pub:
        for i, (topic, body) in enumerate(messages):
            pub.publish(topic, body)
            if i % 200 == 0:
                await asyncio.sleep(0)  # let gmqtt write
        await asyncio.sleep(0.5)


def _logged(log: Path, text: str) -> bool:
    return text in log.read_text()


def test_one_process_runs_every_role(
    tmp_path: Path,
    mosquitto: MosquittoServer,
    nats_cluster: NatsCluster,
    reaper: Reaper,
    pg_dsn: str,
) -> None:
    received: list[dict[str, Any]] = []
    ids: list[str] = []
    handler = type("Hook", (_Hook,), {"received": received, "ids": ids, "lock": threading.Lock()})
    server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        log = tmp_path / "all.log"
        config = _config(
            tmp_path, mosquitto, nats_cluster, pg_dsn, _rules(tmp_path, server.server_address[1])
        )
        proc = start_member(reaper, config, log, "alerting from stream")
        for line in ("ingesting ", "detecting on stream", "storing stream", "leading"):
            wait_for(functools.partial(_logged, log, line), 90, f"{line!r} in the log")
        asyncio.run(_publish(mosquitto.url, PHASE_1 + PHASE_2))
        want = len(PHASE_1) + len(PHASE_2)
        wait_for(lambda: stored_readings(tmp_path / "data") >= want, 120, "every reading stored")

        lock = handler.lock  # type: ignore[attr-defined]
        wait_for(
            lambda: loosening_notified(received, lock), 120, "the loosening of b03 at the webhook"
        )
        assert stored_readings(tmp_path / "data") == want
        cluster = ClusterConfig(urls=nats_cluster.urls, partitions=PARTITIONS)
        wait_for(lambda: asyncio.run(_caught_up(cluster)), 90, "detection of every reading")
        wait_for(lambda: asyncio.run(_events_drained(cluster)), 60, "every outcome taken")
        with PgAlertStore(pg_dsn) as store:
            stored = {(a.device_id, a.kind) for a in store.alerts(limit=10_000)}
        assert ("b03", "loosening") in stored
        assert stored == set(_reference())
        assert len(ids) == len(set(ids))

        asked = time.monotonic()
        proc.send_signal(signal.SIGTERM)
        proc.wait(timeout=30)
        assert time.monotonic() - asked < 10
        assert proc.returncode == 0, log.read_text()
        assert "Traceback" not in log.read_text()
    finally:
        server.shutdown()
