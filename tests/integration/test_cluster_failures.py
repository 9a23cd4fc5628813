"""The whole cluster through three deaths: a detection worker, the stream's leader node and an
ingest worker, each SIGKILLed mid-run.

Real servers: Mosquitto, a 3-node NATS JetStream cluster (R3), VictoriaMetrics (deduplicating),
PostgreSQL; two workers of each role (``boltwatch run --role ingest|detect|store|alerts``), and a
webhook receiver that counts notification ids. 24 bolts on three joints publish 700 readings each
over MQTT; one bolt loosens in the second half. Afterwards: every reading is in VictoriaMetrics
exactly once, the alerts in PostgreSQL are those of one engine fed every reading in one process,
the loosening was notified and no notification id reached the webhook twice, and every worker left
stops cleanly on SIGTERM.
"""

from __future__ import annotations

import asyncio
import json
import signal
import subprocess
import threading
import time
from http.server import ThreadingHTTPServer
from pathlib import Path
from typing import Any

import numpy as np

from alerts.store_pg import PgAlertStore
from boltwatch.config import parse_config
from boltwatch.run import build_engine
from ingest.cluster import JetStreamLog
from ingest.settings import ClusterConfig
from sensors.codec import TelemetryDecoder
from sensors.registry import load_registry
from tests.integration.conftest import Collector, MosquittoServer, Reaper, wait_for
from tests.integration.natscluster import NatsCluster, start_member
from tests.integration.test_cluster_alerts import (
    _events_drained,
    _Hook,
    _rules,
    loosening_notified,
)
from tests.integration.test_cluster_detect import _lease_log
from tests.integration.test_cluster_ingest import REGISTRY
from tests.integration.vm import VictoriaMetrics

T0_MS = 1_772_323_200_000
STEP_MS = 300_000
BOLTS = [f"b{i:02d}" for i in range(24)]
ROUNDS = 700
LOOSENS_AT = 300
PARTITIONS = 8


def _messages() -> list[tuple[str, bytes]]:
    rng = np.random.default_rng(11)
    out = []
    for k in range(ROUNDS):
        for i, dev in enumerate(BOLTS):
            level = 140.0 - i * 0.5
            if dev == "b03" and k >= LOOSENS_AT:
                level *= 0.9
            body = {
                "ts": T0_MS + k * STEP_MS,
                "seq": k,
                "preload_kn": round(level * (1 + rng.normal(0, 0.004)), 3),
                "temp_c": 12.0,
                "battery_v": 3.6,
            }
            out.append((f"boltwatch/v1/bridge/cbolt/{dev}/telemetry", json.dumps(body).encode()))
    return out


MESSAGES = _messages()


def _config(tmp: Path, role: str, name: str, servers: dict[str, str]) -> Path:
    path = tmp / f"{name}.toml"
    urls = ", ".join(f'"{u}"' for u in servers["nats"].split(","))
    text = (
        f'[broker]\nurl = "{servers["mqtt"]}"\nclient_id = "{name}"\n'
        'topics = ["$share/ingest/boltwatch/v1/+/+/+/+"]\n'
        '[ingest]\nmetrics_listen = ""\nbatch_max_ms = 20\n'
        f'[store]\npath = "{tmp / (name + "-data")}"\n'
        f'[registry]\npath = "{tmp / "registry.toml"}"\n'
        f'[alerts]\nrules = "{servers["rules"]}"\napi_listen = ""\ninterval_s = 0.2\n'
        f'[cluster]\nurls = [{urls}]\nname = "{name}"\nrole = "{role}"\n'
        f"partitions = {PARTITIONS}\nlease_ttl_s = 3.0\nack_wait_s = 3.0\ncheckpoint_s = 0.5\n"
        f'alerts_db = "{servers["pg"]}"\n'
    )
    if role == "store":
        text += f'[influx]\nurl = "{servers["vm"]}"\n'
    path.write_text(text)
    return path


_READY = {
    "ingest": "ingesting ",
    "detect": "detecting on stream",
    "store": "storing stream",
    "alerts": "alerting from stream",
}


