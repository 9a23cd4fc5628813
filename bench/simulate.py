"""Simulator benchmark: offline bolt samples/s, and online devices driven through Mosquitto.

Offline: ``simulate_bolts`` for 1,000 bolt-years of 5-minute samples (vectorised numpy), next to
the reference of the same run: ``numpy.random.Generator.normal`` filling an array of the same
size (the cost of the noise alone, a floor no physics can beat). Target: >= 5M samples/s.

Online: a real Mosquitto on a free port; the reference is ``mosquitto_pub -l`` (C) publishing
gateway-sized batches read from a file, QoS 1, measured in messages/s and readings/s. Then the
fleet runner drives N bolts behind gateways of 100 at one reading per 10 s of simulated time, at a
rising speed-up, for a fixed wall time each; a step keeps up when it published >= 95 % of the
readings its simulated time asked for. "Bolts at real time" = bolts x the highest speed-up kept.
Target: >= 10,000 bolts at one reading per 10 s.

Usage: python bench/simulate.py [--offline-only] [--bolts N] [--seconds S]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
from rich.console import Console
from rich.table import Table

from firmware_sim.bolts import BoltGroupSpec, simulate_bolts
from firmware_sim.climate import ClimateSpec, air_temperature, joint_temperature

START_MS = 1_772_323_200_000


def offline(console: Console, bolt_years: int) -> Table:
    """Bolt samples per second, next to filling the same array with normal noise."""
    t = START_MS + np.arange(0, 365 * 86_400_000, 300_000, dtype=np.int64)
    joint = joint_temperature(air_temperature(ClimateSpec(), t, np.random.default_rng(0)), t)
    per_call = 100
    calls = max(bolt_years // per_call, 1)
    spec = BoltGroupSpec(count=per_call, id_prefix="b", install_s=-30 * 86_400)
    rng = np.random.default_rng(1)
    t0 = time.perf_counter()
    samples = 0
    for _ in range(calls):
        samples += simulate_bolts(spec, t, joint, rng).samples
    ours = time.perf_counter() - t0
    t0 = time.perf_counter()
    for _ in range(calls):
        rng.normal(0.0, 1.0, (per_call, t.shape[0]))
    ref = time.perf_counter() - t0
    table = Table(title=f"offline: {samples:,} bolt samples ({calls * per_call} bolt-years, 5-min)")
    for col in ("generator", "samples/s", "ratio to reference", "target"):
        table.add_column(col, justify="left" if col == "generator" else "right")
    table.add_row("numpy normal() fill (reference)", f"{samples / ref:,.0f}", "1.00", "")
    rate = samples / ours
    table.add_row(
        "simulate_bolts (physics + sensor)",
        f"{rate:,.0f}",
        f"{ref / ours:.2f}",
        f"5,000,000/s: {'met' if rate >= 5e6 else f'{rate / 5e6:.0%}'}",
    )
    console.print(table)
    return table


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _start_mosquitto(tmp: Path) -> tuple[subprocess.Popen[bytes], int]:
    exe = shutil.which("mosquitto") or "/usr/sbin/mosquitto"
    port = _free_port()
    conf = tmp / "mosquitto.conf"
    conf.write_text(f"listener {port} 127.0.0.1\nallow_anonymous true\nmax_queued_messages 0\n")
    proc = subprocess.Popen(
        [exe, "-c", str(conf)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
    )
    for _ in range(100):
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.1):
                return proc, port
        except OSError:
            time.sleep(0.05)
    proc.kill()
    raise SystemExit("mosquitto did not start")


def reference_pub(port: int, tmp: Path, messages: int, batch: int) -> tuple[float, float]:
    """mosquitto_pub -l: messages/s and readings/s of gateway batches of ``batch`` readings."""
    reading = {
        "kind": "cbolt",
        "device_id": "b000001",
        "ts": START_MS,
        "seq": 1,
        "preload_kn": 61.2,
        "temp_c": 11.0,
    }
    line = json.dumps({"readings": [reading] * batch}, separators=(",", ":"))
    path = tmp / "lines.txt"
    path.write_text((line + "\n") * messages)
    exe = shutil.which("mosquitto_pub") or "/usr/bin/mosquitto_pub"
    t0 = time.perf_counter()
    with path.open("rb") as fh:
        subprocess.run(
            [
                exe,
                "-h",
                "127.0.0.1",
                "-p",
                str(port),
                "-q",
                "1",
                "-t",
                "boltwatch/v1/s/gateway/gw/telemetry",
                "-l",
            ],
            stdin=fh,
            check=True,
        )
    dt = time.perf_counter() - t0
    return messages / dt, messages * batch / dt


async def _drive_bounded(
    url: str, bolts: int, speed: float, seconds: float
) -> tuple[int, int, float, float, int]:
    """:func:`_drive`, or TimeoutError when it has not stopped 90 s after its time."""
    async with asyncio.timeout(seconds + 90.0):
        return await _drive(url, bolts, speed, seconds)


async def _drive(
    url: str, bolts: int, speed: float, seconds: float
) -> tuple[int, int, float, float, int]:
    """Run the fleet for ``seconds`` of wall time.

    Returns:
        Readings sampled, readings published (handed to the broker, in gateway batches), the
        share of the readings the simulated time asked for that were sampled, the lag, and the
        backlog left in buffers and open batches at the end.
    """
    from firmware_sim.fleet import build_fleet

    fleet = build_fleet(bolts, url, nodes_per_gateway=100, interval_s=10.0, speed=speed, seed=1)
    task = asyncio.create_task(fleet.run(duration_s=None))
    # Connecting 100 gateways takes a moment: measure from when they are all online.
    for _ in range(600):
        if fleet.stats().online == len(fleet.uplinks):
            break
        await asyncio.sleep(0.05)
    first = fleet.stats()
    await asyncio.sleep(seconds)
    last = fleet.stats()
    fleet.request_stop()
    await task
    sampled = last.sampled - first.sampled
    published = last.published - first.published
    expected = bolts * (last.sim_elapsed_s - first.sim_elapsed_s) / 10.0
    return sampled, published, sampled / max(expected, 1.0), last.lag_s, last.backlog


def online(console: Console, bolts: int, seconds: float) -> Table:
    """Bolts driven at real time through gateways, next to mosquitto_pub."""
    rows: list[tuple[float, int, int, float, float, int]] = []
    best = 0.0
    with tempfile.TemporaryDirectory() as d:
        tmp = Path(d)
        proc, port = _start_mosquitto(tmp)
        try:
            ref_msgs, ref_readings = reference_pub(port, tmp, 20_000, 100)
            url = f"mqtt://127.0.0.1:{port}"
            speed = 1.0
            while speed <= 64:
                try:
                    step = asyncio.run(_drive_bounded(url, bolts, speed, seconds))
                except TimeoutError:
                    console.print(f"{speed:g}x: did not stop within {seconds + 90:g} s: overloaded")
                    break
                sampled, published, kept, lag, backlog = step
                rows.append((speed, sampled, published, kept, lag, backlog))
                # Kept up: sampled what the clock asked, the oldest due sample is less than one
                # interval late, and what waits to be published is at most one interval's
                # readings (open 5 s batches), not a growing backlog.
                if kept < 0.95 or lag > 10.0 or backlog > bolts:
                    break
                best = speed
                speed *= 2
        finally:
            proc.send_signal(signal.SIGTERM)
            proc.wait(timeout=10)
    table = Table(
        title=f"online: {bolts:,} bolts, 1 reading / 10 s each, gateways of 100, "
        f"{seconds:g} s per step"
    )
    for col in (
        "publisher",
        "speed-up",
        "sampled/s",
        "published/s",
        "kept up",
        "lag (sim s)",
        "backlog",
        "ratio to ref",
    ):
        table.add_column(col, justify="left" if col == "publisher" else "right")
    table.add_row(
        "mosquitto_pub -l, 100-reading batches (reference)",
        "",
        "",
        f"{ref_readings:,.0f}",
        "",
        "",
        "",
        "1.00",
    )
    for speed, sampled, published, kept, lag, backlog in rows:
        rate = published / seconds
        table.add_row(
            "boltwatch fleet (gateways of 100)",
            f"{speed:g}x",
            f"{sampled / seconds:,.0f}",
            f"{rate:,.0f}",
            f"{kept:.0%}",
            f"{lag:.1f}",
            f"{backlog:,}",
            f"{rate / ref_readings:.3f}",
        )
    equivalent = bolts * best
    table.caption = (
        f"bolts driven at real time (1 reading / 10 s): {equivalent:,.0f} "
        f"(target 10,000: {'met' if equivalent >= 10_000 else 'not met'}); "
        f"mosquitto_pub {ref_msgs:,.0f} msg/s"
    )
    console.print(table)
    return table


def main(argv: list[str] | None = None) -> int:
    """Run the benchmark and print the tables."""
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    ap.add_argument("--bolt-years", type=int, default=1_000, help="offline: bolt-years to simulate")
    ap.add_argument("--bolts", type=int, default=10_000, help="online: bolts in the fleet")
    ap.add_argument(
        "--seconds", type=float, default=10.0, help="online: wall seconds per speed step"
    )
    ap.add_argument("--offline-only", action="store_true", help="skip the broker part")
    args = ap.parse_args(argv)
    # Connection losses under overload are counted in the table; gmqtt's own log lines are noise.
    logging.getLogger("gmqtt").setLevel(logging.CRITICAL)
    console = Console(width=max(Console().width, 120))
    offline(console, args.bolt_years)
    if not args.offline_only:
        online(console, args.bolts, args.seconds)
    console.print(f"python {sys.version.split()[0]}, {os.cpu_count()} cores; one process")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
