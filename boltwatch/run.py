"""``boltwatch run``: the service against real servers, wired from the config."""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
import os
import signal
import sqlite3
import sys
import threading
import time
from collections.abc import Callable, Coroutine
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Concatenate, Final, ParamSpec, TypeVar

from prometheus_client import CollectorRegistry, start_http_server
from rich.console import Console

from alerts.api import create_app, parse_listen, serve_api
from alerts.campaign_tracker import CampaignTracker
from alerts.campaigns import CAMPAIGNS_DB, CampaignStore
from alerts.channels import make_channel
from alerts.channels.console import ConsoleChannel
from alerts.errors import ListenError
from alerts.model import Channel
from alerts.pipeline import AlertMetrics, AlertPipeline, Clock, system_clock
from alerts.ratelimit import RateLimits
from alerts.rules import load_rules
from alerts.store import AlertStore
from boltwatch.config import Config, ConfigError
from boltwatch.detection_config import detector_params
from boltwatch.store_lock import StoreLock
from boltwatch.web import Web, bolt_outlook, build_web
from boltwatch.wiring import BatchPath, RegistryFollower, Snapshots
from detection.engine import SNAPSHOT_FILE, Engine
from detection.registry import default_detectors, make_detector
from ingest.influx import InfluxWriter
from ingest.service import IngestMetrics, IngestService
from ingest.store import Store
from sensors.registry import Registry, load_registry
from sensors.registry_store import REGISTRY_DB, RegistryStore

if TYPE_CHECKING:
    from alerts.store_pg import PgAlertStore

__all__ = [
    "STOP_DEADLINE_S",
    "ServiceSummary",
    "StopDeadline",
    "build_alerts",
    "build_engine",
    "build_influx_writer",
    "run_service",
    "serve_metrics",
    "setup_logging",
]

_log = logging.getLogger("boltwatch")
_P = ParamSpec("_P")
_R = TypeVar("_R")
STOP_DEADLINE_S: Final = 8.0
"""A stop (SIGTERM, Ctrl-C) still running after this many seconds ends the process anyway."""
_LAST_DELIVERY_S: Final = 2.0
"""At stop, the last outbox delivery gets at most this long; the rest is sent after a restart."""
_CLOSE_CHANNELS_S: Final = 1.0
_SILENCE_CHECK_S: Final = 30.0
"""Real seconds between two looks for silent devices (shortened by a faster clock)."""
_REGISTRY_CHECK_S: Final = 2.0
_CAMPAIGN_CHECK_S: Final = 5.0
"""Campaign tasks are checked this often without batches (overdue escalation)."""

"""How often the running service looks for a registry edited in the store."""
_SILENCE_CHECK_MIN_S: Final = 0.25
_FORCED_EXIT: Final = 1


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


class StopDeadline:
    """Ends the process when a stop takes longer than ``limit_s``, after logging what is stuck.

    A stop that hangs is worse than one cut short: what ingest had not acknowledged is delivered
    again by the broker, and the alert outbox is sent after the restart. The watch runs in a
    daemon thread, so it fires even when the event loop is blocked.

    Args:
        limit_s: Seconds from :meth:`start` to the forced exit.
        exit_code: The process's exit status when it fires.
    """

    def __init__(self, limit_s: float = STOP_DEADLINE_S, *, exit_code: int = _FORCED_EXIT) -> None:
        self.limit_s = limit_s
        self.exit_code = exit_code
        self.phase = "stopping"
        """What the stop is doing now (named in the log line if the deadline passes)."""
        self._loop: asyncio.AbstractEventLoop | None = None
        self._timer: threading.Timer | None = None
        self._started = 0.0

    def start(self) -> None:
        """Start counting (from the first call; later calls change nothing)."""
        if self._timer is not None:
            return
        with contextlib.suppress(RuntimeError):  # not in a loop: no task list in the log line
            self._loop = asyncio.get_running_loop()
        self._started = time.monotonic()
        self._timer = threading.Timer(self.limit_s, self._expire)
        self._timer.name = "boltwatch-stop-deadline"
        self._timer.daemon = True
        self._timer.start()

    def remaining_s(self) -> float:
        """Seconds left before the forced exit (``limit_s`` before :meth:`start`)."""
        if self._timer is None:
            return self.limit_s
        return max(0.0, self.limit_s - (time.monotonic() - self._started))

    def cancel(self) -> None:
        """The stop is over: no forced exit."""
        if self._timer is not None:
            self._timer.cancel()

    def _expire(self) -> None:
        _log.error(
            "stop still running after %g s (%s); exiting anyway. Still running: %s",
            self.limit_s,
            self.phase,
            "; ".join(self._stuck()) or "nothing visible",
        )
        for handler in logging.getLogger().handlers:
            with contextlib.suppress(Exception):  # a closed stream must not stop the exit
                handler.flush()
        with contextlib.suppress(Exception):
            sys.stdout.flush()
            sys.stderr.flush()
        os._exit(self.exit_code)

    def _stuck(self) -> list[str]:
        """Where each asyncio task and each other thread is now (best effort, another thread)."""
        found: list[str] = []
        if self._loop is not None:
            try:
                tasks = asyncio.all_tasks(self._loop)
            except RuntimeError:  # the set changed while it was read
                tasks = set()
            found += [f"task {t.get_name()} at {_innermost(t.get_coro())}" for t in tasks]
        names = {t.ident: t.name for t in threading.enumerate()}
        here = threading.get_ident()
        for ident, frame in sys._current_frames().items():
            if ident != here:
                code = frame.f_code
                where = f"{code.co_name} ({Path(code.co_filename).name}:{frame.f_lineno})"
                found.append(f"thread {names.get(ident, ident)} at {where}")
        return found


