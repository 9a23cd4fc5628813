"""The simulated firmware on the wire, against a real Mosquitto.

Births and last wills, store-and-forward across a broker restart (direct nodes and gateways, with
and without overflow), commands, adaptive sampling, Sparkplug B, and a fleet of 10,000 bolts in
one process. Every payload must decode with the project's own decoders. Time is simulated and
fast (``speed`` >> 1); randomness is seeded.
"""

from __future__ import annotations

import asyncio
import itertools
import json
import math
import random
import time
from collections import defaultdict
from collections.abc import AsyncIterator, Callable, Iterable, Mapping
from contextlib import asynccontextmanager

import msgspec
import pytest

from firmware_sim.firmware import (
    MQTT_V5,
    MQTT_V311,
    BatteryModel,
    DirectUplink,
    FirmwareConfigError,
    GatewayUplink,
    InstallationRecord,
    LinkConfig,
    Node,
    steady_bolt,
)
from firmware_sim.fleet import Fleet, build_fleet
from sensors.codec import DecodedBatch, TelemetryDecoder, to_epoch_ms
from sensors.schema import CboltReading, DeviceKind, Status, TightenedEvent
from sensors.sparkplug import SparkplugDecoder
from tests.integration.conftest import Collector, MosquittoServer, Received

pytestmark = pytest.mark.integration

# A day ago, on a whole second: well inside what the decoder accepts even at high speed.
START_MS = (int(time.time()) - 86_400) * 1000
FAST_LINK = LinkConfig(
    reconnect_min_s=0.05,
    reconnect_max_s=0.3,
    connect_timeout_s=3.0,
    stop_timeout_s=5.0,
    batch_window_s=2.0,
    max_batch=10,
)
_STATUS = msgspec.json.Decoder(Status)


@asynccontextmanager
async def running(
    fleet: Fleet, duration_s: float | None = None
) -> AsyncIterator[asyncio.Task[object]]:
    """Run ``fleet`` in the background; on exit stop it (flush, DISCONNECT) and wait."""
    task: asyncio.Task[object] = asyncio.create_task(fleet.run(duration_s))
    try:
        yield task
    finally:
        fleet.request_stop()
        await task


def bolt(
    device_id: str,
    *,
    interval_s: float = 5.0,
    phase_s: float | None = None,
    installation: InstallationRecord | None = None,
) -> Node:
    """A healthy smart bolt on site ``t``, seeded by its id."""
    rng = random.Random(device_id)
    return Node(
        DeviceKind.CBOLT,
        "t",
        device_id,
        steady_bolt(60.0, rng=rng),
        interval_s=interval_s,
        phase_s=phase_s,
        installation=installation,
        rng=rng,
    )


def decode_ok(messages: Iterable[Received]) -> DecodedBatch:
    """Decode boltwatch/v1 messages; fail on any error."""
    msgs = [(m.topic, m.payload) for m in messages if m.topic.startswith("boltwatch/v1/")]
    out = TelemetryDecoder().decode_batch(msgs)
    assert out.errors == [], [(msgs[i][0], str(e)) for i, e in out.errors[:5]]
    return out


def seq_ts(messages: Iterable[Received]) -> dict[str, dict[int, int]]:
    """device_id -> seq -> ts of every reading received (a duplicate must repeat its ts)."""
    out: dict[str, dict[int, int]] = defaultdict(dict)
    for cols in decode_ok(messages).telemetry.values():
        for dev, seq, ts in zip(
            cols.device_id.tolist(), cols.seq.tolist(), cols.ts_ms.tolist(), strict=True
        ):
            seen = out[dev].setdefault(seq, ts)
            assert seen == ts, f"{dev} seq {seq} came with two timestamps"
    return out


def assert_monotone(readings: Mapping[int, int], what: str) -> None:
    ts = [readings[s] for s in sorted(readings)]
    assert all(b > a for a, b in itertools.pairwise(ts)), f"{what}: ts not monotone"


