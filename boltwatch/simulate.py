"""``boltwatch simulate``: the device simulator, offline to CSV or online to a broker."""

from __future__ import annotations

import asyncio
import logging
import math
import random
import signal
import time
from collections.abc import Mapping
from pathlib import Path

import numpy as np
import numpy.typing as npt
from rich.console import Console
from rich.progress import BarColumn, Progress, SpinnerColumn, TextColumn, TimeElapsedColumn
from rich.table import Table

from boltwatch.broker_identity import BrokerIdentityError, load_device_credentials
from firmware_sim.bolts import BoltSeries
from firmware_sim.firmware import (
    BatteryModel,
    DirectUplink,
    FirmwareConfigError,
    GatewayUplink,
    InstallationRecord,
    Node,
    SampleFn,
    Uplink,
)
from firmware_sim.fleet import Fleet, FleetStats
from firmware_sim.machines import MachineRun
from firmware_sim.offline import write_outputs
from firmware_sim.scenario import (
    ScenarioFile,
    SimulationResult,
    list_scenarios,
    load_scenario,
    parse_duration,
    run_scenario,
)
from sensors.schema import DeviceKind

__all__ = ["build_scenario_fleet", "print_library", "run_offline", "run_online"]

Float64 = npt.NDArray[np.float64]


def print_library(out: Console) -> None:
    """The shipped scenarios with their descriptions."""
    table = Table(title="scenario library (boltwatch simulate --scenario NAME)")
    table.add_column("name")
    table.add_column("duration", justify="right")
    table.add_column("bolts", justify="right")
    table.add_column("machines", justify="right")
    table.add_column("description")
    for name in list_scenarios():
        s = load_scenario(name)
        table.add_row(
            name,
            str(s.duration),
            str(sum(b.count for b in s.bolts)),
            str(len(s.machines)),
            s.description,
        )
    out.print(table)


def run_offline(
    scenario_name: str, seed: int, duration: str | None, out_dir: Path, out: Console
) -> dict[str, int]:
    """Simulate a scenario as fast as numpy allows and write the CSVs and ground truth.

    Returns:
        Rows written per file.
    """
    scenario: ScenarioFile = load_scenario(scenario_name)
    duration_s = None if duration is None else parse_duration(duration, "--duration")
    with Progress(
        SpinnerColumn(),
        TextColumn("{task.description}"),
        BarColumn(),
        TextColumn("{task.fields[rows]:,} rows"),
        TimeElapsedColumn(),
        console=out,
        transient=False,
    ) as progress:
        task = progress.add_task(f"simulating {scenario.name} (seed {seed})", total=None, rows=0)
        t0 = time.perf_counter()
        result = run_scenario(scenario, seed, duration_s=duration_s)
        sim_s = time.perf_counter() - t0
        progress.update(task, description="writing CSV", rows=0)

        def tick(name: str, rows: int) -> None:
            progress.update(task, description=f"writing {name}", rows=rows)

        rows = write_outputs(result, out_dir, tick)
        progress.update(task, description="done", rows=sum(rows.values()))
    table = Table(
        title=f"{scenario.name}: seed {seed}, {result.duration_s / 86_400:g} days → {out_dir}"
    )
    table.add_column("file")
    table.add_column("rows", justify="right")
    for name, n in rows.items():
        table.add_row(name, f"{n:,}")
    out.print(table)
    if result.bolt_samples:
        out.print(
            f"{result.bolt_samples:,} bolt samples simulated in {sim_s:.2f} s "
            f"({result.bolt_samples / max(sim_s, 1e-9) / 1e6:.1f} M samples/s)"
        )
    return rows


def _series_sample(t_ms: npt.NDArray[np.int64], preload: Float64, temp: Float64) -> SampleFn:
    """A bolt's sensor from a simulated series: the latest sample at or before the time asked."""
    last = t_ms.shape[0] - 1

    def sample(now_ms: int) -> Mapping[str, float] | None:
        k = min(max(int(np.searchsorted(t_ms, now_ms, side="right")) - 1, 0), last)
        p = float(preload[k])
        if math.isnan(p):
            return None  # a dropout: the sensor gives nothing
        return {"preload_kn": p, "temp_c": float(temp[k])}

    return sample


