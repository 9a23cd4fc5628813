"""No message crashes ingest: IngestService.commit against a real store, no broker needed.

The poison message of issue 14 is dead-lettered and acknowledged, and the good message after it is
stored; a decoder that raises anyway (a bug) costs only the messages it raises on, which become
``decoder_error`` dead letters, with the traceback logged once per exception type.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator, Iterable
from pathlib import Path

import pytest

from boltwatch.config import parse_config
from ingest.isolation import DECODER_ERROR, DecoderGuard
from ingest.service import IngestService, _Pending
from ingest.store import Store
from sensors.codec import DecodedBatch, TelemetryDecoder
from sensors.schema import DeviceKind

NOW_S = 1_772_323_500.0
BOLT = "boltwatch/v1/site-a/cbolt/bolt-1/telemetry"
POISON = b'{"ts": 9223372036854775808, "seq": 1, "preload_kn": 40}'


def _store(service: IngestService) -> Store:
    assert service.store is not None
    return service.store


def good(seq: int) -> bytes:
    return b'{"ts": %d, "seq": %d, "preload_kn": 40.5}' % (NOW_S * 1000 - 60_000 + seq, seq)


@pytest.fixture
async def service(tmp_path: Path) -> AsyncIterator[IngestService]:
    cfg = parse_config(
        {
            # Never connected: commit() is called directly.
            "broker": {"url": "mqtt://127.0.0.1:1"},
            "ingest": {"metrics_listen": ""},
            "store": {"path": str(tmp_path / "store")},
        },
        environ={},
    )
    with Store(tmp_path / "store") as store:
        svc = IngestService(cfg, store, clock=lambda: NOW_S)
        try:
            yield svc
        finally:
            svc._db.shutdown(wait=True)
            svc._influx_pool.shutdown(wait=True)


def pending(messages: Iterable[tuple[str, bytes]]) -> list[_Pending]:
    loop = asyncio.get_running_loop()
    return [_Pending(t, p, int(NOW_S * 1000), loop.create_future()) for t, p in messages]


def rejected(svc: IngestService, reason: str) -> float:
    value = svc.metrics.registry.get_sample_value(
        "boltwatch_ingest_rejected_total", {"reason": reason}
    )
    return value or 0.0


async def test_the_poison_message_is_dead_lettered_and_the_next_one_stored(
    service: IngestService,
) -> None:
    group = pending([(BOLT, POISON), (BOLT, good(2))])
    result = await service.commit(group)
    assert [p.done.result() for p in group if p.done is not None] == [0, 0]  # both acknowledged
    assert result.by_kind == {DeviceKind.CBOLT.value: 1} or sum(result.by_kind.values()) == 1
    stored = _store(service).readings(DeviceKind.CBOLT)
    assert len(stored) == 1
    (dead,) = _store(service).dead_letters()
    assert dead.payload == POISON
    assert dead.field == "$.ts"
    assert "future" in dead.reason
    assert rejected(service, "timestamp") == 1


class RaisingDecoder:
    """A decoder with a bug: raises on any group holding a payload with ``boom``."""

    def __init__(self, error: type[Exception]) -> None:
        self.inner = TelemetryDecoder(clock=lambda: NOW_S)
        self.error = error
        self.calls = 0

    def decode_batch(self, messages: Iterable[tuple[str, bytes]]) -> DecodedBatch:
        self.calls += 1
        items = list(messages)
        if any(b"boom" in p for _, p in items):
            raise self.error("a bug in a decoder")
        return self.inner.decode_batch(items)


async def test_a_raising_decoder_costs_only_its_messages(
    service: IngestService, caplog: pytest.LogCaptureFixture
) -> None:
    service.decoder = RaisingDecoder(OverflowError)  # type: ignore[assignment]
    boom = b'{"ts": 1, "seq": 1, "preload_kn": 1, "boom": 1}'
    with caplog.at_level(logging.ERROR, logger="boltwatch.ingest"):
        for round_ in range(2):
            group = pending(
                [(BOLT, good(10 * round_ + 1)), (BOLT, boom), (BOLT, good(10 * round_ + 2))]
            )
            await service.commit(group)
            assert all(p.done is not None and p.done.result() == 0 for p in group)
    assert len(_store(service).readings(DeviceKind.CBOLT)) == 4
    dead = _store(service).dead_letters()
    assert [d.field for d in dead] == [DECODER_ERROR, DECODER_ERROR]
    assert all(d.payload == boom and "OverflowError" in d.reason for d in dead)
    assert rejected(service, DECODER_ERROR) == 2
    assert service.decoder_guard.failures == 2
    tracebacks = [r for r in caplog.records if r.exc_info is not None]
    assert len(tracebacks) == 1  # once per exception type, not per message
    assert _store(service).stats().dead_letters_by_reason == {DECODER_ERROR: 2}


def test_guard_keeps_message_numbers_across_kinds_and_channels() -> None:
    decoder = RaisingDecoder(KeyError)
    messages = [
        ("boltwatch/v1/s/printer3d/p1/telemetry", b'{"ts": %d, "seq": 1}' % (NOW_S * 1000)),
        (BOLT, b"boom"),
        ("boltwatch/v1/s/cbolt/b2/status", b"online"),
        (BOLT, good(3)),
        ("boltwatch/v1/s/cbolt/b2/cmd", b"{}"),
    ]
    out = DecoderGuard().decode(decoder.decode_batch, messages)
    assert out.count == 5
    assert [(i, e.field) for i, e in out.errors] == [(1, DECODER_ERROR)]
    assert out.telemetry[DeviceKind.PRINTER3D].message.tolist() == [0]
    assert out.telemetry[DeviceKind.CBOLT].message.tolist() == [3]
    assert [s.message for s in out.statuses] == [2]
    assert out.commands == [4]


class _BrokenWriter:
    """An InfluxDB writer with a bug: every write raises (not a server: the service's handling
    of its own writer failing is what is tested)."""

    def write(self, columns: object) -> object:
        raise RuntimeError("writer bug")

    def backlog(self) -> int:
        return 0


async def test_a_failing_influx_write_is_counted_and_logged_not_dropped_silently(
    service: IngestService, caplog: pytest.LogCaptureFixture
) -> None:
    service.influx = _BrokenWriter()  # type: ignore[assignment]
    for seq in (1, 2):
        await service.commit(pending([(BOLT, good(seq))]))
    await asyncio.get_running_loop().run_in_executor(service._influx_pool, lambda: None)
    assert len(_store(service).readings(DeviceKind.CBOLT)) == 2  # the store keeps them
    assert rejected(service, "influx_lost") == 2
    lines = [r for r in caplog.records if "not sent" in r.getMessage()]
    assert len(lines) == 1  # logged once
    assert "writer bug" in lines[0].getMessage()
    service._influx_pool.shutdown(wait=True)
    await service.commit(pending([(BOLT, good(3))]))  # after the writer stopped
    assert rejected(service, "influx_lost") == 3