def _innermost(coro: object) -> str:
    """The chain of coroutines a task waits in, ``outer > inner (file:line)``."""
    names: list[str] = []
    where = "?"
    while coro is not None:
        frame = getattr(coro, "cr_frame", None) or getattr(coro, "gi_frame", None)
        if frame is not None:
            names.append(frame.f_code.co_qualname)
            where = f"{Path(frame.f_code.co_filename).name}:{frame.f_lineno}"
        coro = getattr(coro, "cr_await", None) or getattr(coro, "gi_yieldfrom", None)
    return f"{' > '.join(names) or '?'} ({where})"


def build_influx_writer(config: Config) -> InfluxWriter | None:
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


def serve_metrics(listen: str, registry: CollectorRegistry) -> None:
    """Serve ``/metrics`` on ``listen`` (host:port) in a thread.

    Raises:
        ListenError: The port is in use or the address is not local (``ingest.metrics_listen``).
    """
    host, _, port = listen.rpartition(":")
    try:
        start_http_server(int(port), addr=host, registry=registry)
    except OSError as exc:
        reason = f"cannot listen on {listen}: {exc.strerror or exc}"
        raise ListenError("ingest.metrics_listen", exc.errno, reason) from exc
    _log.info("metrics on http://%s/metrics", listen)


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
    *,
    clock: Clock = system_clock,
    store: PgAlertStore | None = None,
) -> AlertPipeline:
    """The alert pipeline of ``[alerts]``: rules, store, one channel per receiver.

    Args:
        config: The validated configuration.
        registry: Known devices (alerts are grouped by joint), if any.
        metrics_registry: Where the pipeline's metrics are registered.
        console: Console receivers print here (default: stdout).
        clock: The pipeline's time, epoch ms (the demo's simulated clock drives its timers).
        store: The cluster's PostgreSQL store (the alerts role); the SQLite store of
            ``[alerts] store`` when None.

    Raises:
        RuleError: Bad rules or receiver options (naming the key).
        ConfigError: The alert store cannot be opened (naming ``alerts.store`` or ``store.path``).
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
    chosen: AlertStore | PgAlertStore
    if store is not None:
        chosen = store
    else:
        try:
            chosen = AlertStore(path)
        except (OSError, sqlite3.Error) as exc:
            key = "alerts.store" if config.alerts.store else "store.path"
            raise ConfigError(key, f"{path}: cannot open the alert store ({exc})") from exc
    return AlertPipeline(
        rules,
        chosen,
        channels,
        metrics=AlertMetrics(metrics_registry),
        group_of=_group_of(registry),
        clock=clock,
    )


def _registry(config: Config) -> Registry | None:
    """The registry file the config names; else the registry in force in the store (``boltwatch
    registry import``); else none."""
    if config.registry.path is not None:
        return load_registry(config.registry.path)
    if not (Path(config.store.path) / REGISTRY_DB).is_file():
        return None
    with RegistryStore(config.store.path) as db:
        return db.current()


def _applies(config: Config) -> str:
    """When the running service uses a registry edit made through its API."""
    if config.registry.path is not None:
        return (
            f"not in this service: its config names the registry file {config.registry.path} "
            "(registry.path), which it uses instead"
        )
    return f"in this service within {_REGISTRY_CHECK_S:.0f} s"


async def _follow_registry(follower: RegistryFollower) -> None:
    """Apply registry edits made in the store while running (cancelled at stop)."""
    while True:
        await asyncio.sleep(_REGISTRY_CHECK_S)
        try:
            follower.check()
        except Exception:  # noqa: BLE001 - one bad document must not stop the service
            _log.exception("registry: the version in force could not be applied")


async def _check_campaigns(tracker: CampaignTracker) -> None:
    """Escalate overdue campaign tasks when no batch arrives (cancelled at stop)."""
    while True:
        await asyncio.sleep(_CAMPAIGN_CHECK_S)
        try:
            tracker.check()
        except Exception:  # noqa: BLE001 - the service goes on; the next check tries again
            _log.exception("campaigns: the check failed")


def _site_of(registry: Registry | None) -> Callable[[str], str]:
    def site(device_id: str) -> str:
        found = registry.locate(device_id) if registry is not None else None
        return found.site if found is not None else ""

    return site


def build_engine(config: Config, registry: Registry | None = None) -> Engine:
    """The detection engine of ``boltwatch run``: each kind's detector, with the parameters of
    its ``[detection.<detector>]`` table (defaults otherwise)."""
    params = detector_params(config.detection)
    detectors = {
        kind: make_detector(name, params.get(name)) for kind, name in default_detectors().items()
    }
    return Engine(detectors, registry=registry)


def _store_locked(
    serve: Callable[Concatenate[Config, _P], Coroutine[Any, Any, _R]],
) -> Callable[Concatenate[Config, _P], Coroutine[Any, Any, _R]]:
    """``serve`` with its config's store folder locked for the whole call
    (:mod:`boltwatch.store_lock`)."""

    async def locked(config: Config, /, *args: _P.args, **kwargs: _P.kwargs) -> _R:
        with StoreLock(config.store.path):
            return await serve(config, *args, **kwargs)

    functools.update_wrapper(locked, serve)  # name and documentation of ``serve``
    return locked


@_store_locked
async def run_service(  # noqa: PLR0912, PLR0915 - the composition root, one part after another
    config: Config,
    out: Console,
    *,
    mqtt_version: int = 5,
    stop: asyncio.Event | None = None,
    alert_console: Console | None = None,
    api_token: str | None = None,
    on_ready: Callable[[], None] | None = None,
    on_console: Callable[[Web], None] | None = None,
    late_by_age: bool = True,
    clock: Callable[[], float] = time.time,
    speed: float = 1.0,
    deadline: StopDeadline | None = None,
) -> ServiceSummary:
    """Ingest, detection, alerts and the HTTP API until SIGTERM/Ctrl-C (or ``stop``), then flush
    and stop cleanly. The store folder is locked for the whole run (:mod:`boltwatch.store_lock`).

    Args:
        config: The validated configuration.
        out: Where progress lines go.
        mqtt_version: 5 (ack after store) or 4 (MQTT 3.1.1, the embedded broker).
        stop: Set to stop; without it SIGINT/SIGTERM are handled here.
        alert_console: Console receivers print here (default: stdout).
        api_token: API token overriding the config's (the demo makes one up).
        on_ready: Called once everything is up and subscribed.
        on_console: Called with the web app once the console is served (the demo prints a
            one-time login link from it).
        late_by_age: Readings older than 10 minutes (of ``clock``) on arrival are late
            (backfill).
        clock: Seconds since the epoch: the one clock of ingest (receipt times, lateness,
            silence), detection (lateness) and alerts (timers). The demo passes its simulation's.
        speed: ``clock`` seconds per real second. Faster than real time (a simulation), the
            silence check runs that much more often and judges devices by when they were last
            heard from (ingest trails the simulation by a fraction of a real second, which is
            already minutes of simulated time).
        deadline: Ends the process if the stop takes too long. Without ``stop``, a
            :class:`StopDeadline` of :data:`STOP_DEADLINE_S` is made here; with ``stop`` there is
            none unless one is given (the caller owns the process). It starts when the stop does.

    Raises:
        StoreInUseError: Another process runs on the same store folder.
        StoreError: The store cannot be opened (naming the path).
        ListenError: The API's or the metrics' port is in use (naming the key).
    """
    registry = _registry(config)
    metrics = IngestMetrics()

    def clock_ms() -> int:
        return int(clock() * 1000)

    pipeline = build_alerts(config, registry, metrics.registry, alert_console, clock=clock_ms)
    alert_store = pipeline.store
    assert isinstance(alert_store, AlertStore)  # noqa: S101 - without a store given: SQLite
    if config.ingest.metrics_listen:
        serve_metrics(config.ingest.metrics_listen, metrics.registry)

    engine = build_engine(config, registry)
    snapshots = Snapshots(engine, Path(config.store.path) / SNAPSHOT_FILE)
    snapshots.restore()
    campaigns = CampaignTracker(
        CampaignStore(alert_store.path.parent / CAMPAIGNS_DB),
        pipeline,
        bolt_outlook(engine),
        clock=clock_ms,
        site_of=_site_of(registry),
    )
    path = BatchPath(
        engine, pipeline, snapshots, clock_ms, late_by_age=late_by_age, campaigns=campaigns
    )

    loop = asyncio.get_running_loop()
    own_signals = stop is None
    stop_event = stop if stop is not None else asyncio.Event()
    own_deadline = deadline is None and own_signals
    if own_deadline:
        deadline = StopDeadline()

    def stopping(what: str) -> None:
        if deadline is not None:
            deadline.start()
            deadline.phase = what

    def on_signal() -> None:
        # Counting starts at the signal, so a stop that arrives during start-up is bounded too.
        stopping("stop requested (still starting, or the loop is blocked)")
        stop_event.set()

    if own_signals:
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, on_signal)
    influx = build_influx_writer(config)
    token = api_token or _api_token(config)
    try:
        await _detection_ready(engine, stop_event)
        with (
            Store(
                config.store.path,
                retention_days=config.store.retention_days,
                tail_days=config.store.tail_days,
            ) as store,
            contextlib.ExitStack() as stack,
        ):
            registry_store = stack.enter_context(RegistryStore(config.store.path))
            follower = RegistryFollower(registry_store, registry_store.version(), [])
            service = IngestService(
                config,
                store,
                influx=influx,
                registry=registry,
                on_no_data=path.silent,
                metrics=metrics,
                mqtt_version=mqtt_version,
                consumer=path,
                clock=clock,
                silence_check_s=max(_SILENCE_CHECK_MIN_S, _SILENCE_CHECK_S / speed),
                silence_by_receipt=speed != 1.0,
            )
            async with service, asyncio.TaskGroup() as tasks:
                alerts_task = tasks.create_task(
                    pipeline.run(config.alerts.interval_s), name="alerts"
                )
                api_task: asyncio.Task[None] | None = None
                if config.alerts.api_listen and token:
                    api_host, api_port = parse_listen(config.alerts.api_listen)
                    app = create_app(
                        alert_store,
                        token=token,
                        clock=pipeline.clock,
                        metrics_registry=metrics.registry,
                        rate_limits=RateLimits(
                            rate_per_s=config.alerts.api_rate_per_s,
                            burst=config.alerts.api_burst,
                            auth_failures_per_min=config.alerts.api_auth_failures_per_min,
                        ),
                        cors_origins=config.alerts.api_cors_origins,
                        registry=registry_store,
                        registry_applies=_applies(config),
                    )
                    web = build_web(
                        config,
                        app,
                        token=token,
                        alerts=alert_store,
                        registry=registry,
                        engine=engine,
                        clock_ms=pipeline.clock,
                        flow=metrics.totals,
                        campaigns=campaigns,
                        registry_store=registry_store if config.registry.path is None else None,
                    )
                    stack.callback(web.close)
                    if web.source is not None:
                        follower.targets.append(functools.partial(setattr, web.source, "registry"))
                    api_task = tasks.create_task(serve_api(web.app, api_host, api_port), name="api")
                    _log.info("alerts API on http://%s/api/alerts", config.alerts.api_listen)
                    if on_console is not None and web.auth is not None:
                        on_console(web)
                elif config.alerts.api_listen:
                    _log.warning(
                        "alerts API off: set alerts.api_token (or BOLTWATCH_ALERTS_API_TOKEN)"
                    )
                follow_task: asyncio.Task[None] | None = None
                if config.registry.path is None:
                    follower.targets[:0] = [
                        engine.use_registry,
                        lambda r: setattr(pipeline, "group_of", _group_of(r)),
                        lambda r: setattr(service, "registry", r),
                        lambda r: setattr(campaigns, "site_of", _site_of(r)),
                    ]
                    follow_task = tasks.create_task(_follow_registry(follower), name="registry")
                campaign_task = tasks.create_task(_check_campaigns(campaigns), name="campaigns")
                await service.wait_subscribed(timeout=30)
                out.print(
                    f"ingesting {', '.join(config.broker.topics)} from {config.broker.url} "
                    f"into {config.store.path}; detection and alerts on (Ctrl-C stops)"
                )
                if on_ready is not None:
                    on_ready()
                await stop_event.wait()
                stopping("stopping the alert loop and the API, then committing what was received")
                out.print("stopping: committing what was received ...")
                alerts_task.cancel()
                if api_task is not None:
                    api_task.cancel()
                if follow_task is not None:
                    follow_task.cancel()
                campaign_task.cancel()
            stopping("counting what the store holds")
            stats = store.stats()
        # Last evaluation and delivery after the final commit; bounded: what is not sent now
        # stays in the outbox and is sent after a restart.
        stopping("last alert evaluation and delivery")
        pipeline.evaluate()
        await _last_delivery(pipeline, deadline)
    finally:
        stopping("saving the detection state")
        snapshots.save()
        stopping("closing the notification channels")
        try:
            async with asyncio.timeout(_CLOSE_CHANNELS_S):
                await pipeline.aclose()
        except TimeoutError:
            _log.warning("stop: notification channels not closed within %.0f s", _CLOSE_CHANNELS_S)
        stopping("closing the alert store")
        counts = pipeline.store.counts()
        pipeline.store.close()
        campaigns.store.close()
        if influx is not None:
            stopping("closing the InfluxDB writer")
            influx.close()
        if own_signals:
            for sig in (signal.SIGINT, signal.SIGTERM):
                with contextlib.suppress(Exception):
                    loop.remove_signal_handler(sig)
        if own_deadline and deadline is not None:
            deadline.cancel()  # the stop is over (a caller's deadline is the caller's to end)
    out.print(
        f"stopped; the store holds {stats.readings:,} readings of {stats.devices} devices; "
        f"{engine.stats.events:,} detection events, "
        f"{sum(v for k, v in counts.items() if k.startswith('alerts_'))} alerts"
    )
    return ServiceSummary(stats.readings, stats.devices, engine.stats.events, counts)


async def _detection_ready(engine: Engine, stop: asyncio.Event) -> None:
    """Warm the engine's compiled kernels up in a daemon thread before readings flow, so that the
    first batch does not stall the event loop (seconds on the first run after an install, while
    numba compiles; well under one after, from its cache). A stop meanwhile is not kept waiting:
    the service then starts and stops at once, and the thread ends with the process."""
    loop = asyncio.get_running_loop()
    ready: asyncio.Future[None] = loop.create_future()

    def settle(error: BaseException | None) -> None:
        if ready.done():
            return
        if error is None:
            ready.set_result(None)
        else:
            ready.set_exception(error)

    def work() -> None:
        error: Exception | None = None
        try:
            engine.warm_up()
        except Exception as exc:  # noqa: BLE001 - handed to the awaiting loop
            error = exc
        with contextlib.suppress(RuntimeError):  # the loop is gone: the service has stopped
            loop.call_soon_threadsafe(settle, error)

    started = time.monotonic()
    threading.Thread(target=work, name="detection-warm-up", daemon=True).start()
    stopped = asyncio.ensure_future(stop.wait())
    waiters: list[asyncio.Future[Any]] = [ready, stopped]
    try:
        await asyncio.wait(waiters, return_when=asyncio.FIRST_COMPLETED)
    finally:
        stopped.cancel()
    if ready.done():
        ready.result()  # a kernel that cannot be compiled is a broken install: say so
        took = time.monotonic() - started
        if took > 2.0:
            _log.info("detection kernels compiled in %.1f s (cached for the next start)", took)


async def _last_delivery(pipeline: AlertPipeline, deadline: StopDeadline | None) -> None:
    """Deliver what is due once more, within :data:`_LAST_DELIVERY_S` (less when the stop's
    deadline is near); a channel that does not answer in time is tried again after a restart."""
    budget_s = _LAST_DELIVERY_S
    if deadline is not None:
        budget_s = max(0.1, min(budget_s, deadline.remaining_s() - 2.0))
    try:
        async with asyncio.timeout(budget_s):
            await pipeline.deliver()
    except TimeoutError:
        _log.warning(
            "stop: the last delivery did not finish within %.1f s; the outbox keeps what is "
            "left for after the restart",
            budget_s,
        )
