"""The InfluxDB writer against a real VictoriaMetrics (its InfluxDB v2 write API).

Points go in through ``/api/v2/write`` and come back through ``/api/v1/export``: values, tags and
millisecond timestamps must be exactly those written. An outage is a stopped server on the same
port. Two answers VictoriaMetrics never gives (429 with ``Retry-After``; 400 for a batch) come from
:class:`OverloadedServer`, a stand-in for an overloaded or rejecting InfluxDB, and only those.
"""

from __future__ import annotations

import email.utils
import gzip
import json
import math
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import numpy as np
import numpy.typing as npt
import pytest

from ingest.influx import InfluxWriter, SpoolError, line_protocol
from sensors.codec import ReadingColumns, TelemetryDecoder
from sensors.schema import DeviceKind
from tests.integration.vm import VictoriaMetrics
from tests.integration.vm import victoria as _victoria  # noqa: F401 - the `victoria` fixture

pytestmark = pytest.mark.integration

# Recent enough for the server's clock checks, fixed for the whole module; whole seconds.
T0 = (int(time.time()) - 6 * 3600) * 1000

TOKEN = "s3cr3t"

Series = dict[tuple[str, str, str], dict[int, float]]
"""(metric, site, device_id) -> {timestamp ms: value}."""


class RecordingSleep:
    """The injected ``sleep``: records each delay, sleeps not at all."""

    def __init__(self) -> None:
        self.delays: list[float] = []

    def __call__(self, seconds: float) -> None:
        self.delays.append(seconds)


class FakeClock:
    """The injected monotonic clock, moved by hand."""

    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def writer(url: str, spool: Path, **kwargs: object) -> InfluxWriter:
    options: dict[str, object] = {"org": "fablab", "bucket": "telemetry", "spool_dir": spool}
    options.update(kwargs)
    return InfluxWriter(url, **options)  # type: ignore[arg-type]


def columns(
    kind: DeviceKind,
    rows: Sequence[tuple[str, str, int, int]],
    **values: npt.ArrayLike,
) -> ReadingColumns:
    """Columns from ``(site, device_id, ts_ms, seq)`` rows and one sequence per field."""
    return ReadingColumns(
        kind=kind,
        site=np.array([r[0] for r in rows], dtype=object),
        device_id=np.array([r[1] for r in rows], dtype=object),
        ts_ms=np.array([r[2] for r in rows], dtype=np.int64),
        seq=np.array([r[3] for r in rows], dtype=np.int64),
        values={k: np.asarray(v, dtype=np.float64) for k, v in values.items()},
        message=np.arange(len(rows), dtype=np.int64),
    )


def bolts(site: str, devices: int, samples: int, t0: int, seq0: int = 0) -> ReadingColumns:
    """Smart-bolt readings at sensor resolution; temp_c not reported on every third row."""
    rows = [
        (site, f"bolt-{d:04d}", t0 + k * 10_000 + d, seq0 + k)
        for k in range(samples)
        for d in range(devices)
    ]
    n = len(rows)
    i = np.arange(n)
    temp = np.round(12.0 + (i % 17) * 0.1, 1)
    temp[i % 3 == 0] = np.nan
    return columns(
        DeviceKind.CBOLT,
        rows,
        preload_kn=np.round(60.0 + (i % 101) * 0.01, 2),
        temp_c=temp,
        battery_v=np.round(3.6 - (i % 7) * 0.001, 3),
        rssi_dbm=np.full(n, np.nan),
    )


def expected(cols: Sequence[ReadingColumns]) -> Series:
    """What the export must hold: one series per (kind_field, site, device), NaN left out."""
    out: Series = {}
    for c in cols:
        kind = c.kind.value
        for i in range(len(c)):
            fields = {"seq": float(c.seq[i])}
            fields.update(
                {k: float(v[i]) for k, v in c.values.items() if not math.isnan(float(v[i]))}
            )
            for name, value in fields.items():
                key = (f"{kind}_{name}", str(c.site[i]), str(c.device_id[i]))
                out.setdefault(key, {})[int(c.ts_ms[i])] = value
    return out


