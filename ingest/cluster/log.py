"""The seam between boltwatch and a partitioned log (NATS JetStream today).

Ingest workers :meth:`~PartitionedLog.publish` records to partitions and acknowledge the MQTT
broker only once the log has acknowledged them (stored on its replicas); detection and storage
workers :meth:`~PartitionedLog.fetch` a partition's records in order, and
:meth:`~PartitionedLog.ack` them once they are processed. A record fetched and not acknowledged
is delivered again (to whichever worker then owns the partition): at-least-once end to end.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

from ingest.settings import SettingsError

__all__ = ["Delivery", "LogError", "LogRecord", "PartitionedLog", "PublishOutcome"]


class LogError(SettingsError):
    """The log refused or could not take a request (unreachable, timed out, misconfigured).

    A :class:`~ingest.settings.SettingsError`: at start-up it is one line naming the key and exit
    status 2; while running, a group the log did not take is kept and tried again.

    Attributes:
        key: The setting concerned (``cluster.urls``, ``cluster.stream``, ...).
        reason: What went wrong, in words.
    """


@dataclass(frozen=True, slots=True)
class LogRecord:
    """One record to publish.

    Attributes:
        partition: Its partition.
        data: The bytes.
        msg_id: The log's dedup id (a second record with the same id within the dedup window is
            dropped by the log and counted as a duplicate); ``None``: never deduplicated.
    """

    partition: int
    data: bytes
    msg_id: str | None = None


@dataclass(frozen=True, slots=True)
class PublishOutcome:
    """What one :meth:`PartitionedLog.publish` stored.

    Attributes:
        stored: Records the log stored.
        duplicates: Records the log already had (same ``msg_id``).
        duplicated: Their indexes in the published sequence.
    """

    stored: int
    duplicates: int
    duplicated: tuple[int, ...] = ()


@dataclass(frozen=True, slots=True)
class Delivery:
    """A record fetched from a partition.

    Attributes:
        partition: The partition.
        sequence: Its position in the log (the stream's sequence number): checkpoints name it.
        data: The bytes.
        redelivered: Whether it was delivered before (and not acknowledged).
    """

    partition: int
    sequence: int
    data: bytes
    redelivered: bool = False
    handle: Any = field(default=None, repr=False, compare=False)


class PartitionedLog(Protocol):
    """A log of ``partitions`` ordered partitions with acknowledged publishing and consuming."""

    @property
    def partitions(self) -> int: ...

    async def publish(self, records: Sequence[LogRecord]) -> PublishOutcome:
        """Store every record; return once the log acknowledged all of them.

        Raises:
            LogError: Some record was not acknowledged (the caller must not acknowledge its
                source: publishing them again is safe, duplicates are dropped by ``msg_id``).
        """
        ...

    async def publish_dead(self, data: bytes) -> None:
        """Store a dead-letter record. Raises LogError as :meth:`publish` does."""
        ...

    async def fetch(
        self, group: str, partition: int, max_records: int, timeout_s: float
    ) -> list[Delivery]:
        """Up to ``max_records`` records of ``partition`` that the consumer group ``group``
        (``detect``, ``store``) has not acknowledged, in log order; fewer (or none) once
        ``timeout_s`` has passed. Each group reads every partition on its own."""
        ...

    async def fetch_shared(
        self, group: str, max_records: int, timeout_s: float, *, events: bool = False
    ) -> list[Delivery]:
        """Up to ``max_records`` records of any partition for ``group``, whose workers share one
        consumer: each record goes to one of them (the readings stream, or the events stream)."""
        ...

    async def ack(self, deliveries: Sequence[Delivery]) -> None:
        """Mark the deliveries processed: they are not delivered again."""
        ...

    async def close(self) -> None:
        """Flush and close the connection."""
        ...
