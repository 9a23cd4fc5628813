"""Cluster mode, role ``ingest``: stateless workers between Mosquitto and NATS JetStream.

Two ``boltwatch run --role ingest`` processes share one MQTT 5 subscription (Mosquitto) and
publish to a real 3-node JetStream cluster. One is SIGKILLed mid-run and started again: every
reading ends up in the stream exactly once (the broker redelivers what the dead worker had not
acknowledged, the stream drops what it already had), on the partition of its joint; a malformed
message is a dead letter in its own stream; SIGTERM ends each worker cleanly within 10 s.
"""

from __future__ import annotations

import asyncio
import signal
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path

import pytest

from ingest.cluster import JetStreamLog, decode_dead, decode_records, partition_of, registry_key
from ingest.settings import ClusterConfig
from sensors.examples import T0
from tests.integration.conftest import Collector, MosquittoServer, Reaper, wait_for
from tests.integration.natscluster import NatsCluster, start_member

PARTITIONS = 8
BOLTS = 24  # 3 joints of 8
READINGS = 3_000

REGISTRY = """
[[sites]]
id = "bridge"
name = "Test bridge"

[[structures]]
id = "deck"
site = "bridge"
name = "Deck"
type = "bridge"

[[bolt_profiles]]
id = "M20"
thread = "M20"
nominal_diameter_mm = 20.0
grade = "10.9"
proof_load_kn = 203.0
nominal_preload_kn = 150.0

""" + "\n".join(
    f"""[[joints]]
id = "J{j}"
name = "Splice {j}"
structure = "deck"
pattern = "circular"
bolt_count = 8
pitch_circle_diameter_mm = 400.0
material = "steel"
bolt_profile = "M20"
"""
    + "\n".join(
        f'[[joints.bolts]]\nposition = {i + 1}\ndevice_id = "b{j * 8 + i:02d}"\n' for i in range(8)
    )
    for j in range(3)
)


def _config(tmp: Path, mosquitto: MosquittoServer, nats: NatsCluster, name: str) -> Path:
    registry = tmp / "registry.toml"
    if not registry.exists():
        registry.write_text(REGISTRY)
    path = tmp / f"{name}.toml"
    urls = ", ".join(f'"{u}"' for u in nats.urls)
    path.write_text(
        f'[broker]\nurl = "{mosquitto.url}"\nclient_id = "{name}"\n'
        'topics = ["$share/ingest/boltwatch/v1/+/+/+/+"]\n'
        '[ingest]\nmetrics_listen = ""\nbatch_max_ms = 20\n'
        f'[registry]\npath = "{registry}"\n'
        f'[cluster]\nurls = [{urls}]\nname = "{name}"\npartitions = {PARTITIONS}\n'
    )
    return path


def _start(reaper: Reaper, config: Path, log: Path) -> subprocess.Popen[bytes]:
    return start_member(reaper, config, log, "ingesting ", "--role", "ingest")


def _stop(proc: subprocess.Popen[bytes], log: Path) -> float:
    started = time.monotonic()
    proc.send_signal(signal.SIGTERM)
    proc.wait(timeout=30)  # the reaper kills it if this fails
    took = time.monotonic() - started
    assert proc.returncode == 0, log.read_text()
    assert "Traceback" not in log.read_text()
    return took


async def _all_records(config: ClusterConfig, want: int) -> tuple[dict[int, list[bytes]], int]:
    """Every record of every partition (read through a consumer group of the test's own), and
    the stream's message count."""
    log = await JetStreamLog.open(config, "checker")
    try:
        got: dict[int, list[bytes]] = {}
        deadline = time.monotonic() + 60
        while sum(map(len, got.values())) < want and time.monotonic() < deadline:
            for p in range(config.partitions):
                batch = await log.fetch("check", p, 1_000, timeout_s=0.2)
                got.setdefault(p, []).extend(d.data for d in batch)
                await log.ack(batch)
        info = await log._js.stream_info(config.stream)
        return got, int(info.state.messages)
    finally:
        await log.close()


