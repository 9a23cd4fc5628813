"""The fleet runner: many simulated nodes and their uplinks in one asyncio event loop.

Time is simulated: ``sim_ms = start_ms + (monotonic - t0) * speed``. One heap holds the next
sample time of every node (not one task per node), so a single process drives tens of thousands
of bolts; gateways are ticked for their batch windows and health readings. A reading is stamped
with the time it was *due*, not the moment the loop got to it, so the data do not depend on how
busy the machine is (only :attr:`FleetStats.lag_s` does).

:func:`build_fleet` puts N smart bolts behind gateways of up to M nodes each.
"""

from __future__ import annotations

import asyncio
import heapq
import random
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from firmware_sim.firmware import (
    BatteryModel,
    FirmwareConfigError,
    GatewayUplink,
    LinkConfig,
    Node,
    SampleFn,
    Uplink,
    steady_bolt,
)
from sensors.schema import DeviceKind, Reading

__all__ = ["Fleet", "FleetStats", "SampleFactory", "build_fleet"]

SampleFactory = Callable[[str, random.Random], SampleFn]
"""Makes the sensor of one node, given its device id and its own random source."""


@dataclass(slots=True, frozen=True)
class FleetStats:
    """A snapshot of a fleet, for a progress display.

    Counts are totals since the fleet was built; rates are per real second since the previous
    :meth:`Fleet.stats` call (since the start for the first call).

    Attributes:
        sim_ms: Simulated time now, epoch ms.
        sim_elapsed_s: Simulated seconds since the start.
        real_elapsed_s: Real seconds spent in :meth:`Fleet.run`.
        lag_s: How far (simulated seconds) the oldest due sample lags behind the clock.
        nodes: Nodes in the fleet.
        nodes_alive: Nodes not dead of an empty battery.
        uplinks: MQTT connections.
        online: Connections up now.
        sampled: Readings produced by the nodes.
        dropouts: Wake-ups where a sensor gave nothing.
        published: Readings and events handed to the broker.
        acked: Readings and events acknowledged by the broker.
        buffered: Entries that went through the flash buffers.
        dropped: Entries dropped by full flash buffers.
        replayed: Entries published from the flash buffers.
        backlog: Entries waiting in buffers and open batches now.
        reconnects: Reconnections, all uplinks together.
        commands: Commands carried out.
        bad_commands: Commands ignored.
        sampled_per_s: Readings sampled per real second, recently.
        published_per_s: Readings and events published per real second, recently.
    """

    sim_ms: int
    sim_elapsed_s: float
    real_elapsed_s: float
    lag_s: float
    nodes: int
    nodes_alive: int
    uplinks: int
    online: int
    sampled: int
    dropouts: int
    published: int
    acked: int
    buffered: int
    dropped: int
    replayed: int
    backlog: int
    reconnects: int
    commands: int
    bad_commands: int
    sampled_per_s: float
    published_per_s: float


