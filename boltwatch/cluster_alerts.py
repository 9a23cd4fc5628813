"""Cluster role ``alerts``: detection outcomes from the events stream to the people who must act.

Alerts workers keep the alert lifecycle store and the outbox in PostgreSQL
(:class:`~alerts.store_pg.PgAlertStore`, ``cluster.alerts_db``), so whichever of them works
finds every alert, silence and recorded notification there. One of them works at a time: the one
holding the lease ``p0`` of the bucket ``{cluster.lease_bucket}_alerts`` (the others wait, and
take over once it is gone for ``cluster.lease_ttl_s``). One worker at a time keeps what the
single-process pipeline relies on: the outcomes of a device in order (the events stream's
consumer ``alerts-all`` delivers them in stream order), one evaluation of the timers, one sender
per outbox row.

A new leader builds its pipeline from the database (open alerts, due timers) and continues the
consumer from the first outcome its predecessor did not acknowledge: an outcome taken and not yet
acknowledged when the predecessor died is taken again, which refreshes the same alert (one alert
per device and kind) and records no second notification (a notification id is recorded once, and
a notification recorded and not sent is sent by the new leader with the same id).

The leader lets go the moment its lease is no longer certainly its own, before anything else is
recorded or sent.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable
from typing import Final

import msgspec
from rich.console import Console

from alerts.pipeline import AlertPipeline
from alerts.store_pg import PgAlertStore, PgStoreError
from boltwatch.cluster_detect import decode_outcome
from boltwatch.cluster_wait import sleep_or_stop
from boltwatch.config import Config, ConfigError
from boltwatch.run import build_alerts
from ingest.cluster import Delivery, JetStreamLog, LogError, encode_dead
from ingest.cluster.leases import Leases
from ingest.store.records import DeadLetter
from sensors.registry import Registry

__all__ = ["AlertsWorker", "run_alerts_worker"]

_log = logging.getLogger("boltwatch.cluster")

_GROUP: Final = "alerts"
_LEADER: Final = 0
"""The one lease of the alerts bucket: who works."""
_FETCH_MAX: Final = 1_000
_FETCH_WAIT_S: Final = 0.25
_RETRY_S: Final = 1.0


class AlertsWorker:
    """Waits for the alerts lease, then feeds outcomes to the pipeline and delivers, until stopped.

    Args:
        log: The partitioned log (the events stream).
        leases: The alerts bucket's leases of this worker.
        make_pipeline: Builds the pipeline on the shared store (called at each takeover).
        interval_s: How often timers are evaluated and the outbox drained (``alerts.interval_s``).
    """

    def __init__(
        self,
        log: JetStreamLog,
        leases: Leases,
        make_pipeline: Callable[[], AlertPipeline],
        *,
        interval_s: float = 1.0,
    ) -> None:
        self.log = log
        self.leases = leases
        self.make_pipeline = make_pipeline
        self.interval_s = interval_s
        self.pipeline: AlertPipeline | None = None
        self.outcomes = 0
        self.takeovers = 0
        self._renewed_at = 0.0
        self._evaluated_at = 0.0

    @property
    def leading(self) -> bool:
        """Whether this worker may act now."""
        return self.pipeline is not None and self.leases.valid(_LEADER)

    async def run(self, stop: asyncio.Event, on_ready: asyncio.Event | None = None) -> None:
        """Until ``stop``: lead when the lease is free, follow otherwise. Then let go."""
        try:
            while not stop.is_set():
                await self._lease_round()
                if on_ready is not None and not on_ready.is_set():
                    on_ready.set()
                if self.pipeline is None:
                    await sleep_or_stop(stop, min(1.0, self.leases.ttl_s / 4))
                    continue
                await self._work_round(stop)
        finally:
            await self._step_down(release=True)

    async def _lease_round(self) -> None:
        now = time.monotonic()
        if now - self._renewed_at < self.leases.ttl_s / 4:
            return
        self._renewed_at = now
        await self.leases.heartbeat()
        if self.pipeline is not None:
            lost = await self.leases.renew()
            if lost or not self.leases.valid(_LEADER):
                _log.warning("alerts lease lost: another worker leads now")
                await self._step_down(release=False)
            return
        if await self.leases.acquire(_LEADER):
            try:
                self.pipeline = await asyncio.get_running_loop().run_in_executor(
                    None, self.make_pipeline
                )
            except PgStoreError as exc:  # the database is away: let another worker try
                _log.error("cannot lead the alerts: %s", exc)
                await self.leases.release(_LEADER)
                return
            self.takeovers += 1
            _log.info("leading the alerts (%d open)", len(self.pipeline.store.open_alerts()))

    async def _work_round(self, stop: asyncio.Event) -> None:
        assert self.pipeline is not None  # noqa: S101 - only while leading
        try:
            got = await self.log.fetch_shared(_GROUP, _FETCH_MAX, _FETCH_WAIT_S, events=True)
        except LogError as exc:
            _log.warning("%s", exc)
            await sleep_or_stop(stop, _RETRY_S)
            return
        try:
            if got and self.leading:
                await self._take(got)
            now = time.monotonic()
            if (got or now - self._evaluated_at >= self.interval_s) and self.leading:
                self._evaluated_at = now
                self.pipeline.evaluate()
                if self.leading:
                    await self.pipeline.deliver()
        except (PgStoreError, LogError) as exc:
            # Not acknowledged: the outcomes come back after ack_wait_s (taken again, they
            # refresh the same alerts and record no notification twice).
            _log.error("alerts: %s", exc)
            await sleep_or_stop(stop, _RETRY_S)

    async def _take(self, got: list[Delivery]) -> None:
        assert self.pipeline is not None  # noqa: S101 - only while leading
        for d in got:
            try:
                outcome = decode_outcome(d.data)
            except msgspec.MsgspecError as exc:
                await self.log.publish_dead(
                    encode_dead(
                        DeadLetter(
                            topic=f"events:partition {d.partition}, sequence {d.sequence}",
                            payload=d.data,
                            field="outcome",
                            reason=str(exc),
                            received_ms=int(time.time() * 1000),
                        )
                    )
                )
                continue
            self.pipeline.take(outcome)
            self.outcomes += 1
        await self.log.ack(got)

    async def _step_down(self, *, release: bool) -> None:
        pipeline, self.pipeline = self.pipeline, None
        if pipeline is not None:
            with contextlib.suppress(Exception):
                await pipeline.aclose()
            store = pipeline.store
            if isinstance(store, PgAlertStore):
                store.close()
        if release:
            await self.leases.release(_LEADER)


async def run_alerts_worker(
    config: Config,
    out: Console,
    log: JetStreamLog,
    *,
    registry: Registry | None,
    stop: asyncio.Event,
    name: str,
) -> AlertsWorker:
    """Run an :class:`AlertsWorker` until ``stop``; the worker (for its counts).

    Raises:
        ConfigError: No ``cluster.alerts_db``, or the database refuses (naming the key).
        RuleError: Bad ``[alerts] rules``.
    """
    dsn = config.cluster.alerts_db
    if not dsn:
        raise ConfigError(
            "cluster.alerts_db",
            "the alerts role keeps its alerts in PostgreSQL: give its URI, like "
            "postgresql://boltwatch@db:5432/boltwatch",
        )
    try:  # at start, so a wrong address is one line and exit 2, not a worker that never leads
        PgAlertStore(dsn).close()
    except PgStoreError as exc:
        raise ConfigError("cluster.alerts_db", str(exc)) from exc

    def make_pipeline() -> AlertPipeline:
        return build_alerts(config, registry, None, out, store=PgAlertStore(dsn))

    make_pipeline().store.close()  # the rules and receivers are checked at start too
    leases = await Leases.open(
        log.nats,
        bucket=f"{config.cluster.lease_bucket}_alerts",
        owner=name,
        ttl_s=config.cluster.lease_ttl_s,
        replicas=config.cluster.replicas,
    )
    worker = AlertsWorker(log, leases, make_pipeline, interval_s=config.alerts.interval_s)
    ready = asyncio.Event()
    task = asyncio.create_task(worker.run(stop, ready), name="alerts")
    waiter = asyncio.create_task(ready.wait())
    await asyncio.wait({task, waiter}, return_when=asyncio.FIRST_COMPLETED)
    waiter.cancel()
    if ready.is_set():
        role = "leading" if worker.pipeline is not None else "standing by"
        out.print(
            f"alerting from stream {config.cluster.events_stream} on "
            f"{', '.join(config.cluster.urls)} into PostgreSQL as {name}, {role} "
            "(role alerts; Ctrl-C stops)"
        )
    await task
    out.print(
        f"stopped; {worker.outcomes:,} outcomes taken, led {worker.takeovers} time(s); "
        "the alerts lease released"
    )
    return worker