def has_all(node_seqs: Mapping[str, int]) -> Callable[[list[Received]], bool]:
    """A Collector predicate: every seq 0..n-1 of each device has arrived."""

    def check(messages: list[Received]) -> bool:
        got = seq_ts(messages)
        return all(set(range(n)) <= got.get(dev, {}).keys() for dev, n in node_seqs.items())

    return check


# ---------------------------------------------------------------------------------------------
# Without a broker: the node's logic and the scheduler.


def test_node_adaptive_rate_battery_dropout_and_clock_offset() -> None:
    def falling(t_ms: int) -> dict[str, float] | None:
        el = (t_ms - START_MS) / 1000.0
        if 600 <= el < 700:
            return None  # dropout
        preload = 60.0 if el < 3000 else 60.0 * (1.0 - 0.0001 * (el - 3000))
        return {"preload_kn": preload, "temp_c": math.nan}

    node = Node(
        "cbolt",
        "t",
        "b-1",
        falling,
        interval_s=300,
        fast_interval_s=30,
        battery=BatteryModel(),
        clock_offset_ms=1234,
        phase_s=0,
    )
    node.schedule_first(START_MS)
    readings: list[CboltReading] = []
    while node.next_sample_ms is not None and node.next_sample_ms <= START_MS + 6_000_000:
        r = node.sample(node.next_sample_ms)
        if r is not None:
            assert isinstance(r, CboltReading)
            readings.append(r)
    stamps = [to_epoch_ms(r.ts) for r in readings]
    gaps = [b - a for a, b in itertools.pairwise(stamps)]
    steady = [g for t, g in zip(stamps[1:], gaps, strict=True) if t < START_MS + 3_000_000]
    falling_gaps = gaps[-20:]
    assert sorted(set(steady)) == [300_000, 600_000]
    assert steady.count(600_000) == 1, "the dropout at 600 s leaves one double gap"
    assert set(falling_gaps) == {30_000}, "a falling preload must be reported at the fast rate"
    assert node.stats.dropouts == 1
    assert [r.seq for r in readings] == list(range(len(readings)))  # a dropout uses no seq
    assert readings[0].ts == START_MS + 1234  # clock offset
    assert math.isnan(readings[0].temp_c or math.nan)  # NaN = not reported
    assert readings[0].battery_v == pytest.approx(3.67, abs=0.01)

    tiny = BatteryModel(capacity_mah=0.01, sample_mas=0.5, tx_mas=0.5)
    dying = Node("cbolt", "t", "b-2", steady_bolt(), interval_s=1, battery=tiny, phase_s=0)
    dying.schedule_first(START_MS)
    volts: list[float] = []
    while dying.alive and dying.next_sample_ms is not None:
        r = dying.sample(dying.next_sample_ms)
        if r is not None:
            assert isinstance(r, CboltReading)
            assert r.battery_v is not None
            volts.append(r.battery_v)
    assert not dying.alive
    assert volts == sorted(volts, reverse=True)
    assert volts[-1] < 3.3 < volts[0], "the knee of the discharge curve"

    with pytest.raises(FirmwareConfigError, match="fast_interval_s"):
        Node("cbolt", "t", "b-3", steady_bolt(), fast_interval_s=0)
    bad = Node("cbolt", "t", "b-4", lambda t: {"preload_kN": 1.0}, phase_s=0)
    with pytest.raises(FirmwareConfigError, match="sample_fn"):
        bad.sample(START_MS)


