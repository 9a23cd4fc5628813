"""The partitioned log on NATS JetStream (nats-py), behind :class:`.log.PartitionedLog`.

The readings stream has the subjects ``{subject}.{partition}`` (partitions are chosen by the
client, :mod:`ingest.cluster.partitions`: nats-server 2.9's subject-mapping partitions are server
configuration, and the client's choice works with any server). Its description records the
partition count, which is fixed for the life of the stream: a worker configured with another count
refuses to start. Each reading is published with ``Nats-Msg-Id`` set to its key, so a group that
an ingest worker publishes again (after a crash, before its PUBACK reached the broker) is dropped
by the stream within ``dedup_window_s``. Consumers are durable pull consumers with explicit
acknowledgement: one per (group, partition) where one worker owns a partition (``detect-p7``),
or one per group over every partition where workers share the work (``store-all`` on the
readings stream, ``alerts-all`` on the events stream, :meth:`JetStreamLog.fetch_shared`).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import ssl
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any, Final
from urllib.parse import urlsplit

import nats
import nats.errors
import nats.js.errors
from nats.aio.client import Client as NatsClient
from nats.js.api import (
    AckPolicy,
    ConsumerConfig,
    DeliverPolicy,
    ObjectStoreConfig,
    RetentionPolicy,
    StorageType,
    StreamConfig,
)
from nats.js.client import JetStreamContext
from nats.js.object_store import ObjectStore

from ingest.cluster.log import Delivery, LogError, LogRecord, PublishOutcome
from ingest.settings import ClusterConfig

__all__ = ["JetStreamLog", "connect_nats"]

_log = logging.getLogger(__name__)

_DESCRIPTION: Final = "boltwatch readings, {partitions} partitions"
_CONNECT_TIMEOUT_S: Final = 5
# At close, pending acknowledgements get this long to reach the server.
_CLOSE_FLUSH_S: Final = 2
# The first connection gives up after this long (later ones retry for ever).
_FIRST_CONNECT_S: Final = 15.0
# At start, JetStream that does not answer (an election after a node's restart) is asked again
# for this long.
_STREAMS_WAIT_S: Final = 30.0
# A checkpoint read gets this long, this many times (an object replaced while read never ends).
_CHECKPOINT_READ_S: Final = 10.0
_CHECKPOINT_READS: Final = 3
# Records of a partition delivered and not yet acknowledged, at most (back-pressure per consumer).
_MAX_ACK_PENDING: Final = 20_000


def _tls_context(config: ClusterConfig) -> ssl.SSLContext | None:
    if not (
        config.tls_ca_file
        or config.tls_cert_file
        or any(u.startswith("tls://") for u in config.urls)
    ):
        return None
    ctx = ssl.create_default_context(cafile=config.tls_ca_file)
    if config.tls_cert_file:
        ctx.load_cert_chain(config.tls_cert_file, config.tls_key_file)
    return ctx


def _password(config: ClusterConfig) -> str | None:
    if not config.password_file:
        return config.password
    lines = Path(config.password_file).read_text(encoding="utf-8").splitlines()
    return lines[0] if lines else ""


async def connect_nats(config: ClusterConfig, name: str) -> NatsClient:
    """Connect to the NATS servers of ``config`` (reconnecting for ever once connected).

    Raises:
        LogError: No server accepted the connection (``cluster.urls``), or the credentials were
            refused (``cluster.user``).
    """
    password = await asyncio.to_thread(_password, config)
    options: dict[str, Any] = {
        "servers": list(config.urls),
        "name": name,
        "connect_timeout": _CONNECT_TIMEOUT_S,
        "allow_reconnect": True,
        "max_reconnect_attempts": -1,
        "reconnect_time_wait": 0.5,
        "tls": _tls_context(config),
    }
    if config.user is not None:
        options["user"] = config.user
        options["password"] = password
    if config.credentials_file is not None:
        options["user_credentials"] = config.credentials_file

    async def quiet(exc: Exception) -> None:
        _log.debug("nats: %s", exc)

    options["error_cb"] = quiet
    if not any(await asyncio.gather(*(_reachable(u) for u in config.urls))):
        raise LogError("cluster.urls", f"no NATS server answered at {', '.join(config.urls)}")
    nc = NatsClient()
    try:
        # Reconnecting for ever also applies to the first connection: bound it here.
        async with asyncio.timeout(_FIRST_CONNECT_S):
            await nc.connect(**options)
    except (TimeoutError, nats.errors.NoServersError) as exc:
        await _close_quietly(nc)
        raise LogError(
            "cluster.urls", f"no NATS server answered at {', '.join(config.urls)}"
        ) from exc
    except (OSError, nats.errors.Error) as exc:
        await _close_quietly(nc)
        key = "cluster.user" if "authorization" in str(exc).lower() else "cluster.urls"
        raise LogError(key, f"cannot connect to NATS: {exc}") from exc
    return nc


async def _reachable(url: str) -> bool:
    """Whether something accepts TCP connections at ``url`` (a quick first look: nats-py would
    retry a refused address until the first-connection deadline)."""
    parts = urlsplit(url)
    try:
        async with asyncio.timeout(_CONNECT_TIMEOUT_S):
            _, writer = await asyncio.open_connection(parts.hostname, parts.port or 4222)
    except (OSError, TimeoutError, ValueError):
        return False
    writer.close()
    with contextlib.suppress(OSError):
        await writer.wait_closed()
    return True


async def _close_quietly(nc: NatsClient) -> None:
    with contextlib.suppress(Exception):
        async with asyncio.timeout(2.0):
            await nc.close()


class JetStreamLog:
    """Readings and dead letters on JetStream streams.

    Use :meth:`open` (connects and makes sure the streams exist), then :meth:`close`.

    Args:
        config: ``[cluster]``.
        nc: A connected NATS client (this log closes it).
    """

    def __init__(self, config: ClusterConfig, nc: NatsClient) -> None:
        self.config = config
        self._nc = nc
        self._js = nc.jetstream(timeout=config.publish_timeout_s)
        self._subs: dict[tuple[str, int], JetStreamContext.PullSubscription] = {}
        self._shared: dict[str, JetStreamContext.PullSubscription] = {}
        self._objects: ObjectStore | None = None

    @classmethod
    async def open(cls, config: ClusterConfig, name: str) -> JetStreamLog:
        """Connect and make sure both streams exist with this config's partitions.

        Raises:
            LogError: NATS unreachable, JetStream not enabled, or the stream exists with another
                partition count (``cluster.partitions``).
        """
        nc = await connect_nats(config, name)
        log = cls(config, nc)
        try:
            await log.ensure_streams()
        except BaseException:
            await nc.close()
            raise
        return log

    @property
    def partitions(self) -> int:
        """The partition count."""
        return self.config.partitions

    @property
    def nats(self) -> NatsClient:
        """The connection (for the key-value buckets of the cluster)."""
        return self._nc

    def subject(self, partition: int) -> str:
        """The subject of ``partition``."""
        return f"{self.config.subject}.{partition}"

    @property
    def events_subject(self) -> str:
        """Subject prefix of the events stream (``.{partition}`` follows)."""
        return f"{self.config.subject}-events"

    @property
    def dead_subject(self) -> str:
        """The subject of the dead-letter stream."""
        return f"{self.config.subject}-dead"

    async def ensure_streams(self) -> None:
        """Create the readings and dead-letter streams if missing; check the partition count.

        JetStream that does not answer yet (a node just restarted, a leader being elected) is
        asked again for up to ``_STREAMS_WAIT_S``: a worker started during an election waits for
        it instead of exiting.

        Raises:
            LogError: JetStream still does not answer (``cluster.urls``), or refuses the streams.
        """
        deadline = time.monotonic() + _STREAMS_WAIT_S
        while True:
            try:
                await self._ensure_streams_once()
            except LogError as exc:
                if exc.key != "cluster.urls" or time.monotonic() > deadline:
                    raise
                _log.warning("JetStream not ready (%s); asking again", exc.reason)
                await asyncio.sleep(1.0)
                continue
            return

    async def _ensure_streams_once(self) -> None:
        c = self.config
        want = _DESCRIPTION.format(partitions=c.partitions)
        readings = self._stream(c.stream, want, f"{c.subject}.*", dedup=True)
        dead = self._stream(c.dead_letter_stream, "boltwatch dead letters", self.dead_subject)
        events = self._stream(
            c.events_stream,
            "boltwatch detection outcomes, per partition",
            f"{self.events_subject}.*",
            dedup=True,
        )
        for cfg in (readings, dead, events):
            try:
                info = await self._js.stream_info(cfg.name or "")
            except nats.js.errors.NotFoundError:
                await self._add_stream(cfg)
                continue
            except (nats.errors.Error, OSError) as exc:
                raise LogError("cluster.urls", f"JetStream does not answer: {exc!r}") from exc
            if cfg is readings and info.config.description != want:
                raise LogError(
                    "cluster.partitions",
                    f"stream {c.stream} was made with {info.config.description!r}; this "
                    f"config says {c.partitions} partitions (the count is fixed for a stream's "
                    "life: keep it, or use a new stream name)",
                )

    def _stream(
        self, name: str, description: str, subject: str, *, dedup: bool = False
    ) -> StreamConfig:
        """A file stream of this config's replicas and age limit (and dedup window)."""
        c = self.config
        return StreamConfig(
            name=name,
            description=description,
            subjects=[subject],
            retention=RetentionPolicy.LIMITS,
            storage=StorageType.FILE,
            num_replicas=c.replicas,
            duplicate_window=c.dedup_window_s if dedup else 0,
            max_age=c.stream_max_age_h * 3600.0,
        )

    async def _add_stream(self, cfg: StreamConfig) -> None:
        try:
            await self._js.add_stream(cfg)
        except nats.js.errors.BadRequestError as exc:
            if "replicas" in str(exc).lower():
                raise LogError(
                    "cluster.replicas",
                    f"{cfg.num_replicas} replicas asked, the NATS cluster cannot place them: "
                    f"{exc.description}",
                ) from exc
            raise LogError(
                "cluster.stream", f"cannot create stream {cfg.name}: {exc.description}"
            ) from exc
        except (nats.errors.Error, OSError) as exc:
            raise LogError("cluster.urls", f"JetStream does not answer: {exc!r}") from exc

    async def publish(self, records: Sequence[LogRecord]) -> PublishOutcome:
        """Publish every record, then wait (at most ``publish_timeout_s``) for every ack."""
        futures: list[asyncio.Future[Any]] = []
        try:
            async with asyncio.timeout(self.config.publish_timeout_s):
                for rec in records:
                    headers = None if rec.msg_id is None else {"Nats-Msg-Id": rec.msg_id}
                    futures.append(
                        await self._js.publish_async(
                            self.subject(rec.partition), rec.data, headers=headers
                        )
                    )
                acks = await asyncio.gather(*futures, return_exceptions=True)
        except TimeoutError:
            for f in futures:
                f.cancel()
            raise LogError(
                "cluster.publish_timeout_s",
                f"the stream did not acknowledge {len(records)} records within "
                f"{self.config.publish_timeout_s} s",
            ) from None
        except (nats.errors.Error, OSError) as exc:
            for f in futures:
                f.cancel()
            raise LogError("cluster.urls", f"publish failed: {exc!r}") from exc
        failed = [a for a in acks if isinstance(a, BaseException)]
        if failed:
            raise LogError(
                "cluster.stream", f"{len(failed)} of {len(records)} records refused: {failed[0]!r}"
            )
        duplicated = tuple(i for i, a in enumerate(acks) if getattr(a, "duplicate", False))
        return PublishOutcome(
            stored=len(records) - len(duplicated),
            duplicates=len(duplicated),
            duplicated=duplicated,
        )

    async def publish_dead(self, data: bytes) -> None:
        """Store one dead-letter record (waits for its acknowledgement)."""
        try:
            await self._js.publish(self.dead_subject, data, timeout=self.config.publish_timeout_s)
        except (nats.errors.Error, OSError) as exc:
            raise LogError("cluster.dead_letter_stream", f"publish failed: {exc!r}") from exc

    def _consumer_config(self, start: int | None) -> ConsumerConfig:
        """A pull consumer with explicit acks: from the start, or from stream sequence ``start``."""
        return ConsumerConfig(
            ack_policy=AckPolicy.EXPLICIT,
            deliver_policy=DeliverPolicy.ALL if start is None else DeliverPolicy.BY_START_SEQUENCE,
            opt_start_seq=None if start is None else max(1, start),
            max_ack_pending=_MAX_ACK_PENDING,
            ack_wait=self.config.ack_wait_s,
        )

    async def _subscription(self, group: str, partition: int) -> JetStreamContext.PullSubscription:
        key = (group, partition)
        sub = self._subs.get(key)
        if sub is None:
            config = self._consumer_config(None)
            sub = await self._js.pull_subscribe(
                self.subject(partition),
                durable=f"{group}-p{partition}",
                stream=self.config.stream,
                config=config,
            )
            self._subs[key] = sub
        return sub

    async def fetch(
        self, group: str, partition: int, max_records: int, timeout_s: float
    ) -> list[Delivery]:
        """Up to ``max_records`` records of ``partition`` for the consumer group ``group``."""
        try:
            sub = await self._subscription(group, partition)
            msgs = await sub.fetch(max_records, timeout=timeout_s)
        except (nats.errors.TimeoutError, TimeoutError):  # nothing new within timeout_s
            return []
        except (nats.errors.Error, OSError) as exc:
            raise LogError(
                "cluster.urls", f"fetch from partition {partition} failed: {exc!r}"
            ) from exc
        out: list[Delivery] = []
        for m in msgs:
            meta = m.metadata
            out.append(
                Delivery(
                    partition=partition,
                    sequence=int(meta.sequence.stream),
                    data=m.data,
                    redelivered=int(meta.num_delivered) > 1,
                    handle=m,
                )
            )
        return out

    async def fetch_shared(
        self, group: str, max_records: int, timeout_s: float, *, events: bool = False
    ) -> list[Delivery]:
        """Up to ``max_records`` records of any partition for ``group``, whose workers share one
        consumer (``{group}-all``): each record goes to one of them, and comes back to another
        if it is not acknowledged within ``ack_wait_s``. In stream order for one worker; use it
        where order across a worker's batches does not matter or only one worker reads
        (``store`` writes by key; ``alerts`` has one active worker).

        Args:
            group: The consumer group.
            max_records: At most this many.
            timeout_s: Fewer (or none) once this has passed.
            events: Read the events stream instead of the readings stream.
        """
        stream = self.config.events_stream if events else self.config.stream
        prefix = self.events_subject if events else self.config.subject
        name = f"{group}-all"
        try:
            sub = self._shared.get(name)
            if sub is None:
                sub = self._shared[name] = await self._js.pull_subscribe(
                    f"{prefix}.*", durable=name, stream=stream, config=self._consumer_config(None)
                )
            msgs = await sub.fetch(max_records, timeout=timeout_s)
        except (nats.errors.TimeoutError, TimeoutError):
            return []
        except (nats.errors.Error, OSError) as exc:
            raise LogError("cluster.urls", f"fetch from {stream} failed: {exc!r}") from exc
        return [
            Delivery(
                partition=_partition_of_subject(m.subject),
                sequence=int(m.metadata.sequence.stream),
                data=m.data,
                redelivered=int(m.metadata.num_delivered) > 1,
                handle=m,
            )
            for m in msgs
        ]

    async def ack(self, deliveries: Sequence[Delivery]) -> None:
        """Acknowledge each delivery (fire and forget: one lost ack means one redelivery)."""
        for d in deliveries:
            await d.handle.ack()

    async def start_at(self, group: str, partition: int, sequence: int) -> None:
        """Make ``group``'s consumer of ``partition`` deliver from stream sequence ``sequence``
        on (a new owner continues from its checkpoint), replacing the one that was there."""
        name = f"{group}-p{partition}"
        self._subs.pop((group, partition), None)
        try:
            with contextlib.suppress(nats.js.errors.NotFoundError):
                await self._js.delete_consumer(self.config.stream, name)
            config = self._consumer_config(sequence)
            self._subs[(group, partition)] = await self._js.pull_subscribe(
                self.subject(partition), durable=name, stream=self.config.stream, config=config
            )
        except (nats.errors.Error, OSError) as exc:
            raise LogError("cluster.urls", f"consumer {name} not made: {exc!r}") from exc

    async def publish_event(self, partition: int, data: bytes, msg_id: str | None) -> None:
        """Store one detection outcome of ``partition`` in the events stream."""
        headers = None if msg_id is None else {"Nats-Msg-Id": msg_id}
        try:
            await self._js.publish(
                f"{self.events_subject}.{partition}",
                data,
                timeout=self.config.publish_timeout_s,
                headers=headers,
            )
        except (nats.errors.Error, OSError) as exc:
            raise LogError("cluster.events_stream", f"publish failed: {exc!r}") from exc

    async def _checkpoints(self) -> ObjectStore:
        if self._objects is None:
            bucket = self.config.checkpoint_bucket
            try:
                self._objects = await self._js.object_store(bucket)
            except nats.js.errors.BucketNotFoundError:
                self._objects = await self._js.create_object_store(
                    bucket,
                    config=ObjectStoreConfig(
                        bucket=bucket,
                        description="boltwatch detector checkpoints, per partition",
                        replicas=self.config.replicas,
                        storage=StorageType.FILE,
                    ),
                )
        return self._objects

    async def save_checkpoint(self, partition: int, data: bytes) -> None:
        """Keep ``data`` as the checkpoint of ``partition`` (replacing the previous one)."""
        try:
            store = await self._checkpoints()
            await store.put(f"p{partition}", data)
        except (nats.errors.Error, OSError) as exc:
            raise LogError(
                "cluster.checkpoint_bucket", f"checkpoint of partition {partition}: {exc!r}"
            ) from exc

    async def load_checkpoint(self, partition: int) -> bytes | None:
        """The checkpoint of ``partition``; None if it has none yet.

        nats-py's object store reads an object's chunks from a subscription with no deadline:
        an object replaced while it is read (its owner checkpointing meanwhile: ``cluster
        status``, a takeover) has its chunks purged, and the read would wait for ever. Each read
        is bounded; a read that runs out of time is dropped (its subscription too) and the
        object read again, as it is now.

        Raises:
            LogError: NATS refused, or every read ran out of time.
        """
        for _ in range(_CHECKPOINT_READS):
            before = set(self._nc._subs)
            try:
                store = await self._checkpoints()
                async with asyncio.timeout(_CHECKPOINT_READ_S):
                    result = await store.get(f"p{partition}")
            except nats.js.errors.ObjectNotFoundError:
                return None
            except TimeoutError:
                for sid in set(self._nc._subs) - before:
                    with contextlib.suppress(nats.errors.Error, OSError):
                        await self._nc._subs[sid].unsubscribe()
                continue
            except (nats.errors.Error, OSError) as exc:
                raise LogError(
                    "cluster.checkpoint_bucket", f"checkpoint of partition {partition}: {exc!r}"
                ) from exc
            return result.data
        raise LogError(
            "cluster.checkpoint_bucket",
            f"checkpoint of partition {partition}: {_CHECKPOINT_READS} reads of "
            f"{_CHECKPOINT_READ_S:g} s each did not complete",
        )

    async def close(self) -> None:
        """Flush what is pending (acknowledgements) and close the connection (bounded: a dead
        or frozen cluster cannot hold a stop up).

        nats-py's ``flush`` waits through ``asyncio.wait_for``, which on Python 3.11 can swallow
        an outer cancellation: it gets its own bound (``timeout``), not an outer one.
        """
        with contextlib.suppress(nats.errors.Error, OSError, TimeoutError):
            await self._nc.flush(timeout=_CLOSE_FLUSH_S)
        await self._nc.close()


def _partition_of_subject(subject: str) -> int:
    """The partition a subject ``….{partition}`` names (-1 for a subject not of ours)."""
    last = subject.rpartition(".")[2]
    return int(last) if last.isdigit() else -1
