"""Ingest's own settings: the ``[broker]``, ``[ingest]``, ``[store]``, ``[influx]`` and
``[cluster]`` sections.

Ingest owns them (and its errors), and imports nothing above it: ``boltwatch.config`` composes
them with the other sections into the whole configuration, whose ``Config`` satisfies
:class:`ServiceSettings` (docs/architecture.md).
"""

from __future__ import annotations

from typing import Annotated, Literal, Protocol

import msgspec
from msgspec import Meta

__all__ = [
    "BrokerConfig",
    "ClusterConfig",
    "InfluxConfig",
    "IngestConfig",
    "Port",
    "PositiveS",
    "Section",
    "ServiceSettings",
    "SettingsError",
    "StoreConfig",
]

Port = Annotated[int, Meta(ge=1, le=65_535)]
PositiveS = Annotated[float, Meta(gt=0.0, le=86_400.0 * 365)]


class SettingsError(Exception):
    """A setting is invalid or does not work (a broker refusing the login, for instance).

    Attributes:
        key: The offending key as ``section.key`` (or the file, for a syntax error).
        reason: What is wrong and, where useful, what is allowed.
    """

    def __init__(self, key: str, reason: str) -> None:
        super().__init__(f"{key}: {reason}")
        self.key = key
        self.reason = reason


class Section(msgspec.Struct, kw_only=True, forbid_unknown_fields=True, frozen=True):
    """A config section: keyword-only, frozen, unknown keys refused."""


class BrokerConfig(Section, frozen=True):
    """``[broker]``: the MQTT broker ingest subscribes to.

    Attributes:
        url: ``mqtt://host:port`` or ``mqtts://host:port`` (TLS).
        client_id: MQTT client id; stable, so the broker keeps the persistent session.
        username: Optional user name.
        password: Optional password (prefer ``password_file`` or the environment).
        password_file: File whose first line is the password.
        tls_ca_file: CA bundle that signed the broker's certificate.
        tls_cert_file: Client certificate (mutual TLS).
        tls_key_file: Client private key (mutual TLS).
        topics: Topic filters to subscribe to (``$share/GROUP/...`` splits work between workers).
            Each message is decoded by its topic's prefix: ``boltwatch/v1/`` JSON, ``spBv1.0/``
            Sparkplug B; both are subscribed by default.
        keepalive_s: MQTT keep-alive.
        session_expiry_s: How long the broker keeps our session (and queued QoS 1 messages).
        receive_maximum: In-flight QoS 1 messages at once, asked of the broker (MQTT 5 Receive
            Maximum). Ingest also stops reading past max(this, 2 x
            ``ingest.batch_max_messages``) messages waiting for their commit, for brokers that
            send more (docs/operations.md, back-pressure).
    """

    url: str = "mqtt://127.0.0.1:1883"
    client_id: Annotated[str, Meta(min_length=1, max_length=128)] = "boltwatch-ingest"
    username: str | None = None
    password: str | None = None
    password_file: str | None = None
    tls_ca_file: str | None = None
    tls_cert_file: str | None = None
    tls_key_file: str | None = None
    # ingest.decoders.DEFAULT_TOPICS (not imported here: this module stays light).
    topics: list[str] = msgspec.field(default_factory=lambda: ["boltwatch/v1/+/+/+/+", "spBv1.0/#"])
    keepalive_s: Annotated[int, Meta(ge=5, le=3_600)] = 60
    session_expiry_s: Annotated[int, Meta(ge=0, le=2**32 - 1)] = 86_400
    receive_maximum: Annotated[int, Meta(ge=1, le=65_535)] = 1_000


class IngestConfig(Section, frozen=True):
    """``[ingest]``: decoding and batching.

    Attributes:
        max_payload_bytes: Larger payloads are dead-lettered unread.
        batch_max_messages: Group commit: at most this many messages per transaction.
        batch_max_ms: Group commit: at most this long between first message and commit.
        strict_registry: Dead-letter readings of devices that are not in the registry.
        metrics_listen: ``host:port`` of the Prometheus ``/metrics`` endpoint; empty turns it off.
    """

    max_payload_bytes: Annotated[int, Meta(ge=1_024, le=16 * 1024 * 1024)] = 256 * 1024
    batch_max_messages: Annotated[int, Meta(ge=1, le=100_000)] = 1_000
    batch_max_ms: Annotated[int, Meta(ge=1, le=60_000)] = 20
    strict_registry: bool = False
    metrics_listen: str = "127.0.0.1:9108"


class StoreConfig(Section, frozen=True):
    """``[store]``: the embedded time-series store.

    Attributes:
        path: Folder of the SQLite store.
        retention_days: Raw readings older than this are dropped (rollups are kept).
        tail_days: Readings of the UTC days older than this are sealed into compressed chunks
            (newer ones stay rows, which Grafana's SQLite datasource reads directly).
    """

    path: str = "./boltwatch-data"
    retention_days: Annotated[int, Meta(ge=1, le=36_500)] = 400
    tail_days: Annotated[int, Meta(ge=1, le=3_650)] = 1


class InfluxConfig(Section, frozen=True):
    """``[influx]``: also write every reading to InfluxDB 2.x/3.x (or VictoriaMetrics).

    Attributes:
        url: ``http://host:8086`` (VictoriaMetrics: ``http://host:8428``); empty turns it off.
        org: Organisation.
        bucket: Bucket.
        token: API token (prefer ``token_file`` or ``BOLTWATCH_INFLUX_TOKEN``).
        token_file: File whose first line is the token.
        spool_dir: Durable spool while InfluxDB is unreachable (default
            ``{store.path}/influx-spool``).
        batch_points: Points per request.
    """

    url: str = ""
    org: str = "boltwatch"
    bucket: str = "boltwatch"
    token: str | None = None
    token_file: str | None = None
    spool_dir: str = ""
    batch_points: Annotated[int, Meta(ge=1, le=1_000_000)] = 5_000


