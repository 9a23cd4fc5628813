"""What the chaos tests share: sizes, ``boltwatch run`` as a process, a webhook receiver that can
go down, MQTT publishers, and read-only looks into the store.

Sizes: each scenario has a short size (``make test``: the whole folder in about a minute and a
half on 2 cores) and a full one (``make chaos``: ``CHAOS_FULL=1``), chosen with :func:`size`.
Random choices (when to kill, which devices are faulty) come from ``random.Random(SEED)``;
``CHAOS_SEED`` changes the seed, and every failure message names it.

Every wait is :func:`wait_until` on a condition with a generous deadline; every process is
started through the ``reaper`` fixture (``tests/integration/conftest.py``), which SIGKILLs what is
still alive at teardown, whether the test passed or not.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import math
import os
import signal
import socket
import sqlite3
import struct
import subprocess
import sys
import threading
import time
import urllib.request
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any, Final, TypeVar

import gmqtt
from gmqtt.mqtt.constants import MQTTv311

from alerts.channels.webhook import ID_HEADER
from tests.integration.conftest import Reaper

FULL: Final = os.environ.get("CHAOS_FULL", "") not in ("", "0")
"""``CHAOS_FULL=1`` (``make chaos``): the full sizes of every scenario."""
SEED: Final = int(os.environ.get("CHAOS_SEED", "14"))
"""Seed of every random choice (``CHAOS_SEED``); named in failure messages."""
BOLTWATCH: Final = Path(sys.executable).parent / "boltwatch"
SITE: Final = "chaos"

_T = TypeVar("_T")


def size(short: _T, full: _T) -> _T:
    """``full`` under ``CHAOS_FULL=1``, else ``short``."""
    return full if FULL else short


async def wait_until(
    predicate: Callable[[], bool],
    timeout: float,  # noqa: ASYNC109 - a polling bound, not a cancellation scope
    what: str,
    every_s: float = 0.05,
    detail: Callable[[], str] | None = None,
) -> float:
    """Poll ``predicate`` until it holds; returns the seconds it took.

    Raises:
        AssertionError: Not within ``timeout`` seconds (names ``what``, the seed, and what
            ``detail`` says then).
    """
    started = time.monotonic()
    while not predicate():
        if time.monotonic() - started > timeout:
            more = f": {detail()}" if detail is not None else ""
            raise AssertionError(
                f"timed out after {timeout:g} s waiting for {what} (seed {SEED}){more}"
            )
        await asyncio.sleep(every_s)
    return time.monotonic() - started


def percentile(values: Sequence[float], q: float) -> float:
    """The ``q`` quantile (0..1) of ``values`` (nearest rank; NaN when empty)."""
    if not values:
        return math.nan
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, math.ceil(q * len(ordered)) - 1))]


# -- the telemetry ---------------------------------------------------------------------------------


def topic_of(device: str, site: str = SITE) -> str:
    """The telemetry topic of a smart bolt."""
    return f"boltwatch/v1/{site}/cbolt/{device}/telemetry"


def healthy_kn(dev: int, seq: int) -> float:
    """A healthy preload: +-0.05 kN around a level, never the same value twice in a row (a
    repeated value is a stuck sensor)."""
    return 50.0 + (dev % 40) * 0.5 + ((seq * 7 + dev * 3) % 11 - 5) / 100.0


def reading(seq: int, ts_ms: int, preload_kn: float) -> bytes:
    """One single-reading telemetry payload (formatted by hand: overload makes millions)."""
    return f'{{"ts":{ts_ms},"seq":{seq},"preload_kn":{preload_kn:.3f}}}'.encode()


@dataclass(frozen=True, slots=True)
class Fleet:
    """Bolts publishing ``per_device`` readings each, round robin; some get stuck sensors.

    A stuck bolt repeats one value from ``stuck_from[device]`` on: after 12 identical readings the
    detector raises ``sensor_fault``, one alert (and one notification) per stuck bolt. Readings
    are ``base_ms + seq * 10`` ms: recent, distinct per (device, seq).

    Attributes:
        devices: How many bolts.
        per_device: Readings per bolt.
        base_ms: Timestamp of each bolt's reading 0 (epoch ms).
        stuck_from: Bolt index -> seq from which its sensor is stuck.
        prefix: Device id prefix.
    """

    devices: int
    per_device: int
    base_ms: int
    stuck_from: dict[int, int] = field(default_factory=dict)
    prefix: str = "bolt"

    @property
    def total(self) -> int:
        """Readings in all."""
        return self.devices * self.per_device

    def device(self, dev: int) -> str:
        """The id of bolt ``dev``."""
        return f"{self.prefix}-{dev:04d}"

    def message(self, i: int) -> tuple[str, bytes]:
        """Message ``i`` of the stream (0 <= i < total): bolt ``i % devices``, seq
        ``i // devices``."""
        dev, seq = i % self.devices, i // self.devices
        stuck = self.stuck_from.get(dev)
        kn = healthy_kn(dev, stuck) if stuck is not None and seq >= stuck else healthy_kn(dev, seq)
        name = self.device(dev)
        return topic_of(name), reading(seq, self.base_ms + seq * 10, kn)

    def stuck_devices(self) -> set[str]:
        """Ids of the bolts that get stuck within their readings (12 identical at least)."""
        return {self.device(d) for d, s in self.stuck_from.items() if self.per_device - s >= 13}


