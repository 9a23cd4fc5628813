"""Cluster role ``alerts`` on a real 3-node NATS JetStream cluster and a real PostgreSQL.

A detection worker evaluates eight bolts from the readings stream; two alerts workers
(``boltwatch run --role alerts``) share the alert store in PostgreSQL: one leads, the other
stands by. The leader is SIGKILLed after the healthy first phase; the loosening of one bolt comes
afterwards, and the stand-by takes over and notifies a webhook. The alerts in PostgreSQL are those
of one engine over every reading, the webhook gets no notification id twice, each worker holds the
alerts lease only when the other does not, and SIGTERM ends both cleanly.
"""

from __future__ import annotations

import asyncio
import json
import signal
import subprocess
import sys
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

from alerts.store_pg import PgAlertStore
from ingest.settings import ClusterConfig
from tests.integration.conftest import Reaper, wait_for
from tests.integration.natscluster import NatsCluster, start_member
from tests.integration.test_cluster_detect import (
    PARTITIONS,
    PHASE_1,
    PHASE_2,
    _caught_up,
    _lease_log,
    _publish,
    _reference,
)
from tests.integration.test_cluster_detect import _config as _detect_config


class _Hook(BaseHTTPRequestHandler):
    received: list[dict[str, Any]]
    ids: list[str]
    lock: threading.Lock

    def do_POST(self) -> None:
        body = self.rfile.read(int(self.headers["Content-Length"]))
        with self.lock:
            self.received.append(json.loads(body))
            self.ids.append(self.headers.get("X-Boltwatch-Notification-Id", ""))
        self.send_response(200)
        self.end_headers()

    def log_message(self, *args: object) -> None:
        return None


def _rules(tmp: Path, port: int) -> Path:
    path = tmp / "rules.toml"
    path.write_text(
        f"""
[defaults]
group_wait = "0s"
[[routes]]
receivers = ["hook"]
group_by = "device"
[[receivers]]
name = "hook"
channel = "webhook"
url = "http://127.0.0.1:{port}/alerts"
"""
    )
    return path


def _config(tmp: Path, nats: NatsCluster, name: str, dsn: str, rules: Path) -> Path:
    path = tmp / f"{name}.toml"
    urls = ", ".join(f'"{u}"' for u in nats.urls)
    path.write_text(
        f'[ingest]\nmetrics_listen = ""\n'
        f'[alerts]\nrules = "{rules}"\napi_listen = ""\ninterval_s = 0.2\n'
        f'[cluster]\nurls = [{urls}]\nname = "{name}"\nrole = "alerts"\n'
        f'partitions = {PARTITIONS}\nlease_ttl_s = 3.0\nack_wait_s = 3.0\nalerts_db = "{dsn}"\n'
    )
    return path


def _stop(proc: subprocess.Popen[bytes], log: Path) -> None:
    proc.send_signal(signal.SIGTERM)
    proc.wait(timeout=30)  # the reaper kills it if this fails
    assert proc.returncode == 0, log.read_text()
    assert "Traceback" not in log.read_text()


async def _events_drained(config: ClusterConfig) -> bool:
    from ingest.cluster import JetStreamLog

    log = await JetStreamLog.open(config, "checker")
    try:
        info = await log._js.consumer_info(config.events_stream, "alerts-all")
        return int(info.num_pending) == 0 and int(info.num_ack_pending) == 0
    finally:
        await log.close()


def loosening_notified(received: list[dict[str, Any]], lock: threading.Lock) -> bool:
    """Whether the webhook got b03's loosening."""
    with lock:
        return any(
            a["kind"] == "loosening" and a["device_id"] == "b03"
            for r in received
            for a in r["alerts"]
        )


def test_the_standby_takes_over_and_notifies_once(
    tmp_path: Path, nats_cluster: NatsCluster, reaper: Reaper, pg_dsn: str
) -> None:
    received: list[dict[str, Any]] = []
    ids: list[str] = []
    handler = type("Hook", (_Hook,), {"received": received, "ids": ids, "lock": threading.Lock()})
    server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        cluster = ClusterConfig(urls=nats_cluster.urls, partitions=PARTITIONS)
        rules = _rules(tmp_path, server.server_address[1])
        logs = {n: tmp_path / f"{n}.log" for n in ("det", "al-a", "al-b")}
        det = start_member(
            reaper, _detect_config(tmp_path, nats_cluster, "det"), logs["det"], "detecting on"
        )
        al_a = start_member(
            reaper,
            _config(tmp_path, nats_cluster, "al-a", pg_dsn, rules),
            logs["al-a"],
            "alerting from stream",
        )
        assert "leading" in logs["al-a"].read_text()
        al_b = start_member(
            reaper,
            _config(tmp_path, nats_cluster, "al-b", pg_dsn, rules),
            logs["al-b"],
            "alerting from stream",
        )
        assert "standing by" in logs["al-b"].read_text()

        asyncio.run(_publish(cluster, PHASE_1))
        wait_for(lambda: asyncio.run(_caught_up(cluster)), 90, "detection of phase 1")
        wait_for(lambda: asyncio.run(_events_drained(cluster)), 60, "al-a to take phase 1")
        al_a.kill()  # SIGKILL: the lease is left to expire
        al_a.wait()
        asyncio.run(_publish(cluster, PHASE_2))

        lock = handler.lock  # type: ignore[attr-defined]
        wait_for(
            lambda: loosening_notified(received, lock), 120, "the loosening of b03 at the webhook"
        )
        wait_for(lambda: asyncio.run(_events_drained(cluster)), 60, "al-b to take phase 2")
        assert "leading the alerts" in logs["al-b"].read_text()

        # The alerts are those of one engine over every reading.
        with PgAlertStore(pg_dsn) as store:
            stored = {(a.device_id, a.kind) for a in store.alerts(limit=10_000)}
        assert stored == set(_reference())
        # One leader at a time: al-a, then al-b once al-a was dead.
        lines = asyncio.run(_lease_log(cluster, f"{cluster.lease_bucket}_alerts"))
        assert [(e["owner"], e["event"]) for e in lines] == [
            ("al-a", "acquired"),
            ("al-b", "acquired"),
        ], lines
        # `boltwatch cluster status` names the leader and shows nothing waiting.
        shown = subprocess.run(
            [
                str(Path(sys.executable).parent / "boltwatch"),
                *("cluster", "status", "--json", "-c", str(tmp_path / "al-b.toml")),
            ],
            check=True,
            capture_output=True,
            text=True,
            timeout=120,
        )
        state = json.loads(shown.stdout)
        assert state["alerts"]["leader"] == "al-b"
        assert state["alerts"]["lag"] == 0
        assert state["alerts"]["workers"] == ["al-b"]
        # Nothing notified twice.
        assert len(ids) == len(set(ids)), ids
        assert all(ids)
        for name, proc in (("al-b", al_b), ("det", det)):
            _stop(proc, logs[name])
        assert "the alerts lease released" in logs["al-b"].read_text()
    finally:
        server.shutdown()