class Fleet:
    """Runs nodes and their uplinks on a simulated clock, in one event loop.

    Args:
        uplinks: The connections; their nodes make the fleet (a node on two uplinks is an error).
        speed: Simulated seconds per real second.
        start_ms: Simulated time at the start, epoch ms (default: now).
        seed: Seed of the nodes' random first-sample phases.
        clock: Real monotonic seconds (injected for tests).
        max_sleep_s: Longest real sleep between two scheduler passes (bounds the reaction to
            :meth:`request_stop`).
        connect_concurrency: Uplinks connecting at the same moment, at most.
        on_reading: Called with each reading as it is sampled (e.g. to record ground truth).

    Raises:
        FirmwareConfigError: A parameter is invalid, or a node is on two uplinks.
    """

    def __init__(
        self,
        uplinks: Sequence[Uplink],
        *,
        speed: float = 1.0,
        start_ms: int | None = None,
        seed: int = 0,
        clock: Callable[[], float] = time.monotonic,
        max_sleep_s: float = 0.05,
        connect_concurrency: int = 32,
        on_reading: Callable[[Node, Reading], None] | None = None,
    ) -> None:
        if not speed > 0:
            raise FirmwareConfigError("speed", f"must be > 0, got {speed!r}")
        if not max_sleep_s > 0:
            raise FirmwareConfigError("max_sleep_s", "must be > 0")
        if connect_concurrency < 1:
            raise FirmwareConfigError("connect_concurrency", "must be >= 1")
        self.uplinks: tuple[Uplink, ...] = tuple(uplinks)
        self.speed = float(speed)
        self.start_ms = int(time.time() * 1000) if start_ms is None else int(start_ms)
        self.max_sleep_s = max_sleep_s
        self.connect_concurrency = connect_concurrency
        self.on_reading = on_reading
        self._clock = clock
        self._t0: float | None = None  # real time the running clock counts from
        self._paused_ms = self.start_ms
        self._real_s = 0.0
        self._stop = asyncio.Event()
        self._running = False
        nodes: list[Node] = []
        owner: list[Uplink] = []
        seen: set[int] = set()
        for uplink in self.uplinks:
            for node in uplink.nodes:
                if id(node) in seen:
                    raise FirmwareConfigError("uplinks", f"{node.device_id} is on two uplinks")
                seen.add(id(node))
                nodes.append(node)
                owner.append(uplink)
            uplink.bind_clock(self.sim_ms)
            uplink.boot(self.start_ms)
        self.nodes: tuple[Node, ...] = tuple(nodes)
        self._owner = owner
        self._tickers = [u for u in self.uplinks if isinstance(u, GatewayUplink)]
        self._index = {id(n): i for i, n in enumerate(self.nodes)}
        self._token = [0] * len(self.nodes)
        rng = random.Random(seed)  # noqa: S311 - simulation
        self._heap: list[tuple[int, int, int]] = []
        for i, node in enumerate(self.nodes):
            node.on_reschedule = self._rescheduled
            if node.next_sample_ms is None and node.alive:
                node.schedule_first(self.start_ms, rng)
            if node.next_sample_ms is not None:
                self._heap.append((node.next_sample_ms, 0, i))
        heapq.heapify(self._heap)
        self._last_stats: tuple[float, int, int] | None = None

    # -- clock ----------------------------------------------------------------------------------

    def sim_ms(self) -> int:
        """Simulated time now, epoch ms. It runs only during :meth:`run`: before, it is
        ``start_ms``; after, where the run stopped (a next run continues from there)."""
        if self._t0 is None:
            return self._paused_ms
        return self._paused_ms + int((self._clock() - self._t0) * self.speed * 1000.0)

    def uplink_of(self, node: Node) -> Uplink:
        """The uplink carrying ``node``."""
        return self._owner[self._index[id(node)]]

    # -- scheduling -----------------------------------------------------------------------------

    def _rescheduled(self, node: Node) -> None:
        i = self._index[id(node)]
        self._token[i] += 1
        if node.next_sample_ms is not None:
            heapq.heappush(self._heap, (node.next_sample_ms, self._token[i], i))

    def advance(self, until_ms: int) -> int:
        """Sample every node due at or before ``until_ms`` (in time order), hand the readings to
        the uplinks, and tick the gateways. Needs no broker and no event loop: offline
        simulations and tests can step the fleet with it.

        Returns:
            The number of readings produced.
        """
        heap = self._heap
        nodes = self.nodes
        owner = self._owner
        token = self._token
        on_reading = self.on_reading
        produced = 0
        while heap and heap[0][0] <= until_ms:
            t, tok, i = heapq.heappop(heap)
            if tok != token[i]:
                continue  # superseded by a reschedule
            node = nodes[i]
            reading = node.sample(t)
            if reading is not None:
                produced += 1
                if on_reading is not None:
                    on_reading(node, reading)
                owner[i].submit(node, reading)
            nxt = node.next_sample_ms
            if nxt is not None:
                heapq.heappush(heap, (nxt, tok, i))
        for uplink in self._tickers:
            uplink.tick(until_ms)
        return produced

    def _next_due_ms(self) -> int | None:
        due = self._heap[0][0] if self._heap else None
        for uplink in self._tickers:
            deadline = uplink.next_deadline_ms()
            if deadline is not None and (due is None or deadline < due):
                due = deadline
        return due

    # -- running --------------------------------------------------------------------------------

    def request_stop(self) -> None:
        """Ask :meth:`run` to stop (it then flushes and disconnects)."""
        self._stop.set()

    async def run(self, duration_s: float | None = None) -> FleetStats:
        """Connect the uplinks and run the nodes until ``duration_s`` simulated seconds of this
        run have passed (samples due at the end included), :meth:`request_stop`, or
        cancellation; then flush every buffer and disconnect cleanly (DISCONNECT: no last will).

        Returns:
            The final statistics.

        Raises:
            RuntimeError: The fleet is already running.
        """
        if self._running:
            raise RuntimeError("the fleet is already running")
        self._running = True
        self._stop.clear()
        self._t0 = self._clock()
        end_ms = None if duration_s is None else self._paused_ms + round(duration_s * 1000.0)
        limiter = asyncio.Semaphore(self.connect_concurrency)
        reached = False
        try:
            for uplink in self.uplinks:
                await uplink.start(limiter)
            reached = await self._loop(end_ms)
        finally:
            await self._shutdown()
            self._pause()
            self._running = False
        if reached and end_ms is not None:
            # The run simulated up to its end; the clock ran on while the uplinks shut down
            # (seconds on a loaded machine, hours of simulated time): that is not simulated.
            self._paused_ms = end_ms
        return self.stats()

    def _pause(self) -> None:
        if self._t0 is not None:
            now = self.sim_ms()
            self._real_s += self._clock() - self._t0
            self._t0 = None
            self._paused_ms = now

    async def _loop(self, end_ms: int | None) -> bool:
        """Run until stopped (False) or until ``end_ms`` (True)."""
        while not self._stop.is_set():
            now = self.sim_ms()
            if end_ms is not None and now >= end_ms:
                self.advance(end_ms)
                return True
            self.advance(now)
            due = self._next_due_ms()
            if end_ms is not None:
                due = end_ms if due is None else min(due, end_ms)
            sleep_s = self.max_sleep_s
            if due is not None:
                sleep_s = min(sleep_s, max(0.0, (due - self.sim_ms()) / self.speed / 1000.0))
            await asyncio.sleep(sleep_s)
        return False

    async def _shutdown(self) -> None:
        # Shielded: a cancelled run still flushes what the devices buffered and says goodbye.
        stopping = asyncio.gather(*(u.stop() for u in self.uplinks))
        try:
            await asyncio.shield(stopping)
        except asyncio.CancelledError:
            await stopping
            raise

    # -- statistics -----------------------------------------------------------------------------

    def stats(self) -> FleetStats:
        """A snapshot of the counters, with rates since the previous call."""
        now_real = self._clock()
        sampled = dropouts = alive = 0
        for node in self.nodes:
            sampled += node.stats.readings
            dropouts += node.stats.dropouts
            alive += node.alive
        published = acked = buffered = dropped = replayed = 0
        backlog = reconnects = commands = bad = online = 0
        for uplink in self.uplinks:
            s = uplink.stats
            published += s.published
            acked += s.acked
            buffered += s.buffered
            dropped += s.dropped_full
            replayed += s.replayed
            reconnects += s.reconnects
            commands += s.commands
            bad += s.bad_commands
            backlog += uplink.backlog
            online += uplink.online
        sim = self.sim_ms()
        real_elapsed = self._real_s + (0.0 if self._t0 is None else now_real - self._t0)
        prev = self._last_stats or (now_real - real_elapsed, 0, 0)
        span = now_real - prev[0]
        self._last_stats = (now_real, sampled, published)
        lag = max(0, sim - self._heap[0][0]) / 1000.0 if self._heap else 0.0
        return FleetStats(
            sim_ms=sim,
            sim_elapsed_s=(sim - self.start_ms) / 1000.0,
            real_elapsed_s=real_elapsed,
            lag_s=lag,
            nodes=len(self.nodes),
            nodes_alive=alive,
            uplinks=len(self.uplinks),
            online=online,
            sampled=sampled,
            dropouts=dropouts,
            published=published,
            acked=acked,
            buffered=buffered,
            dropped=dropped,
            replayed=replayed,
            backlog=backlog,
            reconnects=reconnects,
            commands=commands,
            bad_commands=bad,
            sampled_per_s=(sampled - prev[1]) / span if span > 0 else 0.0,
            published_per_s=(published - prev[2]) / span if span > 0 else 0.0,
        )