# -- the service -----------------------------------------------------------------------------------


def write_config(
    path: Path,
    *,
    broker_url: str,
    store: Path,
    client_id: str = "chaos-ingest",
    rules: Path | None = None,
    influx_url: str | None = None,
    metrics_port: int | None = None,
    ingest: str = "",
) -> Path:
    """A ``boltwatch run`` config: no API; metrics on ``metrics_port`` when given."""
    listen = f"127.0.0.1:{metrics_port}" if metrics_port is not None else ""
    text = (
        f'[broker]\nurl = "{broker_url}"\nclient_id = "{client_id}"\n'
        f'[ingest]\nmetrics_listen = "{listen}"\n{ingest}'
        f'[store]\npath = "{store}"\n'
        f'[alerts]\napi_listen = ""\ninterval_s = 0.2\n'
    )
    if rules is not None:
        text += f'rules = "{rules}"\n'
    if influx_url is not None:
        text += f'[influx]\nurl = "{influx_url}"\norg = "chaos"\nbucket = "chaos"\n'
    path.write_text(text)
    return path


WEBHOOK_RULES: Final = """
[defaults]
for = "0s"
group_wait = "0s"
clear_after = "24h"
repeat_interval = "24h"

[[routes]]
receivers = ["hook"]
group_by = "device"

[[receivers]]
name = "hook"
channel = "webhook"
url = "{url}"
timeout_s = {timeout_s}
"""
"""Every alert to the ``hook`` receiver at once, one notification per device, never repeated."""


def write_webhook_rules(path: Path, url: str, timeout_s: float = 5.0) -> Path:
    """Rules sending every alert to a webhook (:data:`WEBHOOK_RULES`)."""
    path.write_text(WEBHOOK_RULES.format(url=url, timeout_s=timeout_s))
    return path


