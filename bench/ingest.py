"""Ingest benchmark, end to end through a real Mosquitto (QoS 1), with references from the same run.

(a) reference: ``mosquitto_sub`` (C) receiving the same stream of single-reading messages;
(b) boltwatch ingest, single-reading JSON messages: decode, validate, dedup, group commit to
    SQLite (fsync), PUBACK after the commit (MQTT 5);
(c) the same for 100-reading gateway batches;
(d) the InfluxDB writer into a real VictoriaMetrics (line protocol in bulk, gzip);
(e) ``boltwatch run`` as shipped (``run_service`` with the default configuration: detection and
    alerts in the path), fed single-reading messages as fast as they come, in two shapes:
    10,000 bolts with one reading each per message (a Python publisher, gmqtt), and one bolt's
    backlog (``mosquitto_pub``): msg/s and CPU per message of the process.
(f) boltwatch ingest, Sparkplug B: an edge node relays DDATA of 100 historical ``preload_kn``
    metrics each (a reading per metric) for 100 bolts, after its NBIRTH and their DBIRTHs
    (published by this script's own gmqtt process, QoS 1, in order).
Messages are published by ``mosquitto_pub -l`` from a file (C), so the publisher is not the
bottleneck. Prints msg/s, readings/s, the ratio to the reference, and the peak RSS.
Targets (2-core machine): (b) >= 50k msg/s, (c) >= 500k readings/s, (d) >= 500k points/s,
(f) >= 300k readings/s.

``--soak SECONDS`` runs only the soak instead: ingest as in (b), fed at a steady
``--soak-rate`` (default 5,000 msg/s) of single-reading JSON messages from a simulated fleet of
``--soak-devices`` bolts (a separate publisher process, gmqtt, QoS 1). The RSS of the ingest
process is sampled every ``--soak-sample`` seconds (default 10) and printed as a table (time,
messages stored, RSS), then a summary: RSS at 1 min vs at the end, slope after the first minute
(MiB/min), and the verdict: flat when the RSS grew less than 5 % from 1 min to the end.

Usage: python bench/ingest.py [--messages N] [--soak SECONDS [--soak-rate MSG_PER_S]]
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import logging
import os
import resource
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Final

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
    """``mosquitto_pub -l`` fed from a pipe that stays open until :func:`_done`.

    mosquitto_pub 2.0 disconnects as soon as its stdin ends, dropping the QoS 1 messages it still
    had queued (from a file, about two thirds of 100,000): the pipe is closed only once the
    receiving side has everything.
    """
    exe = shutil.which("mosquitto_pub") or "/usr/bin/mosquitto_pub"
    proc = subprocess.Popen(
        [exe, "-h", "127.0.0.1", "-p", str(port), "-q", "1", "-t", topic, "-l", "-V", "mqttv5"],
        stdin=subprocess.PIPE,
    )
    data = path.read_bytes()

    def feed() -> None:
        assert proc.stdin is not None  # noqa: S101 - stdin=PIPE above
        with contextlib.suppress(BrokenPipeError):
            proc.stdin.write(data)
            proc.stdin.flush()

    threading.Thread(target=feed, daemon=True).start()
    return proc


def _done(pub: subprocess.Popen[bytes]) -> None:
    """Close the publisher's stdin (it disconnects) and wait for it."""
    if pub.stdin is not None:
        with contextlib.suppress(BrokenPipeError):
            pub.stdin.close()
    pub.wait(60)


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
    _done(pub)
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


@dataclass(frozen=True, slots=True)
class Feed:
    """What a case publishes: messages and readings in all, and how its publisher starts and
    ends (a process of its own, so that this process only ingests)."""

    messages: int
    readings: int
    start: Callable[[], subprocess.Popen[bytes]]
    stop: Callable[[subprocess.Popen[bytes]], None]


def _json_feed(port: int, tmp: Path, n: int, batch: int, name: str) -> Feed:
    """(b)/(c): ``mosquitto_pub -l`` of JSON lines, one message each."""
    topics, readings = _lines(tmp / f"{name}.txt", n, batch)
    return Feed(n, readings, lambda: _pub(port, topics[0], tmp / f"{name}.txt"), _done)


SPB_DEVICES: Final = 100
SPB_METRICS: Final = 100


