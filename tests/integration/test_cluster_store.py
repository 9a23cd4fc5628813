"""Cluster role ``store`` on a real 3-node NATS JetStream cluster.

Two store workers (``boltwatch run --role store``) share the readings stream and write it into a
real VictoriaMetrics (deduplicating, as docs/scaling.md asks); one is SIGKILLed mid-run and
started again: every reading is in VictoriaMetrics once, and the shared consumer has nothing left
pending. With no ``[influx]``, a store worker writes the SQLite store: killed and restarted, it
holds every reading once (what it had written before its death comes back and is recognised);
a second worker on the same folder is refused with one line and exit status 2. A record that is
not one of ours goes to the dead-letter stream and does not hold the others up.
"""

from __future__ import annotations

import asyncio
import re
import signal
import subprocess
import sys
from pathlib import Path

import numpy as np

from ingest.cluster import JetStreamLog, LogForwarder, LogRecord, decode_dead
from ingest.settings import ClusterConfig
from sensors.codec import TelemetryDecoder
from tests.integration.conftest import Reaper, stored_readings, wait_for
from tests.integration.natscluster import NatsCluster, start_member
from tests.integration.vm import VictoriaMetrics

T0_MS = 1_772_323_200_000
STEP_MS = 300_000
BOLTS = [f"b{i:02d}" for i in range(24)]
PARTITIONS = 8
ROUNDS = 250  # 6,000 readings in all, in two halves


def _messages(start: int, count: int) -> list[tuple[str, bytes]]:
    rng = np.random.default_rng(start)
    out = []
    for k in range(start, start + count):
        for i, dev in enumerate(BOLTS):
            preload = round(40.0 + i + rng.normal(0, 0.2), 3)
            body = f'{{"ts": {T0_MS + k * STEP_MS}, "seq": {k}, "preload_kn": {preload}}}'
            out.append((f"boltwatch/v1/site-1/cbolt/{dev}/telemetry", body.encode()))
    return out


def _config(tmp: Path, nats: NatsCluster, name: str, influx: str | None) -> Path:
    path = tmp / f"{name}.toml"
    urls = ", ".join(f'"{u}"' for u in nats.urls)
    text = (
        f'[ingest]\nmetrics_listen = ""\n[store]\npath = "{tmp / (name + "-data")}"\n'
        f'[cluster]\nurls = [{urls}]\nname = "{name}"\nrole = "store"\n'
        f"partitions = {PARTITIONS}\nack_wait_s = 3.0\n"
    )
    if influx is not None:
        text += f'[influx]\nurl = "{influx}"\n'
    path.write_text(text)
    return path


def _start(reaper: Reaper, config: Path, log: Path) -> subprocess.Popen[bytes]:
    return start_member(reaper, config, log, "storing stream")


def _stop(proc: subprocess.Popen[bytes], log: Path) -> None:
    proc.send_signal(signal.SIGTERM)
    proc.wait(timeout=30)  # the reaper kills it if this fails
    assert proc.returncode == 0, log.read_text()
    assert "Traceback" not in log.read_text()


async def _publish(config: ClusterConfig, messages: list[tuple[str, bytes]]) -> None:
    decoder = TelemetryDecoder(clock=lambda: (T0_MS + 2 * ROUNDS * STEP_MS) / 1000)
    log = await JetStreamLog.open(config, "publisher")
    try:
        forward = LogForwarder(log, lambda d: d)
        for i in range(0, len(messages), 400):
            await forward.write(decoder.decode_batch(messages[i : i + 400]), [], received_ms=0)
    finally:
        await log.close()


async def _store_consumer(config: ClusterConfig) -> tuple[int, int, int]:
    """The shared ``store-all`` consumer: (delivered, pending, waiting for an ack)."""
    log = await JetStreamLog.open(config, "checker")
    try:
        info = await log._js.consumer_info(config.stream, "store-all")
        return int(info.delivered.stream_seq), int(info.num_pending), int(info.num_ack_pending)
    finally:
        await log.close()


def _drained(config: ClusterConfig) -> bool:
    _, pending, unacked = asyncio.run(_store_consumer(config))
    return pending == 0 and unacked == 0


def _vm_samples(vm: VictoriaMetrics) -> dict[tuple[str, int], int]:
    """(device, time) -> how many preload samples VictoriaMetrics returns for it."""
    out: dict[tuple[str, int], int] = {}
    for s in vm.export('{__name__="cbolt_preload_kn"}'):
        for ts in s["timestamps"]:
            key = (s["metric"]["device_id"], int(ts))
            out[key] = out.get(key, 0) + 1
    return out


