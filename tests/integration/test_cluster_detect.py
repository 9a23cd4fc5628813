"""Cluster role ``detect`` on a real 3-node NATS JetStream cluster.

A detection worker (``boltwatch run --role detect``) learns eight bolts' baselines from the
readings stream and checkpoints them; it is SIGKILLed; a second worker takes its partitions over
once their leases expire, continues from the checkpoints and raises the loosening of the one bolt
that loosens afterwards — which it could not if it had learned the baselines afresh from the
loosened level. The events equal those of one engine fed every reading in one process, and the
lease log shows each partition held by one worker at a time.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import re
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import msgspec
import nats.js.errors
import numpy as np

from boltwatch.cluster_detect import decode_outcome
from detection.engine import Engine
from detection.events import EventKind
from detection.preload import BoltPreloadDetector
from ingest.cluster import JetStreamLog, LogError, LogForwarder, partition_of
from ingest.settings import ClusterConfig
from sensors.codec import TelemetryDecoder
from tests.integration.conftest import Reaper, wait_for
from tests.integration.natscluster import NatsCluster, start_member

T0_MS = 1_772_323_200_000
STEP_MS = 300_000
BOLTS = {f"b{i:02d}": 40.0 + i for i in range(8)}
PARTITIONS = 8


def _messages(start: int, count: int, factor: dict[str, float]) -> list[tuple[str, bytes]]:
    rng = np.random.default_rng(start)
    out = []
    for k in range(start, start + count):
        for dev, level in BOLTS.items():
            reading = {
                "ts": T0_MS + k * STEP_MS,
                "seq": k,
                "preload_kn": round(level * factor.get(dev, 1.0) * (1 + rng.normal(0, 0.004)), 3),
                "temp_c": 12.0,
                "battery_v": 3.6,
            }
            out.append((f"boltwatch/v1/site-1/cbolt/{dev}/telemetry", json.dumps(reading).encode()))
    return out


PHASE_1 = _messages(0, 300, {})
PHASE_2 = _messages(300, 400, {"b03": 0.9})


def _config(tmp: Path, nats: NatsCluster, name: str) -> Path:
    path = tmp / f"{name}.toml"
    urls = ", ".join(f'"{u}"' for u in nats.urls)
    path.write_text(
        '[ingest]\nmetrics_listen = ""\n'
        f'[cluster]\nurls = [{urls}]\nname = "{name}"\nrole = "detect"\n'
        f"partitions = {PARTITIONS}\nlease_ttl_s = 3.0\ncheckpoint_s = 0.5\n"
    )
    return path


def _start(reaper: Reaper, config: Path, log: Path) -> subprocess.Popen[bytes]:
    return start_member(reaper, config, log, "detecting on stream")


async def _publish(config: ClusterConfig, messages: list[tuple[str, bytes]]) -> None:
    decoder = TelemetryDecoder(clock=lambda: (T0_MS + 800 * STEP_MS) / 1000)
    log = await JetStreamLog.open(config, "publisher")
    try:
        forward = LogForwarder(log, lambda d: d)
        for i in range(0, len(messages), 400):
            await forward.write(decoder.decode_batch(messages[i : i + 400]), [], received_ms=0)
    finally:
        await log.close()


async def _outcomes(config: ClusterConfig) -> list[tuple[str, str]]:
    log = await JetStreamLog.open(config, "events-reader")
    try:
        info = await log._js.stream_info(config.events_stream)
        out: list[tuple[str, str]] = []
        for seq in range(info.state.first_seq, info.state.last_seq + 1):
            msg = await log._js.get_msg(config.events_stream, seq)
            assert msg.data is not None
            out.extend((e.device_id, e.kind.value) for e in decode_outcome(msg.data).events)
        return out
    finally:
        await log.close()


async def _lease_log(config: ClusterConfig, bucket: str | None = None) -> list[dict[str, object]]:
    """Every line of the lease log of ``bucket`` (the partition leases by default)."""
    log = await JetStreamLog.open(config, "lease-reader")
    try:
        name = f"{bucket or config.lease_bucket}_log"
        info = await log._js.stream_info(name)
        out: list[dict[str, object]] = []
        for seq in range(info.state.first_seq, info.state.last_seq + 1):
            msg = await log._js.get_msg(name, seq)
            assert msg.data is not None
            out.append(json.loads(msg.data))
        return out
    finally:
        await log.close()


def _reference() -> list[tuple[str, str]]:
    engine = Engine({"cbolt": BoltPreloadDetector()})
    decoder = TelemetryDecoder(clock=lambda: (T0_MS + 800 * STEP_MS) / 1000)
    events = []
    for msgs in (PHASE_1, PHASE_2):
        events += engine.process_batch(decoder.decode_batch(msgs)).events
    return [(e.device_id, e.kind.value) for e in events]


def test_a_new_owner_continues_from_the_checkpoints(
    tmp_path: Path, nats_cluster: NatsCluster, reaper: Reaper
) -> None:
    cluster = ClusterConfig(urls=nats_cluster.urls, partitions=PARTITIONS)
    asyncio.run(_publish(cluster, PHASE_1))
    logs = {n: tmp_path / f"{n}.log" for n in ("det-a", "det-b")}
    a = _start(reaper, _config(tmp_path, nats_cluster, "det-a"), logs["det-a"])
    # Every phase-1 record is in some partition's checkpoint.
    wait_for(
        lambda: asyncio.run(_caught_up(cluster)),
        90,
        "det-a to checkpoint every partition",
    )
    a.kill()  # SIGKILL: no checkpoint, no release
    a.wait()
    killed_at = time.time()
    asyncio.run(_publish(cluster, PHASE_2))
    b = _start(reaper, _config(tmp_path, nats_cluster, "det-b"), logs["det-b"])
    wait_for(
        lambda: asyncio.run(_caught_up(cluster)),
        120,
        "det-b to evaluate phase 2",
    )
    events = asyncio.run(_outcomes(cluster))
    reference = _reference()
    assert ("b03", EventKind.LOOSENING.value) in reference
    # The same events as one engine over every reading (a restart from a checkpoint may repeat
    # what was done after it, never invent or miss one).
    assert set(events) == set(reference)
    # det-b restored every partition that had records, from a checkpoint past phase 1.
    used = {partition_of(d, PARTITIONS) for d in BOLTS}
    restored = re.findall(
        r"partition (\d+) taken from its checkpoint \(from sequence (\d+)\)",
        logs["det-b"].read_text(),
    )
    assert {int(p) for p, _ in restored} == used
    assert all(int(seq) > len(PHASE_1) // len(BOLTS) for _, seq in restored)
    # Leases: det-a held every partition, then det-b took each one, after det-a's death.
    lines = asyncio.run(_lease_log(cluster))
    for p in range(PARTITIONS):
        mine = [(e["owner"], e["event"]) for e in lines if e["partition"] == p]
        assert mine == [("det-a", "acquired"), ("det-b", "acquired")], (p, mine)
        taken = next(e["at_ms"] for e in lines if e["partition"] == p and e["owner"] == "det-b")
        assert isinstance(taken, int)
        assert taken / 1000 > killed_at
    # `boltwatch cluster status` sees det-b owning everything, caught up, checkpointed.
    boltwatch = Path(sys.executable).parent / "boltwatch"
    shown = subprocess.run(
        [str(boltwatch), "cluster", "status", "--json", "-c", str(tmp_path / "det-b.toml")],
        check=True,
        capture_output=True,
        text=True,
        timeout=60,
    )
    state = json.loads(shown.stdout)
    assert {r["owner"] for r in state["partitions"]} == {"det-b"}
    assert sum(r["records"] for r in state["partitions"]) == len(PHASE_1) + len(PHASE_2)
    for row in state["partitions"]:
        if row["partition"] in used:
            assert row["lag"] == 0, row
            assert row["checkpoint_from"] is not None, row
    assert "det-b" in state["workers"]
    readings = next(s for s in state["streams"] if s["stream"] == cluster.stream)
    assert readings["leader"] in {"n0", "n1", "n2"}
    assert len(readings["replicas"]) == 2  # the followers of an R3 stream
    started = time.monotonic()
    b.send_signal(signal.SIGTERM)
    b.wait(timeout=30)
    assert time.monotonic() - started < 10
    assert b.returncode == 0, logs["det-b"].read_text()
    assert "Traceback" not in logs["det-b"].read_text()
    released = [e for e in asyncio.run(_lease_log(cluster)) if e["event"] == "released"]
    assert sorted(int(str(e["partition"])) for e in released) == list(range(PARTITIONS))


async def _caught_up(config: ClusterConfig) -> bool:
    """Whether every partition's checkpoint includes the partition's last record (a checkpoint
    names the stream sequence after the last record it includes)."""
    from boltwatch.cluster_detect import CheckpointHeader

    log = await JetStreamLog.open(config, "checker")
    try:
        for p in range(PARTITIONS):
            try:
                last = await log._js.get_last_msg(config.stream, f"{config.subject}.{p}")
            except nats.js.errors.NotFoundError:
                continue  # no bolt hashes to this partition
            assert last.seq is not None
            data = await log.load_checkpoint(p)
            if data is None:
                return False
            if msgspec.msgpack.decode(data, type=CheckpointHeader).next_sequence <= last.seq:
                return False
        return True
    finally:
        await log.close()


class _FlakyLog(JetStreamLog):
    """The real log, whose first outcome publish fails as during a leader election."""

    failures = 1

    async def publish_event(self, partition: int, data: bytes, msg_id: str | None) -> None:
        if self.failures:
            self.failures -= 1
            raise LogError("cluster.events_stream", "publish failed: TimeoutError()")
        await super().publish_event(partition, data, msg_id)


def test_an_outcome_not_stored_starts_the_partition_again_from_its_checkpoint(
    tmp_path: Path, nats_cluster: NatsCluster
) -> None:
    """A failed outcome publish (NATS busy electing) must not end the worker: the partition is
    taken up again from its checkpoint and the events are still those of one engine."""
    from boltwatch.cluster_detect import DetectWorker
    from boltwatch.config import load_config
    from ingest.cluster.leases import Leases

    cluster = ClusterConfig(urls=nats_cluster.urls, partitions=PARTITIONS)
    config = load_config(_config(tmp_path, nats_cluster, "det-f"))

    async def scenario() -> tuple[bool, int]:
        await _publish(cluster, PHASE_1 + PHASE_2)
        log = await _FlakyLog.open(config.cluster, "det-f")
        assert isinstance(log, _FlakyLog)
        leases = await Leases.open(
            log.nats, bucket=cluster.lease_bucket, owner="det-f", ttl_s=3.0, replicas=3
        )
        worker = DetectWorker(config, log, leases, None)
        stop = asyncio.Event()
        task = asyncio.create_task(worker.run(stop))
        try:
            deadline = time.monotonic() + 120
            while not await _caught_up(cluster):
                assert not task.done(), "the worker ended"
                assert time.monotonic() < deadline, "never caught up"
                await asyncio.sleep(0.5)
            alive = not task.done()
        finally:
            stop.set()
            await task
            await log.close()
        return alive, log.failures

    with caplog_at_warning() as lines:
        alive, left = asyncio.run(scenario())
    assert alive
    assert left == 0  # the failure happened
    assert any("taken up again from its checkpoint" in line for line in lines)
    assert set(asyncio.run(_outcomes(cluster))) == set(_reference())


@contextlib.contextmanager
def caplog_at_warning() -> Iterator[list[str]]:
    """The ``boltwatch.cluster`` log lines (warning and up) written inside the block."""
    lines: list[str] = []

    class Keep(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            lines.append(record.getMessage())

    handler = Keep(logging.WARNING)
    logger = logging.getLogger("boltwatch.cluster")
    logger.addHandler(handler)
    try:
        yield lines
    finally:
        logger.removeHandler(handler)
