"""boltwatch as a cluster: a partitioned log between stateless ingest workers and the workers
that own partitions (detection, storage). NATS JetStream is the log (:mod:`.jetstream`), behind
the seam of :mod:`.log`; records are typed (:mod:`.wire`) and keyed by joint (:mod:`.partitions`).
"""

from ingest.cluster.forwarder import LogForwarder
from ingest.cluster.jetstream import JetStreamLog, connect_nats
from ingest.cluster.log import Delivery, LogError, LogRecord, PartitionedLog, PublishOutcome
from ingest.cluster.partitions import PartitionKey, partition_of, registry_key
from ingest.cluster.wire import (
    WIRE_VERSION,
    WireRecord,
    decode_dead,
    decode_records,
    encode_batch,
    encode_dead,
)

__all__ = [
    "WIRE_VERSION",
    "Delivery",
    "JetStreamLog",
    "LogError",
    "LogForwarder",
    "LogRecord",
    "PartitionKey",
    "PartitionedLog",
    "PublishOutcome",
    "WireRecord",
    "connect_nats",
    "decode_dead",
    "decode_records",
    "encode_batch",
    "encode_dead",
    "partition_of",
    "registry_key",
]
