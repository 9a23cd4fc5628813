"""The store's filesystem full under a QoS 1 stream: ingest stops acknowledging (the broker keeps
the messages), says why once, and resumes by itself when space returns, with nothing lost.

The store lives on a small tmpfs (16 MB) mounted for the test, which then fills it with a file;
space returns when the file is deleted. Needs root (``mount``); skipped with the reason otherwise.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import os
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from ingest.flow import water_marks
from tests.chaos.harness import (
    SEED,
    Fleet,
    Publisher,
    Service,
    counts,
    missing,
    scrape,
    size,
    stored,
    wait_until,
    write_config,
)
from tests.integration.conftest import MosquittoServer, Reaper, free_port

pytestmark = [pytest.mark.integration, pytest.mark.chaos]

FS_MB = 16
FULL_S = size(5.0, 60.0)
"""How long the filesystem stays full."""
READ_SLACK = 500
"""Messages one socket read past the gate may still deliver (a few hundred KiB)."""
BEFORE = size(2_000, 20_000)
"""Readings stored before the filesystem fills."""
DURING = size(3_000, 30_000)
"""Readings published while it is full."""
ERROR_LINE = "cannot write the store"
RESUMED_LINE = "store writable again"


@pytest.fixture
def small_fs(tmp_path: Path) -> Iterator[Path]:
    """A ``FS_MB`` MB tmpfs mounted on ``tmp_path/data``, unmounted at the end."""
    mount_point = tmp_path / "data"
    mount_point.mkdir()
    if os.geteuid() != 0:
        pytest.skip("mounting a small filesystem for the store needs root")
    done = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", f"size={FS_MB}m,mode=0755", "tmpfs", str(mount_point)],
        capture_output=True,
        check=False,
    )
    if done.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs for the store: {done.stderr.decode().strip()}")
    try:
        yield mount_point
    finally:
        # Lazy: a process the reaper has not killed yet must not keep the mount behind.
        subprocess.run(["umount", "-l", str(mount_point)], capture_output=True, check=False)


def sizes(folder: Path) -> dict[str, int]:
    """Bytes of each file of ``folder`` (what holds the space, in failure messages)."""
    return {f.name: f.stat().st_size for f in folder.iterdir()}


def fill(folder: Path) -> int:
    """Write ``folder/filler`` until the filesystem is full; returns its size in bytes."""
    written = 0
    chunk = b"\0" * 65_536
    with (folder / "filler").open("wb") as fh:
        try:
            while True:
                written += fh.write(chunk)
                fh.flush()
        except OSError as exc:
            if exc.errno != errno.ENOSPC:
                raise
        with contextlib.suppress(OSError):  # a partial buffer that no longer fits
            fh.flush()
    return written


async def test_full_disk_stops_acks_logs_once_and_resumes_losing_nothing(
    small_fs: Path, mosquitto: MosquittoServer, reaper: Reaper, tmp_path: Path
) -> None:
    store_dir = small_fs
    devices = 50
    fleet = Fleet(devices, (BEFORE + DURING) // devices, int(time.time() * 1000) - 60_000)
    total = fleet.total
    port = free_port()
    config = write_config(
        tmp_path / "boltwatch.toml", broker_url=mosquitto.url, store=store_dir, metrics_port=port
    )
    svc = Service(reaper, config, tmp_path / "run.log")
    svc.start()
    await svc.ready()
    async with Publisher(mosquitto.url, "chaos-full-pub") as pub:
        for i in range(BEFORE):
            pub.publish(*fleet.message(i))
        await wait_until(lambda: stored(store_dir) >= BEFORE, 60, f"{BEFORE:,} readings stored")
        filler = await asyncio.to_thread(fill, store_dir)
        assert os.statvfs(store_dir).f_bavail == 0
        await pub.stream((fleet.message(i) for i in range(BEFORE, total)), 2_000.0)
        await pub.wait_acked()  # the broker has them all: from here on, nothing may be lost
        await wait_until(lambda: ERROR_LINE in svc.run_output(), 60, "the store write to fail")
        full_since = time.monotonic()
        metrics = scrape(port)
        commits, at_full = metrics["boltwatch_ingest_commits_total"], stored(store_dir)
        # The filesystem stays full for FULL_S: the service must neither die nor acknowledge.
        while time.monotonic() - full_since < FULL_S:
            assert svc.alive(), f"boltwatch run died with the disk full:\n{svc.run_output()}"
            await asyncio.sleep(0.2)
        metrics = scrape(port)
        assert metrics["boltwatch_ingest_commits_total"] == commits, "committed on a full disk?"
        assert stored(store_dir) == at_full < total
        received = metrics["boltwatch_ingest_messages_total"]
        waiting = received - metrics['boltwatch_ingest_readings_stored_total{kind="cbolt"}']
        unacked = total - at_full
        # Mosquitto may send past our Receive Maximum (1,000); ingest's own bound is its read
        # gate (docs/operations.md): the high-water mark plus what one socket read delivered.
        high, _ = water_marks(1_000, 1_000)
        assert 0 < waiting <= high + READ_SLACK, f"in flight beyond the read gate ({high:,})"
        (store_dir / "filler").unlink()  # space returns
        freed = time.monotonic()
        took = await wait_until(
            lambda: stored(store_dir) >= total,
            120,
            f"all {total:,} readings after the space came back",
            detail=lambda: (
                f"{counts(store_dir)}; free {os.statvfs(store_dir).f_bavail * 4096 / 1e6:.1f} MB; "
                f"files {sizes(store_dir)}\n"
                f"{svc.run_output()[-3000:]}"
            ),
        )
        assert RESUMED_LINE in svc.run_output()
    assert await svc.sigterm() == 0, svc.run_output()
    output = svc.output()
    assert "Traceback" not in output, output[-5000:]
    assert output.count(ERROR_LINE) == 1, "the reason is logged once, not at every retry"
    line = next(x for x in output.splitlines() if ERROR_LINE in x)
    assert "disk is full" in line, line
    got = counts(store_dir)
    assert missing(store_dir, fleet) == [], f"readings lost (seed {SEED})"
    assert got.rows == got.distinct == got.counted == total, f"{got} for {total}"
    print(
        f"\nchaos disk full: {FS_MB} MB tmpfs filled ({filler / 1e6:.1f} MB filler) after "
        f"{BEFORE:,} readings; full for {freed - full_since:.0f} s with {unacked:,} readings "
        f"unacknowledged ({waiting:,.0f} received and waiting, the rest held by the broker); "
        f"resumed and stored all {total:,} in {took:.1f} s after space returned; lost "
        f"{total - got.distinct}, duplicates {got.rows - got.distinct}; log: "
        f"{line.split(': ', 1)[1]}"
    )