def _reference(tmp: Path) -> set[tuple[str, str]]:
    """(device, kind) of every event of one engine fed every reading, as one process would."""
    config = parse_config({"registry": {"path": str(tmp / "registry.toml")}}, environ={})
    engine = build_engine(config, load_registry(tmp / "registry.toml"))
    decoder = TelemetryDecoder(clock=lambda: (T0_MS + (ROUNDS + 100) * STEP_MS) / 1000)
    out: set[tuple[str, str]] = set()
    for i in range(0, len(MESSAGES), 480):
        outcome = engine.process_batch(decoder.decode_batch(MESSAGES[i : i + 480]))
        out |= {(e.device_id, e.kind.value) for e in outcome.events}
    return out


async def _stream_leader(config: ClusterConfig) -> str:
    log = await JetStreamLog.open(config, "leader-finder")
    try:
        info = await log._js.stream_info(config.stream)
        assert info.cluster is not None
        assert info.cluster.leader
        return str(info.cluster.leader)
    finally:
        await log.close()


async def _publish(url: str, messages: list[tuple[str, bytes]], pace_s: float = 0.0) -> None:
    """Publish at QoS 1, yielding every 200 messages (for ``pace_s`` seconds: a steady fleet)."""
    async with Collector(url, ("test/unused",)) as pub:
        for i, (topic, body) in enumerate(messages):
            pub.publish(topic, body)
            if i % 200 == 0:
                await asyncio.sleep(pace_s)  # let gmqtt write
        await asyncio.sleep(0.5)


def _vm_samples(vm: VictoriaMetrics) -> dict[tuple[str, int], int]:
    out: dict[tuple[str, int], int] = {}
    for s in vm.export('{__name__="cbolt_preload_kn"}'):
        for ts in s["timestamps"]:
            key = (s["metric"]["device_id"], int(ts))
            out[key] = out.get(key, 0) + 1
    return out


class _Fleet:
    """Two workers of each role and the servers they need (started by ``start``; ``close``
    stops the webhook receiver and VictoriaMetrics, the reaper and fixtures the rest)."""

    def __init__(
        self, tmp: Path, mosquitto: MosquittoServer, nats: NatsCluster, reaper: Reaper, dsn: str
    ) -> None:
        (tmp / "registry.toml").write_text(REGISTRY)
        self.tmp = tmp
        self.mosquitto = mosquitto
        self.nats = nats
        self.reaper = reaper
        self.dsn = dsn
        self.received: list[dict[str, Any]] = []
        self.ids: list[str] = []
        self.lock = threading.Lock()
        handler = type(
            "Hook", (_Hook,), {"received": self.received, "ids": self.ids, "lock": self.lock}
        )
        self.server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
        threading.Thread(target=self.server.serve_forever, daemon=True).start()
        (tmp / "vm").mkdir()
        self.vm = VictoriaMetrics(tmp / "vm", extra_args=["-dedup.minScrapeInterval=1ms"])
        self.cluster = ClusterConfig(urls=nats.urls, partitions=PARTITIONS)
        self.procs: dict[str, subprocess.Popen[bytes]] = {}
        self.configs: dict[str, Path] = {}

    def start(self) -> None:
        self.vm.start()
        servers = {
            "mqtt": self.mosquitto.url,
            "nats": ",".join(self.nats.urls),
            "pg": self.dsn,
            "vm": self.vm.url,
            "rules": str(_rules(self.tmp, self.server.server_address[1])),
        }
        for role in ("store", "detect", "alerts", "ingest"):
            for suffix in ("a", "b"):
                name = f"{role[:3]}-{suffix}"
                self.configs[name] = _config(self.tmp, role, name, servers)
                self.launch(name)

    def launch(self, name: str) -> None:
        role = next(r for r in _READY if r.startswith(name[:3]))
        self.procs[name] = start_member(
            self.reaper, self.configs[name], self.tmp / f"{name}.log", _READY[role]
        )

    def stop(self, name: str) -> None:
        """SIGTERM; it must end cleanly."""
        proc = self.procs[name]
        proc.send_signal(signal.SIGTERM)
        proc.wait(timeout=30)  # the reaper kills it if this fails
        text = (self.tmp / f"{name}.log").read_text()
        assert proc.returncode == 0, f"{name}:\n{text[-3000:]}"
        assert "Traceback" not in text, name

    def publish(self, messages: list[tuple[str, bytes]]) -> None:
        asyncio.run(_publish(self.mosquitto.url, messages))

    def check(self) -> None:
        """Every reading in VictoriaMetrics once; the alerts of one engine; the loosening
        notified; no notification id twice."""
        want = {(dev, T0_MS + k * STEP_MS) for k in range(ROUNDS) for dev in BOLTS}
        wait_for(lambda: set(_vm_samples(self.vm)) >= want, 240, "every reading stored")
        got = _vm_samples(self.vm)
        assert set(got) == want
        assert set(got.values()) == {1}, "a reading stored twice"

        wait_for(
            lambda: loosening_notified(self.received, self.lock),
            180,
            "the loosening of b03 at the webhook",
        )
        wait_for(lambda: asyncio.run(_events_drained(self.cluster)), 120, "every outcome taken")
        with PgAlertStore(self.dsn) as store:
            alerts = {(a.device_id, a.kind) for a in store.alerts(limit=10_000)}
        assert alerts == _reference(self.tmp)
        with self.lock:
            assert len(self.ids) == len(set(self.ids)), "a notification sent twice"

    def check_leases(self, killed: dict[str, float]) -> None:
        """From the lease log: each partition held by one detect worker at a time. A worker
        takes a partition only when it is free: released or lost by its holder, or its holder
        SIGKILLed (``killed``: name -> time) before the take."""
        lines = asyncio.run(_lease_log(self.cluster))
        assert lines, "no lease history"
        holder: dict[int, str | None] = {}
        for e in lines:
            p, owner, event = int(str(e["partition"])), str(e["owner"]), str(e["event"])
            held = holder.get(p)
            # A line is written after the fact and may be missing when NATS was away (a lease
            # taken or lost while its node was down): only another live worker's hold is an
            # overlap. A SIGKILLed holder's hold ended at its death, so after it another worker
            # may take the partition (or be seen losing it when its "acquired" line is missing).
            free = held in (None, owner) or (
                held in killed and int(str(e["at_ms"])) / 1000 > killed[held]
            )
            if event == "acquired":
                assert free, f"partition {p} taken by {owner} while {held} held it: {e}"
                holder[p] = owner
            else:
                assert free, f"partition {p}: {owner} {event}, {held} held it: {e}"
                holder[p] = None

    def stop_all(self) -> None:
        for name, proc in self.procs.items():
            if proc.poll() is None:
                self.stop(name)

    def close(self) -> None:
        self.server.shutdown()
        self.vm.stop()


