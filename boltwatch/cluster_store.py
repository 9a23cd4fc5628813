"""Cluster role ``store``: workers that write the readings stream into the time-series store.

Store workers share one consumer of the readings stream (``store-all``): each record goes to one
of them, which decodes it back into columns (:func:`ingest.cluster.decode_records`, the same
checks as the MQTT decoder), writes it and only then acknowledges it. A worker that dies before
its acknowledgement leaves its records to be delivered again, to another worker after
``cluster.ack_wait_s``: the write must be idempotent, and it is with both stores:

* ``[influx] url`` set: the readings go to InfluxDB (a point is its series and time: writing it
  again overwrites it with the same values) or VictoriaMetrics (start it with
  ``-dedup.minScrapeInterval=1ms`` so that a sample written twice is kept once). Any number of
  store workers, on any machines; each keeps its spool under its own ``store.path``.
* otherwise, the embedded SQLite store at ``store.path`` (``INSERT OR IGNORE`` on device, time
  and sequence; events and statuses too). One file has one writer: the store lock refuses a
  second worker on the same folder, as it refuses a second ``boltwatch run``.

A record that is not one of ours (a foreign publisher, a newer release) goes to the dead-letter
stream with the field and reason, and is acknowledged: nothing is lost and nothing blocks.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Final

from rich.console import Console

from boltwatch.cluster_wait import sleep_or_stop
from boltwatch.config import Config
from boltwatch.run import build_influx_writer
from boltwatch.store_lock import StoreLock
from ingest.cluster import Delivery, JetStreamLog, LogError, decode_records, encode_dead
from ingest.influx import InfluxWriter, SpoolError
from ingest.store import Store
from ingest.store.records import DeadLetter, StoreError
from sensors.codec import DecodedBatch

__all__ = ["StoreWorker", "run_store_worker"]

_log = logging.getLogger("boltwatch.cluster")

_GROUP: Final = "store"
_FETCH_MAX: Final = 2_000
_FETCH_WAIT_S: Final = 0.5
_UPKEEP_S: Final = 60.0  # the store's rollups, sealing and retention, as IngestService runs them
# After a failed write, wait this long before fetching again (the records come back).
_RETRY_S: Final = 1.0


@dataclass
class StoreCounts:
    """What a store worker did.

    Attributes:
        records: Records fetched and acknowledged.
        stored: Readings newly stored (SQLite) or written (InfluxDB).
        duplicates: Readings the SQLite store already had (records delivered again).
        dead_letters: Records that were not ours, sent to the dead-letter stream.
        failed_writes: Writes that failed (their records were left for a later delivery).
    """

    records: int = 0
    stored: int = 0
    duplicates: int = 0
    dead_letters: int = 0
    failed_writes: int = 0


class StoreWorker:
    """Fetches from the shared ``store`` consumer and writes into one sink until stopped.

    Args:
        log: The partitioned log.
        store: The SQLite store (when ``influx`` is None).
        influx: The InfluxDB/VictoriaMetrics writer.
    """

    def __init__(
        self,
        log: JetStreamLog,
        *,
        store: Store | None = None,
        influx: InfluxWriter | None = None,
        upkeep_s: float = _UPKEEP_S,
    ) -> None:
        if (store is None) == (influx is None):
            raise ValueError("a store worker writes into exactly one of store and influx")
        self.log = log
        self.store = store
        self.influx = influx
        self.upkeep_s = upkeep_s
        self.counts = StoreCounts()

    async def run(self, stop: asyncio.Event) -> None:
        """Fetch, write, acknowledge; until ``stop`` is set (the batch in hand is finished).
        Into SQLite, the store's upkeep (rollups, sealing, retention) runs every ``upkeep_s``
        between two batches, as ``boltwatch run`` does it."""
        loop = asyncio.get_running_loop()
        next_upkeep = time.monotonic() + self.upkeep_s
        while not stop.is_set():
            if self.store is not None and time.monotonic() >= next_upkeep:
                try:
                    await loop.run_in_executor(None, self._upkeep)
                except StoreError as exc:
                    _log.warning("rollups, sealing and retention skipped this time: %s", exc)
                next_upkeep = time.monotonic() + self.upkeep_s
            if self.influx is not None and self.influx.backlog():
                # Spooled while InfluxDB was down: sent in order, before anything newer.
                await loop.run_in_executor(None, self.influx.drain_once)
            try:
                got = await self.log.fetch_shared(_GROUP, _FETCH_MAX, _FETCH_WAIT_S)
            except LogError as exc:  # NATS away: the client reconnects; try again
                _log.warning("%s", exc)
                await sleep_or_stop(stop, _RETRY_S)
                continue
            if not got:
                continue
            try:
                await self._write(got)
            except (StoreError, SpoolError, OSError, LogError) as exc:
                # Not acknowledged: delivered again after ack_wait_s (to this worker or another).
                self.counts.failed_writes += 1
                _log.error("store write failed, %d records left for later: %s", len(got), exc)
                await sleep_or_stop(stop, _RETRY_S)
                continue
            await self.log.ack(got)
            self.counts.records += len(got)

    async def _write(self, got: Sequence[Delivery]) -> None:
        batch = decode_records([d.data for d in got])
        now_ms = int(time.time() * 1000)
        dead = [_dead_letter(got[i], str(e.field), e.reason, now_ms) for i, e in batch.errors]
        if dead:
            for d in dead:
                await self.log.publish_dead(encode_dead(d))
            self.counts.dead_letters += len(dead)
        loop = asyncio.get_running_loop()
        if self.store is not None:
            result = await loop.run_in_executor(None, self._to_store, batch, now_ms)
            self.counts.stored += result[0]
            self.counts.duplicates += result[1]
        elif self.influx is not None and batch.telemetry:
            written = await loop.run_in_executor(None, self._to_influx, batch)
            self.counts.stored += written

    def _upkeep(self) -> None:
        assert self.store is not None  # noqa: S101 - only called with a store
        now_ms = int(time.time() * 1000)
        self.store.rollup(now_ms=now_ms)
        sealed = self.store.seal(now_ms=now_ms)
        if sealed.readings:
            _log.info("sealed %d readings into %d chunks", sealed.readings, sealed.chunks)
        deleted = self.store.enforce_retention(now_ms=now_ms)
        if deleted:
            _log.info("retention: %d raw readings dropped", deleted)

    def _to_store(self, batch: DecodedBatch, now_ms: int) -> tuple[int, int]:
        assert self.store is not None  # noqa: S101 - only called with a store
        result = self.store.write(batch, (), received_ms=now_ms)
        return result.stored, result.duplicates

    def _to_influx(self, batch: DecodedBatch) -> int:
        assert self.influx is not None  # noqa: S101 - only called with a writer
        outcome = self.influx.write(list(batch.telemetry.values()))
        for r in outcome.rejected:
            # A refused batch (4xx) will be refused again: say so, do not block the stream.
            _log.error("InfluxDB refused %d points (%d): %s", r.points, r.status, r.body[:300])
        return outcome.points_written + outcome.points_spooled


def _dead_letter(d: Delivery, field: str, reason: str, now_ms: int) -> DeadLetter:
    return DeadLetter(
        topic=f"stream:partition {d.partition}, sequence {d.sequence}",
        payload=d.data,
        field=field,
        reason=reason,
        received_ms=now_ms,
    )


async def run_store_worker(
    config: Config, out: Console, log: JetStreamLog, *, stop: asyncio.Event, name: str
) -> StoreWorker:
    """Run a :class:`StoreWorker` into ``[influx]`` (when set) or the SQLite store, until
    ``stop``; the worker (for its counts).

    Raises:
        StoreInUseError: The SQLite store folder is another process's (one writer per file).
    """
    influx = build_influx_writer(config)
    with contextlib.ExitStack() as stack:
        if influx is None:
            stack.enter_context(StoreLock(config.store.path))
            store = stack.enter_context(
                Store(
                    config.store.path,
                    retention_days=config.store.retention_days,
                    tail_days=config.store.tail_days,
                )
            )
            worker = StoreWorker(log, store=store)
            target = f"the SQLite store at {config.store.path}"
        else:
            stack.callback(influx.close)
            worker = StoreWorker(log, influx=influx)
            target = f"InfluxDB at {config.influx.url} (bucket {config.influx.bucket})"
        out.print(
            f"storing stream {config.cluster.stream} ({config.cluster.partitions} partitions) "
            f"from {', '.join(config.cluster.urls)} into {target} as {name} "
            "(role store; Ctrl-C stops)"
        )
        await worker.run(stop)
        c = worker.counts
        out.print(
            f"stopped; {c.records:,} records stored ({c.stored:,} readings new, "
            f"{c.duplicates:,} already there, {c.dead_letters:,} dead letters)"
        )
    return worker
