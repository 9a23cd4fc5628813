"""``boltwatch demo``: the whole product on one machine, with no setup at all.

An MQTT broker (amqtt) runs in-process; the simulator's ``demo`` installation — a bridge splice
with a loosening bolt and a stuck sensor, a fablab with a 3D printer whose thermistor falls off and
a laser cutter whose chiller fails — publishes through it at ``--speed`` times real time; ingest
stores everything in a throw-away folder, detection watches, and alerts are printed as they
happen (one line each: time, severity, kind, device, explanation) and served on the HTTP API.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import secrets
import signal
import socket
import tempfile
import time
from pathlib import Path
from typing import Final

from rich.console import Console
from rich.progress import BarColumn, Progress, SpinnerColumn, TextColumn

from boltwatch.broker import EmbeddedBroker
from boltwatch.config import parse_config
from boltwatch.run import ServiceSummary, run_service
from boltwatch.simulate import build_scenario_fleet
from firmware_sim.scenario import load_scenario, parse_duration, run_scenario

__all__ = ["DEMO_RULES", "run_demo"]

DEMO_RULES: Final = """
[defaults]
for = "0s"
clear_after = "10m"
repeat_interval = "1h"
group_wait = "1s"

[[routes]]
receivers = ["console"]
group_by = "device"

[[inhibit]]
source_min_severity = "critical"
target_max_severity = "warning"
equal = "device"

[[receivers]]
name = "console"
channel = "console"
"""
"""Everything to the console, quickly: the demo's simulated hours pass in seconds."""


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


async def run_demo(
    out: Console, *, duration_s: float | None, speed: float, seed: int = 1
) -> ServiceSummary:
    """Run the demo until ``duration_s`` real seconds have passed, the scenario ends, or Ctrl-C.

    Args:
        out: Where everything is printed.
        duration_s: Real seconds to run (None: until the simulated two days are over).
        speed: Simulated seconds per real second.
        seed: The simulator's seed.
    """
    logging.getLogger("gmqtt").setLevel(logging.CRITICAL)
    logging.getLogger("amqtt").setLevel(logging.WARNING)
    scenario = load_scenario("demo")
    sim_s = parse_duration(scenario.duration, "duration")
    out.print(f"[bold]boltwatch demo[/]: {scenario.description}")
    out.print(f"simulating {sim_s / 3600:.0f} h of physics (seed {seed}) ...")
    result = run_scenario(scenario, seed)
    loop = asyncio.get_running_loop()
    stop = asyncio.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    try:
        with tempfile.TemporaryDirectory(prefix="boltwatch-demo-") as tmp:
            rules = Path(tmp) / "rules.toml"
            rules.write_text(DEMO_RULES, encoding="utf-8")
            api = f"127.0.0.1:{_free_port()}"
            token = secrets.token_urlsafe(12)
            async with EmbeddedBroker() as broker:
                config = parse_config(
                    {
                        "broker": {"url": broker.url, "client_id": "boltwatch-demo"},
                        "store": {"path": str(Path(tmp) / "data")},
                        "ingest": {"metrics_listen": ""},
                        "alerts": {"rules": str(rules), "api_listen": api},
                        "log": {"level": "warning"},
                    },
                    environ={},
                )
                ready = asyncio.Event()
                service = asyncio.create_task(
                    run_service(
                        config,
                        out,
                        mqtt_version=4,
                        stop=stop,
                        alert_console=out,
                        api_token=token,
                        on_ready=ready.set,
                        late_by_age=False,
                    ),
                    name="service",
                )
                waiter = asyncio.create_task(ready.wait())
                await asyncio.wait({service, waiter}, return_when=asyncio.FIRST_COMPLETED)
                if service.done():
                    waiter.cancel()
                    return service.result()
                out.print(
                    f"broker {broker.url} (embedded); store {Path(tmp) / 'data'}; "
                    f"alerts API http://{api}/api/alerts with "
                    f"[bold]Authorization: Bearer {token}[/]"
                )
                out.print(f"  try: boltwatch alerts list --url http://{api} --token {token}")
                fleet = build_scenario_fleet(
                    scenario,
                    result,
                    broker.url,
                    devices=None,
                    speed=speed,
                    gateway_size=100,
                    sparkplug=False,
                    seed=seed,
                )
                await _drive(fleet, sim_s, duration_s, stop, out)
                stop.set()
                return await service
    finally:
        for sig in (signal.SIGINT, signal.SIGTERM):
            with contextlib.suppress(Exception):
                loop.remove_signal_handler(sig)


async def _drive(
    fleet: object, sim_s: float, duration_s: float | None, stop: asyncio.Event, out: Console
) -> None:
    from firmware_sim.fleet import Fleet

    assert isinstance(fleet, Fleet)  # noqa: S101 - narrowing for the type checker
    task = asyncio.create_task(fleet.run(duration_s=sim_s), name="fleet")
    started = time.monotonic()
    columns = (
        SpinnerColumn(),
        TextColumn("{task.description}"),
        BarColumn(),
        TextColumn("{task.fields[line]}"),
    )
    with Progress(*columns, console=out, transient=True) as progress:
        bar = progress.add_task("simulated", total=sim_s, line="")
        while not task.done() and not stop.is_set():
            if duration_s is not None and time.monotonic() - started >= duration_s:
                break
            await asyncio.wait({task}, timeout=0.25)
            s = fleet.stats()
            progress.update(
                bar,
                completed=min(s.sim_elapsed_s, sim_s),
                line=f"{s.sim_elapsed_s / 3600:5.1f} h  {s.published:,} messages",
            )
    fleet.request_stop()
    stats = await task
    out.print(
        f"simulated {stats.sim_elapsed_s / 3600:.1f} h in {stats.real_elapsed_s:.0f} s: "
        f"{stats.published:,} messages from {stats.nodes} devices"
    )
