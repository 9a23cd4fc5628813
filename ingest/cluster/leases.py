"""Who owns which partition: leases in a JetStream key-value bucket.

A worker owns partition ``p`` while it holds the key ``p{p}`` of the bucket. It takes a free
partition with a create-if-absent write (the server refuses a second one: compare-and-set on the
key's last revision), keeps it by rewriting the key with its last revision before the bucket's
time-to-live runs out, and gives it back by deleting it. A worker that dies stops renewing: once
the TTL has passed since its last write the server drops the key and another worker can take the
partition. A worker whose renewal is refused (it was too slow: the lease expired and someone else
took it) has lost the partition and must stop working on it at once.

A worker regards a lease as its own only until ``renewed + ttl x (1 - margin)`` on its own
monotonic clock, measured from *before* the renewal was sent, so that it lets go before the
server's expiry can hand the partition to another: two workers never both act for one partition,
as long as their clocks run at the same rate (not the same time).

Every acquisition, release and loss is also appended to a small stream (the lease log), which
``boltwatch cluster status`` reads and the cluster tests check for overlaps.
"""

from __future__ import annotations

import contextlib
import json
import re
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Final

import nats.errors
import nats.js.errors
from nats.aio.client import Client as NatsClient
from nats.js.api import DiscardPolicy, RetentionPolicy, StorageType, StreamConfig
from nats.js.kv import KeyValue

from ingest.cluster.log import LogError

__all__ = ["Lease", "LeaseEvent", "Leases"]

_MARGIN: Final = 0.25
"""A lease is let go this share of its TTL before the server could expire it."""
_LOG_MAX_AGE_S: Final = 7 * 86_400.0
_KEY: Final = re.compile(r"[A-Za-z0-9_-]{1,128}")


@dataclass(frozen=True, slots=True)
class Lease:
    """A partition this worker holds.

    Attributes:
        partition: The partition.
        revision: The key's revision of our last write (the next renewal must match it).
        valid_until: Monotonic time until which we may act for the partition.
    """

    partition: int
    revision: int
    valid_until: float


@dataclass(frozen=True, slots=True)
class LeaseEvent:
    """One line of the lease log: ``acquired``, ``released`` or ``lost``."""

    partition: int
    owner: str
    event: str
    revision: int
    at_ms: int