class ClusterConfig(Section, frozen=True):
    """``[cluster]``: boltwatch as a cluster on NATS JetStream (docs/scaling.md); empty ``urls``
    (the default) is the single-machine service, with no NATS at all.

    Attributes:
        urls: NATS servers, ``nats://host:4222`` (``tls://`` for TLS); more than one for a cluster.
        role: What this process does: ``ingest`` (MQTT to the log), ``detect``, ``store``,
            ``alerts``, or ``all``.
        name: This worker's name in leases and ``boltwatch cluster status`` (default: host name
            and process id).
        partitions: Partitions of the readings stream; fixed for the life of the stream, much
            larger than the number of workers.
        replicas: Copies of each stream on the NATS cluster (3: survives the loss of one node).
        stream: The readings stream; its subjects are ``{subject}.{partition}``.
        subject: Subject prefix of the readings stream.
        dead_letter_stream: Where ingest workers put the messages they reject.
        stream_max_age_h: Records older than this leave the streams (every consumer has long
            processed them).
        dedup_window_s: How long the stream remembers a reading's id to drop a second copy.
        publish_timeout_s: How long an ingest worker waits for the stream's acknowledgement of a
            group before it gives up on it (the group is then not acknowledged to the broker).
        ack_wait_s: A record delivered to a worker and not acknowledged within this long is
            delivered again (the worker died or hung mid-batch).
        events_stream: Detection outcomes, from the workers that own partitions to the alerts
            workers (subjects ``{subject}-events.{partition}``).
        checkpoint_bucket: Object store of each partition's detector state and the last stream
            sequence it includes: a new owner continues from there.
        checkpoint_s: How often an owner checkpoints a partition it works on (and at release).
        lease_bucket: Key-value bucket of the partition leases (which worker owns which).
        lease_ttl_s: A lease not renewed for this long passes to another worker: how long a
            dead worker's partitions wait before they are taken over.
        alerts_db: PostgreSQL of the ``alerts`` role (a libpq URI or connection string,
            ``postgresql://boltwatch@db:5432/boltwatch``; the password from ``PGPASSWORD`` or
            ``~/.pgpass``, as libpq finds it): alerts, history, silences and the outbox, shared
            by every alerts worker.
        user: NATS user; ``password`` / ``password_file``: its password.
        credentials_file: A NATS ``.creds`` file (JWT and NKey seed) instead of user/password.
        tls_ca_file: CA bundle of the NATS servers' certificates.
        tls_cert_file: Client certificate (mutual TLS); ``tls_key_file``: its key.
    """

    urls: list[str] = msgspec.field(default_factory=list)
    role: Literal["ingest", "detect", "store", "alerts", "all"] = "all"
    name: Annotated[str, Meta(pattern=r"^[A-Za-z0-9_-]{0,128}$")] = ""
    partitions: Annotated[int, Meta(ge=1, le=4_096)] = 64
    replicas: Annotated[int, Meta(ge=1, le=5)] = 3
    stream: Annotated[str, Meta(pattern=r"^[A-Za-z0-9_-]{1,64}$")] = "BOLTWATCH_READINGS"
    subject: Annotated[str, Meta(pattern=r"^[A-Za-z0-9_-]+(\.[A-Za-z0-9_-]+)*$")] = (
        "boltwatch.readings"
    )
    dead_letter_stream: Annotated[str, Meta(pattern=r"^[A-Za-z0-9_-]{1,64}$")] = "BOLTWATCH_DEAD"
    stream_max_age_h: Annotated[float, Meta(ge=1.0, le=24.0 * 3_650)] = 168.0
    dedup_window_s: Annotated[float, Meta(ge=1.0, le=86_400.0)] = 600.0
    publish_timeout_s: Annotated[float, Meta(gt=0.0, le=600.0)] = 10.0
    ack_wait_s: Annotated[float, Meta(ge=1.0, le=3_600.0)] = 30.0
    events_stream: Annotated[str, Meta(pattern=r"^[A-Za-z0-9_-]{1,64}$")] = "BOLTWATCH_EVENTS"
    checkpoint_bucket: Annotated[str, Meta(pattern=r"^[A-Za-z0-9_-]{1,64}$")] = (
        "boltwatch_checkpoints"
    )
    checkpoint_s: Annotated[float, Meta(ge=0.1, le=3_600.0)] = 5.0
    lease_bucket: Annotated[str, Meta(pattern=r"^[A-Za-z0-9_-]{1,64}$")] = "boltwatch_leases"
    lease_ttl_s: Annotated[float, Meta(ge=1.0, le=600.0)] = 10.0
    alerts_db: str = ""
    user: str | None = None
    password: str | None = None
    password_file: str | None = None
    credentials_file: str | None = None
    tls_ca_file: str | None = None
    tls_cert_file: str | None = None
    tls_key_file: str | None = None

    @property
    def enabled(self) -> bool:
        """Whether the service runs as a cluster member (``urls`` given)."""
        return bool(self.urls)


class ServiceSettings(Protocol):
    """What :class:`~ingest.service.IngestService` reads of the configuration."""

    @property
    def broker(self) -> BrokerConfig: ...
    @property
    def ingest(self) -> IngestConfig: ...
    @property
    def store(self) -> StoreConfig: ...
    @property
    def influx(self) -> InfluxConfig: ...