def exported(vm: VictoriaMetrics, match: str, samples: int) -> Series:
    """The export of ``match`` as :data:`Series` (waits for ``samples`` samples)."""
    out: Series = {}
    for s in vm.export(match, min_samples=samples):
        labels = dict(s["metric"])
        name = labels.pop("__name__")
        assert set(labels) == {"site", "device_id"}, s["metric"]
        points = out.setdefault((name, labels["site"], labels["device_id"]), {})
        for ts, value in zip(s["timestamps"], s["values"], strict=True):
            assert ts not in points, f"{name} {labels} has two samples at {ts}"
            points[ts] = value
    return out


def count(series: Series) -> int:
    return sum(len(v) for v in series.values())


def spool_files(spool: Path) -> list[str]:
    return sorted(p.name for p in spool.glob("*.lp"))


# ---------------------------------------------------------------------------------------------
# Against VictoriaMetrics


def test_points_of_several_kinds_read_back_exactly(
    victoria: VictoriaMetrics, tmp_path: Path
) -> None:
    # Through the real decoder, so the columns are what ingest hands over.
    messages: list[tuple[str, bytes]] = []
    for k in range(40):
        for d in range(3):
            reading: dict[str, object] = {
                "ts": T0 + k * 5_000 + d,
                "seq": 100 + k,
                "preload_kn": round(61.8 + 0.01 * (k * 3 + d), 2),
                "battery_v": 3.581,
            }
            if k % 4:
                reading["temp_c"] = round(8.5 + 0.1 * k, 1)
            messages.append((f"boltwatch/v1/bridge-a/cbolt/bolt-{d}/telemetry", _json(reading)))
    for k in range(25):
        printer = {"ts": T0 + k * 2_000, "seq": k, "hotend_c": 210.5 + k, "bed_c": 60.25}
        messages.append(("boltwatch/v1/fablab-1/printer3d/mk4-1/telemetry", _json(printer)))
        gateway = {"ts": T0 + k * 60_000, "seq": 7 + k, "cpu_temp_c": 41.5, "uptime_s": 3600 + k}
        messages.append(("boltwatch/v1/bridge-a/gateway/gw-1/telemetry", _json(gateway)))
    decoded = TelemetryDecoder().decode_batch(messages)
    assert not decoded.errors
    cols = list(decoded.telemetry.values())
    assert {c.kind for c in cols} == {DeviceKind.CBOLT, DeviceKind.PRINTER3D, DeviceKind.GATEWAY}
    want = expected(cols)

    # Small batches: several requests, and kinds packed together in one of them.
    with writer(victoria.url, tmp_path / "spool", batch_points=64) as w:
        outcome = w.write(cols)
        counters = w.counters()

    assert outcome.points_written == 170
    assert (outcome.points_spooled, outcome.rejected, outcome.retries) == (0, [], 0)
    assert (counters.points_written, counters.spool_backlog_points) == (170, 0)
    got = exported(victoria, '{__name__=~"(cbolt|printer3d|gateway)_.*"}', samples=count(want))
    assert got == want
    # The naming the docs promise.
    assert got[("cbolt_preload_kn", "bridge-a", "bolt-1")][T0 + 1] == 61.81
    assert got[("cbolt_seq", "bridge-a", "bolt-0")][T0] == 100.0
    assert ("printer3d_chamber_c", "fablab-1", "mk4-1") not in got  # never reported


def test_odd_tag_values_are_escaped(victoria: VictoriaMetrics, tmp_path: Path) -> None:
    odd = ["plant a", "b,1", "k=v", "x y,z=w", " lead", "trail ", "a\\b", "ünï €"]
    rows = [
        (site, dev, T0 + i, i) for i, (site, dev) in enumerate(zip(odd, reversed(odd), strict=True))
    ]
    cols = columns(DeviceKind.CBOLT, rows, preload_kn=[50.0 + i for i in range(len(rows))])
    text = line_protocol(cols)
    assert "cbolt,device_id=\\ lead,site=x\\ y\\,z\\=w seq=3i,preload_kn=53.0 " in text

    with writer(victoria.url, tmp_path / "spool") as w:
        assert w.write([cols]).points_written == len(rows)

    want = expected([cols])
    assert exported(victoria, '{__name__=~"cbolt_.*"}', samples=count(want)) == want


