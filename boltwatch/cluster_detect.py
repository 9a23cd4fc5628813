"""Cluster role ``detect``: workers that own partitions of the readings stream and run detection.

Each worker takes a fair share of the partitions (``ceil(partitions / workers alive)``) through
leases (:mod:`ingest.cluster.leases`), so a joint is evaluated by one worker at a time. For each
partition it owns it keeps an :class:`~detection.engine.Engine` of its own, restored from the
partition's checkpoint (the detector state and the stream sequence it includes), and reads the
partition from the record after that sequence, in order. Each batch's outcome (events, the alert
kinds each device still shows, the devices seen) goes to the events stream for the alerts
workers. The checkpoint is written every ``cluster.checkpoint_s`` and when the partition is given
back; a worker that dies loses at most what it did since its last checkpoint, which the next owner
does again from the same records: baselines are not learned afresh, and an event raised twice is
one alert (the alert store keeps one alert per device and kind).

A worker lets a partition go the moment its lease is no longer certainly its own (a renewal
refused, or not confirmed in time), without writing a checkpoint: the new owner's is the truth.
"""

from __future__ import annotations

import asyncio
import logging
import math
import time
from dataclasses import dataclass, field
from typing import Final

import msgspec
from rich.console import Console

from boltwatch.cluster_wait import sleep_or_stop
from boltwatch.config import Config
from boltwatch.run import build_engine
from detection.base import DetectionError
from detection.engine import Engine
from detection.events import BatchOutcome
from ingest.cluster import Delivery, JetStreamLog, LogError, decode_records
from ingest.cluster.leases import Leases
from sensors.registry import Registry

__all__ = [
    "CHECKPOINT_VERSION",
    "CheckpointHeader",
    "DetectWorker",
    "decode_outcome",
    "encode_outcome",
]

_log = logging.getLogger("boltwatch.cluster")

CHECKPOINT_VERSION: Final = 1
_GROUP: Final = "detect"
_FETCH_MAX: Final = 2_000
_FETCH_WAIT_S: Final = 0.5
_OUTCOME_ENCODER: Final = msgspec.msgpack.Encoder()
_OUTCOME_DECODER: Final = msgspec.msgpack.Decoder(BatchOutcome)


class _Checkpoint(msgspec.Struct, array_like=True):
    version: int
    next_sequence: int
    engine: bytes


class CheckpointHeader(msgspec.Struct, array_like=True):
    """The start of a checkpoint record, without the detector state (``cluster status``).

    Attributes:
        version: :data:`CHECKPOINT_VERSION`.
        next_sequence: The stream sequence the partition continues from.
    """

    version: int
    next_sequence: int


def encode_outcome(outcome: BatchOutcome) -> bytes:
    """A detection outcome as a record of the events stream."""
    return _OUTCOME_ENCODER.encode(outcome)


def decode_outcome(data: bytes) -> BatchOutcome:
    """An events-stream record back.

    Raises:
        msgspec.MsgspecError: Not an outcome record.
    """
    return _OUTCOME_DECODER.decode(data)


@dataclass
class _Partition:
    """A partition this worker works on."""

    number: int
    engine: Engine
    next_sequence: int
    checkpointed_at: float = field(default_factory=time.monotonic)
    dirty: bool = False