def test_scheduler_heap_reschedule_and_offline_buffer() -> None:
    link = LinkConfig(flash_capacity=15)
    a = bolt("a", interval_s=10, phase_s=0)
    b = bolt("b", interval_s=25, phase_s=5)
    gw = GatewayUplink("gw-1", "t", [a, b], "mqtt://127.0.0.1:1", config=link, health_interval_s=50)
    fleet = Fleet([gw], start_ms=START_MS)
    assert fleet.advance(START_MS + 100_000) == 11 + 4
    assert (a.seq, b.seq) == (11, 4)
    # Offline: everything is in the flash buffer, which keeps the newest 15 entries.
    assert gw.backlog == 15
    assert gw.seq == 3  # the gateway's own health readings at 0, 50 and 100 s
    assert gw.stats.dropped_full == 11 + 4 + 3 - 15
    # A new interval takes effect from the last sample; the stale heap entry is skipped.
    a.set_interval(3, fleet.sim_ms())
    assert a.next_sample_ms == START_MS + 103_000
    fleet.advance(START_MS + 110_000)
    assert a.seq == 11 + 3  # 103, 106, 109 s: no double sample
    assert fleet.uplink_of(b) is gw


# ---------------------------------------------------------------------------------------------
# Against Mosquitto.


async def test_birth_retained_will_on_crash_and_no_will_on_clean_stop(
    mosquitto: MosquittoServer,
) -> None:
    a, b = bolt("bolt-a", interval_s=30), bolt("bolt-b", interval_s=30)
    up_a = DirectUplink(a, mosquitto.url, config=FAST_LINK)
    up_b = DirectUplink(b, mosquitto.url, config=FAST_LINK)
    fleet = Fleet([up_a, up_b], speed=60, start_ms=START_MS)
    status_topics = ["boltwatch/v1/+/+/+/status"]
    async with Collector(mosquitto.url, status_topics) as watcher:
        task = asyncio.create_task(fleet.run())
        await up_a.wait_online(5)
        await up_b.wait_online(5)
        async with Collector(mosquitto.url, status_topics) as late:
            await late.wait_for(lambda m: len(m) >= 2, what="two retained births")
            for node in (a, b):
                (msg,) = late.on(f"{node.device_id}/status")
                assert msg.retain
                status = _STATUS.decode(msg.payload)
                assert (status.state, status.boot_id) == ("online", node.boot_id)
                assert (status.fw_version, status.interval_s) == (node.fw_version, 30.0)
        await up_a.crash()  # the socket dies without DISCONNECT
        await watcher.wait_for(
            lambda m: any(b"offline" in x.payload for x in m if x.topic.endswith("bolt-a/status")),
            what="bolt-a's last will",
        )
        # Cancelling the fleet still stops it cleanly: bolt-b says DISCONNECT, so no will.
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        assert not up_b.online
        await asyncio.sleep(0.5)
        assert not any(b"offline" in m.payload for m in watcher.on("bolt-b/status"))
    async with Collector(mosquitto.url, status_topics) as late:
        await late.wait_for(lambda m: len(m) >= 2, what="retained statuses")
        retained = {m.topic.split("/")[4]: _STATUS.decode(m.payload).state for m in late.messages}
    assert retained == {"bolt-a": "offline", "bolt-b": "online"}
    decode_ok(watcher.messages)