def build_fleet(
    n_bolts: int,
    url: str,
    *,
    site: str = "sim",
    nodes_per_gateway: int = 100,
    interval_s: float = 10.0,
    fast_interval_s: float | None = None,
    speed: float = 1.0,
    start_ms: int | None = None,
    seed: int = 0,
    sample_factory: SampleFactory | None = None,
    battery: bool = True,
    link: LinkConfig | None = None,
    health_interval_s: float = 60.0,
    bolt_prefix: str = "bolt",
    gateway_prefix: str = "gw",
) -> Fleet:
    """N smart bolts behind gateways of up to M nodes each, ready to :meth:`Fleet.run`.

    Bolts are ``{bolt_prefix}-00000`` ...; gateways ``{gateway_prefix}-000`` ..., bolt ``i``
    behind gateway ``i // nodes_per_gateway``. Everything random derives from ``seed``.

    Args:
        n_bolts: Number of bolts (N).
        url: Broker URL, ``mqtt://host:port``.
        site: Site of every device.
        nodes_per_gateway: Bolts per gateway, at most (M).
        interval_s: Base reporting interval of each bolt, simulated seconds.
        fast_interval_s: Adaptive fast interval (default a tenth of ``interval_s``).
        speed: Simulated seconds per real second.
        start_ms: Simulated start, epoch ms (default now).
        seed: Seed of everything random.
        sample_factory: Makes each bolt's sensor (default :func:`steady_bolt` around a preload
            drawn in 50..75 kN).
        battery: Give every bolt a :class:`BatteryModel` (and ``battery_v`` in its readings).
        link: MQTT and buffering parameters of every gateway.
        health_interval_s: Simulated seconds between gateway health readings.
        bolt_prefix: Device id prefix of the bolts.
        gateway_prefix: Device id prefix of the gateways.

    Raises:
        FirmwareConfigError: A parameter is invalid.
    """
    if n_bolts < 0:
        raise FirmwareConfigError("n_bolts", "must be >= 0")
    if nodes_per_gateway < 1:
        raise FirmwareConfigError("nodes_per_gateway", "must be >= 1")
    master = random.Random(seed)  # noqa: S311 - simulation

    def default_factory(device_id: str, rng: random.Random) -> SampleFn:
        return steady_bolt(rng.uniform(50.0, 75.0), rng=rng)

    factory = sample_factory or default_factory
    digits = max(5, len(str(max(n_bolts - 1, 0))))
    nodes: list[Node] = []
    for i in range(n_bolts):
        device_id = f"{bolt_prefix}-{i:0{digits}d}"
        rng = random.Random(master.getrandbits(64))  # noqa: S311 - simulation
        nodes.append(
            Node(
                DeviceKind.CBOLT,
                site,
                device_id,
                factory(device_id, rng),
                interval_s=interval_s,
                fast_interval_s=fast_interval_s,
                battery=BatteryModel() if battery else None,
                rng=rng,
            )
        )
    uplinks: list[Uplink] = []
    for g, first in enumerate(range(0, n_bolts, nodes_per_gateway)):
        uplinks.append(
            GatewayUplink(
                f"{gateway_prefix}-{g:03d}",
                site,
                nodes[first : first + nodes_per_gateway],
                url,
                config=link,
                health_interval_s=health_interval_s,
                rng=random.Random(master.getrandbits(64)),  # noqa: S311 - simulation
            )
        )
    return Fleet(uplinks, speed=speed, start_ms=start_ms, seed=master.getrandbits(32))