def test_nan_fields_are_left_out(victoria: VictoriaMetrics, tmp_path: Path) -> None:
    nan = math.nan
    rows = [("s", "d1", T0, 1), ("s", "d1", T0 + 1000, 2), ("s", "d1", T0 + 2000, 3)]
    cols = columns(
        DeviceKind.CBOLT,
        rows,
        preload_kn=[61.8, nan, nan],
        temp_c=[nan, 12.5, nan],
        battery_v=[nan, nan, nan],
        rssi_dbm=[-71.0, nan, nan],
    )
    assert line_protocol(cols).splitlines() == [
        f"cbolt,device_id=d1,site=s seq=1i,preload_kn=61.8,rssi_dbm=-71.0 {T0}",
        f"cbolt,device_id=d1,site=s seq=2i,temp_c=12.5 {T0 + 1000}",
        f"cbolt,device_id=d1,site=s seq=3i {T0 + 2000}",
    ]
    with writer(victoria.url, tmp_path / "spool") as w:
        assert w.write([cols]).points_written == 3

    got = exported(victoria, '{__name__=~"cbolt_.*"}', samples=6)
    assert got == {
        ("cbolt_seq", "s", "d1"): {T0: 1.0, T0 + 1000: 2.0, T0 + 2000: 3.0},
        ("cbolt_preload_kn", "s", "d1"): {T0: 61.8},
        ("cbolt_rssi_dbm", "s", "d1"): {T0: -71.0},
        ("cbolt_temp_c", "s", "d1"): {T0 + 1000: 12.5},
    }


def test_outage_spools_in_order_and_drain_sends_everything(
    victoria: VictoriaMetrics, tmp_path: Path
) -> None:
    spool = tmp_path / "spool"
    sleep, clock = RecordingSleep(), FakeClock()
    before = bolts("bridge-a", 4, 5, T0)  # 20 points
    during_1 = bolts("bridge-a", 4, 5, T0 + 100_000, seq0=5)
    during_2 = bolts("bridge-a", 4, 5, T0 + 200_000, seq0=10)
    after = bolts("bridge-a", 4, 5, T0 + 300_000, seq0=15)
    with writer(victoria.url, spool, batch_points=10, max_retries=3, sleep=sleep, clock=clock) as w:
        assert w.write([before]).points_written == 20

        victoria.stop()
        first = w.write([during_1])
        # The first batch went through the retries (exponential backoff), then was spooled;
        # the second went straight to the spool behind it.
        assert sleep.delays == [0.5, 1.0, 2.0]
        assert (first.points_written, first.points_spooled, first.retries) == (0, 20, 3)
        second = w.write([during_2])
        assert (second.points_written, second.points_spooled, second.retries) == (0, 20, 0)
        assert w.backlog() == 40
        assert len(spool_files(spool)) == 4
        assert w.drain_once() == 0  # still backing off: nothing tried
        clock.now += 1.0
        assert w.drain_once() == 0  # tried, server down: backs off further
        clock.now += 0.5
        assert w.drain_once() == 0  # not yet (1 s since the last failure)
        assert sleep.delays == [0.5, 1.0, 2.0]  # drain_once never sleeps

        victoria.restart()
        # The server is back, but the spool is not empty: new points queue behind it.
        third = w.write([after])
        assert (third.points_written, third.points_spooled) == (0, 20)
        assert w.backlog() == 60
        names = spool_files(spool)
        assert names == sorted(names)
        assert len(names) == 6

        # Oldest first: one batch sent, and it is the oldest.
        clock.now += 10.0
        assert w.drain_once(max_batches=1) == 10
        assert spool_files(spool) == names[1:]
        sent = expected([before, during_1.select(np.arange(10))])
        preload = {k: v for k, v in sent.items() if k[0] == "cbolt_preload_kn"}
        assert exported(victoria, '{__name__="cbolt_preload_kn"}', samples=30) == preload

        assert w.drain() == 50
        assert w.backlog() == 0
        assert spool_files(spool) == []
        counters = w.counters()
    assert counters.points_written == 80
    assert counters.points_spooled == 60
    assert counters.spool_backlog_points == 0
    assert counters.retries == 3

    want = expected([before, during_1, during_2, after])
    assert exported(victoria, '{__name__=~"cbolt_.*"}', samples=count(want)) == want