def _machine_sample(run: MachineRun, start_ms: int) -> SampleFn:
    t_ms = (start_ms + np.round(run.t_s * 1000)).astype(np.int64)
    last = t_ms.shape[0] - 1
    fields = list(run.values)

    def sample(now_ms: int) -> Mapping[str, float] | None:
        k = min(max(int(np.searchsorted(t_ms, now_ms, side="right")) - 1, 0), last)
        values = {f: float(run.values[f][k]) for f in fields}
        if all(math.isnan(v) for v in values.values()):
            return None
        return values

    return sample


def build_scenario_fleet(
    scenario: ScenarioFile,
    result: SimulationResult,
    url: str,
    *,
    devices: int | None,
    speed: float,
    gateway_size: int,
    sparkplug: bool,
    seed: int,
    credentials: Mapping[str, str] | None = None,
) -> Fleet:
    """Nodes driven by a scenario's physics: bolts behind gateways, machines on their own links.

    With ``devices`` the bolts are multiplied (or cut) to that many: bolt ``k`` beyond the
    scenario's own replays the physics of bolt ``k mod n`` under its own id.

    With ``credentials`` (device id -> secret, from ``boltwatch broker config``) every connection
    logs in as its own device: a gateway (``gw-000``, ...) with its id and secret, a machine with
    its own. Bolts have no connection of their own (they report through their gateway), so they
    need no secret.

    Raises:
        FirmwareConfigError: ``credentials`` lack the secret of a gateway or a machine.
    """

    def login(device_id: str) -> tuple[str, str] | None:
        if credentials is None:
            return None
        secret = credentials.get(device_id)
        if secret is None:
            raise FirmwareConfigError(
                "credentials",
                f"no secret for {device_id!r}: add it to the registry (site {result.site!r}) "
                "and run `boltwatch broker config` again",
            )
        return device_id, secret

    interval_s = parse_duration(scenario.interval, "interval")
    rows: list[tuple[str, BoltSeries, int]] = [
        (dev, g, i) for g in result.bolts for i, dev in enumerate(g.device_id)
    ]
    if devices is not None and rows:
        base = rows
        rows = [
            (dev if k < len(base) else f"{dev}-x{k // len(base)}", g, i)
            for k in range(devices)
            for dev, g, i in (base[k % len(base)],)
        ]
    installs = {e.device_id: e for g in result.bolts for e in g.events if e.type == "tightened"}
    master = random.Random(seed)  # noqa: S311 - simulation
    nodes: list[Node] = []
    for dev, g, i in rows:
        ev = installs.get(dev)
        record = (
            None
            if ev is None or ev.torque_nm is None or ev.preload_kn is None
            else InstallationRecord(ev.torque_nm, ev.preload_kn, ts_ms=ev.ts_ms)
        )
        nodes.append(
            Node(
                DeviceKind.CBOLT,
                result.site,
                dev,
                _series_sample(g.t_ms, g.preload_kn[i], g.temp_c[i]),
                interval_s=interval_s,
                fast_interval_s=max(interval_s / 5.0, 1.0),
                battery=BatteryModel(),
                installation=record,
                rng=random.Random(master.getrandbits(64)),  # noqa: S311 - simulation
            )
        )
    uplinks: list[Uplink] = [
        GatewayUplink(
            f"gw-{n // gateway_size:03d}",
            result.site,
            nodes[n : n + gateway_size],
            url,
            rng=random.Random(master.getrandbits(64)),  # noqa: S311 - simulation
            credentials=login(f"gw-{n // gateway_size:03d}"),
        )
        for n in range(0, len(nodes), gateway_size)
    ]
    for m, run in zip(scenario.machines, result.machines, strict=True):
        node = Node(
            run.spec.kind,
            result.site,
            run.spec.device_id,
            _machine_sample(run, result.start_ms),
            interval_s=parse_duration(m.interval, "interval"),
            rng=random.Random(master.getrandbits(64)),  # noqa: S311 - simulation
        )
        uplinks.append(
            DirectUplink(
                node,
                url,
                sparkplug=sparkplug,
                rng=random.Random(master.getrandbits(64)),  # noqa: S311
                credentials=login(run.spec.device_id),
            )
        )
    return Fleet(uplinks, speed=speed, start_ms=result.start_ms, seed=master.getrandbits(32))


