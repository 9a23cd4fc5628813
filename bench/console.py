"""Web console render times: the fleet page at 10,000 bolts, a bolt's page over a year of
5-minute data, and the bytes sent, beside the JSON API's time in the same run.

Set-up (not timed): a registry of 10,000 bolts (10 structures of 20 joints of 50 bolts on one
site), one stored reading per bolt, 200 active alerts, and one bolt with a year of 5-minute
readings (105,120) rolled up into the store's 1-minute and 1-hour tables. The composed app of
``boltwatch run`` (API + console, :func:`boltwatch.web.build_web`) is served by uvicorn on
127.0.0.1 in a thread; a client times each request from sending
to the last byte, on a new connection each time.

Cases: (1) reference, ``GET /api/alerts?limit=500`` (the JSON API, the same alert store the
fleet reads); (2) ``GET /console/`` (the fleet page, 10,000 rows); (3) ``GET
/console/devices/ID?range=1y`` (the bolt's page); (4) ``GET /console/data/series/ID?range=1y``
(its chart's data: 8,760 hourly means); (5) the same at ``range=1d`` (288 raw readings).
Prints p50/p99 in ms, bytes, the target (p99 < 200 ms for the pages) and the ratio of each p50
to the reference's.

Usage: python bench/console.py [--requests N] [--bolts N]  (about 1 min)
"""

from __future__ import annotations

import argparse
import http.client
import re
import statistics
import sys
import tempfile
import time
from datetime import UTC, date, datetime
from pathlib import Path

import msgspec

_HERE = Path(__file__).resolve().parent
# This file lives in bench/: drop that folder from sys.path (bench/console.py would shadow any
# top-level `console`), and put the checkout first, for `tests.api_server` (site-packages may
# hold another `tests`).
sys.path[:] = [str(_HERE.parent)] + [p for p in sys.path if Path(p or ".").resolve() != _HERE]

from alerts.api import create_app  # noqa: E402 - after the sys.path fix above
from alerts.pipeline import AlertMetrics, AlertPipeline  # noqa: E402
from alerts.rules import load_rules  # noqa: E402
from alerts.store import AlertStore  # noqa: E402
from boltwatch.config import parse_config  # noqa: E402
from boltwatch.web import build_web  # noqa: E402
from detection.engine import Engine  # noqa: E402
from detection.events import BatchOutcome, DetectionEvent, EventKind, Severity  # noqa: E402
from ingest.store import Store  # noqa: E402
from sensors.codec import TelemetryDecoder  # noqa: E402
from sensors.registry import (  # noqa: E402
    BoltProfile,
    Installation,
    Joint,
    JointBolt,
    Registry,
    RegistryFile,
    Site,
    Structure,
)
from tests.api_server import ApiServer  # noqa: E402

TOKEN = "bench-console-token-0000"  # noqa: S105 - a throw-away server's token
NOW = 1_800_000_000_000
STEP_MS = 300_000
YEAR_MS = 365 * 86_400_000
TARGET_MS = 200.0


