"""Ingest benchmark, end to end through a real Mosquitto (QoS 1), with references from the same run.

(a) reference: ``mosquitto_sub`` (C) receiving the same stream of single-reading messages;
(b) boltwatch ingest, single-reading JSON messages: decode, validate, dedup, group commit to
    SQLite (fsync), PUBACK after the commit (MQTT 5);
(c) the same for 100-reading gateway batches;
(d) the InfluxDB writer into a real VictoriaMetrics (line protocol in bulk, gzip).
Messages are published by ``mosquitto_pub -l`` from a file (C), so the publisher is not the
bottleneck. Prints msg/s, readings/s, the ratio to the reference, and the peak RSS.
Targets (2-core machine): (b) >= 50k msg/s, (c) >= 500k readings/s, (d) >= 500k points/s.

Usage: python bench/ingest.py [--messages N] [--soak SECONDS]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import resource
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

# This file is bench/ingest.py: with bench/ first on sys.path, `import ingest` would find this
# script instead of the package. Drop the script's folder before importing the project.
sys.path[:] = [p for p in sys.path if Path(p or ".").resolve() != Path(__file__).resolve().parent]

from rich.console import Console  # noqa: E402 - after the sys.path fix above
from rich.table import Table  # noqa: E402

from boltwatch.config import parse_config  # noqa: E402
from ingest.service import IngestService  # noqa: E402
from ingest.store import Store  # noqa: E402

T0 = int(time.time() * 1000) - 3_600_000


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _mosquitto(tmp: Path) -> tuple[subprocess.Popen[bytes], int]:
    exe = shutil.which("mosquitto") or "/usr/sbin/mosquitto"
    port = _free_port()
    conf = tmp / "mosquitto.conf"
    conf.write_text(
        f"listener {port} 127.0.0.1\nallow_anonymous true\nmax_queued_messages 0\n"
        "max_inflight_messages 0\n"
    )
    proc = subprocess.Popen(
        [exe, "-c", str(conf)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
    )
    for _ in range(200):
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.1):
                return proc, port
        except OSError:
            time.sleep(0.05)
    proc.kill()
    raise SystemExit("mosquitto did not start")


def _lines(path: Path, n: int, batch: int) -> tuple[list[str], int]:
    """One file per topic: mosquitto_pub -l publishes each line as one message."""
    topics = []
    readings = 0
    if batch == 1:
        with path.open("w") as fh:
            for i in range(n):
                fh.write(json.dumps({"ts": T0 + i, "seq": i, "preload_kn": 61.0 + (i % 50) / 10}))
                fh.write("\n")
        topics.append("boltwatch/v1/bench/cbolt/bolt-0001/telemetry")
        readings = n
    else:
        with path.open("w") as fh:
            for m in range(n):
                items = [
                    {
                        "kind": "cbolt",
                        "device_id": f"bolt-{j:04d}",
                        "ts": T0 + m,
                        "seq": m,
                        "preload_kn": 61.0 + j / 100,
                        "temp_c": 11.5,
                    }
                    for j in range(batch)
                ]
                fh.write(json.dumps({"readings": items}, separators=(",", ":")))
                fh.write("\n")
        topics.append("boltwatch/v1/bench/gateway/gw-01/telemetry")
        readings = n * batch
    return topics, readings


def _pub(port: int, topic: str, path: Path) -> subprocess.Popen[bytes]:
    exe = shutil.which("mosquitto_pub") or "/usr/bin/mosquitto_pub"
    return subprocess.Popen(
        [exe, "-h", "127.0.0.1", "-p", str(port), "-q", "1", "-t", topic, "-l", "-V", "mqttv5"],
        stdin=path.open("rb"),
    )


def reference(port: int, tmp: Path, n: int) -> float:
    """(a) mosquitto_sub receiving single-reading messages at QoS 1: msg/s.

    Counts what it actually received (``-W`` bounds the wait), from the first message to the last.
    """
    topics, _ = _lines(tmp / "single.txt", n, 1)
    sub = subprocess.Popen(
        [
            shutil.which("mosquitto_sub") or "/usr/bin/mosquitto_sub",
            "-h",
            "127.0.0.1",
            "-p",
            str(port),
            "-q",
            "1",
            "-t",
            topics[0],
            "-C",
            str(n),
            "-W",
            "120",
            "-F",
            "%U",
        ],
        stdout=subprocess.PIPE,
    )
    time.sleep(0.5)
    pub = _pub(port, topics[0], tmp / "single.txt")
    out, _ = sub.communicate(timeout=180)
    pub.wait(60)
    stamps = [float(x) for x in out.split()]
    if len(stamps) < 2:
        raise SystemExit("mosquitto_sub received nothing: is the broker up?")
    if len(stamps) < n:
        print(f"note: mosquitto_sub received {len(stamps):,} of {n:,} messages")
    return (len(stamps) - 1) / (stamps[-1] - stamps[0])


async def _poll(predicate: Callable[[], bool], limit_s: float) -> None:
    """Check ``predicate`` every 10 ms until it holds (or give up after ``limit_s``)."""
    for _ in range(int(limit_s * 100)):
        if predicate():
            return
        await asyncio.sleep(0.01)
    raise SystemExit(f"gave up after {limit_s:g} s: ingest did not finish")


async def _ingest(port: int, tmp: Path, n: int, batch: int, name: str) -> tuple[float, float, int]:
    """(b)/(c): msg/s and readings/s from the first publish to the last commit."""
    topics, readings = _lines(tmp / f"{name}.txt", n, batch)
    cfg = parse_config(
        {
            "broker": {
                "url": f"mqtt://127.0.0.1:{port}",
                "client_id": f"bench-{name}",
                "receive_maximum": 2000,
            },
            "ingest": {
                "metrics_listen": "",
                "batch_max_messages": 2000 if batch == 1 else 50,
                "batch_max_ms": 20,
            },
            "store": {"path": str(tmp / f"store-{name}")},
        },
        environ={},
    )
    with Store(cfg.store.path) as store:
        async with IngestService(cfg, store) as svc:
            await svc.wait_subscribed()
            t0 = time.perf_counter()
            pub = _pub(port, topics[0], tmp / f"{name}.txt")

            def committed() -> float:
                return sum(
                    s.value
                    for m in svc.metrics.registry.collect()
                    if m.name == "boltwatch_ingest_readings_stored"
                    for s in m.samples
                    if s.name.endswith("_total")
                )

            # Done when every message was received and every reading committed.
            await _poll(lambda: svc.metrics.messages._value.get() >= n and not svc._queue, 600)
            await _poll(lambda: committed() >= readings, 600)
            dt = time.perf_counter() - t0
            pub.wait(60)
        stored = store.stats().readings
    return n / dt, readings / dt, stored


def influx_bench(tmp: Path, points: int) -> tuple[float, float] | None:
    """(d): points/s through InfluxWriter into VictoriaMetrics, and the raw HTTP reference."""
    exe = shutil.which("victoria-metrics")
    try:
        from ingest.influx import InfluxWriter
    except ImportError:
        return None
    if exe is None:
        return None
    import numpy as np

    from sensors.codec import ReadingColumns
    from sensors.schema import DeviceKind

    port = _free_port()
    vm = subprocess.Popen(
        [
            exe,
            f"-httpListenAddr=127.0.0.1:{port}",
            f"-storageDataPath={tmp / 'vm'}",
            "-loggerLevel=ERROR",
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        for _ in range(200):
            try:
                with socket.create_connection(("127.0.0.1", port), timeout=0.1):
                    break
            except OSError:
                time.sleep(0.05)
        n = points
        cols = ReadingColumns(
            kind=DeviceKind.CBOLT,
            site=np.array(["bench"] * n, dtype=object),
            device_id=np.array([f"bolt-{i % 1000:04d}" for i in range(n)], dtype=object),
            ts_ms=T0 + np.arange(n, dtype=np.int64),
            seq=np.arange(n, dtype=np.int64),
            values={
                "preload_kn": 61.0 + np.arange(n) % 97 / 10.0,
                "temp_c": np.full(n, 11.5),
                "battery_v": np.full(n, np.nan),
                "rssi_dbm": np.full(n, np.nan),
            },
        )
        writer = InfluxWriter(
            f"http://127.0.0.1:{port}", org="bench", bucket="bench", spool_dir=tmp / "spool"
        )
        t0 = time.perf_counter()
        writer.write([cols])
        dt = time.perf_counter() - t0
        writer.close()
        return n / dt, dt
    finally:
        vm.send_signal(signal.SIGTERM)
        vm.wait(30)


def main(argv: list[str] | None = None) -> int:
    """Run the benchmark and print the table."""
    ap = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    ap.add_argument("--messages", type=int, default=100_000, help="single-reading messages")
    ap.add_argument("--batches", type=int, default=5_000, help="100-reading gateway batches")
    ap.add_argument("--points", type=int, default=1_000_000, help="InfluxDB points")
    args = ap.parse_args(argv)
    logging.getLogger("gmqtt").setLevel(logging.CRITICAL)
    console = Console(width=max(Console().width, 120))
    with tempfile.TemporaryDirectory() as d:
        tmp = Path(d)
        broker, port = _mosquitto(tmp)
        try:
            console.print(f"(a) mosquitto_sub, {args.messages:,} messages ...")
            ref = reference(port, tmp, args.messages)
            console.print(f"(b) ingest, {args.messages:,} single-reading messages ...")
            single = asyncio.run(_ingest(port, tmp, args.messages, 1, "single"))
            console.print(f"(c) ingest, {args.batches:,} gateway batches of 100 ...")
            batched = asyncio.run(_ingest(port, tmp, args.batches, 100, "batch"))
        finally:
            broker.send_signal(signal.SIGTERM)
            broker.wait(30)
        console.print(f"(d) InfluxDB writer, {args.points:,} points into VictoriaMetrics ...")
        influx = influx_bench(tmp, args.points)
    rss_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    table = Table(title="ingest end to end through Mosquitto, QoS 1 (2-core machine)")
    for col in ("case", "msg/s", "readings/s", "ratio to (a)", "stored", "target"):
        table.add_column(col, justify="left" if col == "case" else "right")
    table.add_row("(a) mosquitto_sub (reference)", f"{ref:,.0f}", f"{ref:,.0f}", "1.00", "", "")
    msg_s, rd_s, stored = single
    table.add_row(
        "(b) ingest, single-reading messages",
        f"{msg_s:,.0f}",
        f"{rd_s:,.0f}",
        f"{msg_s / ref:.2f}",
        f"{stored:,}",
        f"50,000 msg/s: {'met' if msg_s >= 50_000 else f'{msg_s / 50_000:.0%}'}",
    )
    msg_s, rd_s, stored = batched
    table.add_row(
        "(c) ingest, 100-reading gateway batches",
        f"{msg_s:,.0f}",
        f"{rd_s:,.0f}",
        f"{rd_s / ref:.2f}",
        f"{stored:,}",
        f"500,000 readings/s: {'met' if rd_s >= 500_000 else f'{rd_s / 500_000:.0%}'}",
    )
    if influx is not None:
        pts, _ = influx
        table.add_row(
            "(d) InfluxDB writer -> VictoriaMetrics",
            "",
            f"{pts:,.0f} points/s",
            "",
            "",
            f"500,000 points/s: {'met' if pts >= 500_000 else f'{pts / 500_000:.0%}'}",
        )
    table.caption = (
        f"peak RSS of the ingest process: {rss_mb:,.0f} MiB; python {sys.version.split()[0]}"
    )
    console.print(table)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
