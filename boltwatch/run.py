"""``boltwatch run``: the service against real servers, wired from the config."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from prometheus_client import CollectorRegistry, start_http_server
from rich.console import Console

from alerts.api import create_app, parse_listen, serve_api
from alerts.channels import make_channel
from alerts.channels.console import ConsoleChannel
from alerts.model import Channel
from alerts.pipeline import AlertMetrics, AlertPipeline
from alerts.rules import load_rules
from alerts.store import AlertStore
from boltwatch.config import Config
from detection.base import DetectionError, DetectionEvent
from detection.engine import Engine
from ingest.influx import InfluxWriter
from ingest.service import IngestMetrics, IngestService, NoDataEvent
from ingest.store import Store, WriteResult
from sensors.codec import DecodedBatch
from sensors.registry import Registry, load_registry

__all__ = ["ServiceSummary", "build_alerts", "run_service", "setup_logging"]

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


@dataclass(frozen=True, slots=True)
class ServiceSummary:
    """What a run did (printed at stop, used by the demo)."""

    readings: int
    devices: int
    events: int
    alerts: dict[str, int]


def _api_token(config: Config) -> str | None:
    a = config.alerts
    if a.api_token_file is not None:
        lines = Path(a.api_token_file).read_text(encoding="utf-8").splitlines()
        return lines[0].strip() if lines and lines[0].strip() else None
    return a.api_token or None


def _group_of(registry: Registry | None) -> Callable[[str], str] | None:
    if registry is None:
        return None

    def group(device_id: str) -> str:
        info = registry.bolt(device_id)
        return info.joint.id if info is not None else ""

    return group


def build_alerts(
    config: Config,
    registry: Registry | None,
    metrics_registry: CollectorRegistry | None,
    console: Console | None = None,
) -> AlertPipeline:
    """The alert pipeline of ``[alerts]``: rules, store, one channel per receiver.

    Raises:
        RuleError: Bad rules or receiver options (naming the key).
    """
    rules = load_rules(config.alerts.rules)
    path = config.alerts.store or str(Path(config.store.path) / "alerts.db")
    channels: dict[str, Channel] = {}
    for r in rules.receivers:
        if r.channel == "console" and console is not None:
            channels[r.name] = ConsoleChannel(
                ConsoleChannel.from_options(r.options, r.key).options, console
            )
        else:
            channels[r.name] = make_channel(r.channel, r.options, r.key)
    return AlertPipeline(
        rules,
        AlertStore(path),
        channels,
        metrics=AlertMetrics(metrics_registry),
        group_of=_group_of(registry),
    )


async def run_service(  # noqa: PLR0912, PLR0915 - the composition root, one part after another
    config: Config,
    out: Console,
    *,
    mqtt_version: int = 5,
    stop: asyncio.Event | None = None,
    alert_console: Console | None = None,
    api_token: str | None = None,
    on_ready: Callable[[], None] | None = None,
    late_by_age: bool = True,
) -> ServiceSummary:
    """Ingest, detection, alerts and the HTTP API until SIGTERM/Ctrl-C (or ``stop``), then flush
    and stop cleanly.

    Args:
        config: The validated configuration.
        out: Where progress lines go.
        mqtt_version: 5 (ack after store) or 4 (MQTT 3.1.1, the embedded broker).
        stop: Set to stop; without it SIGINT/SIGTERM are handled here.
        alert_console: Console receivers print here (default: stdout).
        api_token: API token overriding the config's (the demo makes one up).
        on_ready: Called once everything is up and subscribed.
        late_by_age: Readings older than 10 minutes on arrival are late (backfill). The demo
            turns it off: its simulated clock runs ahead of the wall clock.
    """
    registry: Registry | None = None
    if config.registry.path is not None:
        registry = load_registry(config.registry.path)
    metrics = IngestMetrics()
    pipeline = build_alerts(config, registry, metrics.registry, alert_console)
    if config.ingest.metrics_listen:
        host, _, port = config.ingest.metrics_listen.rpartition(":")
        start_http_server(int(port), addr=host, registry=metrics.registry)
        _log.info("metrics on http://%s/metrics", config.ingest.metrics_listen)

    def silent(event: NoDataEvent) -> None:
        pipeline.on_no_data(event.device_id, event.kind.value, event.site, event.last_seen_ms)

    def activity(active: dict[str, list[str]]) -> None:
        pipeline.on_activity(active)

    def detected(events: list[DetectionEvent]) -> None:
        pipeline.on_events(events)

    engine = Engine(registry=registry, sink=detected, on_activity=activity)
    state_path = Path(config.store.path) / "detection-state.npz"
    if state_path.exists():
        try:
            engine.load(state_path)
        except DetectionError as exc:
            _log.warning("detection state not restored (%s): baselines are learned afresh", exc)
    saved_at = [time.monotonic()]

    def consume(batch: DecodedBatch, result: WriteResult) -> None:
        engine.process_batch(batch, now_ms=int(time.time() * 1000) if late_by_age else None)
        seen: set[str] = set()
        for cols in batch.telemetry.values():
            seen.update(cols.device_id.tolist())
        pipeline.on_seen(seen)
        if time.monotonic() - saved_at[0] > _SNAPSHOT_EVERY_S:
            engine.save(state_path)
            saved_at[0] = time.monotonic()

    loop = asyncio.get_running_loop()
    own_signals = stop is None
    stop_event = stop if stop is not None else asyncio.Event()
    if own_signals:
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, stop_event.set)
    influx = _influx_writer(config)
    token = api_token or _api_token(config)
    try:
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
            async with service, asyncio.TaskGroup() as tasks:
                alerts_task = tasks.create_task(
                    pipeline.run(config.alerts.interval_s), name="alerts"
                )
                api_task: asyncio.Task[None] | None = None
                if config.alerts.api_listen and token:
                    api_host, api_port = parse_listen(config.alerts.api_listen)
                    app = create_app(
                        pipeline.store,
                        token=token,
                        clock=pipeline.clock,
                        metrics_registry=metrics.registry,
                    )
                    api_task = tasks.create_task(serve_api(app, api_host, api_port), name="api")
                    _log.info("alerts API on http://%s/api/alerts", config.alerts.api_listen)
                elif config.alerts.api_listen:
                    _log.warning(
                        "alerts API off: set alerts.api_token (or BOLTWATCH_ALERTS_API_TOKEN)"
                    )
                await service.wait_subscribed(timeout=30)
                out.print(
                    f"ingesting {', '.join(config.broker.topics)} from {config.broker.url} "
                    f"into {config.store.path}; detection and alerts on (Ctrl-C stops)"
                )
                if on_ready is not None:
                    on_ready()
                await stop_event.wait()
                out.print("stopping: committing what was received ...")
                alerts_task.cancel()
                if api_task is not None:
                    api_task.cancel()
            stats = store.stats()
        # Last evaluation and delivery after the final commit.
        pipeline.evaluate()
        await pipeline.deliver()
    finally:
        engine.save(state_path)
        await pipeline.aclose()
        counts = pipeline.store.counts()
        pipeline.store.close()
        if influx is not None:
            influx.close()
        if own_signals:
            for sig in (signal.SIGINT, signal.SIGTERM):
                with contextlib.suppress(Exception):
                    loop.remove_signal_handler(sig)
    out.print(
        f"stopped; the store holds {stats.readings:,} readings of {stats.devices} devices; "
        f"{engine.stats.events:,} detection events, "
        f"{sum(v for k, v in counts.items() if k.startswith('alerts_'))} alerts"
    )
    return ServiceSummary(stats.readings, stats.devices, engine.stats.events, counts)