class Service:
    """``boltwatch run --config FILE`` as a process that can be killed and started again.

    Each start appends to the same log (``log``), after a ``--- start N`` line.

    Args:
        reaper: Tracks each process (SIGKILLed at teardown if still alive).
        config: The config file.
        log: Where stdout and stderr go.
    """

    def __init__(self, reaper: Reaper, config: Path, log: Path) -> None:
        self.reaper = reaper
        self.config = config
        self.log = log
        self.proc: subprocess.Popen[bytes] | None = None
        self.starts = 0
        self.kills = 0
        self._offset = 0

    def start(self) -> None:
        """Start it (the previous process must have ended)."""
        assert self.proc is None or self.proc.poll() is not None, "still running"
        self.starts += 1
        with self.log.open("ab") as out:
            out.write(f"--- start {self.starts}\n".encode())
            out.flush()
            self._offset = out.tell()
            self.proc = self.reaper.popen(
                [str(BOLTWATCH), "run", "--config", str(self.config)],
                stdout=out,
                stderr=subprocess.STDOUT,
                env={**os.environ, "COLUMNS": "200"},
            )

    @property
    def pid(self) -> int:
        """Its process id."""
        assert self.proc is not None
        return self.proc.pid

    def alive(self) -> bool:
        """Whether the current process runs."""
        return self.proc is not None and self.proc.poll() is None

    def output(self) -> str:
        """The whole log (every start)."""
        return self.log.read_text(errors="replace") if self.log.exists() else ""

    def run_output(self) -> str:
        """The log of the current (or last) start."""
        with self.log.open("rb") as fh:
            fh.seek(self._offset)
            return fh.read().decode(errors="replace")

    async def ready(self, timeout: float = 60.0) -> None:  # noqa: ASYNC109 - a polling bound
        """Wait until it is subscribed (``ingesting ...``)."""

        def up() -> bool:
            if not self.alive():
                raise AssertionError(f"boltwatch run exited early:\n{self.run_output()}")
            return "ingesting " in self.run_output()

        await wait_until(up, timeout, "boltwatch run to subscribe")

    async def kill9(self) -> None:
        """SIGKILL: no flush, no clean disconnect; waits for the process to be gone."""
        assert self.proc is not None
        self.proc.send_signal(signal.SIGKILL)
        await asyncio.to_thread(self.proc.wait, 30)
        self.kills += 1

    async def sigterm(self, timeout: float = 30.0) -> int:  # noqa: ASYNC109 - a bound
        """SIGTERM and wait for the exit; returns the exit status."""
        assert self.proc is not None
        self.proc.send_signal(signal.SIGTERM)
        try:
            return await asyncio.to_thread(self.proc.wait, timeout)
        except subprocess.TimeoutExpired:
            raise AssertionError(
                f"still running {timeout:g} s after SIGTERM:\n{self.run_output()}"
            ) from None

    def rss_mb(self) -> float:
        """Resident set size now (``VmRSS`` of ``/proc/PID/status``), MB (10^6 bytes)."""
        return rss_mb(self.pid)


def rss_mb(pid: int) -> float:
    """``VmRSS`` of a process, MB (10^6 bytes); 0 when it is gone."""
    try:
        text = Path(f"/proc/{pid}/status").read_text()
    except OSError:
        return 0.0
    for line in text.splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024 / 1e6
    return 0.0


class RssPeak:
    """The peak RSS of a process, sampled every ``every_s`` while :meth:`run` runs."""

    def __init__(self, pid: int, every_s: float = 0.2) -> None:
        self.pid = pid
        self.every_s = every_s
        self.peak_mb = rss_mb(pid)
        self.samples: list[tuple[float, float]] = []
        """(monotonic s, MB) of each sample."""

    def sample(self) -> float:
        """Take one sample now; returns it (MB)."""
        now = rss_mb(self.pid)
        self.samples.append((time.monotonic(), now))
        self.peak_mb = max(self.peak_mb, now)
        return now

    async def run(self, stop: asyncio.Event) -> None:
        """Sample until ``stop`` is set."""
        while not stop.is_set():
            self.sample()
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(self.every_s):
                    await stop.wait()


def scrape(port: int) -> dict[str, float]:
    """The service's ``/metrics``: ``name{labels}`` -> value (samples without labels by name)."""
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as resp:
        text = resp.read().decode()
    out: dict[str, float] = {}
    for line in text.splitlines():
        if line and not line.startswith("#"):
            name, _, value = line.rpartition(" ")
            out[name] = float(value)
    return out


