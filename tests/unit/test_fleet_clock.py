"""The fleet's simulated clock: a run that reaches its end has simulated exactly its duration,
however long its uplinks take to shut down afterwards (the demo printed "simulated 30.x h" on a
loaded machine, where shutting down took seconds of real time, hours at the demo's speed)."""

from __future__ import annotations

import asyncio

import pytest

from firmware_sim.fleet import Fleet


@pytest.mark.asyncio
async def test_a_run_to_its_end_reports_its_duration_not_its_shutdown(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    fleet = Fleet([], speed=36_000.0, start_ms=0)  # ten simulated hours a real second

    async def slow_shutdown() -> None:
        await asyncio.sleep(0.3)  # three simulated hours

    monkeypatch.setattr(fleet, "_shutdown", slow_shutdown)
    stats = await fleet.run(duration_s=3_600.0)
    assert stats.sim_elapsed_s == 3_600.0
    assert fleet.sim_ms() == 3_600_000  # and a later run goes on from there
    assert stats.real_elapsed_s >= 0.3


@pytest.mark.asyncio
async def test_a_stopped_run_reports_where_it_stopped(monkeypatch: pytest.MonkeyPatch) -> None:
    fleet = Fleet([], speed=36_000.0, start_ms=0)
    task = asyncio.create_task(fleet.run(duration_s=36_000.0))
    await asyncio.sleep(0.1)
    fleet.request_stop()
    stats = await task
    assert 0 < stats.sim_elapsed_s < 36_000.0
