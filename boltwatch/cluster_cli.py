"""``boltwatch cluster status``: the cluster as NATS JetStream sees it.

Per partition: its records in the readings stream, the detection worker that owns it (its
lease), the records its consumer has not evaluated yet (the lag), and the stream sequence its
last checkpoint continues from; then the workers alive and each stream's health (leader,
replicas current or lagging). ``--json`` for scripts. Every expected failure (NATS unreachable,
a wrong setting) is one line and exit status 2.
"""

from __future__ import annotations

import asyncio
import json
import os
from typing import Annotated, Any

import typer
from rich.console import Console
from rich.table import Table

__all__ = ["cluster_app", "cluster_status"]

out = Console(highlight=False, soft_wrap=True)

cluster_app = typer.Typer(
    help="The cluster on NATS JetStream (docs/scaling.md).", no_args_is_help=True
)


async def cluster_status(config: Any) -> dict[str, Any]:  # noqa: ANN401 - boltwatch.config.Config
    """The cluster's state as a dict (what ``boltwatch cluster status --json`` prints).

    Raises:
        LogError: NATS unreachable, or the stream made with another partition count.
    """
    import msgspec
    import nats.js.errors

    from boltwatch.cluster_detect import CheckpointHeader
    from ingest.cluster import JetStreamLog
    from ingest.cluster.leases import Leases

    c = config.cluster
    log = await JetStreamLog.open(c, f"status-{os.getpid()}")
    try:
        js = log.nats.jetstream()
        leases = await Leases.open(
            log.nats,
            bucket=c.lease_bucket,
            owner=f"status-{os.getpid()}",
            ttl_s=c.lease_ttl_s,
            replicas=c.replicas,
        )
        owners = await leases.owners()
        members = [m for m in await leases.members() if m != leases.owner]
        info = await js.stream_info(c.stream, subjects_filter=f"{c.subject}.*")
        counts = info.state.subjects or {}
        partitions = []
        for p in range(c.partitions):
            lag: int | None = None
            try:
                ci = await js.consumer_info(c.stream, f"detect-p{p}")
                lag = int(ci.num_pending or 0) + int(ci.num_ack_pending or 0)
            except nats.js.errors.NotFoundError:
                pass
            data = await log.load_checkpoint(p)
            checkpoint = (
                None
                if data is None
                else msgspec.msgpack.decode(data, type=CheckpointHeader).next_sequence
            )
            partitions.append(
                {
                    "partition": p,
                    "records": int(counts.get(f"{c.subject}.{p}", 0)),
                    "owner": owners.get(p),
                    "lag": lag,
                    "checkpoint_from": checkpoint,
                }
            )
        streams = []
        for name in (c.stream, c.events_stream, c.dead_letter_stream):
            si = await js.stream_info(name)
            cl = si.cluster
            streams.append(
                {
                    "stream": name,
                    "messages": int(si.state.messages),
                    "leader": cl.leader if cl else None,
                    "replicas": [
                        {"name": r.name, "current": bool(r.current), "lag": r.lag}
                        for r in (cl.replicas or [] if cl else [])
                    ],
                }
            )
        standby = await Leases.open(
            log.nats,
            bucket=f"{c.lease_bucket}_alerts",
            owner=f"status-{os.getpid()}",
            ttl_s=c.lease_ttl_s,
            replicas=c.replicas,
        )
        alerts_lag: int | None = None
        try:
            ci = await js.consumer_info(c.events_stream, "alerts-all")
            alerts_lag = int(ci.num_pending or 0) + int(ci.num_ack_pending or 0)
        except nats.js.errors.NotFoundError:
            pass
        alerts = {
            "leader": (await standby.owners()).get(0),
            "workers": [m for m in await standby.members() if m != standby.owner],
            "lag": alerts_lag,
        }
        return {"partitions": partitions, "workers": members, "streams": streams, "alerts": alerts}
    finally:
        await log.close()


@cluster_app.command("status")
def status(
    config: Annotated[
        str | None, typer.Option("--config", "-c", help="TOML config file with [cluster] urls.")
    ] = None,
    as_json: Annotated[bool, typer.Option("--json", help="JSON for scripts.")] = False,
) -> None:
    """Partitions with their owner, lag and checkpoint; workers alive; the alerts leader and its
    lag; stream health."""
    from pathlib import Path

    from boltwatch.cli import _user_errors
    from boltwatch.config import ConfigError, load_config

    with _user_errors():
        cfg = load_config(Path(config) if config else None)
        if not cfg.cluster.enabled:
            raise ConfigError("cluster.urls", "no cluster configured: give [cluster] urls")
        state = asyncio.run(cluster_status(cfg))
    if as_json:
        out.print(json.dumps(state, indent=2), markup=False)
        return
    table = Table("partition", "records", "owner", "lag", "checkpoint from", box=None)
    for row in state["partitions"]:
        table.add_row(
            str(row["partition"]),
            f"{row['records']:,}",
            row["owner"] or "-",
            "-" if row["lag"] is None else f"{row['lag']:,}",
            "-" if row["checkpoint_from"] is None else str(row["checkpoint_from"]),
        )
    out.print(table)
    unowned = sum(1 for r in state["partitions"] if r["owner"] is None)
    out.print(
        f"workers alive: {', '.join(state['workers']) or 'none'}; "
        f"{unowned} of {len(state['partitions'])} partitions without an owner"
    )
    a = state["alerts"]
    out.print(
        f"alerts: leader {a['leader'] or '-'}; workers alive: {', '.join(a['workers']) or 'none'}; "
        + ("no outcome read yet" if a["lag"] is None else f"{a['lag']:,} outcomes waiting")
    )
    for s in state["streams"]:
        replicas = ", ".join(
            f"{r['name']} ({'current' if r['current'] else 'lagging'})" for r in s["replicas"]
        )
        out.print(
            f"stream {s['stream']}: {s['messages']:,} messages, leader {s['leader'] or '-'}"
            + (f", replicas {replicas}" if replicas else "")
        )
