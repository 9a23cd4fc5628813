"""`boltwatch simulate --broker`: a scenario's physics published through the firmware, for real."""

from __future__ import annotations

import time

import numpy as np
import pytest
from rich.console import Console

from boltwatch.simulate import build_scenario_fleet
from firmware_sim.scenario import load_scenario, run_scenario
from sensors.codec import TelemetryDecoder
from sensors.schema import DeviceKind
from tests.integration.conftest import Collector, MosquittoServer, Reaper, Received

pytestmark = pytest.mark.integration


async def test_demo_scenario_online_decodes_and_carries_the_physics(
    mosquitto: MosquittoServer,
) -> None:
    scenario = load_scenario("demo")
    result = run_scenario(scenario, seed=4, duration_s=24 * 3_600)
    fleet = build_scenario_fleet(
        scenario,
        result,
        mosquitto.url,
        devices=None,
        speed=20_000,
        gateway_size=4,
        sparkplug=False,
        seed=4,
    )
    decoder = TelemetryDecoder(clock=lambda: (result.start_ms + 2 * 86_400_000) / 1000)
    async with Collector(mosquitto.url, ["boltwatch/#"]) as sub:
        stats = await fleet.run(duration_s=24 * 3_600)
        # `published` counts readings and events (a gateway batch carries many readings).
        counted = _Counter(decoder)
        await sub.wait_for(
            lambda m: counted(m) >= stats.published,
            timeout=30,
            what="every reading and event",
        )
    assert stats.dropped == 0
    assert stats.acked == stats.published
    batch = decoder.decode_batch((m.topic, m.payload) for m in sub.messages)
    assert batch.errors == []
    assert batch.readings + len(batch.events) == stats.published
    bolts = batch.telemetry[DeviceKind.CBOLT]
    assert set(bolts.device_id) == {d for g in result.bolts for d in g.device_id}
    # The loosening bolt's readings follow its physics: preload falls far below its start.
    loose = bolts.device_id == "bridge-loose-b001"
    order = np.argsort(bolts.ts_ms[loose])
    preload = bolts.values["preload_kn"][loose][order]
    assert preload[-5:].mean() < 0.8 * preload[:5].mean()
    healthy = bolts.device_id == "bridge-b001"
    h = bolts.values["preload_kn"][healthy]
    assert h.std() / h.mean() < 0.05
    # Machines publish on their own topics; each device announced itself with a retained birth.
    assert DeviceKind.PRINTER3D in batch.telemetry
    assert DeviceKind.LASER_CUTTER in batch.telemetry
    births = {st.device_id for st in batch.statuses if st.status.state == "online"}
    assert {"printer-1", "laser-1", "bridge-loose-b001"} <= births


class _Counter:
    """Readings and events in the messages so far, decoding at most every half second."""

    def __init__(self, decoder: TelemetryDecoder) -> None:
        self.decoder = decoder
        self.last = 0.0
        self.count = 0

    def __call__(self, messages: list[Received]) -> int:
        now = time.monotonic()
        if now - self.last >= 0.5:
            self.last = now
            out = self.decoder.decode_batch((m.topic, m.payload) for m in list(messages))
            self.count = out.readings + len(out.events)
        return self.count


async def test_devices_multiplies_the_fleet(mosquitto: MosquittoServer) -> None:
    scenario = load_scenario("sudden-loss")
    result = run_scenario(scenario, seed=1, duration_s=3_600)
    fleet = build_scenario_fleet(
        scenario,
        result,
        mosquitto.url,
        devices=25,
        speed=50_000,
        gateway_size=10,
        sparkplug=False,
        seed=1,
    )
    assert len(fleet.nodes) == 25
    assert len({n.device_id for n in fleet.nodes}) == 25
    assert len(fleet.uplinks) == 3
    stats = await fleet.run(duration_s=3_600)
    assert stats.sampled >= 25 * 3_600 / 300 * 0.9
    Console(record=True).print(stats)


async def test_cli_online_stops_cleanly_on_sigterm_without_last_will(
    mosquitto: MosquittoServer, reaper: Reaper
) -> None:
    import asyncio
    import signal
    import sys
    from pathlib import Path

    exe = Path(sys.executable).parent / "boltwatch"
    async with Collector(mosquitto.url, ["boltwatch/#"]) as sub:
        proc = reaper.track(  # killed at teardown if the test fails
            await asyncio.create_subprocess_exec(
                str(exe),
                "simulate",
                "--scenario",
                "sudden-loss",
                "--broker",
                mosquitto.url,
                "--speed",
                "600",
                "--gateway-size",
                "5",
                stdout=asyncio.subprocess.PIPE,
                stderr=asyncio.subprocess.PIPE,
            )
        )
        await sub.wait_for(lambda m: len(sub.on("/telemetry")) >= 5, timeout=30, what="telemetry")
        proc.send_signal(signal.SIGTERM)
        out, err = await asyncio.wait_for(proc.communicate(), 30)
        await asyncio.sleep(0.5)
    assert proc.returncode == 0, err.decode()
    assert "published" in out.decode()
    wills = [m for m in sub.on("/status") if b"offline" in m.payload]
    assert wills == [], "a clean stop must not fire the last will"