class DetectWorker:
    """Owns partitions and runs detection on them until stopped.

    Args:
        config: ``[cluster]`` and ``[detection.*]`` are used.
        log: The partitioned log.
        leases: This worker's leases.
        registry: Joints and profiles (joint analytics, the nut-factor check).
    """

    def __init__(
        self, config: Config, log: JetStreamLog, leases: Leases, registry: Registry | None
    ) -> None:
        self.config = config
        self.log = log
        self.leases = leases
        self.registry = registry
        self.partitions: dict[int, _Partition] = {}
        self.batches = 0
        self.events = 0
        self._renewed_at = time.monotonic()

    async def run(self, stop: asyncio.Event, on_ready: asyncio.Event | None = None) -> None:
        """Rounds of: renew leases, rebalance, read and evaluate every owned partition, write
        the checkpoints that are due; until ``stop`` is set. Then checkpoint and release all."""
        try:
            while not stop.is_set():
                await self._leases_round()
                if on_ready is not None and not on_ready.is_set():
                    on_ready.set()
                worked = await self._work_round()
                await self._checkpoints_due()
                if not worked:
                    # Idle: fetches already waited; one short pause keeps an empty cluster quiet.
                    await sleep_or_stop(stop, 0.05)
        finally:
            await self._give_back_all()

    # -- leases -----------------------------------------------------------------------------

    async def _renew(self) -> None:
        self._renewed_at = time.monotonic()
        for p in await self.leases.renew():
            _log.warning("partition %d lost (lease not renewed in time): dropped unsaved", p)
            self.partitions.pop(p, None)

    async def _renew_if_due(self) -> None:
        """Renew when a quarter of the TTL has passed: taking partitions up (restoring
        checkpoints) can take longer than a lease lives."""
        if time.monotonic() - self._renewed_at >= self.leases.ttl_s / 4:
            await self._renew()

    async def _leases_round(self) -> None:
        await self.leases.heartbeat()
        await self._renew()
        n = self.log.partitions
        share = math.ceil(n / max(1, len(await self.leases.members())))
        while len(self.leases.held) > share:
            p = max(self.leases.held)
            await self._give_back(p)
        if len(self.leases.held) < share:
            for p in range(n):
                if len(self.leases.held) >= share:
                    break
                if p in self.leases.held:
                    continue
                if await self.leases.acquire(p):
                    try:
                        await self._take(p)
                    except (LogError, DetectionError) as exc:
                        _log.error("partition %d not taken up (%s): released", p, exc)
                        await self.leases.release(p)
                    await self._renew_if_due()

    async def _take(self, p: int) -> None:
        engine = build_engine(self.config, self.registry)
        next_sequence = 1
        data = await self.log.load_checkpoint(p)
        if data is not None:
            try:
                ckpt = msgspec.msgpack.decode(data, type=_Checkpoint)
            except msgspec.MsgspecError as exc:
                raise DetectionError(f"checkpoint p{p}", f"unreadable: {exc}") from exc
            if ckpt.version != CHECKPOINT_VERSION:
                raise DetectionError(f"checkpoint p{p}", f"version {ckpt.version} unknown")
            engine.loads(ckpt.engine, source=f"checkpoint of partition {p}")
            next_sequence = ckpt.next_sequence
        await self.log.start_at(_GROUP, p, next_sequence)
        self.partitions[p] = _Partition(p, engine, next_sequence)
        _log.info(
            "partition %d taken%s",
            p,
            f" from its checkpoint (from sequence {next_sequence})" if data else " (new)",
        )

    async def _give_back(self, p: int) -> None:
        part = self.partitions.pop(p, None)
        if part is not None and self.leases.valid(p):
            try:
                await self._checkpoint(part)
            except LogError as exc:
                _log.warning("partition %d given back without a checkpoint: %s", p, exc)
        await self.leases.release(p)

    async def _give_back_all(self) -> None:
        for p in sorted(self.leases.held):
            await self._give_back(p)

    # -- work -------------------------------------------------------------------------------

    async def _work_round(self) -> bool:
        owned = [p for p in sorted(self.partitions) if self.leases.valid(p)]
        for p in set(self.partitions) - set(owned):
            _log.warning("partition %d: lease not confirmed in time, dropped unsaved", p)
            self.partitions.pop(p)
        if not owned:
            return False
        fetched = await asyncio.gather(
            *(self.log.fetch(_GROUP, p, _FETCH_MAX, _FETCH_WAIT_S) for p in owned),
            return_exceptions=True,
        )
        worked = False
        for p, got in zip(owned, fetched, strict=True):
            if isinstance(got, BaseException):
                if not isinstance(got, LogError):
                    raise got
                _log.warning("partition %d: %s", p, got.reason)
                continue
            part = self.partitions.get(p)
            if got and part is not None and self.leases.valid(p):
                try:
                    await self._evaluate(part, got)
                except LogError as exc:
                    # The outcome was not stored (NATS electing a leader, say): the engine has
                    # moved past records whose outcome is lost. Start the partition again from
                    # its checkpoint, as a new owner would; never end the worker.
                    _log.warning("partition %d: %s; taken up again from its checkpoint", p, exc)
                    self.partitions.pop(p, None)
                    await self._retake(p)
                    continue
                worked = True
        return worked

    async def _retake(self, p: int) -> None:
        """Take ``p`` up again from its checkpoint; release it if that fails too."""
        try:
            await self._take(p)
        except (LogError, DetectionError) as exc:
            _log.error("partition %d not taken up again (%s): released", p, exc)
            await self.leases.release(p)

    async def _evaluate(self, part: _Partition, got: list[Delivery]) -> None:
        fresh = [d for d in got if d.sequence >= part.next_sequence]
        if fresh:
            batch = decode_records([d.data for d in fresh])
            for i, error in batch.errors:
                _log.warning(
                    "partition %d record %d skipped: %s", part.number, fresh[i].sequence, error
                )
            outcome = part.engine.process_batch(batch, now_ms=int(time.time() * 1000))
            first, last = fresh[0].sequence, fresh[-1].sequence
            await self.log.publish_event(
                part.number, encode_outcome(outcome), f"p{part.number}:{first}-{last}"
            )
            part.next_sequence = last + 1
            part.dirty = True
            self.batches += 1
            self.events += len(outcome.events)
        await self.log.ack(got)

    async def _checkpoints_due(self) -> None:
        now = time.monotonic()
        for part in list(self.partitions.values()):
            if part.dirty and now - part.checkpointed_at >= self.config.cluster.checkpoint_s:
                if not self.leases.valid(part.number):
                    continue
                try:
                    await self._checkpoint(part)
                except LogError as exc:
                    _log.warning("partition %d: checkpoint not written: %s", part.number, exc)

    async def _checkpoint(self, part: _Partition) -> None:
        data = msgspec.msgpack.encode(
            _Checkpoint(CHECKPOINT_VERSION, part.next_sequence, part.engine.dumps())
        )
        await self.log.save_checkpoint(part.number, data)
        part.checkpointed_at = time.monotonic()
        part.dirty = False