@pytest.mark.parametrize("version", [MQTT_V311, MQTT_V5], ids=["mqtt311", "mqtt5"])
async def test_store_and_forward_across_broker_restart(
    mosquitto: MosquittoServer, version: int
) -> None:
    cfg = LinkConfig(
        mqtt_version=version,
        reconnect_min_s=0.05,
        reconnect_max_s=0.3,
        connect_timeout_s=3.0,
        batch_window_s=2.0,
        max_batch=10,
    )
    small = LinkConfig(
        mqtt_version=version, reconnect_min_s=0.05, reconnect_max_s=0.3, flash_capacity=5
    )
    direct = bolt("direct-1")
    gw_nodes = [bolt(f"gwn-{i}", interval_s=5 + i) for i in range(3)]
    overflow = bolt("small-flash", interval_s=2)
    up_direct = DirectUplink(direct, mosquitto.url, config=cfg)
    gateway = GatewayUplink("gw-1", "t", gw_nodes, mosquitto.url, config=cfg, health_interval_s=20)
    up_small = DirectUplink(overflow, mosquitto.url, config=small)
    uplinks = [up_direct, gateway, up_small]
    fleet = Fleet(uplinks, speed=50, start_ms=START_MS, seed=1)
    async with Collector(
        mosquitto.url, ["boltwatch/v1/#"], client_id=f"collector-{version}", clean_session=False
    ) as col:
        async with running(fleet):
            for up in uplinks:
                await up.wait_online(5)
            await asyncio.sleep(0.6)
            await mosquitto.astop()
            await asyncio.sleep(1.2)  # 60 simulated seconds without a broker
            assert not any(up.online for up in uplinks)
            during = {up.client_id: up.stats.buffered for up in uplinks}
            assert all(n > 0 for n in during.values()), during
            await mosquitto.astart()
            for up in uplinks:
                await up.wait_online(10)
            await asyncio.sleep(0.5)
        expected = {n.device_id: n.seq for n in (direct, *gw_nodes)} | {"gw-1": gateway.seq}
        await col.wait_for(has_all(expected), timeout=15, what="every reading sampled")
    got = seq_ts(col.messages)
    for dev in expected:
        assert_monotone(got[dev], dev)
    for up in (up_direct, gateway):
        assert up.stats.reconnects >= 1
        assert up.stats.replayed > 0
        assert up.stats.dropped_full == 0
        assert up.stats.connect_failures >= 1
    # The small buffer dropped its oldest entries, and exactly as many as it counted.
    missing = set(range(overflow.seq)) - got["small-flash"].keys()
    assert up_small.stats.dropped_full > 0
    assert len(missing) == up_small.stats.dropped_full
    assert max(missing) - min(missing) + 1 == len(missing), "the oldest go first, in one run"
    assert_monotone(got["small-flash"], "small-flash")
    # Replays are batches, on the device's own topic too; gateway readings name their device.
    direct_batches = [
        json.loads(m.payload)
        for m in col.on("direct-1/telemetry")
        if m.payload.startswith(b'{"readings"')
    ]
    assert direct_batches
    assert all("kind" not in r for batch in direct_batches for r in batch["readings"])
    for m in col.on("gateway/gw-1/telemetry"):
        for r in json.loads(m.payload)["readings"]:
            assert "kind" in r
            assert r["kind"] == "gateway" or "device_id" in r
    births = {m.topic.split("/")[4] for m in col.on("/status") if b"online" in m.payload}
    assert births >= {"gw-1", "gwn-0", "gwn-1", "gwn-2", "direct-1", "small-flash"}


async def test_unacknowledged_messages_survive_a_lost_session(mosquitto: MosquittoServer) -> None:
    node = bolt("inflight-1", interval_s=1)
    cfg = LinkConfig(max_inflight=4, reconnect_min_s=0.05, reconnect_max_s=0.3)
    up = DirectUplink(node, mosquitto.url, config=cfg)
    fleet = Fleet([up], speed=20, start_ms=START_MS)
    async with Collector(mosquitto.url, ["boltwatch/v1/#"]) as before, running(fleet):
        await up.wait_online(5)
        await asyncio.sleep(0.3)
        mosquitto.pause()  # no PUBACK comes any more
        await asyncio.sleep(0.5)  # 10 readings: 4 in flight, the rest wait in the buffer
        assert (up.inflight, up.backlog > 0) == (4, True)
        await up.crash()
        mosquitto.kill()  # nothing saved: the new broker knows no session
        await mosquitto.astart()
        async with Collector(mosquitto.url, ["boltwatch/v1/#"]) as after:
            await up.start()
            await up.wait_online(5)
            await asyncio.sleep(0.3)
            fleet.request_stop()
            await after.wait_for(
                lambda m: has_all({"inflight-1": node.seq})(before.messages + m),
                what="every reading, the unacknowledged ones included",
            )
    assert up.stats.requeued == 4
    assert up.stats.dropped_full == 0
    assert_monotone(seq_ts(before.messages + after.messages)["inflight-1"], "inflight-1")


