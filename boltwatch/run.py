"""``boltwatch run``: the service against real servers, wired from the config."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal
import time
from pathlib import Path

from prometheus_client import start_http_server
from rich.console import Console

from boltwatch.config import Config
from detection.base import DetectionError, DetectionEvent
from detection.engine import Engine
from ingest.influx import InfluxWriter
from ingest.service import IngestMetrics, IngestService, NoDataEvent
from ingest.store import Store, WriteResult
from sensors.codec import DecodedBatch
from sensors.registry import Registry, load_registry

__all__ = ["run_service", "setup_logging"]

_log = logging.getLogger("boltwatch")
_SNAPSHOT_EVERY_S = 60.0
"""Detection state is saved this often (and at stop), so a restart keeps its baselines."""


def setup_logging(config: Config) -> None:
    """Log lines to stderr at the configured level (JSON lines with ``log.json``)."""
    fmt = (
        '{"ts":"%(asctime)s","level":"%(levelname)s","logger":"%(name)s","msg":"%(message)s"}'
        if config.log.json
        else "%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
    logging.basicConfig(level=config.log.level.upper(), format=fmt)
    # gmqtt logs every lost connection with a traceback; ingest logs its own line instead.
    logging.getLogger("gmqtt").setLevel(logging.CRITICAL)


def _influx_writer(config: Config) -> InfluxWriter | None:
    """The InfluxDB writer of ``[influx]``, or None when it is off."""
    if not config.influx.url:
        return None
    token = config.influx.token
    if config.influx.token_file is not None:
        lines = Path(config.influx.token_file).read_text(encoding="utf-8").splitlines()
        token = lines[0] if lines else None
    _log.info("also writing to InfluxDB at %s (bucket %s)", config.influx.url, config.influx.bucket)
    return InfluxWriter(
        config.influx.url,
        org=config.influx.org,
        bucket=config.influx.bucket,
        token=token,
        spool_dir=config.influx.spool_dir or str(Path(config.store.path) / "influx-spool"),
        batch_points=config.influx.batch_points,
    )


async def run_service(config: Config, out: Console, *, mqtt_version: int = 5) -> None:
    """Ingest until SIGTERM or Ctrl-C, then flush and stop cleanly."""
    registry: Registry | None = None
    if config.registry.path is not None:
        registry = load_registry(config.registry.path)
    metrics = IngestMetrics()
    if config.ingest.metrics_listen:
        host, _, port = config.ingest.metrics_listen.rpartition(":")
        start_http_server(int(port), addr=host, registry=metrics.registry)
        _log.info("metrics on http://%s/metrics", config.ingest.metrics_listen)

    def silent(event: NoDataEvent) -> None:
        _log.warning(
            "no_data: %s %s silent since %d", event.kind.value, event.device_id, event.last_seen_ms
        )

    def detected(events: list[DetectionEvent]) -> None:
        # Until the alert pipeline exists, every detection event is one log line.
        for ev in events:
            _log.warning(
                "%s %s %s%s: %s",
                ev.kind.value,
                ev.severity,
                ev.device_id,
                " (late)" if ev.late else "",
                ev.explanation,
            )

    engine = Engine(registry=registry, sink=detected)
    state_path = Path(config.store.path) / "detection-state.npz"
    if state_path.exists():
        try:
            engine.load(state_path)
        except DetectionError as exc:
            _log.warning("detection state not restored (%s): baselines are learned afresh", exc)
    saved_at = [time.monotonic()]

    def consume(batch: DecodedBatch, result: WriteResult) -> None:
        engine.process_batch(batch, now_ms=int(time.time() * 1000))
        if time.monotonic() - saved_at[0] > _SNAPSHOT_EVERY_S:
            engine.save(state_path)
            saved_at[0] = time.monotonic()

    loop = asyncio.get_running_loop()
    stop = asyncio.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    influx = _influx_writer(config)
    with Store(config.store.path, retention_days=config.store.retention_days) as store:
        service = IngestService(
            config,
            store,
            influx=influx,
            registry=registry,
            on_no_data=silent,
            metrics=metrics,
            mqtt_version=mqtt_version,
            consumer=consume,
        )
        async with service:
            await service.wait_subscribed(timeout=30)
            out.print(
                f"ingesting {', '.join(config.broker.topics)} from {config.broker.url} "
                f"into {config.store.path} (Ctrl-C stops)"
            )
            await stop.wait()
            out.print("stopping: committing what was received ...")
        stats = store.stats()
    engine.save(state_path)
    if influx is not None:
        influx.close()
    for sig in (signal.SIGINT, signal.SIGTERM):
        with contextlib.suppress(Exception):
            loop.remove_signal_handler(sig)
    out.print(f"stopped; the store holds {stats.readings:,} readings of {stats.devices} devices")