async def run_detect_worker(
    config: Config,
    out: Console,
    log: JetStreamLog,
    *,
    registry: Registry | None,
    stop: asyncio.Event,
    name: str,
) -> DetectWorker:
    """Run a :class:`DetectWorker` on ``log`` until ``stop``; the worker (for its counts)."""
    leases = await Leases.open(
        log.nats,
        bucket=config.cluster.lease_bucket,
        owner=name,
        ttl_s=config.cluster.lease_ttl_s,
        replicas=config.cluster.replicas,
    )
    worker = DetectWorker(config, log, leases, registry)
    ready = asyncio.Event()
    task = asyncio.create_task(worker.run(stop, ready), name="detect")
    waiter = asyncio.create_task(ready.wait())
    await asyncio.wait({task, waiter}, return_when=asyncio.FIRST_COMPLETED)
    waiter.cancel()
    if ready.is_set():
        out.print(
            f"detecting on stream {config.cluster.stream} ({config.cluster.partitions} "
            f"partitions) on {', '.join(config.cluster.urls)} as {name}: "
            f"{len(leases.held)} partitions taken (role detect; Ctrl-C stops)"
        )
    await task
    out.print(
        f"stopped; {worker.batches:,} batches evaluated, {worker.events:,} detection events; "
        "partitions checkpointed and released"
    )
    return worker