async def test_commands_over_the_broker(mosquitto: MosquittoServer) -> None:
    record = InstallationRecord(
        torque_nm=2350,
        preload_kn=326.4,
        ts_ms=START_MS - 3_600_000,
        tool="HYTORC-XLCT-4",
        operator="j.martin",
        tightening_pass=1,
    )
    direct = bolt("cmd-direct", interval_s=10, installation=record)
    n1 = bolt("cmd-n1", interval_s=10, installation=record)
    n2 = bolt("cmd-n2", interval_s=10)
    up = DirectUplink(direct, mosquitto.url, config=FAST_LINK)
    gw = GatewayUplink("cmd-gw", "t", [n1, n2], mosquitto.url, config=FAST_LINK)
    fleet = Fleet([up, gw], speed=100, start_ms=START_MS)
    async with Collector(mosquitto.url, ["boltwatch/v1/#"]) as col, running(fleet):
        await up.wait_subscribed(5)
        await gw.wait_subscribed(5)
        col.publish(
            "boltwatch/v1/t/cbolt/cmd-direct/cmd",
            b'{"cmd":"set_interval","id":"c1","interval_s":2}',
        )
        col.publish(
            "boltwatch/v1/t/cbolt/cmd-n1/cmd", b'{"cmd":"set_interval","id":"c2","interval_s":3}'
        )
        col.publish(
            "boltwatch/v1/t/cbolt/cmd-direct/cmd", b'{"cmd":"request_tightening_record","id":"c3"}'
        )
        col.publish(
            "boltwatch/v1/t/cbolt/cmd-n1/cmd", b'{"cmd":"request_tightening_record","id":"c4"}'
        )
        # Malformed or not applicable: counted and ignored.
        col.publish("boltwatch/v1/t/cbolt/cmd-direct/cmd", b"not json")
        col.publish("boltwatch/v1/t/cbolt/cmd-direct/cmd", b'{"cmd":"reboot","id":"c5"}')
        col.publish(
            "boltwatch/v1/t/cbolt/cmd-n2/cmd", b'{"cmd":"set_interval","id":"c6","interval_s":-5}'
        )
        col.publish(
            "boltwatch/v1/t/cbolt/cmd-n2/cmd", b'{"cmd":"request_tightening_record","id":"c7"}'
        )
        await col.wait_for(lambda m: len(col.on("/event")) >= 2, what="two tightened events")
        seq_before = direct.seq
        await asyncio.sleep(0.5)  # 50 simulated seconds at the new intervals
        assert direct.seq > seq_before, "still sampling after bad commands"
    assert (direct.interval_s, n1.interval_s, n2.interval_s) == (2.0, 3.0, 10.0)
    assert (up.stats.commands, up.stats.bad_commands) == (2, 2)
    assert (gw.stats.commands, gw.stats.bad_commands) == (2, 2)
    out = decode_ok(col.messages)
    events = {e.device_id: e for e in out.events}
    assert set(events) == {"cmd-direct", "cmd-n1"}
    for ev in events.values():
        assert isinstance(ev.event, TightenedEvent)
        assert (ev.event.torque_nm, ev.event.tool, ev.ts_ms) == (
            2350,
            "HYTORC-XLCT-4",
            record.ts_ms,
        )
    assert col.on("gateway/cmd-gw/event"), "a gateway relays the event on its own topic"
    got = seq_ts(col.messages)
    tail = sorted(got["cmd-direct"].values())[-5:]
    assert {b - a for a, b in itertools.pairwise(tail)} == {2000}
    tail = sorted(got["cmd-n1"].values())[-5:]
    assert {b - a for a, b in itertools.pairwise(tail)} == {3000}
    # The birth is republished with the new interval.
    statuses = [_STATUS.decode(m.payload) for m in col.on("cmd-direct/status")]
    assert statuses[-1].interval_s == 2.0