def test_spool_survives_a_new_writer(victoria: VictoriaMetrics, tmp_path: Path) -> None:
    spool = tmp_path / "spool"
    cols = bolts("site-b", 3, 4, T0)  # 12 points
    victoria.stop()
    with writer(victoria.url, spool, batch_points=5, max_retries=0) as w:
        outcome = w.write([cols])
        assert (outcome.points_written, outcome.points_spooled) == (0, 12)
        # One writer per spool at a time.
        with pytest.raises(SpoolError, match="in use"):
            writer(victoria.url, spool)
    assert len(spool_files(spool)) == 3

    victoria.start()
    with writer(victoria.url, spool) as again:
        assert again.backlog() == 12
        assert again.counters().spool_backlog_points == 12
        assert again.drain() == 12
        assert again.backlog() == 0
    assert spool_files(spool) == []
    want = expected([cols])
    assert exported(victoria, '{__name__=~"cbolt_.*"}', samples=count(want)) == want


# ---------------------------------------------------------------------------------------------
# Against a stand-in for an overloaded / rejecting server


@dataclass(frozen=True)
class Answer:
    """One scripted answer of :class:`OverloadedServer`."""

    status: int
    body: bytes = b""
    headers: tuple[tuple[str, str], ...] = ()


@dataclass(frozen=True)
class Request:
    """One request :class:`OverloadedServer` received (body decompressed)."""

    path: str
    headers: dict[str, str]
    lines: bytes


class OverloadedServer:
    """Stand-in for an InfluxDB that is overloaded (429) or refuses a batch (400).

    VictoriaMetrics answers neither, so these two cases are scripted here: each request gets the
    next scripted answer, then 204 once the script is used up.
    """

    def __init__(self, answers: Sequence[Answer]) -> None:
        self.answers = list(answers)
        self.requests: list[Request] = []
        server = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                raw = self.rfile.read(int(self.headers["Content-Length"]))
                if self.headers.get("Content-Encoding") == "gzip":
                    raw = gzip.decompress(raw)
                server.requests.append(Request(self.path, dict(self.headers.items()), raw))
                answer = server.answers.pop(0) if server.answers else Answer(204)
                # Only the scripted headers: send_response would add a Date of its own (the
                # time of the answer), which the client reads before the scripted one.
                self.send_response_only(answer.status)
                for name, value in answer.headers:
                    self.send_header(name, value)
                self.send_header("Content-Length", str(len(answer.body)))
                self.end_headers()
                self.wfile.write(answer.body)

            def log_message(self, format: str, *args: object) -> None:
                pass

        self._httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self._httpd.server_address[1]}"
        self._thread = threading.Thread(target=self._httpd.serve_forever, daemon=True)

    def __enter__(self) -> OverloadedServer:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._httpd.shutdown()
        self._httpd.server_close()
        self._thread.join()


@pytest.fixture
def sample() -> ReadingColumns:
    return bolts("site-c", 2, 3, T0)  # 6 points