# -- the store, read-only --------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Counts:
    """What the store holds.

    Attributes:
        rows: Rows of ``readings_cbolt``.
        distinct: Distinct (device_id, seq) among them.
        counted: The store's own count (``reading_counts``, written in each commit).
        dead_letters: Rows of ``dead_letters``.
    """

    rows: int
    distinct: int
    counted: int
    dead_letters: int


def _connect(store_dir: Path) -> sqlite3.Connection | None:
    file = store_dir / "boltwatch.sqlite3"
    if not file.exists():
        return None
    conn = sqlite3.connect(f"file:{file}?mode=ro", uri=True, timeout=10)
    conn.execute("PRAGMA busy_timeout = 10000")
    return conn


def counts(store_dir: Path) -> Counts:
    """Row counts of the store (a second, read-only connection: WAL lets it read meanwhile)."""
    conn = _connect(store_dir)
    if conn is None:
        return Counts(0, 0, 0, 0)
    try:
        rows, distinct = conn.execute(
            "SELECT count(*), count(DISTINCT device_id || '/' || seq) FROM readings_cbolt"
        ).fetchone()
        counted = conn.execute("SELECT coalesce(sum(n), 0) FROM reading_counts").fetchone()[0]
        dead = conn.execute("SELECT count(*) FROM dead_letters").fetchone()[0]
    except sqlite3.OperationalError:  # the tables are being created by the first start
        return Counts(0, 0, 0, 0)
    finally:
        conn.close()
    return Counts(int(rows), int(distinct), int(counted), int(dead))


def stored(store_dir: Path) -> int:
    """Readings of kind ``cbolt`` stored (0 before the store exists): the store's own counter,
    written in the same transaction as the rows, so polling it is cheap. (Polling
    :func:`counts` instead, whose ``count(DISTINCT ...)`` reads the whole table, kept a reader in
    the WAL at every moment of a long drain: SQLite cannot reset a WAL that readers always
    overlap, and the full overload's WAL grew to 18 GB.)"""
    conn = _connect(store_dir)
    if conn is None:
        return 0
    try:
        row = conn.execute("SELECT n FROM reading_counts WHERE kind = 'cbolt'").fetchone()
    except sqlite3.OperationalError:  # the tables are being created by the first start
        return 0
    finally:
        conn.close()
    return int(row[0]) if row is not None else 0


def missing(store_dir: Path, fleet: Fleet) -> list[tuple[str, int]]:
    """(device, seq) of the fleet's readings that are not in the store (first 20)."""
    conn = _connect(store_dir)
    have: set[tuple[str, int]] = set()
    if conn is not None:
        try:
            have = {
                (str(d), int(s))
                for d, s in conn.execute("SELECT device_id, seq FROM readings_cbolt")
            }
        finally:
            conn.close()
    want = ((fleet.device(d), s) for s in range(fleet.per_device) for d in range(fleet.devices))
    return [k for k in want if k not in have][:20]


def dead_letter_reasons(store_dir: Path) -> list[str]:
    """The reason of every dead letter."""
    conn = _connect(store_dir)
    if conn is None:
        return []
    try:
        return [str(r) for (r,) in conn.execute("SELECT reason FROM dead_letters")]
    finally:
        conn.close()


def outbox(store_dir: Path) -> list[tuple[str, str, int]]:
    """(id, status, attempts) of every outbox row of ``alerts.db``."""
    file = store_dir / "alerts.db"
    if not file.exists():
        return []
    conn = sqlite3.connect(f"file:{file}?mode=ro", uri=True, timeout=10)
    try:
        return [
            (str(i), str(s), int(a))
            for i, s, a in conn.execute("SELECT id, status, attempts FROM outbox")
        ]
    except sqlite3.OperationalError:
        return []
    finally:
        conn.close()


