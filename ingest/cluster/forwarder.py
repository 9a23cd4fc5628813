"""An ingest worker's group goes to the partitioned log instead of the store.

:class:`LogForwarder` is the :class:`ingest.service.Forwarder` of the ``ingest`` role: it cuts a
decoded group into records (:mod:`.wire`), puts each on the partition of its device's key (its
joint, :mod:`.partitions`) and returns once the log acknowledged every record, so that the
broker is acknowledged only then (at-least-once, as with the store). Dead letters go to the log's
dead-letter stream. The counts it returns are what the log stored: a record published again after
a crash (same id) is counted as a duplicate, as the store counts a reading stored twice.
"""

from __future__ import annotations

import asyncio
from collections import Counter
from collections.abc import Sequence

from ingest.cluster.log import LogRecord, PartitionedLog
from ingest.cluster.partitions import PartitionKey, partition_of
from ingest.cluster.wire import encode_batch, encode_dead
from ingest.store.records import DeadLetter, WriteResult
from sensors.codec import DecodedBatch

__all__ = ["LogForwarder"]


class LogForwarder:
    """Publishes groups to ``log``, partitioned by ``key(device_id)``.

    Args:
        log: The partitioned log (JetStream).
        key: A device id to its partition key (``registry_key``); settable, so a registry that
            changes while running applies to the next group.
    """

    def __init__(self, log: PartitionedLog, key: PartitionKey) -> None:
        self.log = log
        self.key = key

    async def write(
        self, batch: DecodedBatch, dead: Sequence[DeadLetter], *, received_ms: int
    ) -> WriteResult:
        """Publish the group's records and dead letters; return once all are acknowledged."""
        del received_ms  # each reading carries its own time; a dead letter its receipt
        records = encode_batch(batch)
        n = self.log.partitions
        partitions: dict[str, int] = {}
        out: list[LogRecord] = []
        for r in records:
            p = partitions.get(r.device_id)
            if p is None:
                p = partitions[r.device_id] = partition_of(self.key(r.device_id), n)
            out.append(LogRecord(p, r.data, r.msg_id))
        outcome = await self.log.publish(out) if out else None
        if dead:
            await asyncio.gather(*(self.log.publish_dead(encode_dead(d)) for d in dead))
        kinds = [k for k, cols in batch.telemetry.items() for _ in range(len(cols))]
        # Records are the readings first (kind by kind), then events and statuses.
        repeated = [] if outcome is None else [i for i in outcome.duplicated if i < len(kinds)]
        stored = Counter(k.value for k in kinds)
        stored.subtract(kinds[i].value for i in repeated)
        n_events = len(batch.events)
        event_repeats = (
            0
            if outcome is None
            else sum(1 for i in outcome.duplicated if len(kinds) <= i < len(kinds) + n_events)
        )
        return WriteResult(
            stored=len(kinds) - len(repeated),
            duplicates=len(repeated) + event_repeats,
            events=n_events - event_repeats,
            dead_letters=len(dead),
            by_kind={k: v for k, v in stored.items() if k in {c.value for c in batch.telemetry}},
        )