def _spb_feed(port: int, tmp: Path, n: int) -> Feed:
    """(f): a Sparkplug B edge node relaying ``n`` DDATA of ``SPB_METRICS`` historical
    ``preload_kn`` metrics each (a reading per metric, with its own timestamp) for
    ``SPB_DEVICES`` bolts, after its NBIRTH and their DBIRTHs. Encoded here, published by this
    script with ``--spb-feed`` (gmqtt, QoS 1, in order)."""
    import pysparkplug as psp

    from sensors.sparkplug import encode_dbirth, encode_nbirth

    path = tmp / "spb.bin"
    with path.open("wb") as fh:

        def put(topic: str, payload: bytes) -> None:
            head = topic.encode()
            fh.write(len(head).to_bytes(2, "big") + head + len(payload).to_bytes(4, "big"))
            fh.write(payload)

        put("spBv1.0/bench/NBIRTH/gw-01", encode_nbirth({}, T0))
        for d in range(SPB_DEVICES):
            put(
                f"spBv1.0/bench/DBIRTH/gw-01/bolt-{d:04d}",
                encode_dbirth("cbolt", {"preload_kn": 60.0}, T0),
            )
        for i in range(n):
            base = T0 + 1_000 + (i // SPB_DEVICES) * SPB_METRICS * 1_000
            metrics = tuple(
                psp.Metric(
                    timestamp=base + k * 1_000,
                    name="preload_kn",
                    datatype=psp.DataType.DOUBLE,
                    value=60.0 + k / 100,
                )
                for k in range(SPB_METRICS)
            )
            data = psp.DData(timestamp=base, seq=i % 256, metrics=metrics)
            put(
                f"spBv1.0/bench/DDATA/gw-01/bolt-{i % SPB_DEVICES:04d}",
                bytes(data.encode(include_dtypes=True)),
            )

    def start() -> subprocess.Popen[bytes]:
        cmd = [sys.executable, __file__, "--spb-feed", str(port), str(path)]
        return subprocess.Popen(cmd, stdout=subprocess.DEVNULL)

    def stop(proc: subprocess.Popen[bytes]) -> None:
        proc.wait(60)

    return Feed(1 + SPB_DEVICES + n, SPB_DEVICES + n * SPB_METRICS, start, stop)


async def _spb_publish(port: int, data: bytes) -> int:
    """The ``--spb-feed`` process: every message of ``data`` (the file :func:`_spb_feed`
    wrote) at QoS 1, in order."""
    import gmqtt

    client = gmqtt.Client(f"spb-feed-{os.getpid()}")
    await client.connect("127.0.0.1", port, keepalive=60)
    at = sent = 0
    while at < len(data):
        size = int.from_bytes(data[at : at + 2], "big")
        topic = data[at + 2 : at + 2 + size].decode()
        at += 2 + size
        length = int.from_bytes(data[at : at + 4], "big")
        payload = data[at + 4 : at + 4 + length]
        while True:
            try:
                client.publish(topic, payload, qos=1)
                break
            except OverflowError:  # every message id in flight: wait for PUBACKs
                await asyncio.sleep(0.005)
        at += 4 + length
        sent += 1
    await asyncio.sleep(1.0)  # the last PUBACKs
    await client.disconnect()
    return sent


async def _ingest(port: int, tmp: Path, feed: Feed, name: str) -> tuple[float, float, int, float]:
    """(b)/(c)/(f): msg/s and readings/s from the first publish to the last commit, and the CPU
    time of this process (ingest: its event loop and its store thread) per message, µs."""
    n, readings = feed.messages, feed.readings
    cfg = parse_config(
        {
            "broker": {
                "url": f"mqtt://127.0.0.1:{port}",
                "client_id": f"bench-{name}",
                "receive_maximum": 2000,
            },
            "ingest": {
                "metrics_listen": "",
                "batch_max_messages": 2000 if readings == n else 50,
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
            cpu0 = time.process_time()
            pub = feed.start()

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
            cpu = time.process_time() - cpu0
            feed.stop(pub)
        stored = store.stats().readings
    return n / dt, readings / dt, stored, cpu / n * 1e6


def _burst(port: int, n: int, devices: int) -> subprocess.Popen[bytes]:
    """The soak's publisher process, sending ``n`` messages round-robin over ``devices`` bolts
    as fast as it can (a rate it cannot reach)."""
    burst = [str(port), "1000000", str(n / 1_000_000), str(devices)]
    return subprocess.Popen([sys.executable, __file__, "--feed", *burst], stdout=subprocess.DEVNULL)


async def _service(port: int, tmp: Path, n: int, devices: int, name: str) -> tuple[float, float]:
    """(e): ``boltwatch run`` as shipped (its default configuration: detection and alerts on),
    fed ``n`` single-reading messages of ``devices`` bolts as fast as the publisher sends them:
    msg/s from the first publish to the last reading stored, and this process's CPU per
    message, µs (the service runs in this process)."""
    from boltwatch.run import run_service

    cfg = parse_config(
        {
            "broker": {"url": f"mqtt://127.0.0.1:{port}", "client_id": f"bench-{name}"},
            "ingest": {"metrics_listen": ""},
            "store": {"path": str(tmp / f"store-{name}")},
            "alerts": {"api_listen": ""},
        },
        environ={},
    )
    topics, _ = _lines(tmp / f"{name}.txt", n, 1)
    stop, ready = asyncio.Event(), asyncio.Event()
    service = asyncio.create_task(
        run_service(cfg, Console(quiet=True), mqtt_version=5, stop=stop, on_ready=ready.set)
    )
    try:
        async with asyncio.timeout(60):
            await ready.wait()
        reader = Store(cfg.store.path)
        t0 = time.perf_counter()
        cpu0 = time.process_time()
        if devices == 1:  # one device's backlog, from mosquitto_pub
            pub = _pub(port, topics[0], tmp / f"{name}.txt")
        else:  # a fleet, one reading of each bolt in turn, from the soak's publisher process
            pub = _burst(port, n, devices)
        await _poll(lambda: reader.stats().readings >= n or service.done(), 900)
        dt = time.perf_counter() - t0
        cpu = time.process_time() - cpu0
        if devices == 1:
            _done(pub)
        else:
            pub.wait(60)
        reader.close()
    finally:
        stop.set()
        await service
    return n / dt, cpu / n * 1e6


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


# -- soak: RSS over a long run at a steady rate ------------------------------------------------

SOAK_WARMUP_S = 60.0  # RSS "at 1 min" is the baseline: caches and pools have filled by then
SOAK_FLAT_GROWTH = 0.05  # flat: less than 5 % growth from 1 min to the end


def rss_mib() -> float:
    """The current resident set size of this process (Linux: /proc; else the peak)."""
    try:
        text = Path("/proc/self/status").read_text()
    except OSError:
        return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    line = next(x for x in text.splitlines() if x.startswith("VmRSS:"))
    return int(line.split()[1]) / 1024


async def _feed(port: int, rate: float, seconds: float, devices: int) -> int:
    """The publisher process: ``rate`` msg/s for ``seconds``, round-robin over the fleet."""
    import gmqtt

    client = gmqtt.Client(f"soak-feed-{os.getpid()}")
    await client.connect("127.0.0.1", port, keepalive=60)
    topics = [f"boltwatch/v1/soak/cbolt/bolt-{d:05d}/telemetry" for d in range(devices)]
    loop = asyncio.get_running_loop()
    start = loop.time()
    sent, total = 0, int(seconds * rate)
    while sent < total:
        due = min(int((loop.time() - start) * rate), total)
        now_ms = int(time.time() * 1000)
        while sent < due:  # catch up to the schedule: a steady rate, whatever the tick
            dev, seq = sent % devices, sent // devices
            payload = f'{{"ts":{now_ms},"seq":{seq},"preload_kn":{61.0 + dev % 50 / 10:.1f}}}'
            try:
                client.publish(topics[dev], payload.encode(), qos=1)
            except OverflowError:  # every message id in flight: wait for PUBACKs
                await asyncio.sleep(0.005)
                continue
            sent += 1
        await asyncio.sleep(0.02)
    await asyncio.sleep(1.0)  # the last PUBACKs
    await client.disconnect()
    return sent


def feed_main(port: int, rate: float, seconds: float, devices: int) -> int:
    """Entry point of the publisher process (``--feed``): prints how many it sent."""
    logging.getLogger("gmqtt").setLevel(logging.CRITICAL)
    sent = asyncio.run(_feed(port, rate, seconds, devices))
    print(sent, flush=True)
    return 0


@dataclass(frozen=True, slots=True)
class SoakPlan:
    """What the soak runs: how long, how fast, how many devices, how often RSS is sampled."""

    seconds: float
    rate: float
    devices: int
    every_s: float


def _spawn_feeder(port: int, plan: SoakPlan) -> subprocess.Popen[bytes]:
    """The publisher process (this script with ``--feed``): the ingest process only ingests."""
    feed = [str(port), str(plan.rate), str(plan.seconds), str(plan.devices)]
    return subprocess.Popen([sys.executable, __file__, "--feed", *feed], stdout=subprocess.PIPE)


@dataclass(frozen=True, slots=True)
class SoakSample:
    """One RSS sample of the soak."""

    t_s: float
    received: int
    stored: int
    rss_mib: float


def _slope(samples: list[SoakSample]) -> float:
    """Least-squares slope of RSS over time, MiB/min (0 with fewer than two samples)."""
    if len(samples) < 2:
        return 0.0
    xs = [s.t_s / 60 for s in samples]
    ys = [s.rss_mib for s in samples]
    mx, my = sum(xs) / len(xs), sum(ys) / len(ys)
    sxx = sum((x - mx) ** 2 for x in xs)
    return sum((x - mx) * (y - my) for x, y in zip(xs, ys, strict=True)) / sxx if sxx else 0.0


@dataclass(frozen=True, slots=True)
class SoakSummary:
    """RSS at 1 min and at the end (MiB), slopes (MiB/min), and whether that is flat."""

    base_mib: float
    end_mib: float
    slope: float
    slope_last_half: float
    flat: bool


def soak_summary(samples: list[SoakSample]) -> SoakSummary:
    """Flat: the RSS grew less than 5 % from 1 min (the first sample after it) to the end."""
    after = [s for s in samples if s.t_s >= SOAK_WARMUP_S] or samples
    base, end = after[0].rss_mib, samples[-1].rss_mib
    half = [s for s in samples if s.t_s >= samples[-1].t_s / 2]
    return SoakSummary(base, end, _slope(after), _slope(half), end - base < SOAK_FLAT_GROWTH * base)


async def _soak_ingest(
    port: int, tmp: Path, plan: SoakPlan, console: Console
) -> tuple[list[SoakSample], int]:
    """Ingest as in (b) while the publisher process feeds it; sample the RSS periodically."""
    cfg = parse_config(
        {
            "broker": {
                "url": f"mqtt://127.0.0.1:{port}",
                "client_id": "bench-soak",
                "receive_maximum": 2000,
            },
            "ingest": {"metrics_listen": "", "batch_max_messages": 2000, "batch_max_ms": 20},
            "store": {"path": str(tmp / "store-soak")},
        },
        environ={},
    )
    samples: list[SoakSample] = []
    with Store(cfg.store.path) as store:
        async with IngestService(cfg, store) as svc:
            await svc.wait_subscribed()

            def stored() -> int:
                return int(
                    sum(
                        s.value
                        for m in svc.metrics.registry.collect()
                        if m.name == "boltwatch_ingest_readings_stored"
                        for s in m.samples
                        if s.name.endswith("_total")
                    )
                )

            def sample(t0: float) -> None:
                got = SoakSample(
                    time.monotonic() - t0,
                    int(svc.metrics.messages._value.get()),
                    stored(),
                    rss_mib(),
                )
                samples.append(got)
                console.print(
                    f"  {got.t_s:6.0f} s  received {got.received:>10,}  stored {got.stored:>10,}"
                    f"  RSS {got.rss_mib:7.1f} MiB"
                )

            feeder = _spawn_feeder(port, plan)
            t0 = time.monotonic()
            sample(t0)
            next_at = plan.every_s
            while feeder.poll() is None:
                await asyncio.sleep(min(1.0, max(0.0, t0 + next_at - time.monotonic())))
                if time.monotonic() - t0 >= next_at:
                    sample(t0)
                    next_at += plan.every_s
            out, _ = feeder.communicate()
            sent = int(out.split()[-1]) if out.split() else 0
            await _poll(lambda: stored() >= sent and not svc._queue, 120)
            sample(t0)
    return samples, sent


def soak(plan: SoakPlan) -> int:
    """Run the soak and print the RSS table and the verdict."""
    seconds, rate, devices, every_s = plan.seconds, plan.rate, plan.devices, plan.every_s
    logging.getLogger("gmqtt").setLevel(logging.CRITICAL)
    console = Console(width=max(Console().width, 100))
    console.print(
        f"soak: ingest as in (b), {rate:,.0f} msg/s of single-reading JSON from {devices:,} "
        f"devices for {seconds:,.0f} s; RSS every {every_s:g} s"
    )
    with tempfile.TemporaryDirectory() as d:
        tmp = Path(d)
        broker, port = _mosquitto(tmp)
        try:
            samples, sent = asyncio.run(_soak_ingest(port, tmp, plan, console))
        finally:
            broker.send_signal(signal.SIGTERM)
            broker.wait(30)
    table = Table(title=f"soak, ingest RSS at {rate:,.0f} msg/s")
    for col in ("time (s)", "messages stored", "RSS (MiB)"):
        table.add_column(col, justify="right")
    for s in samples:
        table.add_row(f"{s.t_s:,.0f}", f"{s.stored:,}", f"{s.rss_mib:,.1f}")
    summary = soak_summary(samples)
    base, end = summary.base_mib, summary.end_mib
    duration = samples[-1].t_s
    table.caption = (
        f"published {sent:,} in {seconds:,.0f} s ({sent / seconds:,.0f} msg/s), "
        f"stored {samples[-1].stored:,}; python {sys.version.split()[0]}"
    )
    console.print(table)
    console.print(
        f"RSS at 1 min {base:,.1f} MiB, at the end ({duration:,.0f} s) {end:,.1f} MiB "
        f"({(end - base) / base:+.1%}); slope after the first minute {summary.slope:+.2f} "
        f"MiB/min (over the last half {summary.slope_last_half:+.2f} MiB/min); "
        f"verdict: {'flat' if summary.flat else 'NOT flat'} "
        f"(flat: < {SOAK_FLAT_GROWTH:.0%} growth from 1 min to the end)"
    )
    if samples[-1].stored < sent:
        console.print(f"[red]only {samples[-1].stored:,} of {sent:,} messages stored[/]")
        return 1
    return 0


def main(argv: list[str] | None = None) -> int:
    """Run the benchmark and print the table."""
    ap = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    ap.add_argument("--messages", type=int, default=100_000, help="single-reading messages")
    ap.add_argument("--batches", type=int, default=5_000, help="100-reading gateway batches")
    ap.add_argument("--points", type=int, default=1_000_000, help="InfluxDB points")
    ap.add_argument("--spb", type=int, default=3_000, help="Sparkplug B DDATA messages")
    ap.add_argument("--spb-feed", nargs=2, metavar=("PORT", "FILE"), help=argparse.SUPPRESS)
    ap.add_argument(
        "--soak", type=float, metavar="SECONDS", help="only the RSS soak, for this long"
    )
    ap.add_argument(
        "--soak-rate", type=float, default=5_000.0, metavar="MSG_PER_S", help="soak: msg/s"
    )
    ap.add_argument("--soak-devices", type=int, default=1_000, help="soak: size of the fleet")
    ap.add_argument(
        "--soak-sample", type=float, default=10.0, metavar="SECONDS", help="soak: RSS every"
    )
    # The soak's publisher process (internal).
    ap.add_argument("--feed", nargs=4, metavar=("PORT", "RATE", "S", "N"), help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args.spb_feed is not None:
        logging.getLogger("gmqtt").setLevel(logging.CRITICAL)
        asyncio.run(_spb_publish(int(args.spb_feed[0]), Path(args.spb_feed[1]).read_bytes()))
        return 0
    if args.feed is not None:
        port, rate, seconds, devices = args.feed
        return feed_main(int(port), float(rate), float(seconds), int(devices))
    if args.soak is not None:
        return soak(SoakPlan(args.soak, args.soak_rate, args.soak_devices, args.soak_sample))
    logging.getLogger("gmqtt").setLevel(logging.CRITICAL)
    console = Console(width=max(Console().width, 120))
    with tempfile.TemporaryDirectory() as d:
        tmp = Path(d)
        broker, port = _mosquitto(tmp)
        try:
            console.print(f"(a) mosquitto_sub, {args.messages:,} messages ...")
            ref = reference(port, tmp, args.messages)
            console.print(f"(b) ingest, {args.messages:,} single-reading messages ...")
            feed = _json_feed(port, tmp, args.messages, 1, "single")
            single = asyncio.run(_ingest(port, tmp, feed, "single"))
            console.print(f"(c) ingest, {args.batches:,} gateway batches of 100 ...")
            feed = _json_feed(port, tmp, args.batches, 100, "batch")
            batched = asyncio.run(_ingest(port, tmp, feed, "batch"))
            console.print(
                f"(f) ingest, {args.spb:,} Sparkplug B DDATA of {SPB_METRICS} metrics ..."
            )
            spb = asyncio.run(_ingest(port, tmp, _spb_feed(port, tmp, args.spb), "spb"))
            console.print(
                f"(e) boltwatch run as shipped, {args.messages:,} single-reading messages of "
                "10,000 bolts ..."
            )
            fleet = asyncio.run(_service(port, tmp, args.messages, 10_000, "fleet"))
            backlog_n = args.messages // 5
            console.print(f"(e) boltwatch run as shipped, one bolt's backlog of {backlog_n:,} ...")
            backlog = asyncio.run(_service(port, tmp, backlog_n, 1, "backlog"))
        finally:
            broker.send_signal(signal.SIGTERM)
            broker.wait(30)
        console.print(f"(d) InfluxDB writer, {args.points:,} points into VictoriaMetrics ...")
        influx = influx_bench(tmp, args.points)
    rss_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    table = Table(title="ingest end to end through Mosquitto, QoS 1 (2-core machine)")
    cols = ("case", "msg/s", "readings/s", "ratio to (a)", "CPU µs/msg", "stored", "target")
    for col in cols:
        table.add_column(col, justify="left" if col == "case" else "right")
    table.add_row("(a) mosquitto_sub (reference)", f"{ref:,.0f}", f"{ref:,.0f}", "1.00", "", "", "")
    msg_s, rd_s, stored, cpu_us = single
    table.add_row(
        "(b) ingest, single-reading messages",
        f"{msg_s:,.0f}",
        f"{rd_s:,.0f}",
        f"{msg_s / ref:.2f}",
        f"{cpu_us:.1f}",
        f"{stored:,}",
        f"50,000 msg/s: {'met' if msg_s >= 50_000 else f'{msg_s / 50_000:.0%}'}; "
        f"<= 15 µs/msg: {'met' if cpu_us <= 15 else 'missed'}",
    )
    msg_s, rd_s, stored, cpu_us = batched
    table.add_row(
        "(c) ingest, 100-reading gateway batches",
        f"{msg_s:,.0f}",
        f"{rd_s:,.0f}",
        f"{rd_s / ref:.2f}",
        f"{cpu_us:.1f}",
        f"{stored:,}",
        f"500,000 readings/s: {'met' if rd_s >= 500_000 else f'{rd_s / 500_000:.0%}'}",
    )
    msg_s, rd_s, stored, cpu_us = spb
    table.add_row(
        f"(f) ingest, Sparkplug B DDATA of {SPB_METRICS} metrics",
        f"{msg_s:,.0f}",
        f"{rd_s:,.0f}",
        f"{rd_s / ref:.2f}",
        f"{cpu_us:.1f}",
        f"{stored:,}",
        f"300,000 readings/s: {'met' if rd_s >= 300_000 else f'{rd_s / 300_000:.0%}'}",
    )
    if influx is not None:
        pts, _ = influx
        table.add_row(
            "(d) InfluxDB writer -> VictoriaMetrics",
            "",
            f"{pts:,.0f} points/s",
            "",
            "",
            "",
            f"500,000 points/s: {'met' if pts >= 500_000 else f'{pts / 500_000:.0%}'}",
        )
    for label, (msg_s, cpu_us) in (
        ("(e) boltwatch run as shipped: 10,000 bolts, a reading each a message", fleet),
        ("(e) boltwatch run as shipped: one bolt's backlog", backlog),
    ):
        table.add_row(
            label,
            f"{msg_s:,.0f}",
            f"{msg_s:,.0f}",
            f"{msg_s / ref:.2f}",
            f"{cpu_us:.1f}",
            "",
            f">= 0.9 x (a): {'met' if msg_s >= 0.9 * ref else 'missed'}; "
            f"<= 15 µs/msg: {'met' if cpu_us <= 15 else 'missed'}",
        )
    table.caption = (
        f"peak RSS of the ingest process: {rss_mb:,.0f} MiB; python {sys.version.split()[0]}; "
        "(e) publishes with the soak's gmqtt publisher (10,000 topics) or mosquitto_pub (one)"
    )
    console.print(table)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
