"""The decoder registry of ingest: JSON and Sparkplug B messages in one batch, in arrival order."""

from __future__ import annotations

import json
import time
from collections.abc import Iterable

import numpy as np
import pytest

from ingest.decoders import (
    DEFAULT_TOPICS,
    JSON_PREFIX,
    SPARKPLUG_PREFIX,
    DecoderRegistry,
    default_decoders,
)
from sensors.codec import DecodedBatch, TelemetryDecoder
from sensors.errors import TopicError
from sensors.schema import DeviceKind
from sensors.sparkplug import encode_dbirth, encode_ddata, encode_nbirth, encode_ndeath

NOW_MS = int(time.time() * 1000) - 60_000
SP = "spBv1.0/plant-1"


def _json(dev: str, seq: int, preload_kn: float) -> tuple[str, bytes]:
    payload = {"ts": NOW_MS + seq, "seq": seq, "preload_kn": preload_kn}
    return f"boltwatch/v1/site-a/cbolt/{dev}/telemetry", json.dumps(payload).encode()


def _mixed() -> list[tuple[str, bytes]]:
    return [
        _json("b-1", 1, 50.0),  # 0
        (f"{SP}/NBIRTH/edge-1", encode_nbirth({"uptime_s": 5.0}, NOW_MS, bd_seq=3)),  # 1
        (f"{SP}/DBIRTH/edge-1/b-9", encode_dbirth("cbolt", {"preload_kn": 61.0}, NOW_MS, seq=1)),
        _json("b-1", 2, 51.0),  # 3
        ("somewhere/else", b"{}"),  # 4: no decoder
        (f"{SP}/DDATA/edge-1/b-9", encode_ddata({"preload_kn": 62.0}, NOW_MS + 1, 2)),  # 5
        ("boltwatch/v1/site-a/cbolt/b-1/telemetry", b"{not json"),  # 6
        (f"{SP}/DDATA/edge-1/b-9", encode_ddata({"preload_kn": 63.0}, NOW_MS + 2, 3)),  # 7
        (f"{SP}/NDEATH/edge-1", encode_ndeath(bd_seq=3)),  # 8
    ]


def test_both_codecs_end_in_one_batch_numbered_in_arrival_order() -> None:
    batch = default_decoders().decode_batch(_mixed())
    assert batch.count == 9
    bolts = batch.telemetry[DeviceKind.CBOLT]
    # JSON and Sparkplug rows of one kind are one set of columns, in message order.
    assert bolts.message.tolist() == [0, 2, 3, 5, 7]
    assert bolts.device_id.tolist() == ["b-1", "b-9", "b-1", "b-9", "b-9"]
    assert bolts.site.tolist() == ["site-a", "plant-1", "site-a", "plant-1", "plant-1"]
    assert bolts.values["preload_kn"].tolist() == [50.0, 61.0, 51.0, 62.0, 63.0]
    assert bolts.seq.tolist() == [1, 1, 2, 2, 3]
    assert batch.telemetry[DeviceKind.GATEWAY].message.tolist() == [1]
    assert [i for i, _ in batch.errors] == [4, 6]
    assert isinstance(batch.errors[0][1], TopicError)
    assert "no decoder" in batch.errors[0][1].reason
    assert "not valid JSON" in batch.errors[1][1].reason
    # Births online, the NDEATH takes the edge node and its device offline.
    seen = [(s.message, s.device_id, s.status.state) for s in batch.statuses]
    assert seen == [
        (1, "edge-1", "online"),
        (2, "b-9", "online"),
        (8, "edge-1", "offline"),
        (8, "b-9", "offline"),
    ]


def test_sparkplug_birth_state_survives_messages_split_over_batches() -> None:
    registry = default_decoders()
    messages = _mixed()
    first = registry.decode_batch(messages[:3])
    second = registry.decode_batch(messages[3:])
    assert first.readings + second.readings == 6
    assert [i for i, _ in second.errors] == [1, 3]  # indexes within the second batch


def test_one_codec_per_batch_is_handed_over_as_it_is() -> None:
    json_only = [_json("b-1", s, 50.0) for s in range(5)]
    batch = default_decoders().decode_batch(json_only)
    assert batch.count == 5
    assert batch.telemetry[DeviceKind.CBOLT].message.tolist() == [0, 1, 2, 3, 4]
    assert default_decoders().decode_batch([]).count == 0


class _Recorder:
    """A decoder that remembers what it was given (order and grouping)."""

    def __init__(self) -> None:
        self.calls: list[list[str]] = []

    def decode_batch(self, messages: Iterable[tuple[str, bytes]]) -> DecodedBatch:
        items = list(messages)
        self.calls.append([t for t, _ in items])
        return DecodedBatch(commands=list(range(len(items))), count=len(items))


def test_the_longest_prefix_wins_and_each_decoder_sees_its_messages_in_order() -> None:
    broad, narrow = _Recorder(), _Recorder()
    registry = DecoderRegistry({"a/": broad})
    registry.register("a/b/", narrow)
    assert registry.prefixes == ("a/b/", "a/")
    batch = registry.decode_batch([("a/1", b""), ("a/b/2", b""), ("a/3", b""), ("a/b/4", b"")])
    assert broad.calls == [["a/1", "a/3"]]
    assert narrow.calls == [["a/b/2", "a/b/4"]]
    assert batch.commands == [0, 1, 2, 3]
    assert registry.decoder_for("b/1") is None


def test_default_prefixes_and_topics() -> None:
    registry = default_decoders()
    assert set(registry.prefixes) == {JSON_PREFIX, SPARKPLUG_PREFIX}
    assert isinstance(registry.decoder_for("boltwatch/v1/s/cbolt/b/telemetry"), TelemetryDecoder)
    assert DEFAULT_TOPICS == ("boltwatch/v1/+/+/+/+", "spBv1.0/#")
    with pytest.raises(ValueError, match="empty"):
        registry.register("", TelemetryDecoder())


def test_columns_keep_their_dtypes_after_a_merge() -> None:
    bolts = default_decoders().decode_batch(_mixed()).telemetry[DeviceKind.CBOLT]
    assert bolts.ts_ms.dtype == np.int64
    assert bolts.message.dtype == np.int64
    assert bolts.values["preload_kn"].dtype == np.float64
