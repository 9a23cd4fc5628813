"""MQTT ingest, dead-letter, dedup, group commit, storage (embedded store, InfluxDB writer).

Decides nothing about what is anomalous: it stores, acknowledges, and hands committed batches
to a consumer (the detection engine).
"""

from ingest.decoders import Decoder, DecoderRegistry, default_decoders
from ingest.influx import InfluxWriter, RejectedBatch, WriteOutcome, line_protocol
from ingest.service import BatchConsumer, IngestMetrics, IngestService, IngestTotals, NoDataEvent
from ingest.store import DeadLetter, DeviceRecord, Store, StoreError, StoreStats, WriteResult

__all__ = [
    "BatchConsumer",
    "DeadLetter",
    "Decoder",
    "DecoderRegistry",
    "DeviceRecord",
    "InfluxWriter",
    "IngestMetrics",
    "IngestService",
    "IngestTotals",
    "NoDataEvent",
    "RejectedBatch",
    "Store",
    "StoreError",
    "StoreStats",
    "WriteOutcome",
    "WriteResult",
    "default_decoders",
    "line_protocol",
]