def run_online(
    scenario_name: str,
    seed: int,
    duration: str | None,
    url: str,
    *,
    devices: int | None,
    speed: float,
    gateway_size: int,
    sparkplug: bool,
    out: Console,
    credentials: Path | None = None,
) -> FleetStats:
    """Publish a scenario's devices to a broker at ``speed`` x real time, with a live display.

    Stops at the end of the simulated duration, or on Ctrl-C / SIGTERM (cleanly: buffers are
    flushed and every connection sends DISCONNECT, so no last will is published). With
    ``credentials`` (``device-secrets.toml`` or its folder) each gateway and machine logs in
    with its own secret (see :func:`build_scenario_fleet`).

    Raises:
        FirmwareConfigError: The credentials cannot be read or lack a device.
    """
    logins: dict[str, str] | None = None
    if credentials is not None:
        try:
            logins = load_device_credentials(credentials)
        except BrokerIdentityError as exc:
            raise FirmwareConfigError("--credentials", str(exc)) from exc
    # gmqtt logs every lost connection with a traceback; the fleet counts them (reconnects).
    logging.getLogger("gmqtt").setLevel(logging.CRITICAL)
    scenario = load_scenario(scenario_name)
    duration_s = parse_duration(scenario.duration if duration is None else duration, "--duration")
    out.print(f"simulating {scenario.name} physics for {duration_s / 86_400:g} days ...")
    result = run_scenario(scenario, seed, duration_s=duration_s)
    fleet = build_scenario_fleet(
        scenario,
        result,
        url,
        devices=devices,
        speed=speed,
        gateway_size=gateway_size,
        sparkplug=sparkplug,
        seed=seed,
        credentials=logins,
    )
    return asyncio.run(_drive(fleet, duration_s, url, out))


async def _drive(fleet: Fleet, duration_s: float, url: str, out: Console) -> FleetStats:
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, fleet.request_stop)
    task = asyncio.create_task(fleet.run(duration_s=duration_s), name="fleet")
    columns = (
        SpinnerColumn(),
        TextColumn("{task.description}"),
        BarColumn(),
        TextColumn("{task.fields[line]}"),
    )
    try:
        with Progress(*columns, console=out, transient=False) as progress:
            bar = progress.add_task(f"→ {url}", total=duration_s, line="connecting")
            while not task.done():
                await asyncio.wait({task}, timeout=0.5)
                s = fleet.stats()
                progress.update(
                    bar,
                    completed=min(s.sim_elapsed_s, duration_s),
                    line=(
                        f"{s.online}/{s.uplinks} online  {s.published:,} published "
                        f"({s.published_per_s:,.0f}/s)  buffered {s.backlog:,}  "
                        f"dropped {s.dropped:,}  lag {s.lag_s:.1f}s"
                    ),
                )
        final: FleetStats = await task
    finally:
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.remove_signal_handler(sig)
    out.print(
        f"{final.nodes} devices, {final.sampled:,} readings sampled, {final.published:,} "
        f"published, {final.acked:,} acknowledged, {final.dropped:,} dropped, "
        f"{final.reconnects} reconnects, simulated {final.sim_elapsed_s / 3600:.1f} h in "
        f"{final.real_elapsed_s:.1f} s"
    )
    return final