def test_two_store_workers_write_every_reading_once_through_a_death(
    tmp_path: Path, nats_cluster: NatsCluster, reaper: Reaper
) -> None:
    workdir = tmp_path / "vm"
    workdir.mkdir()
    vm = VictoriaMetrics(workdir, extra_args=["-dedup.minScrapeInterval=1ms"])
    vm.start()
    try:
        cluster = ClusterConfig(urls=nats_cluster.urls, partitions=PARTITIONS)
        logs = {n: tmp_path / f"{n}.log" for n in ("st-a", "st-b")}
        configs = {n: _config(tmp_path, nats_cluster, n, vm.url) for n in logs}
        a = _start(reaper, configs["st-a"], logs["st-a"])
        b = _start(reaper, configs["st-b"], logs["st-b"])
        asyncio.run(_publish(cluster, _messages(0, ROUNDS)))
        wait_for(lambda: len(_vm_samples(vm)) > 500, 60, "the first readings in VictoriaMetrics")
        a.kill()  # SIGKILL mid-run: what it fetched and did not acknowledge comes back
        a.wait()
        asyncio.run(_publish(cluster, _messages(ROUNDS, ROUNDS)))
        a = _start(reaper, configs["st-a"], logs["st-a"])
        want = {(dev, T0_MS + k * STEP_MS) for k in range(2 * ROUNDS) for dev in BOLTS}
        wait_for(lambda: _drained(cluster), 120, "the store consumer to be drained")
        wait_for(lambda: set(_vm_samples(vm)) >= want, 60, "every reading in VictoriaMetrics")
        got = _vm_samples(vm)
        assert set(got) == want
        assert set(got.values()) == {1}, "a reading stored twice"
        for name, proc in (("st-a", a), ("st-b", b)):
            _stop(proc, logs[name])
        # The survivor took over what the dead worker had fetched and not acknowledged.
        stored_b = re.search(r"stopped; ([\d,]+) records stored", logs["st-b"].read_text())
        assert stored_b is not None
        assert int(stored_b.group(1).replace(",", "")) > 0
    finally:
        vm.stop()


def test_a_store_worker_into_sqlite_survives_its_death_and_refuses_a_twin(
    tmp_path: Path, nats_cluster: NatsCluster, reaper: Reaper
) -> None:
    cluster = ClusterConfig(urls=nats_cluster.urls, partitions=PARTITIONS)
    log = tmp_path / "st.log"
    config = _config(tmp_path, nats_cluster, "st", None)
    data = tmp_path / "st-data"
    proc = _start(reaper, config, log)
    asyncio.run(_publish(cluster, _messages(0, ROUNDS)))
    wait_for(lambda: stored_readings(data) > 500, 60, "the first readings in the store")
    proc.kill()
    proc.wait()
    asyncio.run(_publish(cluster, _messages(ROUNDS, ROUNDS)))
    proc = _start(reaper, config, log)

    # A second worker on the same folder: one line, exit 2 (the store has one writer).
    twin = subprocess.run(
        [str(Path(sys.executable).parent / "boltwatch"), "run", "--config", str(config)],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert twin.returncode == 2, twin.stdout + twin.stderr
    assert "Traceback" not in twin.stderr
    assert "in use" in twin.stderr or "locked" in twin.stderr, twin.stderr

    # A foreign record among ours: dead-lettered, the rest stored.
    async def foreign() -> None:
        jl = await JetStreamLog.open(cluster, "foreign")
        try:
            await jl.publish([LogRecord(3, b"\x92\x01not ours", "foreign-1")])
        finally:
            await jl.close()

    asyncio.run(foreign())
    wait_for(lambda: _drained(cluster), 120, "the store consumer to be drained")
    assert stored_readings(data) == 2 * ROUNDS * len(BOLTS)
    _stop(proc, log)

    async def dead() -> list[str]:
        jl = await JetStreamLog.open(cluster, "dead-reader")
        try:
            info = await jl._js.stream_info(cluster.dead_letter_stream)
            out = []
            for seq in range(info.state.first_seq, info.state.last_seq + 1):
                msg = await jl._js.get_msg(cluster.dead_letter_stream, seq)
                assert msg.data is not None
                d = decode_dead(msg.data)
                out.append(f"{d.topic} {d.field}")
            return out
        finally:
            await jl.close()

    (letter,) = asyncio.run(dead())
    assert letter.startswith("stream:partition 3"), letter


def _sealed(store_dir: Path) -> int:
    """Readings in the store's sealed chunks (read-only; 0 before there are any)."""
    import sqlite3

    file = store_dir / "boltwatch.sqlite3"
    if not file.exists():
        return 0
    conn = sqlite3.connect(f"file:{file}?mode=ro", uri=True, timeout=10)
    try:
        (n,) = conn.execute("SELECT coalesce(sum(n), 0) FROM chunks_cbolt").fetchone()
    except sqlite3.OperationalError:
        return 0
    finally:
        conn.close()
    return int(n)


def test_a_store_worker_rolls_up_and_seals_its_store(
    tmp_path: Path, nats_cluster: NatsCluster
) -> None:
    """The store worker runs the store's upkeep as ``boltwatch run`` does (here every 0.2 s):
    March's readings are older than the tail, so they end up sealed, rolled up by day."""
    from boltwatch.cluster_store import StoreWorker
    from ingest.store import Store
    from sensors.schema import DeviceKind

    cluster = ClusterConfig(urls=nats_cluster.urls, partitions=PARTITIONS)
    data = tmp_path / "data"
    rounds = 40

    async def run() -> None:
        log = await JetStreamLog.open(cluster, "upkeep")
        stop = asyncio.Event()
        with Store(data) as store:
            worker = StoreWorker(log, store=store, upkeep_s=0.2)
            task = asyncio.create_task(worker.run(stop))
            try:
                await _publish(cluster, _messages(0, rounds))
                sealed = rounds * len(BOLTS) - len(BOLTS)  # each bolt's newest stays a row
                deadline = asyncio.get_running_loop().time() + 120
                while _sealed(data) < sealed:
                    assert asyncio.get_running_loop().time() < deadline, _sealed(data)
                    await asyncio.sleep(0.1)
            finally:
                stop.set()
                async with asyncio.timeout(30):
                    await task
                await log.close()
            days = store.rollups(DeviceKind.CBOLT, resolution="1d", field="preload_kn")
            assert {r.device_id for r in days} == set(BOLTS)
            assert sum(r.n for r in days) == rounds * len(BOLTS)
            assert len(store.readings(DeviceKind.CBOLT)) == rounds * len(BOLTS)

    asyncio.run(run())