async def test_adaptive_rate_over_the_broker(mosquitto: MosquittoServer) -> None:
    def loosening(t_ms: int) -> dict[str, float]:
        el = (t_ms - START_MS) / 1000.0
        return {"preload_kn": 60.0 if el < 600 else max(0.0, 60.0 - 0.02 * (el - 600))}

    node = Node("cbolt", "t", "loose-1", loosening, interval_s=60, fast_interval_s=6, phase_s=0)
    up = DirectUplink(node, mosquitto.url, config=FAST_LINK)
    fleet = Fleet([up], speed=1000, start_ms=START_MS)
    async with Collector(mosquitto.url, ["boltwatch/v1/+/cbolt/+/telemetry"]) as col:
        await fleet.run(duration_s=1200)
        await col.wait_for(has_all({"loose-1": node.seq}), what="every reading")
    ts = sorted(seq_ts(col.messages)["loose-1"].values())
    before = [b - a for a, b in itertools.pairwise(ts) if b <= START_MS + 600_000]
    after = [b - a for a, b in itertools.pairwise(ts) if a >= START_MS + 700_000]
    assert set(before) == {60_000}
    assert set(after) == {6_000}, "a falling preload is reported ten times as often"
    assert node.stats.fast_samples > 0


async def test_sparkplug_machine(mosquitto: MosquittoServer) -> None:
    rng = random.Random(7)

    def mill(t_ms: int) -> dict[str, float]:
        return {"spindle_rpm": 12000.0, "spindle_a": 4.0 + rng.random(), "vib_rms_mms": 1.9}

    node = Node("cnc_mill", "fab", "mill-1", mill, interval_s=1, phase_s=0)
    up = DirectUplink(node, mosquitto.url, config=FAST_LINK, sparkplug=True, edge_node_id="edge-1")
    fleet = Fleet([up], speed=20, start_ms=START_MS)
    async with Collector(mosquitto.url, ["spBv1.0/#"]) as col:
        async with running(fleet):
            await up.wait_online(5)
            await asyncio.sleep(0.5)
            await up.crash()  # the will: NDEATH with this session's bdSeq
            await col.wait_for(lambda m: any("/NDEATH/" in x.topic for x in m), what="NDEATH")
        decoder = SparkplugDecoder()
        out = decoder.decode_batch([(m.topic, m.payload) for m in col.messages])
    assert out.errors == []
    assert [m.topic.split("/")[2] for m in col.messages[:2]] == ["NBIRTH", "DBIRTH"]
    cols = out.telemetry[DeviceKind.CNC_MILL]
    assert sorted(set(cols.seq.tolist())) == list(range(len(set(cols.seq.tolist()))))
    assert [(s.device_id, s.status.state) for s in out.statuses][-2:] == [
        ("edge-1", "offline"),
        ("mill-1", "offline"),
    ]


async def test_ten_thousand_bolts_through_gateways(mosquitto: MosquittoServer) -> None:
    link = LinkConfig(batch_window_s=2.0, max_batch=100, reconnect_min_s=0.05, reconnect_max_s=0.5)
    fleet = build_fleet(
        10_000,
        mosquitto.url,
        site="big",
        nodes_per_gateway=100,
        interval_s=10,
        speed=5,
        start_ms=START_MS,
        seed=3,
        link=link,
    )
    assert len(fleet.uplinks) == 100
    async with Collector(mosquitto.url, ["boltwatch/v1/big/gateway/+/telemetry"]) as col:
        stats = await fleet.run(duration_s=20)
        expected = {n.device_id: n.seq for n in fleet.nodes}
        await col.wait_for(has_all(expected), timeout=30, what="every reading of 10,000 bolts")
    assert stats.sampled == sum(expected.values()) >= 20_000
    assert stats.dropped == 0
    assert stats.online == 0  # all disconnected cleanly
