"""Soak: ``boltwatch run`` (ingest, detection, alerts) at a rated load for a set time; is its
memory flat?

A real Mosquitto on a free port, ``boltwatch run`` as its own process (store in a temporary
folder), and a publisher process (gmqtt, QoS 1) sending single-reading JSON messages of healthy
bolts at a steady ``--rate`` from a fleet of ``--devices``. Every ``--sample`` seconds (default
10): the RSS of ``boltwatch run`` (``VmRSS``), the readings stored, and what the reference got.

Reference, in the same run: ``mosquitto_sub`` (C) subscribed to the same topics at QoS 1 receives
the same stream; its rate is what the broker delivers, and the ratio of boltwatch's storage rate
to it says whether the service keeps up (1.00). The RSS reference is the RSS at the end of the
first minute (caches and pools have filled by then).

Prints a table per minute (RSS MB, readings stored, rate, reference rate, ratio), then the
verdict: the least-squares slope of the RSS over the second half of the run, in MB/hour, is flat
when below ``--flat-mb-h`` (default 5). MB = 10^6 bytes.

Usage: python bench/soak.py [--minutes 30] [--rate 2000] [--devices 1000]   (``make soak``)
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import logging
import math
import os
import shutil
import signal
import sqlite3
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass
from pathlib import Path

# This file lives in bench/: drop that folder from sys.path (bench/ingest.py would shadow the
# ingest package), and make the repository root importable for bench.ingest's helpers.
_HERE = Path(__file__).resolve().parent
sys.path[:] = [p for p in sys.path if Path(p or ".").resolve() != _HERE]
if str(_HERE.parent) not in sys.path:
    sys.path.append(str(_HERE.parent))

from rich.console import Console  # noqa: E402 - after the sys.path fix above
from rich.table import Table  # noqa: E402

from bench.ingest import _mosquitto  # noqa: E402

BOLTWATCH = Path(sys.executable).parent / "boltwatch"
WARMUP_S = 60.0
"""The RSS reference is taken at the end of the first minute."""
SHORT_S = 600.0
"""A soak shorter than this still sees the warm-up in its second half."""
DRAIN_S = 120.0
"""After the publisher ends, how long the service may take to store what is left."""


def rss_mb(pid: int) -> float:
    """``VmRSS`` of a process, MB (0 when it is gone)."""
    try:
        text = Path(f"/proc/{pid}/status").read_text()
    except OSError:
        return 0.0
    line = next((x for x in text.splitlines() if x.startswith("VmRSS:")), "VmRSS: 0 kB")
    return int(line.split()[1]) * 1024 / 1e6


def stored(store_dir: Path) -> int:
    """Readings in the store, as the store counts them (a read-only second connection)."""
    file = store_dir / "boltwatch.sqlite3"
    if not file.exists():
        return 0
    try:
        conn = sqlite3.connect(f"file:{file}?mode=ro", uri=True, timeout=10)
        try:
            return int(conn.execute("SELECT coalesce(sum(n), 0) FROM reading_counts").fetchone()[0])
        finally:
            conn.close()
    except sqlite3.OperationalError:  # tables not created yet
        return 0


# -- the publisher process (--feed) ----------------------------------------------------------------


async def _feed(port: int, rate: float, seconds: float, devices: int) -> int:
    """``rate`` msg/s for ``seconds``, round robin over the fleet; healthy, never-repeating
    preloads (a repeated value would be a stuck sensor, and an alert per bolt)."""
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
        while sent < due:  # catch up with the schedule: a steady rate whatever the tick
            dev, seq = sent % devices, sent // devices
            kn = 50.0 + dev % 40 * 0.5 + ((seq * 7 + dev * 3) % 11 - 5) / 100
            client.publish(
                topics[dev], f'{{"ts":{now_ms},"seq":{seq},"preload_kn":{kn:.2f}}}', qos=1
            )
            sent += 1
        await asyncio.sleep(0.02)
    # The last PUBACKs (bounded: a broker gone would otherwise hold us here).
    with contextlib.suppress(TimeoutError):
        async with asyncio.timeout(30):
            await client._persistent_storage.wait_empty()
    await client.disconnect()
    return sent


def feed_main(port: int, rate: float, seconds: float, devices: int) -> int:
    """Entry point of the publisher process: prints how many messages it sent."""
    logging.getLogger("gmqtt").setLevel(logging.CRITICAL)
    print(asyncio.run(_feed(port, rate, seconds, devices)), flush=True)
    return 0


# -- the reference ---------------------------------------------------------------------------------


class Reference:
    """``mosquitto_sub`` at QoS 1 on the soak's topics, counting what it receives (one line per
    message: ``-F .``). Not available when the program is not installed."""

    def __init__(self, port: int) -> None:
        self.received = 0
        self.proc: subprocess.Popen[bytes] | None = None
        exe = shutil.which("mosquitto_sub")
        if exe is None:
            return
        self.proc = subprocess.Popen(
            [exe, "-h", "127.0.0.1", "-p", str(port), "-q", "1", "-t", "boltwatch/v1/soak/#",
             "-F", "."],
            stdout=subprocess.PIPE,
        )  # fmt: skip
        threading.Thread(target=self._count, daemon=True).start()

    def _count(self) -> None:
        stdout = self.proc.stdout if self.proc is not None else None
        if stdout is None:
            return
        fd = stdout.fileno()
        while chunk := os.read(fd, 65_536):
            self.received += chunk.count(b"\n")

    def stop(self) -> None:
        """End the subscriber."""
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            with contextlib.suppress(subprocess.TimeoutExpired):
                self.proc.wait(10)
            if self.proc.poll() is None:
                self.proc.kill()


# -- the soak --------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Sample:
    """One sample: seconds since the load started, RSS (MB), readings stored, reference count."""

    t_s: float
    rss_mb: float
    stored: int
    reference: int


def slope_mb_per_h(samples: list[Sample]) -> float:
    """Least-squares slope of RSS over time, MB/hour (0 with fewer than two samples)."""
    if len(samples) < 2:
        return 0.0
    xs = [s.t_s / 3600 for s in samples]
    ys = [s.rss_mb for s in samples]
    mx, my = sum(xs) / len(xs), sum(ys) / len(ys)
    sxx = sum((x - mx) ** 2 for x in xs)
    return sum((x - mx) * (y - my) for x, y in zip(xs, ys, strict=True)) / sxx if sxx else 0.0


@dataclass(frozen=True, slots=True)
class Plan:
    """What the soak runs."""

    seconds: float
    rate: float
    devices: int
    every_s: float
    flat_mb_h: float


def _config(tmp: Path, port: int) -> Path:
    config = tmp / "boltwatch.toml"
    config.write_text(
        f'[broker]\nurl = "mqtt://127.0.0.1:{port}"\nclient_id = "soak-ingest"\n'
        '[ingest]\nmetrics_listen = ""\n'
        f'[store]\npath = "{tmp / "data"}"\n'
        '[alerts]\napi_listen = ""\n'
    )
    return config


def _start(config: Path, log: Path) -> subprocess.Popen[bytes]:
    """``boltwatch run``, once it says it is subscribed."""
    with log.open("ab") as out:
        proc = subprocess.Popen(
            [str(BOLTWATCH), "run", "--config", str(config)], stdout=out, stderr=subprocess.STDOUT
        )
    deadline = time.monotonic() + 60
    while "ingesting " not in log.read_text(errors="replace"):
        if proc.poll() is not None or time.monotonic() > deadline:
            proc.kill()
            raise SystemExit(f"boltwatch run did not start:\n{log.read_text(errors='replace')}")
        time.sleep(0.1)
    return proc


def _run(plan: Plan, tmp: Path, console: Console) -> tuple[list[Sample], int, int, Reference]:
    """Broker, service, reference and publisher; samples until the publisher is done and the
    service has stored what was sent. Returns (samples, sent, pid, reference)."""
    broker, port = _mosquitto(tmp)
    service: subprocess.Popen[bytes] | None = None
    feeder: subprocess.Popen[bytes] | None = None
    ref = Reference(port)
    try:
        service = _start(_config(tmp, port), tmp / "run.log")
        time.sleep(0.5)  # the reference's subscription
        feed = [str(port), str(plan.rate), str(plan.seconds), str(plan.devices)]
        feeder = subprocess.Popen(
            [sys.executable, __file__, "--feed", *feed], stdout=subprocess.PIPE
        )
        t0 = time.monotonic()
        samples: list[Sample] = []
        store_dir = tmp / "data"

        def sample() -> Sample:
            got = Sample(
                time.monotonic() - t0, rss_mb(service.pid), stored(store_dir), ref.received
            )
            samples.append(got)
            return got

        sample()
        next_at = plan.every_s
        while feeder.poll() is None:
            time.sleep(min(1.0, max(0.0, t0 + next_at - time.monotonic())))
            if time.monotonic() - t0 >= next_at:
                s = sample()
                next_at += plan.every_s
                if int(s.t_s) % 60 < plan.every_s:
                    console.print(
                        f"  {s.t_s / 60:5.1f} min  RSS {s.rss_mb:7.1f} MB  stored {s.stored:>11,}"
                    )
            if service.poll() is not None:
                raise SystemExit(f"boltwatch run died:\n{(tmp / 'run.log').read_text()[-3000:]}")
        out, _ = feeder.communicate()
        sent = int(out.split()[-1]) if out.split() else 0
        deadline = time.monotonic() + DRAIN_S
        while stored(store_dir) < sent and time.monotonic() < deadline:
            time.sleep(0.2)
        sample()
        return samples, sent, service.pid, ref
    finally:
        for proc in (feeder, service):
            if proc is not None and proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
                try:
                    proc.wait(20)
                except subprocess.TimeoutExpired:
                    proc.kill()
                    proc.wait()
        ref.stop()
        broker.send_signal(signal.SIGTERM)
        broker.wait(30)


def soak(plan: Plan) -> int:
    """Run the soak; print the table and the verdict. Exit status 1 if readings were lost."""
    console = Console(width=max(Console().width, 110))
    console.print(
        f"soak: boltwatch run, {plan.rate:,.0f} msg/s of single-reading JSON from "
        f"{plan.devices:,} bolts for {plan.seconds / 60:g} min; RSS every {plan.every_s:g} s"
    )
    with tempfile.TemporaryDirectory() as d:
        samples, sent, _, ref = _run(plan, Path(d), console)
    table = Table(title=f"soak: boltwatch run at {plan.rate:,.0f} msg/s (QoS 1, Mosquitto)")
    for col in ("minute", "RSS MB", "readings stored", "rate /s", "mosquitto_sub /s", "ratio"):
        table.add_column(col, justify="right")
    by_minute: dict[int, Sample] = {}
    for s in samples[1:]:  # the last sample of each minute (a sample at 60.2 s ends minute 1)
        last = max(1, math.ceil(plan.seconds / 60))  # the drain's sample ends the last minute
        by_minute[min(last, max(1, math.ceil(s.t_s / 60 - 0.01)))] = s
    prev = samples[0]
    for minute in sorted(by_minute):
        s = by_minute[minute]
        dt = s.t_s - prev.t_s
        rate = (s.stored - prev.stored) / dt if dt > 0 else 0.0
        ref_rate = (s.reference - prev.reference) / dt if dt > 0 else 0.0
        ratio = f"{rate / ref_rate:.2f}" if ref.proc is not None and ref_rate > 0 else "-"
        ref_text = f"{ref_rate:,.0f}" if ref.proc is not None else "-"
        table.add_row(
            str(minute), f"{s.rss_mb:,.1f}", f"{s.stored:,}", f"{rate:,.0f}", ref_text, ratio
        )
        prev = s
    end = samples[-1]
    half = [s for s in samples if s.t_s >= end.t_s / 2]
    slope = slope_mb_per_h(half)
    warm = next((s for s in samples if s.t_s >= WARMUP_S), samples[-1])
    total_ratio = end.stored / end.reference if end.reference else float("nan")
    table.caption = (
        f"published {sent:,}, stored {end.stored:,}, mosquitto_sub received "
        + (f"{end.reference:,} (ratio {total_ratio:.3f})" if ref.proc is not None else "n/a")
        + f"; python {sys.version.split()[0]}"
    )
    console.print(table)
    flat = abs(slope) < plan.flat_mb_h
    console.print(
        f"RSS reference (at {warm.t_s / 60:.1f} min) {warm.rss_mb:,.1f} MB, at the end "
        f"{end.rss_mb:,.1f} MB ({(end.rss_mb - warm.rss_mb) / warm.rss_mb:+.1%}), peak "
        f"{max(s.rss_mb for s in samples):,.1f} MB; least-squares slope over the second half "
        f"({len(half)} samples): {slope:+.1f} MB/h; verdict: "
        f"{'flat' if flat else 'NOT flat'} (flat: |slope| < {plan.flat_mb_h:g} MB/h)"
    )
    if plan.seconds < SHORT_S:
        console.print(
            f"note: under {SHORT_S / 60:.0f} min the verdict is indicative only: the store's page "
            "cache (64 MiB) and the detector's pools are still filling"
        )
    if end.stored < sent:
        console.print(f"[red]only {end.stored:,} of {sent:,} readings stored[/]")
        return 1
    return 0


def main(argv: list[str] | None = None) -> int:
    """Parse the command line and run the soak (or, internally, the publisher)."""
    ap = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    ap.add_argument("--minutes", type=float, default=30.0, help="how long the load lasts")
    ap.add_argument("--rate", type=float, default=2_000.0, help="rated load, msg/s")
    ap.add_argument("--devices", type=int, default=1_000, help="bolts in the fleet")
    ap.add_argument("--sample", type=float, default=10.0, metavar="SECONDS", help="RSS every")
    ap.add_argument("--flat-mb-h", type=float, default=5.0, help="flat below this slope, MB/h")
    # The publisher process (internal).
    ap.add_argument("--feed", nargs=4, metavar=("PORT", "RATE", "S", "N"), help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args.feed is not None:
        port, rate, seconds, devices = args.feed
        return feed_main(int(port), float(rate), float(seconds), int(devices))
    plan = Plan(args.minutes * 60, args.rate, args.devices, args.sample, args.flat_mb_h)
    return soak(plan)


if __name__ == "__main__":
    raise SystemExit(main())
