"""Poison messages, a malformed flood and a hostile client mixed into normal traffic.

Normal readings flow all along (a fleet at a steady rate, plus a probe bolt whose readings are
timed from publish to store). Then, for a while: poison messages (a ``ts`` past int64, ``seq``
past int64, numbers out of range, deep nesting, invalid UTF-8, a 10,000-character topic), a
flood of malformed messages from a fast publisher, a client that connects and disconnects in a
loop (garbage, half packets, a PUBLISH announcing 100 MB and then closing) and huge payloads
(4 MB each). Every normal reading is stored, every bad message is dead-lettered (none is lost
silently), and the probe's latency stays under a generous bound with and without the flood.
"""

from __future__ import annotations

import asyncio
import json
import socket
import struct
import time
from pathlib import Path

import pytest

from tests.chaos.harness import (
    SEED,
    Fleet,
    Latencies,
    Publisher,
    RawPublisher,
    RssPeak,
    Service,
    connect_packet,
    counts,
    dead_letter_reasons,
    missing,
    percentile,
    run_probe,
    size,
    stored,
    topic_of,
    wait_until,
    write_config,
)
from tests.integration.conftest import MosquittoServer, Reaper

pytestmark = [pytest.mark.integration, pytest.mark.chaos]

QUIET_S = size(2.0, 30.0)
FLOOD_S = size(3.0, 60.0)
RATE = size(300.0, 300.0)
"""Normal readings per second, all along."""
FLOOD = size(10_000, 200_000)
"""Malformed messages of the flood."""
CHURN = size(300, 5_000)
"""Connections of the hostile client."""
HUGE = size(4, 20)
HUGE_BYTES = 4 * 1024 * 1024
P95_BOUND_S = 5.0
"""Generous: a machine shared with others may be slow; the point is that it is not minutes."""

POISON: list[tuple[str, bytes]] = [
    (topic_of("poison-1"), b'{"ts": 9223372036854775808, "seq": 1, "preload_kn": 40}'),
    (topic_of("poison-1"), b'{"ts": -9223372036854775809, "seq": 1, "preload_kn": 40}'),
    (topic_of("poison-1"), b'{"ts": 1700000000000, "seq": 9223372036854775808, "preload_kn": 4}'),
    (topic_of("poison-1"), b'{"ts": 1700000000000, "seq": 1, "preload_kn": 1e999}'),
    (topic_of("poison-1"), b'{"ts": 1700000000000, "seq": 1, "preload_kn": NaN}'),
    (topic_of("poison-1"), b'{"ts": "9999-99-99T99:99:99Z", "seq": 1, "preload_kn": 4}'),
    (topic_of("poison-1"), b"[" * 100_000),
    (topic_of("poison-1"), b'{"readings": ' + b"[" * 50_000 + b"]" * 50_000 + b"}"),
    (topic_of("poison-1"), b"\xff\xfe\x00garbage\x80"),
    (topic_of("poison-1"), b""),
    (topic_of("poison-1"), b'{"ts": 1e308, "seq": 1e308, "preload_kn": 1}'),
    ("boltwatch/v1/chaos/cbolt/" + "x" * 10_000 + "/telemetry", b"{}"),
    ("boltwatch/v1/chaos/gateway/gw-1/telemetry", b'{"readings": [' + b"{}," * 10_000 + b"{}]}"),
    ("spBv1.0/chaos/DDATA/edge/dev", b"\x08\xff\xff\xff\xff\xff\xff\xff\xff\xff\x01"),
]
"""Each a message the decoders must turn into a dead letter, never into a crash."""


