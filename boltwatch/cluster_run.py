"""``boltwatch run`` as a member of a cluster (``[cluster] urls`` set): one role per process.

Role ``ingest``: a stateless worker that subscribes to the broker (several workers share one
MQTT 5 shared subscription), decodes and validates each group as the single-machine service
does, and publishes it to the readings stream, partitioned by joint, acknowledging the broker
only once the stream has acknowledged every record. It keeps no store and no detector state, so
any number of them can run and any one can die.

Role ``detect`` (:mod:`boltwatch.cluster_detect`): workers that own partitions by leases and run
detection on them, from checkpoints, into the events stream.

Role ``store`` (:mod:`boltwatch.cluster_store`): workers that share the readings stream and
write it, idempotently, into InfluxDB/VictoriaMetrics or the SQLite store.

Role ``alerts`` (:mod:`boltwatch.cluster_alerts`): workers that keep alerts and the outbox in
PostgreSQL; one leads (a lease), the others stand by and take over.

Role ``all``: every role in one process, on one NATS connection (a small cluster of identical
machines, or one machine that should run as the cluster does).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import re
import signal
import socket
from collections.abc import Coroutine, Iterator
from typing import Any

import msgspec
from rich.console import Console

from boltwatch.cluster_alerts import run_alerts_worker
from boltwatch.cluster_detect import run_detect_worker
from boltwatch.cluster_store import run_store_worker
from boltwatch.config import Config
from boltwatch.run import StopDeadline, serve_metrics
from ingest.cluster import JetStreamLog, LogForwarder, registry_key
from ingest.service import IngestMetrics, IngestService
from sensors.registry import Registry, load_registry

__all__ = ["run_cluster_member", "worker_name"]

_log = logging.getLogger("boltwatch.cluster")

# At stop, what was received gets this long to be published (then the NATS connection gets its
# own 2 s): within the stop deadline even with NATS frozen.
_DRAIN_S = 3.0


def worker_name(config: Config) -> str:
    """``cluster.name``, or host name and process id (as a lease key: letters, digits, - and _)."""
    if config.cluster.name:
        return config.cluster.name
    return re.sub(r"[^A-Za-z0-9_-]", "-", f"{socket.gethostname()}-{os.getpid()}")[:128]


async def run_cluster_member(
    config: Config,
    out: Console,
    *,
    stop: asyncio.Event | None = None,
    deadline: StopDeadline | None = None,
) -> None:
    """Run the role ``cluster.role`` names, until SIGTERM/Ctrl-C (or ``stop``).

    Args:
        config: The validated configuration.
        out: Where progress lines go.
        stop: Set to stop; without it SIGINT/SIGTERM are handled here.
        deadline: Ends the process if the stop takes too long (made here without ``stop``).

    Raises:
        ConfigError: The alerts role without a reachable ``cluster.alerts_db``.
        LogError: NATS unreachable or the stream misconfigured (naming the key).
    """
    role = config.cluster.role
    registry = _registry(config)
    if registry is None:
        _log.warning(
            "no registry.path: readings are partitioned by device, so the bolts of one joint "
            "may be evaluated by different workers (joint rules need the registry)"
        )
    metrics = IngestMetrics()
    if config.ingest.metrics_listen and role in ("ingest", "all"):
        serve_metrics(config.ingest.metrics_listen, metrics.registry)
    stop_event = stop if stop is not None else asyncio.Event()
    if deadline is None and stop is None:
        deadline = StopDeadline()
    name = worker_name(config)
    log: JetStreamLog | None = None
    with _signals(stop_event, deadline) if stop is None else contextlib.nullcontext():
        try:
            _log.info("connecting to NATS at %s as %s", ", ".join(config.cluster.urls), name)
            log = await _until_stop(JetStreamLog.open(config.cluster, name), stop_event)
            if log is None:
                return
            await _run_role(
                config,
                out,
                log,
                registry=registry,
                metrics=metrics,
                stop=stop_event,
                deadline=deadline,
                name=name,
            )
        finally:
            if log is not None:
                if deadline is not None:
                    deadline.phase = "closing the NATS connection"
                await log.close()
            if deadline is not None:
                deadline.cancel()


async def _run_role(
    config: Config,
    out: Console,
    log: JetStreamLog,
    *,
    registry: Registry | None,
    metrics: IngestMetrics,
    stop: asyncio.Event,
    deadline: StopDeadline | None,
    name: str,
) -> None:
    """The work of ``cluster.role``, until ``stop``."""
    role = config.cluster.role
    if role == "all":
        if deadline is not None:
            deadline.phase = "stopping every role"
        async with asyncio.TaskGroup() as roles:
            for each in ("ingest", "detect", "store", "alerts"):
                one = msgspec.structs.replace(
                    config, cluster=msgspec.structs.replace(config.cluster, role=each)
                )
                roles.create_task(
                    _run_role(
                        one,
                        out,
                        log,
                        registry=registry,
                        metrics=metrics,
                        stop=stop,
                        deadline=None,
                        name=name,
                    ),
                    name=each,
                )
        return
    if role == "ingest":
        await _ingest(
            config,
            out,
            log,
            registry=registry,
            metrics=metrics,
            stop=stop,
            deadline=deadline,
            name=name,
        )
        return
    if deadline is not None:
        deadline.phase = _STOPPING[role]
    if role == "store":
        await run_store_worker(config, out, log, stop=stop, name=name)
    elif role == "alerts":
        await run_alerts_worker(config, out, log, registry=registry, stop=stop, name=name)
    else:
        await run_detect_worker(config, out, log, registry=registry, stop=stop, name=name)


_STOPPING = {
    "store": "writing the batch in hand",
    "alerts": "delivering what is in hand and releasing the alerts lease",
    "detect": "checkpointing and releasing the partitions",
}
"""What a role does between SIGTERM and its end (the stop deadline names it)."""


def _registry(config: Config) -> Registry | None:
    """Only a registry file: an ingest worker has no store to hold one."""
    return load_registry(config.registry.path) if config.registry.path is not None else None


async def _ingest(
    config: Config,
    out: Console,
    log: JetStreamLog,
    *,
    registry: Registry | None,
    metrics: IngestMetrics,
    stop: asyncio.Event,
    deadline: StopDeadline | None,
    name: str,
) -> int:
    key = registry_key(
        (lambda d: loc.joint if (loc := registry.locate(d)) is not None else None)
        if registry is not None
        else (lambda _d: None)
    )
    service = IngestService(
        config,
        None,
        registry=registry,
        metrics=metrics,
        forward=LogForwarder(log, key),
        drain_timeout_s=_DRAIN_S,
    )
    async with service:
        await service.wait_subscribed(timeout=30)
        out.print(
            f"ingesting {', '.join(config.broker.topics)} from {config.broker.url} into "
            f"stream {config.cluster.stream} ({config.cluster.partitions} partitions) on "
            f"{', '.join(config.cluster.urls)} as {name} (role ingest; Ctrl-C stops)"
        )
        await stop.wait()
        if deadline is not None:
            deadline.phase = "publishing what was received"
        out.print("stopping: publishing what was received ...")
    return service.committed_batches


@contextlib.contextmanager
def _signals(stop: asyncio.Event, deadline: StopDeadline | None) -> Iterator[None]:
    """SIGINT and SIGTERM set ``stop`` (and start ``deadline``) while the block runs."""
    loop = asyncio.get_running_loop()

    def on_signal() -> None:
        if deadline is not None:
            deadline.start()
            deadline.phase = "stop requested (still starting, or the loop is blocked)"
        stop.set()

    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, on_signal)
    try:
        yield
    finally:
        for sig in (signal.SIGINT, signal.SIGTERM):
            with contextlib.suppress(Exception):
                loop.remove_signal_handler(sig)


async def _until_stop(
    opening: Coroutine[Any, Any, JetStreamLog], stop: asyncio.Event
) -> JetStreamLog | None:
    """Await ``opening`` unless a stop comes first (then None: a SIGTERM while connecting ends
    the process at once, not after the first-connection deadline)."""
    task = asyncio.ensure_future(opening)
    stopper = asyncio.ensure_future(stop.wait())
    try:
        await asyncio.wait({task, stopper}, return_when=asyncio.FIRST_COMPLETED)
    finally:
        stopper.cancel()
        if not task.done():
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
    return None if task.cancelled() else task.result()
