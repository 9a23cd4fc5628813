"""The cluster end to end: readings/s and publish-to-alert latency with 1, 2 and 4 members,
next to one ``boltwatch run`` fed the same way in the same run.

Each member is ``boltwatch run --role all`` (ingest, detect, store and alerts in one process) on a
3-node ``nats-server`` cluster (R3 streams, 64 partitions) and one PostgreSQL; the reference is
case (2) of ``bench/alert_latency.py`` (the single-process service), with the same fleet, warm-up,
load and probes, so that the ratio is the cost of the cluster's hops on this machine:

- **warm-up**: ~7 simulated hours of healthy readings of every bolt, in gateway batches of 100,
  sent by ``mosquitto_pub`` as fast as it goes; readings/s = readings / seconds until every
  reading is stored and evaluated (reference: stored with its device state; cluster: every
  detect consumer has nothing pending, and the stream holds every reading);
- **latency**: background healthy readings at ``--rate`` msg/s while probe bolts drop by 60 % for
  three readings; latency = from the publish of a probe's last low reading to the webhook's
  receipt of its ``loosening`` notification (one clock: the publisher process runs the
  receiver), p50/p99/max over the probes.

On 2 cores every member, the broker, the 3 NATS nodes, PostgreSQL and the publisher share the
same two: more members add hops and processes, not cores (docs/scaling.md).

Usage: python bench/cluster_e2e.py [--bolts N] [--rate R] [--probes K] [--members 1,2,4]
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import importlib.util
import json
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from dataclasses import asdict
from pathlib import Path
from typing import Any

_HERE = Path(__file__).resolve().parent
sys.path[:] = [p for p in sys.path if Path(p or ".").resolve() != _HERE]
sys.path.insert(0, str(_HERE.parent))

from rich.console import Console  # noqa: E402
from rich.table import Table  # noqa: E402

from ingest.cluster import JetStreamLog  # noqa: E402
from ingest.settings import ClusterConfig  # noqa: E402
from tests.integration.conftest import free_port  # noqa: E402
from tests.integration.natscluster import NatsCluster  # noqa: E402
from tests.integration.pg import PostgresServer, find_pg_bin  # noqa: E402

_spec = importlib.util.spec_from_file_location("bench_alert_latency", _HERE / "alert_latency.py")
assert _spec is not None  # noqa: S101 - our own file
assert _spec.loader is not None  # noqa: S101
lat = importlib.util.module_from_spec(_spec)
sys.modules["bench_alert_latency"] = lat  # its dataclasses look their module up
_spec.loader.exec_module(lat)

PARTITIONS = 64
BOLTWATCH = Path(sys.executable).parent / "boltwatch"


def _pct(values: list[float], q: float) -> float:
    return lat._pct(values, q) if values else float("nan")


async def _reset(cluster: ClusterConfig) -> None:
    """Empty the streams and drop consumers, checkpoints and leases: a fresh cluster per case."""
    log = await JetStreamLog.open(cluster, "bench-reset")
    js = log._js
    try:
        for stream in (cluster.stream, cluster.events_stream):
            with contextlib.suppress(Exception):
                for info in await js.consumers_info(stream):
                    await js.delete_consumer(stream, info.name)
            with contextlib.suppress(Exception):
                await js.purge_stream(stream)
        for name in (
            f"OBJ_{cluster.checkpoint_bucket}",
            f"KV_{cluster.lease_bucket}",
            f"KV_{cluster.lease_bucket}_alerts",
        ):
            with contextlib.suppress(Exception):
                await js.purge_stream(name)
    finally:
        await log.close()


async def _evaluated(cluster: ClusterConfig, readings: int) -> bool:
    """The stream holds ``readings`` and every detect consumer has evaluated all of it."""
    log = await JetStreamLog.open(cluster, "bench-watch")
    js = log._js
    try:
        info = await js.stream_info(cluster.stream)
        if int(info.state.messages) < readings:
            return False
        detect = [
            c for c in await js.consumers_info(cluster.stream) if c.name.startswith("detect-")
        ]
        return len(detect) == cluster.partitions and all(
            not c.num_pending and not c.num_ack_pending for c in detect
        )
    finally:
        await log.close()


def _member_config(
    tmp: Path, port: int, nats: NatsCluster, name: str, *, group: str, dsn: str, rules: Path
) -> Path:
    path = tmp / f"{name}.toml"
    urls = ", ".join(f'"{u}"' for u in nats.urls)
    path.write_text(
        f'[broker]\nurl = "mqtt://127.0.0.1:{port}"\nclient_id = "{name}"\n'
        f'topics = ["$share/{group}/boltwatch/v1/+/+/+/+"]\n'
        f'[ingest]\nmetrics_listen = ""\n[store]\npath = "{tmp / (name + "-data")}"\n'
        f'[alerts]\nrules = "{rules}"\napi_listen = ""\ninterval_s = 0.2\n'
        f'[cluster]\nurls = [{urls}]\nname = "{name}"\nrole = "all"\n'
        f'partitions = {PARTITIONS}\nlease_ttl_s = 3.0\ncheckpoint_s = 5.0\nalerts_db = "{dsn}"\n'
    )
    return path


def _start(tmp: Path, config: Path) -> subprocess.Popen[bytes]:
    log = tmp / f"{config.stem}.log"
    with log.open("ab") as out:
        proc = subprocess.Popen(
            [str(BOLTWATCH), "run", "--config", str(config)], stdout=out, stderr=subprocess.STDOUT
        )
    deadline = time.monotonic() + 180
    while not all(
        s in log.read_text() for s in ("ingesting ", "detecting on", "storing stream", "alerting")
    ):
        if proc.poll() is not None or time.monotonic() > deadline:
            proc.kill()
            raise SystemExit(f"{config.stem} did not start:\n{log.read_text()[-2000:]}")
        time.sleep(0.1)
    return proc


def _stop(procs: list[subprocess.Popen[bytes]]) -> None:
    for p in procs:
        if p.poll() is None:
            p.send_signal(signal.SIGTERM)
    for p in procs:
        try:
            p.wait(30)
        except subprocess.TimeoutExpired:
            p.kill()
            p.wait()


async def _cluster_case(
    tmp: Path,
    port: int,
    nats: NatsCluster,
    pg: PostgresServer,
    *,
    members: int,
    plan: Any,  # noqa: ANN401 - bench_alert_latency.FeedPlan, loaded from its file
    console: Console,
) -> dict[str, Any]:
    cluster = ClusterConfig(urls=nats.urls, partitions=PARTITIONS)
    await _reset(cluster)
    case = tmp / f"members-{members}"
    case.mkdir()
    dsn = pg.create_database(f"bench_{members}")
    bolts = plan.devices + plan.probes
    t_end_ms = int(time.time() * 1000) - 2_000
    warm = case / "warmup.txt"
    readings, steps = lat._warmup_file(warm, bolts, t_end_ms)
    plan = type(plan)(**{**asdict(plan), "seq0": steps})
    rules = case / "rules.toml"
    rules.write_text(
        lat._rules_toml("hook", "webhook", f'url = "http://127.0.0.1:{plan.hook_port}/hook"')
    )
    procs = [
        await asyncio.to_thread(
            _start,
            case,
            _member_config(
                case, port, nats, f"m{members}-{i}", group=f"e2e{members}", dsn=dsn, rules=rules
            ),
        )
        for i in range(members)
    ]
    feeder = await asyncio.create_subprocess_exec(
        sys.executable,
        str(_HERE / "alert_latency.py"),
        "--feed",
        json.dumps(asdict(plan)),
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
    )
    assert feeder.stdin is not None  # noqa: S101 - PIPE was asked for
    assert feeder.stdout is not None  # noqa: S101
    try:
        async with asyncio.timeout(60):
            await feeder.stdout.readline()  # "ready"
        console.print(f"    warm-up: {readings:,} readings of {bolts:,} bolts ...")
        t0 = time.perf_counter()
        exe = shutil.which("mosquitto_pub") or "/usr/bin/mosquitto_pub"
        with warm.open("rb") as fh:
            pub = await asyncio.create_subprocess_exec(
                *(exe, "-h", "127.0.0.1", "-p", str(port), "-q", "1", "-V", "mqttv5", "-l"),
                *("-t", f"boltwatch/v1/{lat.SITE}/gateway/gw-01/telemetry"),
                stdin=fh,
            )
            await pub.wait()
        deadline = time.monotonic() + 600
        while not await _evaluated(cluster, readings):
            if time.monotonic() > deadline:
                raise SystemExit("gave up: the warm-up was not evaluated within 600 s")
            if any(p.poll() is not None for p in procs):
                raise SystemExit(f"a member stopped; see {case}/*.log")
            await asyncio.sleep(0.2)
        warmup_s = time.perf_counter() - t0
        await asyncio.sleep(1.0)  # the outcomes reach the alerts worker
        console.print(f"    evaluated in {warmup_s:.1f} s; load and probes ...")
        feeder.stdin.write(b"go\n")
        await feeder.stdin.drain()
        out = (await feeder.stdout.read()).decode().split("\n")
        await feeder.wait()
        feed = json.loads(next(x for x in reversed(out) if x.strip()))
    finally:
        if feeder.returncode is None:
            feeder.kill()
            await feeder.wait()
        await asyncio.to_thread(_stop, procs)
    return {"readings": readings, "warmup_s": warmup_s, "feed": feed}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--bolts", type=int, default=500)
    parser.add_argument("--rate", type=float, default=2_000.0)
    parser.add_argument("--probes", type=int, default=20)
    parser.add_argument("--members", default="1,2,4")
    args = parser.parse_args(argv)
    console = Console(width=132)
    bindir = find_pg_bin()
    if bindir is None:
        raise SystemExit("PostgreSQL is not installed (Debian package postgresql)")
    rows: list[tuple[str, dict[str, Any]]] = []
    with tempfile.TemporaryDirectory() as d:
        tmp = Path(d)
        broker, port = lat._mosquitto(tmp)
        nats = NatsCluster(tmp / "nats", [free_port() for _ in range(9)])
        pg = PostgresServer(bindir)
        try:
            nats.start()
            pg.start()

            def plan() -> Any:  # noqa: ANN401 - FeedPlan
                return lat.FeedPlan(
                    port=port,
                    hook_port=lat._free_port(),
                    devices=args.bolts,
                    probes=args.probes,
                    rate=args.rate,
                    settle_s=5.0,
                    spacing_s=0.5,
                    tail_s=3.0,
                    wait_s=30.0,
                    seq0=0,
                )

            console.print("(ref) boltwatch run, one process ...")
            ref_dir = tmp / "ref"
            ref_dir.mkdir()
            ref = asyncio.run(lat._latency(port, ref_dir, plan(), 0.2, console))
            rows.append(
                (
                    "one process (boltwatch run)",
                    {"readings": ref.warmup_readings, "warmup_s": ref.warmup_s, "feed": ref.feed},
                )
            )
            for members in (int(m) for m in args.members.split(",")):
                console.print(f"(c) {members} member(s), role all ...")
                got = asyncio.run(
                    _cluster_case(
                        tmp, port, nats, pg, members=members, plan=plan(), console=console
                    )
                )
                rows.append((f"cluster, {members} member(s) --role all", got))
        finally:
            nats.stop()
            pg.stop()
            broker.kill()
            broker.wait()
    _report(console, rows, args)
    return 0


def _report(
    console: Console, rows: list[tuple[str, dict[str, Any]]], args: argparse.Namespace
) -> None:
    ref = rows[0][1]
    ref_rate = ref["readings"] / ref["warmup_s"]
    ref_p99 = _pct(ref["feed"]["latencies_ms"], 99)
    table = Table(
        title=(
            f"end to end: {args.bolts:,} bolts + {args.probes} probes, load {args.rate:,.0f} "
            "msg/s; 3-node NATS (R3, 64 partitions), PostgreSQL, Mosquitto on 2 cores"
        )
    )
    for col in (
        "case",
        "warm-up readings/s",
        "ratio",
        "p50 ms",
        "p99 ms",
        "max ms",
        "p99 ratio",
        "probes",
    ):
        table.add_column(col, justify="left" if col == "case" else "right")
    for name, r in rows:
        lats = r["feed"]["latencies_ms"]
        rate = r["readings"] / r["warmup_s"]
        p99 = _pct(lats, 99)
        table.add_row(
            name,
            f"{rate:,.0f}",
            f"{rate / ref_rate:.2f}",
            f"{_pct(lats, 50):.0f}",
            f"{p99:.0f}",
            f"{max(lats) if lats else float('nan'):.0f}",
            f"{p99 / ref_p99:.2f}",
            f"{len(lats)}/{r['feed']['probes']}",
        )
    console.print(table)
    console.print(
        "ratio: to the one-process reference of this run (readings/s: higher is better; "
        "p99: lower is better). Probes: loosening notifications received / probes sent."
    )


if __name__ == "__main__":
    raise SystemExit(main())