def malformed(i: int) -> tuple[str, bytes]:
    """Message ``i`` of the flood: six kinds of bad input, in turn."""
    dev = f"bad-{i % 50:03d}"
    kinds = [
        (topic_of(dev), b"{not json " + str(i).encode()),
        (topic_of(dev), json.dumps({"ts": 1, "seq": i, "preload_kn": "x"}).encode()),
        (
            topic_of(dev),
            json.dumps(
                {"ts": 1_700_000_000_000, "seq": i, "device_id": "other", "preload_kn": 1}
            ).encode(),
        ),
        (f"boltwatch/v1/chaos/toaster/{dev}/telemetry", b"{}"),
        (f"boltwatch/v1/chaos/../{dev}/telemetry", b"{}"),
        (
            topic_of(dev),
            json.dumps({"ts": 4_102_444_800_000 + i, "seq": i, "preload_kn": 1}).encode(),
        ),
    ]
    return kinds[i % len(kinds)]


def churn(host: str, port: int, count: int) -> int:
    """The hostile client: ``count`` connections that misbehave and go away; returns how many."""
    done = 0
    for i in range(count):
        try:
            with socket.create_connection((host, port), timeout=5) as s:
                kind = i % 4
                if kind == 1:
                    s.sendall(b"\x00garbage\xff" * 10)
                elif kind == 2:
                    s.sendall(connect_packet(f"hostile-{i}"))
                elif kind == 3:
                    s.sendall(connect_packet(f"hostile-{i}", keepalive_s=5))
                    # A PUBLISH announcing 100 MB (remaining length 0x06400000), then gone.
                    s.sendall(b"\x32\x80\x80\x80\x32" + struct.pack("!H", 1) + b"x")
        except OSError:
            pass  # refused or reset by the broker: also fine for a hostile client
        done += 1
    return done


