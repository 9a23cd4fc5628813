"""Cluster mode on NATS JetStream, next to the single-process service in the same run.

Starts Mosquitto and a 3-node ``nats-server`` cluster (R3 streams) on this machine, then measures:

(ref) ``boltwatch run`` as one process (store, detection and alerts on), fed N single-reading
      messages of 10,000 bolts by the same publisher: msg/s from the first publish to the last
      reading stored (bench/ingest.py's case (e)).
(i)   ``boltwatch run --role ingest``, 1 and 2 workers on one shared subscription: msg/s from
      the first publish until the readings stream holds all N records (3 replicas each).
(d)   ``boltwatch run --role detect``, 1 and 2 workers over the records (i) left in the stream:
      readings/s from the workers' start until every partition's consumer has nothing pending.
(r)   recovery: a detect worker SIGKILLed while a second one runs; seconds from the kill until
      the survivor has taken every partition over from the checkpoints (lease TTL 3 s here).

On 2 cores every process shares the same two: the ratio shows what the JetStream hop costs
here, not how the cluster scales across machines (docs/scaling.md).

Usage: python bench/cluster.py [--messages N]
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import importlib.util
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

# bench/ first on sys.path would make `import ingest` find bench/ingest.py: drop it.
_HERE = Path(__file__).resolve().parent
sys.path[:] = [p for p in sys.path if Path(p or ".").resolve() != _HERE]
sys.path.insert(0, str(_HERE.parent))

from rich.console import Console  # noqa: E402
from rich.table import Table  # noqa: E402

from boltwatch.cluster_cli import cluster_status  # noqa: E402
from boltwatch.config import parse_config  # noqa: E402
from ingest.cluster import JetStreamLog  # noqa: E402
from ingest.settings import ClusterConfig  # noqa: E402
from tests.integration.conftest import free_port  # noqa: E402
from tests.integration.natscluster import NatsCluster  # noqa: E402

_spec = importlib.util.spec_from_file_location("bench_ingest", _HERE / "ingest.py")
assert _spec is not None  # noqa: S101 - our own file
assert _spec.loader is not None  # noqa: S101
bench_ingest = importlib.util.module_from_spec(_spec)
sys.modules["bench_ingest"] = bench_ingest  # its dataclasses look their module up
_spec.loader.exec_module(bench_ingest)

DEVICES = 10_000
PARTITIONS = 64
BOLTWATCH = Path(sys.executable).parent / "boltwatch"


def _config(tmp: Path, port: int, nats: NatsCluster, name: str, role: str) -> Path:
    path = tmp / f"{name}.toml"
    urls = ", ".join(f'"{u}"' for u in nats.urls)
    path.write_text(
        f'[broker]\nurl = "mqtt://127.0.0.1:{port}"\nclient_id = "{name}"\n'
        f'topics = ["$share/{name.rsplit("-", 1)[0]}/boltwatch/v1/+/+/+/+"]\n'
        '[ingest]\nmetrics_listen = ""\n'
        f'[cluster]\nurls = [{urls}]\nname = "{name}"\nrole = "{role}"\n'
        f"partitions = {PARTITIONS}\nlease_ttl_s = 3.0\ncheckpoint_s = 2.0\n"
    )
    return path


def _start(tmp: Path, config: Path, ready: str) -> subprocess.Popen[bytes]:
    log = tmp / f"{config.stem}.log"
    with log.open("ab") as out:
        proc = subprocess.Popen(
            [str(BOLTWATCH), "run", "--config", str(config)], stdout=out, stderr=subprocess.STDOUT
        )
    deadline = time.monotonic() + 120
    while ready not in log.read_text():
        if proc.poll() is not None or time.monotonic() > deadline:
            proc.kill()
            raise SystemExit(f"{config.stem} did not start:\n{log.read_text()[-2000:]}")
        time.sleep(0.1)
    return proc


def _stop(procs: list[subprocess.Popen[bytes]]) -> None:
    for p in procs:
        if p.poll() is None:
            p.send_signal(signal.SIGTERM)
    for p in procs:
        try:
            p.wait(30)
        except subprocess.TimeoutExpired:
            p.kill()
            p.wait()


async def _stream_count(cluster: ClusterConfig) -> int:
    log = await JetStreamLog.open(cluster, "bench-count")
    try:
        info = await log._js.stream_info(cluster.stream)
        return int(info.state.messages)
    finally:
        await log.close()


async def _reset(cluster: ClusterConfig) -> None:
    """Empty the readings stream and drop the detection state (a fresh start for each case)."""
    log = await JetStreamLog.open(cluster, "bench-reset")
    try:
        await log._js.purge_stream(cluster.stream)
    finally:
        await log.close()
    await _reset_detection(cluster)


def _wait(predicate: object, limit_s: float) -> None:
    deadline = time.monotonic() + limit_s
    while not predicate():  # type: ignore[operator]
        if time.monotonic() > deadline:
            raise SystemExit(f"timed out after {limit_s} s")
        time.sleep(0.1)


def ingest_case(tmp: Path, port: int, nats: NatsCluster, n: int, workers: int) -> float:
    """(i): msg/s of ``workers`` ingest workers until the stream holds ``n`` records."""
    cluster = ClusterConfig(urls=nats.urls, partitions=PARTITIONS)
    asyncio.run(_reset(cluster))
    procs = [
        _start(tmp, _config(tmp, port, nats, f"ingest-{workers}-{i}", "ingest"), "ingesting ")
        for i in range(workers)
    ]
    try:
        t0 = time.perf_counter()
        pub = bench_ingest._burst(port, n, DEVICES)
        _wait(lambda: asyncio.run(_stream_count(cluster)) >= n, 600)
        dt = time.perf_counter() - t0
        pub.wait(60)
    finally:
        _stop(procs)
    return n / dt


def _pending(config: object) -> int | None:
    state = asyncio.run(cluster_status(config))
    rows = state["partitions"]
    if any(r["owner"] is None or r["lag"] is None for r in rows if r["records"]):
        return None
    return sum(int(r["lag"]) for r in rows)


def detect_case(tmp: Path, port: int, nats: NatsCluster, n: int, workers: int) -> float:
    """(d): readings/s of ``workers`` detect workers over the ``n`` records in the stream."""
    cluster = ClusterConfig(urls=nats.urls, partitions=PARTITIONS)
    asyncio.run(_reset_detection(cluster))
    cfg = parse_config({"cluster": {"urls": nats.urls, "partitions": PARTITIONS}}, environ={})
    t0 = time.perf_counter()
    procs = [
        _start(tmp, _config(tmp, port, nats, f"detect-{workers}-{i}", "detect"), "detecting on")
        for i in range(workers)
    ]
    try:
        _wait(lambda: _pending(cfg) == 0, 900)
        dt = time.perf_counter() - t0
    finally:
        _stop(procs)
    return n / dt


async def _reset_detection(cluster: ClusterConfig) -> None:
    """Drop the detect consumers, checkpoints and leases (absent ones are fine)."""
    log = await JetStreamLog.open(cluster, "bench-reset")
    js = log._js
    try:
        for p in range(cluster.partitions):
            with contextlib.suppress(Exception):
                await js.delete_consumer(cluster.stream, f"detect-p{p}")
        for name in (f"OBJ_{cluster.checkpoint_bucket}", f"KV_{cluster.lease_bucket}"):
            with contextlib.suppress(Exception):
                await js.purge_stream(name)
    finally:
        await log.close()


def recovery_case(tmp: Path, port: int, nats: NatsCluster) -> float:
    """(r): seconds from the SIGKILL of one of two detect workers until the survivor owns every
    partition."""
    cluster = ClusterConfig(urls=nats.urls, partitions=PARTITIONS)
    asyncio.run(_reset_detection(cluster))
    cfg = parse_config({"cluster": {"urls": nats.urls, "partitions": PARTITIONS}}, environ={})
    a = _start(tmp, _config(tmp, port, nats, "rec-a", "detect"), "detecting on")
    b = _start(tmp, _config(tmp, port, nats, "rec-b", "detect"), "detecting on")
    try:

        def owners() -> set[str | None]:
            return {r["owner"] for r in asyncio.run(cluster_status(cfg))["partitions"]}

        _wait(lambda: owners() == {"rec-a", "rec-b"}, 120)
        a.kill()
        t0 = time.perf_counter()
        _wait(lambda: owners() == {"rec-b"}, 120)
        return time.perf_counter() - t0
    finally:
        a.wait()
        _stop([b])


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--messages", type=int, default=100_000)
    args = parser.parse_args(argv)
    n = args.messages
    out = Console()
    with tempfile.TemporaryDirectory() as d:
        tmp = Path(d)
        broker, port = bench_ingest._mosquitto(tmp)
        nats = NatsCluster(tmp / "nats", [free_port() for _ in range(9)])
        nats.start()
        try:
            out.print(f"(ref) boltwatch run, one process, {n:,} messages of {DEVICES:,} bolts ...")
            ref, _ = asyncio.run(bench_ingest._service(port, tmp, n, DEVICES, "single"))
            rows = []
            for workers in (1, 2):
                out.print(f"(i) {workers} ingest worker(s) ...")
                rows.append(
                    (
                        f"(i) ingest tier, {workers} worker(s)",
                        ingest_case(tmp, port, nats, n, workers),
                    )
                )
            for workers in (1, 2):
                out.print(f"(d) {workers} detect worker(s) ...")
                rows.append(
                    (
                        f"(d) detect tier, {workers} worker(s)",
                        detect_case(tmp, port, nats, n, workers),
                    )
                )
            out.print("(r) recovery after a detect worker's SIGKILL ...")
            recovery = recovery_case(tmp, port, nats)
        finally:
            nats.stop()
            broker.kill()
            broker.wait()
    table = Table(
        title=f"cluster on NATS JetStream (3 nodes, R3, {PARTITIONS} partitions), {n:,} readings"
    )
    table.add_column("case")
    table.add_column("readings/s", justify="right")
    table.add_column("reference: boltwatch run, one process", justify="right")
    table.add_column("ratio", justify="right")
    for name, rate in rows:
        table.add_row(name, f"{rate:,.0f}", f"{ref:,.0f}", f"{rate / ref:.2f}")
    out.print(table)
    out.print(
        f"(r) a detect worker SIGKILLed: the survivor owned every partition after {recovery:.1f} s "
        "(lease TTL 3 s)"
    )
    out.print("2 cores: every worker, the broker, the publisher and the 3 NATS nodes share them.")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