class Leases:
    """This worker's side of the lease bucket.

    Args:
        kv: The bucket (``cluster.lease_bucket``), its TTL ``ttl_s``.
        nc: The connection (the lease log is published through it).
        owner: This worker's name.
        ttl_s: The bucket's time-to-live.
        log_subject: Subject of the lease log.
        clock: Monotonic seconds (injected in tests).
    """

    def __init__(
        self,
        kv: KeyValue,
        nc: NatsClient,
        *,
        owner: str,
        ttl_s: float,
        log_subject: str,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.kv = kv
        if not _KEY.fullmatch(owner):
            raise ValueError(f"a worker name is letters, digits, '-' and '_': {owner!r}")
        self.owner = owner
        self.ttl_s = ttl_s
        self.log_subject = log_subject
        self.nc = nc
        self._js = nc.jetstream()
        self._clock = clock
        self.held: dict[int, Lease] = {}

    @classmethod
    async def open(
        cls,
        nc: NatsClient,
        *,
        bucket: str,
        owner: str,
        ttl_s: float,
        replicas: int,
    ) -> Leases:
        """The bucket and the lease log, made if missing (streams as nats-server 2.9 knows them).

        Raises:
            LogError: JetStream refused them (``cluster.lease_bucket``).
        """
        js = nc.jetstream()
        log_subject = f"boltwatch.leases.{bucket}"
        try:
            for cfg in (
                StreamConfig(
                    name=f"KV_{bucket}",
                    description=f"boltwatch partition leases, ttl {ttl_s:g} s",
                    subjects=[f"$KV.{bucket}.>"],
                    allow_rollup_hdrs=True,
                    deny_delete=True,
                    discard=DiscardPolicy.NEW,
                    duplicate_window=min(ttl_s, 120.0),
                    max_age=ttl_s,
                    max_msgs_per_subject=1,
                    num_replicas=replicas,
                    storage=StorageType.FILE,
                ),
                StreamConfig(
                    name=f"{bucket}_log",
                    description="boltwatch lease log: acquired, released, lost",
                    subjects=[log_subject],
                    retention=RetentionPolicy.LIMITS,
                    max_age=_LOG_MAX_AGE_S,
                    num_replicas=replicas,
                    storage=StorageType.FILE,
                ),
            ):
                try:
                    await js.stream_info(cfg.name or "")
                except nats.js.errors.NotFoundError:
                    await js.add_stream(cfg)
            kv = await js.key_value(bucket)
        except (nats.errors.Error, OSError) as exc:
            raise LogError(
                "cluster.lease_bucket", f"cannot open the lease bucket: {exc!r}"
            ) from exc
        return cls(kv, nc, owner=owner, ttl_s=ttl_s, log_subject=log_subject)

    def _good_until(self, sent: float) -> float:
        return sent + self.ttl_s * (1.0 - _MARGIN)

    def valid(self, partition: int) -> bool:
        """Whether we may still act for ``partition`` now."""
        lease = self.held.get(partition)
        return lease is not None and self._clock() < lease.valid_until

    async def acquire(self, partition: int) -> bool:
        """Take ``partition`` if nobody holds it; True if we now do."""
        sent = self._clock()
        try:
            revision = await self.kv.create(f"p{partition}", self.owner.encode())
        except nats.js.errors.KeyWrongLastSequenceError:
            return False
        except (nats.errors.Error, OSError):
            return False  # NATS unreachable: try again on the next round
        self.held[partition] = Lease(partition, revision, self._good_until(sent))
        await self._record(partition, "acquired", revision)
        return True

    async def renew(self) -> list[int]:
        """Renew every lease held; returns the partitions lost (refused, or expired here)."""
        lost: list[int] = []
        for partition, lease in list(self.held.items()):
            sent = self._clock()
            try:
                revision = await self.kv.update(
                    f"p{partition}", self.owner.encode(), last=lease.revision
                )
            except nats.js.errors.KeyWrongLastSequenceError:
                lost.append(partition)
                continue
            except (nats.errors.Error, OSError):
                if sent >= lease.valid_until:
                    lost.append(partition)
                continue  # unreachable for now: still ours until valid_until
            self.held[partition] = Lease(partition, revision, self._good_until(sent))
        for partition in lost:
            old = self.held.pop(partition)
            await self._record(partition, "lost", old.revision)
        return lost

    async def release(self, partition: int) -> None:
        """Give ``partition`` back (at stop, or to rebalance)."""
        lease = self.held.pop(partition, None)
        if lease is None:
            return
        try:
            await self.kv.delete(f"p{partition}", last=lease.revision)
        except (nats.errors.Error, OSError):
            return  # it expires by itself
        await self._record(partition, "released", lease.revision)

    async def heartbeat(self) -> None:
        """Say this worker is alive (the key ``m-{owner}``, which expires with the TTL)."""
        with contextlib.suppress(nats.errors.Error, OSError):
            await self.kv.put(f"m-{self.owner}", b"1")

    async def members(self) -> list[str]:
        """The workers alive (heard from within the TTL), this one included."""
        try:
            keys = await self.kv.keys()
        except nats.js.errors.NoKeysError:
            return [self.owner]
        except (nats.errors.Error, OSError):
            return [self.owner]
        alive = {k[2:] for k in keys if k.startswith("m-")}
        alive.add(self.owner)
        return sorted(alive)

    async def owners(self) -> dict[int, str]:
        """Every partition held now, with its owner (for ``boltwatch cluster status``)."""
        out: dict[int, str] = {}
        try:
            keys = await self.kv.keys()
        except nats.js.errors.NoKeysError:
            return out
        for key in keys:
            try:
                entry = await self.kv.get(key)
            except nats.js.errors.KeyNotFoundError:
                continue
            if entry.value is not None and key.startswith("p") and key[1:].isdigit():
                out[int(key[1:])] = entry.value.decode()
        return out

    async def _record(self, partition: int, event: str, revision: int) -> None:
        line = LeaseEvent(partition, self.owner, event, revision, int(time.time() * 1000))
        try:
            await self._js.publish(
                self.log_subject,
                json.dumps(
                    {
                        "partition": line.partition,
                        "owner": line.owner,
                        "event": line.event,
                        "revision": line.revision,
                        "at_ms": line.at_ms,
                    }
                ).encode(),
            )
        except (nats.errors.Error, OSError):
            return  # the log is for people and tests; the lease itself is the key