class Latencies:
    """When each probe reading appears in the store, against when it was published.

    A probe is a bolt of its own publishing one reading every ``every_s``; :meth:`poll` (every
    20 ms) looks for new seqs of it in the store. Resolution: the polling period.
    """

    def __init__(self, store_dir: Path, device: str = "probe-0001") -> None:
        self.store_dir = store_dir
        self.device = device
        self.sent: dict[int, float] = {}
        self.seen: dict[int, float] = {}

    def poll(self) -> None:
        """Record the probe readings that appeared since the last call."""
        conn = _connect(self.store_dir)
        if conn is None:
            return
        try:
            after = max(self.seen, default=-1)
            rows = conn.execute(
                "SELECT seq FROM readings_cbolt WHERE device_id = ? AND seq > ?",
                (self.device, after),
            ).fetchall()
        except sqlite3.OperationalError:
            return
        finally:
            conn.close()
        now = time.monotonic()
        for (seq,) in rows:
            self.seen.setdefault(int(seq), now)

    def between(self, start: float, end: float) -> list[float]:
        """Latencies (s) of the probes sent in [start, end) (monotonic) that arrived."""
        return [
            self.seen[s] - t for s, t in self.sent.items() if start <= t < end and s in self.seen
        ]

    def lost(self) -> list[int]:
        """Probe seqs sent and not (yet) seen."""
        return sorted(set(self.sent) - set(self.seen))

    async def all_seen(self, timeout: float = 60.0) -> None:  # noqa: ASYNC109 - a polling bound
        """Wait until every probe sent so far is in the store (after the probe has stopped)."""

        def arrived() -> bool:
            self.poll()
            return not self.lost()

        await wait_until(
            arrived, timeout, "the last probe readings", detail=lambda: str(self.lost())
        )


async def run_probe(
    pub: Publisher, lat: Latencies, stop: asyncio.Event, every_s: float = 0.1
) -> None:
    """Publish a probe reading every ``every_s`` and poll the store until ``stop`` is set."""
    seq = 0
    base_ms = int(time.time() * 1000)
    next_at = time.monotonic()
    while not stop.is_set():
        now = time.monotonic()
        if now >= next_at:
            lat.sent[seq] = now
            pub.publish(topic_of(lat.device), reading(seq, base_ms + seq * 10, 42.0 + seq % 7 / 10))
            seq += 1
            next_at += every_s
        await asyncio.to_thread(lat.poll)
        await asyncio.sleep(0.02)


# -- publishers ------------------------------------------------------------------------------------


class Publisher:
    """A gmqtt publisher (QoS 1, persistent session): messages the broker has not acknowledged
    are kept and sent again after a reconnect (a broker restart), as a device gateway does.

    Args:
        url: ``mqtt://host:port``.
        client_id: Fixed, for the persistent session.
    """

    def __init__(self, url: str, client_id: str) -> None:
        host, _, port = url.removeprefix("mqtt://").partition(":")
        self.host, self.port = host, int(port)
        self._client: Any = gmqtt.Client(client_id, clean_session=False)
        self._client.reconnect_delay = 0.2
        self._client.reconnect_retries = -1
        self.published = 0
        logging.getLogger("gmqtt").setLevel(logging.CRITICAL)

    async def __aenter__(self) -> Publisher:
        await self._client.connect(self.host, self.port, keepalive=30, version=MQTTv311)
        return self

    async def __aexit__(self, *exc: object) -> None:
        with contextlib.suppress(Exception):
            async with asyncio.timeout(5):
                await self._client.disconnect()

    @property
    def connected(self) -> bool:
        """Whether the connection is up (CONNACK received)."""
        return bool(self._client.is_connected)

    def unacked(self) -> int:
        """Messages published and not yet acknowledged by the broker."""
        return len(self._client._persistent_storage.get_all())

    def publish(self, topic: str, payload: bytes) -> None:
        """QoS 1 publish (kept until the broker's PUBACK)."""
        self._client.publish(topic, payload, qos=1)
        self.published += 1

    async def stream(
        self,
        messages: Iterable[tuple[str, bytes]],
        rate: float,
        on_progress: Callable[[int], None] | None = None,
    ) -> None:
        """Publish at ``rate`` msg/s; pauses while disconnected and while 5,000 are unacked."""
        loop = asyncio.get_running_loop()
        start = loop.time()
        sent = 0
        it = iter(messages)
        done = False
        while not done:
            due = int((loop.time() - start) * rate) + 1
            while self.connected and self.unacked() < 5_000 and sent < due:
                item = next(it, None)
                if item is None:
                    done = True
                    break
                self.publish(*item)
                sent += 1
            if on_progress is not None:
                on_progress(sent)
            await asyncio.sleep(0.01)

    async def wait_acked(self, timeout: float = 120.0) -> None:  # noqa: ASYNC109 - a bound
        """Wait until the broker has acknowledged everything published."""
        await wait_until(lambda: self.unacked() == 0, timeout, "the broker's PUBACKs", 0.05)