def test_the_cluster_loses_nothing_through_three_deaths(
    tmp_path: Path,
    mosquitto: MosquittoServer,
    nats_cluster: NatsCluster,
    reaper: Reaper,
    pg_dsn: str,
) -> None:
    fleet = _Fleet(tmp_path, mosquitto, nats_cluster, reaper, pg_dsn)
    try:
        fleet.start()
        third = len(MESSAGES) // 3
        fleet.publish(MESSAGES[:third])
        fleet.procs["det-a"].kill()  # a detection worker
        fleet.procs["det-a"].wait()
        killed = {"det-a": time.time()}
        fleet.publish(MESSAGES[third : 2 * third])
        leader = asyncio.run(_stream_leader(fleet.cluster))
        nats_cluster.node(leader).kill()  # the stream's leader node
        fleet.procs["ing-a"].kill()  # an ingest worker
        fleet.procs["ing-a"].wait()
        fleet.publish(MESSAGES[2 * third :])
        # The node and the ingest worker come back (a restarted machine); the broker hands the
        # worker's session what it had not acknowledged.
        nats_cluster.node(leader).start()
        fleet.launch("ing-a")
        fleet.check()
        fleet.check_leases(killed)
        del fleet.procs["det-a"]
        fleet.stop_all()
    finally:
        fleet.close()


def test_a_rolling_restart_under_load_loses_nothing(
    tmp_path: Path,
    mosquitto: MosquittoServer,
    nats_cluster: NatsCluster,
    reaper: Reaper,
    pg_dsn: str,
) -> None:
    """Every worker restarted (SIGTERM, then started again), one at a time, while the fleet
    publishes: no reading lost or stored twice, no notification twice."""
    fleet = _Fleet(tmp_path, mosquitto, nats_cluster, reaper, pg_dsn)
    try:
        fleet.start()
        # The fleet publishes at a steady pace all along (about 40 s), in a thread of its own.
        publisher = threading.Thread(
            target=lambda: asyncio.run(_publish(mosquitto.url, MESSAGES, pace_s=0.5))
        )
        publisher.start()
        try:
            for name in list(fleet.procs):
                fleet.stop(name)
                fleet.launch(name)
        finally:
            publisher.join()
        fleet.check()
        fleet.check_leases({})
        fleet.stop_all()
    finally:
        fleet.close()