@pytest.mark.asyncio
async def test_ingest_workers_put_every_reading_once_through_a_worker_s_death(
    tmp_path: Path, mosquitto: MosquittoServer, nats_cluster: NatsCluster, reaper: Reaper
) -> None:
    logs = {n: tmp_path / f"{n}.log" for n in ("w1", "w2")}
    configs = {n: _config(tmp_path, mosquitto, nats_cluster, n) for n in logs}
    procs = {n: _start(reaper, configs[n], logs[n]) for n in logs}
    async with Collector(mosquitto.url, ("test/unused",)) as pub:
        for i in range(READINGS):
            bolt = f"b{i % BOLTS:02d}"
            seq = i // BOLTS
            pub.publish(
                f"boltwatch/v1/bridge/cbolt/{bolt}/telemetry",
                b'{"ts": %d, "seq": %d, "preload_kn": %.2f}'
                % (T0 + seq * 60_000, seq, 140 - i % 7),
            )
            if i == READINGS // 3:
                pub.publish("boltwatch/v1/bridge/cbolt/b01/telemetry", b'{"ts": "yesterday"')
                await asyncio.sleep(0.2)  # let the workers hold some unacknowledged messages
                procs["w1"].kill()  # SIGKILL: no flush, no goodbye
                procs["w1"].wait()
            if i == 2 * READINGS // 3:
                procs["w1"] = await asyncio.to_thread(_start, reaper, configs["w1"], logs["w1"])
            if i % 200 == 0:
                await asyncio.sleep(0)  # let gmqtt write
        await asyncio.sleep(0.5)
    cluster = ClusterConfig(urls=nats_cluster.urls, partitions=PARTITIONS)
    records, in_stream = await _all_records(cluster, READINGS)
    assert in_stream == READINGS  # not one more: what was published twice was dropped
    seen: Counter[tuple[str, int]] = Counter()
    key = registry_key(lambda d: f"J{int(d[1:]) // 8}")
    used = {partition_of(f"joint:J{j}", PARTITIONS) for j in range(3)}
    assert {p for p, datas in records.items() if datas} == used  # one partition per joint
    for p, datas in records.items():
        if not datas:
            continue
        batch = decode_records(datas)
        assert batch.errors == []
        cols = batch.telemetry[next(iter(batch.telemetry))]
        for device, seq in zip(cols.device_id.tolist(), cols.seq.tolist(), strict=True):
            seen[device, seq] += 1
            assert partition_of(key(device), PARTITIONS) == p, f"{device} on partition {p}"
    assert len(seen) == READINGS
    assert set(seen.values()) == {1}
    # The malformed message: a dead letter with its bytes and reason, in the dead-letter stream.
    dead_log = await JetStreamLog.open(cluster, "dead-checker")
    try:
        msg = await dead_log._js.get_last_msg(cluster.dead_letter_stream, dead_log.dead_subject)
        assert msg.data is not None
        dead = decode_dead(msg.data)
    finally:
        await dead_log.close()
    assert dead.payload == b'{"ts": "yesterday"'
    assert dead.topic.endswith("/b01/telemetry")
    assert dead.field == "$.ts"
    assert "RFC3339" in dead.reason
    for name, proc in procs.items():
        assert _stop(proc, logs[name]) < 10, f"{name} took too long to stop"


def test_no_nats_is_one_line_and_status_2(tmp_path: Path, mosquitto: MosquittoServer) -> None:
    from tests.integration.conftest import free_port

    config = tmp_path / "c.toml"
    config.write_text(
        f'[broker]\nurl = "{mosquitto.url}"\n[ingest]\nmetrics_listen = ""\n'
        f'[cluster]\nurls = ["nats://127.0.0.1:{free_port()}"]\nrole = "ingest"\n'
    )
    boltwatch = Path(sys.executable).parent / "boltwatch"
    done = subprocess.run(
        [str(boltwatch), "run", "--config", str(config)],
        check=False,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 2, done.stderr
    lines = [line for line in done.stderr.splitlines() if "error" in line]
    assert len(lines) == 1, done.stderr
    assert "cluster.urls" in lines[0]
    assert "no NATS server answered" in lines[0]
    assert "Traceback" not in done.stderr


@pytest.mark.parametrize("when", ["connecting", "running"])
def test_sigterm_ends_a_worker_whose_nats_hangs(
    tmp_path: Path,
    mosquitto: MosquittoServer,
    nats_cluster: NatsCluster,
    reaper: Reaper,
    when: str,
) -> None:
    """NATS frozen (SIGSTOP: connections open, nothing answered) while the worker connects, or
    while it runs with messages waiting: SIGTERM still ends it within 10 s."""
    config = _config(tmp_path, mosquitto, nats_cluster, "w1")
    log = tmp_path / "w1.log"
    boltwatch = Path(sys.executable).parent / "boltwatch"
    if when == "connecting":
        for node in nats_cluster.nodes:
            node.freeze()
        with log.open("ab") as out:
            proc = reaper.popen(
                [str(boltwatch), "run", "--config", str(config), "--role", "ingest"],
                stdout=out,
                stderr=subprocess.STDOUT,
            )
        wait_for(lambda: "connecting to NATS" in log.read_text(), 60, "the worker to connect")
        time.sleep(0.5)  # into the connection, which hangs: there is nothing else to wait on
    else:
        proc = _start(reaper, config, log)
        for node in nats_cluster.nodes:
            node.freeze()

        async def publish() -> None:
            async with Collector(mosquitto.url, ("test/unused",)) as pub:
                for i in range(50):
                    pub.publish(
                        "boltwatch/v1/bridge/cbolt/b00/telemetry",
                        b'{"ts": %d, "seq": %d, "preload_kn": 140}' % (T0 + i, i),
                    )
                await asyncio.sleep(1.0)

        asyncio.run(publish())
    assert proc.poll() is None, log.read_text()
    started = time.monotonic()
    proc.send_signal(signal.SIGTERM)
    proc.wait(timeout=30)
    took = time.monotonic() - started
    for node in nats_cluster.nodes:
        node.thaw()
    assert took < 10, f"{took:.1f} s\n{log.read_text()}"
    assert proc.returncode == 0, log.read_text()
    assert "Traceback" not in log.read_text()