def _varint(n: int) -> bytes:
    out = bytearray()
    while True:
        byte, n = n % 128, n // 128
        out.append(byte | (0x80 if n else 0))
        if not n:
            return bytes(out)


def _string(s: bytes) -> bytes:
    return struct.pack("!H", len(s)) + s


def connect_packet(client_id: str, *, clean: bool = True, keepalive_s: int = 0) -> bytes:
    """An MQTT 3.1.1 CONNECT."""
    body = _string(b"MQTT") + bytes([4, 0x02 if clean else 0]) + struct.pack("!H", keepalive_s)
    body += _string(client_id.encode())
    return b"\x10" + _varint(len(body)) + body


def publish_packet(topic: str, payload: bytes, mid: int) -> bytes:
    """An MQTT PUBLISH at QoS 1 with packet id ``mid`` (1..65535)."""
    body = _string(topic.encode()) + struct.pack("!H", mid) + payload
    return b"\x32" + _varint(len(body)) + body


class RawPublisher:
    """MQTT 3.1.1 over a plain socket, QoS 1, PUBLISH packets encoded up front: a publisher that
    costs little CPU, for overload (the broker's PUBACKs are counted by a reader thread).

    Packets go out in order on one connection and the broker acknowledges in order, so the first
    :attr:`acked` messages are the ones the broker took responsibility for.
    """

    def __init__(self, host: str, port: int, client_id: str) -> None:
        self.sock = socket.create_connection((host, port), timeout=10)
        self.sock.sendall(connect_packet(client_id))
        connack = self._read_exact(4)
        if connack[0] != 0x20 or connack[3] != 0:
            raise ConnectionError(f"CONNACK refused: {connack!r}")
        self.sock.settimeout(None)
        self.acked = 0
        self.sent = 0
        self._mid = 0
        self._reader = threading.Thread(target=self._read_acks, daemon=True)
        self._reader.start()

    def _read_exact(self, n: int) -> bytes:
        data = b""
        while len(data) < n:
            chunk = self.sock.recv(n - len(data))
            if not chunk:
                raise ConnectionError("closed by the broker")
            data += chunk
        return data

    def _read_acks(self) -> None:
        buf = b""
        with contextlib.suppress(OSError):
            while True:
                chunk = self.sock.recv(65_536)
                if not chunk:
                    return
                buf += chunk
                # Only PUBACKs come (4 bytes: 0x40 0x02 id id).
                whole = len(buf) // 4
                self.acked += whole
                buf = buf[whole * 4 :]

    def packets(self, messages: Iterable[tuple[str, bytes]]) -> bytes:
        """Encode messages as PUBLISH packets (packet ids cycling over 1..65535)."""
        out = []
        for topic, payload in messages:
            self._mid = self._mid % 65_535 + 1
            out.append(publish_packet(topic, payload, self._mid))
        return b"".join(out)

    def send(self, data: bytes, count: int) -> None:
        """Send encoded packets (blocks while the broker does not read: TCP backpressure)."""
        self.sock.sendall(data)
        self.sent += count

    def close(self) -> None:
        """Close the connection (no DISCONNECT: a client that simply goes away)."""
        with contextlib.suppress(OSError):
            self.sock.shutdown(socket.SHUT_RDWR)
        self.sock.close()