def test_429_retry_after_is_honoured(sample: ReadingColumns, tmp_path: Path) -> None:
    date = email.utils.formatdate(time.time(), usegmt=True)
    later = email.utils.formatdate(
        email.utils.parsedate_to_datetime(date).timestamp() + 7, usegmt=True
    )
    busy = b'{"code":"too many requests","message":"slow down"}'
    script = [
        Answer(429, busy, (("Retry-After", "2"),)),
        Answer(503, b"", (("Retry-After", later), ("Date", date))),
    ]
    sleep = RecordingSleep()
    with (
        OverloadedServer(script) as server,
        writer(server.url, tmp_path / "spool", token=TOKEN, sleep=sleep) as w,
    ):
        outcome = w.write([sample])
    assert sleep.delays == [2.0, 7.0]  # seconds, then an HTTP date relative to Date
    assert (outcome.points_written, outcome.retries, outcome.points_spooled) == (6, 2, 0)
    assert len(server.requests) == 3
    first = server.requests[0]
    assert first.path.startswith("/api/v2/write?")
    assert "org=fablab" in first.path
    assert "bucket=telemetry" in first.path
    assert "precision=ms" in first.path
    assert first.headers["Content-Encoding"] == "gzip"
    assert first.headers["Authorization"] == f"Token {TOKEN}"
    assert first.lines.decode() == line_protocol(sample)
    assert all(r.lines == first.lines for r in server.requests)


def test_retry_after_beyond_backoff_max_spools_at_once(
    sample: ReadingColumns, tmp_path: Path
) -> None:
    sleep, clock = RecordingSleep(), FakeClock()
    script = [Answer(429, b"", (("Retry-After", "120"),))]
    with (
        OverloadedServer(script) as server,
        writer(server.url, tmp_path / "spool", sleep=sleep, clock=clock, backoff_max_s=30) as w,
    ):
        outcome = w.write([sample])
        assert sleep.delays == []
        assert (outcome.points_written, outcome.points_spooled) == (0, 6)
        clock.now += 119.0
        assert w.drain_once() == 0  # the server asked for 120 s
        assert len(server.requests) == 1
        clock.now += 1.0
        assert w.drain_once() == 6
        assert w.backlog() == 0
    assert len(server.requests) == 2


def test_spooled_batch_refused_later_is_kept_and_handed_out(
    sample: ReadingColumns, tmp_path: Path
) -> None:
    spool = tmp_path / "spool"
    clock = FakeClock()
    script = [Answer(429, b"", (("Retry-After", "60"),)), Answer(400, b'{"message":"bad"}')]
    with (
        OverloadedServer(script) as server,
        writer(server.url, spool, clock=clock, backoff_max_s=30) as w,
    ):
        assert w.write([sample]).points_spooled == 6
        [name] = spool_files(spool)
        clock.now += 60.0
        assert w.drain_once() == 0
        assert w.backlog() == 0
        [rejected] = w.take_rejected()
        assert w.take_rejected() == []
        assert w.counters().points_rejected == 6
    assert (rejected.status, rejected.points) == (400, 6)
    assert rejected.lines.decode() == line_protocol(sample)
    assert spool_files(spool) == []
    assert (spool / "rejected" / name).read_bytes() == rejected.lines
    assert len(server.requests) == 2


def test_400_is_rejected_not_retried_not_spooled(sample: ReadingColumns, tmp_path: Path) -> None:
    message = b'{"code":"invalid","message":"unable to parse \'cbolt x\': bad timestamp"}'
    spool = tmp_path / "spool"
    sleep = RecordingSleep()
    with (
        OverloadedServer([Answer(400, message)]) as server,
        writer(server.url, spool, sleep=sleep, gzip=False) as w,
    ):
        outcome = w.write([sample])
        counters = w.counters()
        assert w.backlog() == 0
    assert len(server.requests) == 1
    assert server.requests[0].headers.get("Content-Encoding", "identity") == "identity"
    assert sleep.delays == []
    assert (outcome.points_written, outcome.points_spooled, outcome.retries) == (0, 0, 0)
    [rejected] = outcome.rejected
    assert rejected.status == 400
    assert "bad timestamp" in rejected.body
    assert rejected.lines.decode() == line_protocol(sample)
    assert rejected.points == 6
    assert counters.points_rejected == 6
    assert spool_files(spool) == []


def _json(obj: object) -> bytes:
    return json.dumps(obj).encode()
