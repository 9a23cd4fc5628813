"""The path of a committed batch through ``boltwatch run``, named: ingest → detection → alerts.

Ingest hands each committed batch to :class:`BatchPath` (its consumer). The engine evaluates it
and returns one :class:`~detection.events.BatchOutcome`; the alert pipeline takes that outcome
through its one input, :meth:`~alerts.pipeline.AlertPipeline.take`. A device that falls silent
takes the same path: ingest's silence watcher (on the event loop) reports it, and it becomes a
``no_data`` detection event in an outcome of its own. :class:`Snapshots` keeps the detection
state on disk along the way.
"""

from __future__ import annotations

import errno
import logging
import time
from collections.abc import Callable
from pathlib import Path
from typing import Final

from alerts.campaign_tracker import CampaignTracker
from alerts.pipeline import AlertPipeline, no_data_event
from detection.base import DetectionError
from detection.engine import Engine
from detection.events import BatchOutcome
from ingest.service import NoDataEvent
from ingest.store import WriteResult
from sensors.codec import DecodedBatch
from sensors.registry import Registry
from sensors.registry_store import RegistryStore

__all__ = ["BatchPath", "RegistryFollower", "Snapshots"]

_log = logging.getLogger("boltwatch")
_SNAPSHOT_EVERY_S: Final = 60.0
"""Detection state is saved this often (and at start and stop), so a restart keeps its baselines."""
_FAULT_SNAPSHOT_S: Final = 5.0
"""... and this soon after a detector faulted, so that ``boltwatch stats`` shows the fault."""


class BatchPath:
    """Ingest's consumer: each committed batch through detection into alerts.

    Args:
        engine: The detection engine.
        alerts: The alert pipeline.
        snapshots: Saved when due, after each batch.
        clock_ms: The service's clock (epoch ms): lateness and ``no_data`` times.
        late_by_age: Readings older than the engine's ``late_after_s`` on arrival are late.
        campaigns: Follows the retightening campaigns (their ``tightened`` events, settling).
    """

    def __init__(
        self,
        engine: Engine,
        alerts: AlertPipeline,
        snapshots: Snapshots,
        clock_ms: Callable[[], int],
        *,
        late_by_age: bool = True,
        campaigns: CampaignTracker | None = None,
    ) -> None:
        self.engine = engine
        self.campaigns = campaigns
        self.alerts = alerts
        self.snapshots = snapshots
        self.clock_ms = clock_ms
        self.late_by_age = late_by_age

    def __call__(self, batch: DecodedBatch, result: WriteResult) -> None:
        """A committed batch (ingest's ``BatchConsumer``)."""
        outcome = self.engine.process_batch(
            batch, now_ms=self.clock_ms() if self.late_by_age else None
        )
        self.alerts.take(outcome)
        if self.campaigns is not None:
            try:
                self.campaigns.after_batch(batch)
            except Exception:  # noqa: BLE001 - a campaign's bookkeeping must not stop ingest
                _log.exception("campaigns: a batch's tightenings could not be recorded")
        self.snapshots.save_if_due()

    def silent(self, event: NoDataEvent) -> None:
        """A device fell silent (ingest's silence watcher): a ``no_data`` detection event."""
        found = no_data_event(
            event.device_id, event.kind.value, event.site, event.last_seen_ms, self.clock_ms()
        )
        self.alerts.take(BatchOutcome(events=[found]))


class Snapshots:
    """The detection state's snapshot in the store folder: restored and written again at start
    (the previous run's faulted devices are evaluated again, and ``boltwatch stats`` says so),
    written every :data:`_SNAPSHOT_EVERY_S` while readings arrive, within
    :data:`_FAULT_SNAPSHOT_S` of a new fault, and at stop.

    A write that fails (a full disk) is logged, once until a write succeeds again, and the service
    goes on: the engine writes atomically, so the previous snapshot is intact and a restart loses
    only what was learned since.
    """

    def __init__(self, engine: Engine, path: Path) -> None:
        self.engine = engine
        self.path = path
        self._saved_at = time.monotonic()
        self._faults_saved = engine.stats.faults
        self._failing: int | None = None
        """errno of the write that last failed (None: the last one succeeded)."""

    def restore(self) -> None:
        """Continue from the snapshot, if there is one, and write it again."""
        if self.path.exists():
            try:
                self.engine.load(self.path)
            except DetectionError as exc:
                _log.warning("detection state not restored (%s): baselines are learned afresh", exc)
        self.save()

    def save_if_due(self) -> None:
        """Write the snapshot if the last write is old enough (sooner after a new fault)."""
        every = _SNAPSHOT_EVERY_S
        if self.engine.stats.faults != self._faults_saved:
            every = _FAULT_SNAPSHOT_S
        if time.monotonic() - self._saved_at > every:
            self.save()

    def save(self) -> bool:
        """Write the snapshot now; False (and one log line) when it could not be written."""
        self._saved_at = time.monotonic()
        faults = self.engine.stats.faults
        try:
            self.engine.save(self.path)
        except OSError as exc:
            if exc.errno != self._failing or self._failing is None:
                code = errno.errorcode.get(exc.errno or 0, str(exc.errno))
                _log.error(
                    "detection state not saved to %s: %s (%s); the previous snapshot is kept",
                    self.path,
                    exc.strerror or exc,
                    code,
                )
            self._failing = exc.errno or 0
            return False
        if self._failing is not None:
            _log.info("detection state saved to %s again", self.path)
            self._failing = None
        self._faults_saved = faults
        return True


class RegistryFollower:
    """Applies to the running service the registry put in force in the store after its start
    (``boltwatch registry import``, ``PUT /api/registry/...``).

    Args:
        store: The store's registry database.
        applied: The version the service started with (0: none).
        targets: Called with each new registry, in order (the engine, the alert grouping, the
            ingest's strict check, the console). Called on the event loop, between batches.
    """

    def __init__(
        self, store: RegistryStore, applied: int, targets: list[Callable[[Registry], None]]
    ) -> None:
        self.store = store
        self.applied = applied
        self.targets = targets

    def check(self) -> int | None:
        """Apply the registry in force if it is newer than the one applied; its version, or
        None when there was nothing new."""
        version = self.store.version()
        if version <= self.applied:
            return None
        registry = self.store.current()
        if registry is None:  # pragma: no cover - a version has a document
            return None
        for target in self.targets:
            target(registry)
        self.applied = version
        _log.info("registry version %d in force in the running service", version)
        return version