# -- the webhook receiver --------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Delivery:
    """One POST the receiver got.

    Attributes:
        id: The ``X-Boltwatch-Notification-Id`` header.
        body: The JSON body.
        at: When it arrived (monotonic s).
    """

    id: str
    body: dict[str, Any]
    at: float


class Webhook:
    """A webhook receiver on a fixed port of 127.0.0.1 that can go down and come back.

    Down means nothing listens (connection refused, a retryable failure for the sender). While
    :meth:`hold` is on, each request is recorded and then left unanswered until :meth:`release`.

    Args:
        delay_s: Each answer waits this long (a slow receiver).
    """

    def __init__(self, delay_s: float = 0.0) -> None:
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            self.port = int(s.getsockname()[1])
        self.delay_s = delay_s
        self.deliveries: list[Delivery] = []
        self.held: list[str] = []
        """Ids of the requests that arrived while :meth:`hold` was on."""
        self._lock = threading.Lock()
        self._gate = threading.Event()
        self._gate.set()
        self._server: ThreadingHTTPServer | None = None

    @property
    def url(self) -> str:
        """Where to POST."""
        return f"http://127.0.0.1:{self.port}/alerts"

    def start(self) -> None:
        """Listen (again) on the port."""
        hook = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers["Content-Length"]))
                note_id = self.headers.get(ID_HEADER, "")
                with hook._lock:
                    hook.deliveries.append(Delivery(note_id, json.loads(body), time.monotonic()))
                    if not hook._gate.is_set():
                        hook.held.append(note_id)
                hook._gate.wait(60)
                if hook.delay_s:
                    time.sleep(hook.delay_s)
                with contextlib.suppress(OSError):  # the sender may be gone (killed)
                    self.send_response(200)
                    self.end_headers()

            def log_message(self, format: str, *args: object) -> None:
                return None

        server = ThreadingHTTPServer(("127.0.0.1", self.port), Handler)
        server.daemon_threads = True
        threading.Thread(target=server.serve_forever, daemon=True).start()
        self._server = server

    def stop(self) -> None:
        """Stop listening (requests in progress are cut off)."""
        server, self._server = self._server, None
        if server is not None:
            server.shutdown()
            server.server_close()

    def hold(self) -> None:
        """Leave the next requests unanswered (recorded on arrival)."""
        self._gate.clear()

    def release(self) -> None:
        """Answer the held requests (to whoever still listens) and the next ones."""
        self._gate.set()

    def ids(self) -> list[str]:
        """Notification ids in order of arrival, repeats included."""
        with self._lock:
            return [d.id for d in self.deliveries]

    def firing_devices(self) -> set[str]:
        """Devices named by a ``firing`` notification."""
        with self._lock:
            return {
                a["device_id"]
                for d in self.deliveries
                if d.body.get("status") == "firing"
                for a in d.body.get("alerts", [])
            }

    def repeats_consistent(self) -> bool:
        """Whether every repeated id came with the same body (so a receiver may drop it)."""
        with self._lock:
            first: dict[str, dict[str, Any]] = {}
            for d in self.deliveries:
                if first.setdefault(d.id, d.body) != d.body or d.id != d.body.get("id"):
                    return False
        return True


@contextlib.contextmanager
def webhook_receiver(delay_s: float = 0.0) -> Iterator[Webhook]:
    """A started :class:`Webhook`, stopped at the end."""
    hook = Webhook(delay_s)
    hook.start()
    try:
        yield hook
    finally:
        hook.release()
        hook.stop()
