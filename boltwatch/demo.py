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
from collections.abc import Callable
from pathlib import Path
from typing import Final

from rich.console import Console
from rich.progress import BarColumn, Progress, SpinnerColumn, TextColumn

from boltwatch.broker import EmbeddedBroker
from boltwatch.config import parse_config
from boltwatch.run import ServiceSummary, StopDeadline, run_service
from boltwatch.simulate import build_scenario_fleet
from firmware_sim.scenario import load_scenario, parse_duration, run_scenario, scenario_registry
from ingest.store import Store

__all__ = ["DEMO_RULES", "run_demo"]

DEMO_RULES: Final = """
[defaults]
for = "0s"
clear_after = "10m"
repeat_interval = "7d"
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
"""Everything to the console, quickly, on the simulation's clock (its hours pass in seconds): no
repeats within the scenario's two days."""
_CATCH_UP_S: Final = 15.0
"""At the end, ingest gets this long (real seconds) to store what the fleet published."""
_STALLED_S: Final = 2.0
"""... and stops waiting when nothing more was stored for this long."""


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


async def run_demo(
    out: Console,
    *,
    duration_s: float | None,
    speed: float,
    seed: int = 1,
    hours: float | None = None,
    keep: bool = False,
) -> ServiceSummary:
    """Run the demo until ``duration_s`` real seconds have passed, ``hours`` are simulated (or
    the scenario ends), or Ctrl-C.

    Everything runs on the simulation's clock: ingest's receipt times and lateness, the silence
    watcher and the alerts' timers, so only what the simulation caused raises an alert. The stop
    (Ctrl-C, SIGTERM or the end) is bounded by a :class:`~boltwatch.run.StopDeadline`.

    Args:
        out: Where everything is printed.
        duration_s: Real seconds to run (None: until the simulated two days are over).
        speed: Simulated seconds per real second.
        seed: The simulator's seed.
        hours: Simulated hours to run (None: the scenario's two days). Unlike ``duration_s``,
            the same story on any machine: a slow one takes longer to tell it.
        keep: Once the story is told, keep the service (its API and console) up until Ctrl-C
            or SIGTERM, to look around.
    """
    logging.getLogger("gmqtt").setLevel(logging.CRITICAL)
    logging.getLogger("amqtt").setLevel(logging.WARNING)
    scenario = load_scenario("demo")
    sim_s = parse_duration(scenario.duration, "duration")
    if hours is not None:
        sim_s = min(sim_s, hours * 3600.0)
    out.print(f"[bold]boltwatch demo[/]: {scenario.description}")
    out.print(f"simulating {sim_s / 3600:.0f} h of physics (seed {seed}) ...")
    result = run_scenario(scenario, seed)
    loop = asyncio.get_running_loop()
    stop = asyncio.Event()
    deadline = StopDeadline()

    def on_signal() -> None:
        deadline.start()
        stop.set()

    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, on_signal)
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
                        "registry": {"path": _registry_path(scenario.name)},
                    },
                    environ={},
                )
                # Built before the service: its simulated clock is the service's clock. It stands
                # at the scenario's start until the fleet runs, and where it ended afterwards.
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
                clock = _DemoClock(fleet.sim_ms)
                ready = asyncio.Event()
                links: list[str | None] = []
                service = asyncio.create_task(
                    run_service(
                        config,
                        out,
                        mqtt_version=4,
                        stop=stop,
                        alert_console=out,
                        api_token=token,
                        on_ready=ready.set,
                        on_console=lambda web: links.append(web.login_link(f"http://{api}")),
                        clock=clock,
                        speed=speed,
                        deadline=deadline,
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
                if links and links[0]:
                    out.print(f"  console: [bold]{links[0]}[/] (a one-time login link)")
                published = await _drive(
                    fleet, sim_s, duration_s, stop, out, story_over=clock.story_over
                )
                await _catch_up(Path(tmp) / "data", published, stop)
                if keep and not stop.is_set():
                    out.print("the story is over; the API and the console stay up (Ctrl-C stops)")
                    await stop.wait()
                deadline.start()
                stop.set()
                return await service
    finally:
        deadline.cancel()
        for sig in (signal.SIGINT, signal.SIGTERM):
            with contextlib.suppress(Exception):
                loop.remove_signal_handler(sig)


class _DemoClock:
    """The service's clock in the demo (epoch s): the simulation's while the fleet runs; once
    the story is over, it goes on from there at real time, so that alerts of readings the
    service is still catching up with come due (a group wait of 1 s passes) without the jump of
    hours that would make every device look silent.
    """

    def __init__(self, sim_ms: Callable[[], int]) -> None:
        self.sim_ms = sim_ms
        self._over: tuple[int, float] | None = None

    def story_over(self) -> None:
        """The fleet stopped: from now on the clock runs at real time."""
        self._over = (self.sim_ms(), time.monotonic())

    def __call__(self) -> float:
        if self._over is None:
            return self.sim_ms() / 1000.0
        end_ms, at = self._over
        return end_ms / 1000.0 + (time.monotonic() - at)


def _registry_path(name: str) -> str | None:
    path = scenario_registry(name)
    return None if path is None else str(path)


async def _catch_up(store_dir: Path, published: int, stop: asyncio.Event) -> None:
    """Wait until ingest has stored what the fleet published (bounded; not after Ctrl-C).

    When the fleet ends, the last of its messages are still on their way through the broker:
    stopping at once would drop them, and with them the end of the story.
    """
    started = time.monotonic()
    last, moved = -1, started
    with Store(store_dir) as reader:  # a second connection: WAL lets it read while ingest writes
        while not stop.is_set() and time.monotonic() - started < _CATCH_UP_S:
            stats = await asyncio.to_thread(reader.stats)
            stored = stats.readings + stats.events
            if stored >= published:
                return
            if stored != last:
                last, moved = stored, time.monotonic()
            elif time.monotonic() - moved > _STALLED_S:
                return
            await asyncio.sleep(0.1)


async def _drive(
    fleet: object,
    sim_s: float,
    duration_s: float | None,
    stop: asyncio.Event,
    out: Console,
    *,
    story_over: Callable[[], None],
) -> int:
    """Run the fleet with a progress bar; returns the readings and events it published
    (``story_over`` is called once the fleet has stopped)."""
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
    story_over()
    out.print(
        f"simulated {stats.sim_elapsed_s / 3600:.1f} h in {stats.real_elapsed_s:.0f} s: "
        f"{stats.published:,} messages from {stats.nodes} devices"
    )
    return stats.published