async def test_poison_flood_and_hostile_client_do_not_hurt_normal_readings(
    mosquitto: MosquittoServer, reaper: Reaper, tmp_path: Path
) -> None:
    store_dir = tmp_path / "data"
    devices = 30
    per_device = int((QUIET_S + FLOOD_S + 4) * RATE / devices)
    fleet = Fleet(devices, per_device, int(time.time() * 1000) - 60_000, prefix="good")
    config = write_config(tmp_path / "boltwatch.toml", broker_url=mosquitto.url, store=store_dir)
    svc = Service(reaper, config, tmp_path / "run.log")
    svc.start()
    await svc.ready()
    rss_before = svc.rss_mb()
    rss = RssPeak(svc.pid)
    lat = Latencies(store_dir)
    stop_probe = asyncio.Event()
    async with (
        Publisher(mosquitto.url, "chaos-hostile-fleet") as pub,
        Publisher(mosquitto.url, "chaos-hostile-probe") as probe_pub,
    ):
        probe = asyncio.create_task(run_probe(probe_pub, lat, stop_probe), name="probe")
        sampler = asyncio.create_task(rss.run(stop_probe), name="rss")
        normal = asyncio.create_task(
            pub.stream((fleet.message(i) for i in range(fleet.total)), RATE), name="normal"
        )
        t_quiet = time.monotonic()
        await asyncio.sleep(QUIET_S)  # the quiet phase: what the latency is without the flood
        t_flood = time.monotonic()
        raw = RawPublisher(mosquitto.host, mosquitto.port, "chaos-flood")
        for topic, payload in POISON:
            raw.send(raw.packets([(topic, payload)]), 1)
        hostile = asyncio.create_task(
            asyncio.to_thread(churn, mosquitto.host, mosquitto.port, CHURN), name="churn"
        )
        huge = b"{" + b'"x": 1, ' * (HUGE_BYTES // 8) + b'"y": 2}'
        flood_sent = 0
        huge_sent = 0
        per_tick = max(1, int(FLOOD / (FLOOD_S / 0.05)))
        while time.monotonic() - t_flood < FLOOD_S and flood_sent < FLOOD:
            batch = [malformed(flood_sent + k) for k in range(min(per_tick, FLOOD - flood_sent))]
            await asyncio.to_thread(raw.send, raw.packets(batch), len(batch))
            flood_sent += len(batch)
            if huge_sent < HUGE and flood_sent >= (huge_sent + 1) * FLOOD / (HUGE + 1):
                await asyncio.to_thread(raw.send, raw.packets([(topic_of("huge"), huge)]), 1)
                huge_sent += 1
            await asyncio.sleep(0.05)
        while flood_sent < FLOOD:  # a slow machine: the rest at once
            batch = [malformed(flood_sent + k) for k in range(min(1_000, FLOOD - flood_sent))]
            await asyncio.to_thread(raw.send, raw.packets(batch), len(batch))
            flood_sent += len(batch)
        for _ in range(huge_sent, HUGE):
            await asyncio.to_thread(raw.send, raw.packets([(topic_of("huge"), huge)]), 1)
            huge_sent += 1
        connections = await hostile
        t_after = time.monotonic()
        await wait_until(
            lambda: raw.acked >= raw.sent,
            120,
            "the broker's PUBACKs of the flood",
            detail=lambda: f"{raw.acked} of {raw.sent}",
        )
        raw.close()
        bad = len(POISON) + flood_sent + huge_sent
        await normal
        await pub.wait_acked()
        await wait_until(
            lambda: (
                stored(store_dir) >= fleet.total + len(lat.sent)
                and counts(store_dir).dead_letters >= bad
            ),
            120,
            "every normal reading stored and every bad message dead-lettered",
            detail=lambda: (
                f"{counts(store_dir)}, want {fleet.total + len(lat.sent)} readings and {bad} "
                f"dead letters; missing {missing(store_dir, fleet)[:5]}; probes lost "
                f"{lat.lost()[:5]}\n{svc.run_output()[-3000:]}"
            ),
        )
        stop_probe.set()
        await probe
        await sampler
        await lat.all_seen()
    quiet = lat.between(t_quiet, t_flood)
    flood = lat.between(t_flood, t_after)
    assert svc.alive(), svc.run_output()
    assert await svc.sigterm() == 0, svc.run_output()
    output = svc.output()
    assert "Traceback" not in output, output[-5000:]
    got = counts(store_dir)
    assert missing(store_dir, fleet) == [], f"normal readings lost (seed {SEED})"
    assert lat.lost() == [], "probe readings lost"
    assert got.rows == got.distinct == fleet.total + len(lat.sent)
    assert got.dead_letters == bad, f"{got.dead_letters} dead letters for {bad} bad messages"
    reasons = dead_letter_reasons(store_dir)
    assert any("253402300799999" in r for r in reasons), "the int64 ts is not dead-lettered"
    assert sum("-byte limit" in r for r in reasons) == huge_sent
    assert quiet, "no probe reading in the quiet phase"
    assert flood, "no probe reading during the flood"
    assert percentile(quiet, 0.95) < P95_BOUND_S
    assert percentile(flood, 0.95) < P95_BOUND_S
    size_mb = sum(f.stat().st_size for f in store_dir.glob("boltwatch.sqlite3*")) / 1e6
    print(
        f"\nchaos hostile: {fleet.total:,} normal readings + {len(lat.sent)} probes, all stored; "
        f"{bad:,} bad messages ({len(POISON)} poison, {flood_sent:,} flood, {huge_sent} of "
        f"{HUGE_BYTES / 1e6:.1f} MB) all dead-lettered; {connections} hostile connections; "
        f"probe latency p50/p95/max quiet {percentile(quiet, 0.5) * 1000:.0f}/"
        f"{percentile(quiet, 0.95) * 1000:.0f}/{max(quiet) * 1000:.0f} ms, flood "
        f"{percentile(flood, 0.5) * 1000:.0f}/{percentile(flood, 0.95) * 1000:.0f}/"
        f"{max(flood) * 1000:.0f} ms; RSS {rss_before:.0f} MB before, peak {rss.peak_mb:.0f} MB; "
        f"store {size_mb:.0f} MB; seed {SEED}"
    )