def registry(bolts: int) -> Registry:
    per_joint, joints_per_structure = 50, 20
    n_joints = -(-bolts // per_joint)
    structures = -(-n_joints // joints_per_structure)
    joints = []
    k = 0
    for j in range(n_joints):
        members = []
        for p in range(per_joint):
            if k >= bolts:
                break
            members.append(JointBolt(position=p + 1, device_id=f"b{k:05d}"))
            k += 1
        joints.append(
            Joint(
                id=f"j{j:04d}",
                structure=f"s{j // joints_per_structure:03d}",
                name=f"Flange {j}",
                pattern="circular",
                bolt_count=per_joint,
                pitch_circle_diameter_mm=3000.0,
                material="steel",
                bolt_profile="m36",
                bolts=tuple(members),
            )
        )
    return Registry(
        RegistryFile(
            sites=(Site(id="farm", name="Wind farm"),),
            structures=tuple(
                Structure(id=f"s{i:03d}", site="farm", name=f"Tower {i}", type="wind_turbine")
                for i in range(structures)
            ),
            bolt_profiles=(
                BoltProfile(
                    id="m36",
                    thread="M36",
                    nominal_diameter_mm=36.0,
                    grade="10.9",
                    proof_load_kn=700.0,
                    nominal_preload_kn=510.0,
                ),
            ),
            joints=tuple(joints),
            installations=(
                Installation(
                    device_id="b00000",
                    ts=datetime.fromtimestamp((NOW - YEAR_MS) / 1000, UTC),
                    torque_nm=3300.0,
                    preload_kn=510.0,
                    tool="HYTORC",
                    tool_calibrated=date(2026, 1, 1),
                    operator="bench",
                ),
            ),
        )
    )


def fill(store: Store, bolts: int) -> None:
    dec = TelemetryDecoder(clock=lambda: NOW / 1000)
    enc = msgspec.json.encode

    def topic(dev: str) -> str:
        return f"boltwatch/v1/farm/cbolt/{dev}/telemetry"

    latest = [
        (topic(f"b{i:05d}"), enc({"ts": NOW - 60_000, "seq": 1, "preload_kn": 500.0}))
        for i in range(bolts)
    ]
    for i in range(0, len(latest), 5_000):
        store.write(dec.decode_batch(latest[i : i + 5_000]), received_ms=NOW)
    year = [
        (
            topic("b00000"),
            enc(
                {
                    "ts": t,
                    "seq": n + 2,
                    "preload_kn": 500.0 - 0.0001 * n,
                    "temp_c": 10.0 + 8.0 * ((n % 288) / 288.0),
                }
            ),
        )
        for n, t in enumerate(range(NOW - YEAR_MS, NOW - 120_000, STEP_MS))
    ]
    for i in range(0, len(year), 10_000):
        store.write(dec.decode_batch(year[i : i + 10_000]), received_ms=NOW)
    store.rollup(now_ms=NOW)


def alerts(store: AlertStore, n: int) -> None:
    pipe = AlertPipeline(load_rules(None), store, {}, clock=lambda: NOW, metrics=AlertMetrics())
    events = [
        DetectionEvent(
            device_id=f"b{i * 37:05d}",
            kind=EventKind.LOOSENING,
            severity=Severity.WARNING if i % 3 else Severity.MAJOR,
            ts_ms=NOW,
            score=0.9,
            explanation="bench",
            detector="bench",
            site="farm",
            data={},
            device_kind="cbolt",
        )
        for i in range(n)
    ]
    pipe.take(BatchOutcome(events=events))
    pipe.evaluate()


class Client:
    """One connection per request, as curl makes them (on one kept-alive http.client
    connection, console pages took ~45 ms more than curl measured for the same request, a
    client-side artefact)."""

    def __init__(self, url: str) -> None:
        host, port = url.removeprefix("http://").split(":")
        self.host, self.port = host, int(port)
        self.cookie = ""

    def _send(self, path: str, headers: dict[str, str]) -> http.client.HTTPResponse:
        conn = http.client.HTTPConnection(self.host, self.port, timeout=60)
        conn.request("GET", path, headers=headers)
        return conn.getresponse()

    def get(self, path: str, headers: dict[str, str] | None = None) -> tuple[int, bytes, float]:
        h = {"Cookie": self.cookie} if self.cookie else {}
        h.update(headers or {})
        t = time.perf_counter()
        r = self._send(path, h)
        body = r.read()
        return r.status, body, (time.perf_counter() - t) * 1000

    def login(self, link_path: str) -> None:
        r = self._send(link_path, {})
        r.read()
        found = re.search(r"bw_session=([^;]+)", r.getheader("set-cookie") or "")
        if not found:
            raise SystemExit("bench: the one-time login link did not log in")
        self.cookie = f"bw_session={found.group(1)}"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--requests", type=int, default=200, help="requests per case")
    parser.add_argument("--bolts", type=int, default=10_000, help="bolts in the registry")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="bench-console-") as tmp:
        t = time.perf_counter()
        reg = registry(args.bolts)
        config = parse_config({"store": {"path": f"{tmp}/data"}}, environ={})
        with Store(f"{tmp}/data", durable=False) as store:
            fill(store, args.bolts)
        alert_store = AlertStore(Path(tmp) / "alerts.db")
        alerts(alert_store, min(200, args.bolts))
        web = build_web(
            config,
            create_app(alert_store, token=TOKEN, clock=lambda: NOW),
            token=TOKEN,
            alerts=alert_store,
            registry=reg,
            engine=Engine(registry=reg),
            clock_ms=lambda: NOW,
        )
        took = time.perf_counter() - t
        print(f"set-up: {args.bolts:,} bolts, a year of 5-min data, in {took:.0f} s")
        try:
            with ApiServer(web.app) as server:
                client = Client(server.url)
                link = web.login_link("")
                if link is None:
                    raise SystemExit("bench: the console is off")
                client.login(link)
                series = "/console/data/series/b00000?range="
                cases = [
                    (
                        "JSON API: GET /api/alerts?limit=500 (reference)",
                        "/api/alerts?limit=500",
                        True,
                    ),
                    (f"fleet page, {args.bolts:,} bolts", "/console/", False),
                    ("bolt page, range 1y", "/console/devices/b00000?range=1y", False),
                    ("bolt chart data, 1y (hourly means)", series + "1y", False),
                    ("bolt chart data, 1d (raw)", series + "1d", False),
                ]
                rows = []
                for name, path, api in cases:
                    headers = {"Authorization": f"Bearer {TOKEN}"} if api else {}
                    status, body, _ = client.get(path, headers)  # warm-up
                    if status != 200:
                        raise SystemExit(f"bench: {path} answered {status}: {body[:200]!r}")
                    times = [client.get(path, headers)[2] for _ in range(args.requests)]
                    times.sort()
                    p99 = times[min(len(times) - 1, round(0.99 * (len(times) - 1)))]
                    rows.append((name, statistics.median(times), p99, len(body)))
        finally:
            web.close()
            alert_store.close()
    ref = rows[0][1]
    print()
    print(f"{'case':<48} {'p50 ms':>8} {'p99 ms':>8} {'bytes':>10} {'target':>12} {'p50/ref':>8}")
    for i, (name, p50, p99, size) in enumerate(rows):
        target = "" if i == 0 or "data" in name else f"p99 < {TARGET_MS:.0f}"
        print(f"{name:<48} {p50:8.1f} {p99:8.1f} {size:10,} {target:>12} {p50 / ref:8.2f}")


if __name__ == "__main__":
    main()
