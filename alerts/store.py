"""The durable alert store (SQLite, WAL): alerts, their history, silences and the outbox.

One row per (device, kind), created by a single ``INSERT ... ON CONFLICT DO UPDATE``: concurrent
events for the same device — from threads or processes sharing the file — can never create two
alerts. A cleared alert that fires again re-opens its row (its history keeps the earlier
episodes).

The **outbox** holds every notification from the moment it is decided: the notification row and
the alerts' "notified" marks are written in one transaction, *before* anything is sent, and a row
is marked sent only after its channel accepted it. A crash anywhere means the notification is
sent (at least once) after the restart, with the same id.
"""

from __future__ import annotations

import sqlite3
import threading
from collections.abc import Iterable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar, Final

import msgspec

from alerts.errors import AlertsError
from alerts.model import Alert, AlertState, Notification, Silence, Transition
from detection.events import Severity

__all__ = [
    "AlertStore",
    "OutboxRow",
    "StoreClosedError",
    "StoreReads",
    "StoredAlert",
    "refreshed",
]

_SCHEMA: Final = """
CREATE TABLE IF NOT EXISTS alerts (
    id INTEGER PRIMARY KEY,
    device_id TEXT NOT NULL,
    kind TEXT NOT NULL,
    device_kind TEXT NOT NULL DEFAULT '',
    site TEXT NOT NULL DEFAULT '',
    grp TEXT NOT NULL DEFAULT '',
    severity INTEGER NOT NULL,
    state TEXT NOT NULL,
    first_ms INTEGER NOT NULL,
    last_event_ms INTEGER NOT NULL,
    active_ms INTEGER NOT NULL DEFAULT 0,
    cleared_ms INTEGER NOT NULL DEFAULT 0,
    inactive_ms INTEGER NOT NULL DEFAULT 0,
    explanation TEXT NOT NULL DEFAULT '',
    data TEXT NOT NULL DEFAULT '{}',
    acknowledged INTEGER NOT NULL DEFAULT 0,
    ack_by TEXT NOT NULL DEFAULT '',
    ack_ms INTEGER NOT NULL DEFAULT 0,
    comments TEXT NOT NULL DEFAULT '[]',
    flapping INTEGER NOT NULL DEFAULT 0,
    transitions TEXT NOT NULL DEFAULT '[]',
    escalation INTEGER NOT NULL DEFAULT 0,
    notified_ms INTEGER NOT NULL DEFAULT 0,
    notified_severity INTEGER NOT NULL DEFAULT -1,
    events INTEGER NOT NULL DEFAULT 0,
    late INTEGER NOT NULL DEFAULT 0,
    UNIQUE (device_id, kind)
);
CREATE INDEX IF NOT EXISTS alerts_state ON alerts (state);
CREATE TABLE IF NOT EXISTS alert_history (
    alert_id INTEGER NOT NULL,
    ms INTEGER NOT NULL,
    what TEXT NOT NULL,
    detail TEXT NOT NULL DEFAULT ''
);
CREATE INDEX IF NOT EXISTS alert_history_alert ON alert_history (alert_id, ms);
CREATE TABLE IF NOT EXISTS silences (
    id INTEGER PRIMARY KEY,
    starts_ms INTEGER NOT NULL,
    ends_ms INTEGER NOT NULL,
    author TEXT NOT NULL,
    reason TEXT NOT NULL,
    device_id TEXT NOT NULL DEFAULT '',
    site TEXT NOT NULL DEFAULT '',
    kind TEXT NOT NULL DEFAULT ''
);
CREATE TABLE IF NOT EXISTS outbox (
    id TEXT PRIMARY KEY,
    receiver TEXT NOT NULL,
    body TEXT NOT NULL,
    status TEXT NOT NULL DEFAULT 'pending',
    attempts INTEGER NOT NULL DEFAULT 0,
    next_ms INTEGER NOT NULL,
    created_ms INTEGER NOT NULL,
    sent_ms INTEGER NOT NULL DEFAULT 0,
    last_error TEXT NOT NULL DEFAULT ''
);
CREATE INDEX IF NOT EXISTS outbox_due ON outbox (status, next_ms);
"""

_UPSERT: Final = """
INSERT INTO alerts (device_id, kind, device_kind, site, grp, severity, state, first_ms,
                    last_event_ms, explanation, data, late, events, inactive_ms)
VALUES (:device_id, :kind, :device_kind, :site, :grp, :severity, 'pending', :ms, :ms,
        :explanation, :data, :late, 1, :inactive)
ON CONFLICT (device_id, kind) DO UPDATE SET
    severity = CASE WHEN state = 'cleared' THEN excluded.severity
                    ELSE max(severity, excluded.severity) END,
    first_ms = CASE WHEN state = 'cleared' THEN excluded.first_ms ELSE first_ms END,
    active_ms = CASE WHEN state = 'cleared' THEN 0 ELSE active_ms END,
    cleared_ms = 0,
    acknowledged = CASE WHEN state = 'cleared' THEN 0 ELSE acknowledged END,
    ack_by = CASE WHEN state = 'cleared' THEN '' ELSE ack_by END,
    ack_ms = CASE WHEN state = 'cleared' THEN 0 ELSE ack_ms END,
    escalation = CASE WHEN state = 'cleared' THEN 0 ELSE escalation END,
    notified_severity = CASE WHEN state = 'cleared' THEN -1 ELSE notified_severity END,
    state = CASE WHEN state = 'cleared' THEN 'pending' ELSE state END,
    last_event_ms = max(last_event_ms, excluded.last_event_ms),
    inactive_ms = excluded.inactive_ms,
    explanation = excluded.explanation,
    data = excluded.data,
    late = excluded.late,
    site = CASE WHEN excluded.site != '' THEN excluded.site ELSE site END,
    grp = CASE WHEN excluded.grp != '' THEN excluded.grp ELSE grp END,
    device_kind = CASE WHEN excluded.device_kind != '' THEN excluded.device_kind
                       ELSE device_kind END,
    events = events + 1
RETURNING id
"""

_INSERT_OR_UPDATE: Final = _UPSERT.replace("RETURNING id", "")
""":data:`_UPSERT` without its ``RETURNING`` (run by ``executemany`` for a whole batch)."""

_REFRESH: Final = """
UPDATE alerts SET
    severity = max(severity, :severity),
    last_event_ms = max(last_event_ms, :ms),
    inactive_ms = :inactive,
    explanation = :explanation,
    data = :data,
    late = :late,
    site = CASE WHEN :site != '' THEN :site ELSE site END,
    grp = CASE WHEN :grp != '' THEN :grp ELSE grp END,
    device_kind = CASE WHEN :device_kind != '' THEN :device_kind ELSE device_kind END,
    events = events + 1
WHERE id = :id AND state != 'cleared'
"""
"""What :data:`_UPSERT` does to an alert that is not cleared (:func:`refreshed` mirrors it)."""

_COLUMNS: Final = (
    "id, device_id, kind, device_kind, site, grp, severity, state, first_ms, last_event_ms, "
    "active_ms, cleared_ms, inactive_ms, explanation, data, acknowledged, ack_by, ack_ms, "
    "comments, flapping, transitions, escalation, notified_ms, notified_severity, late"
)


class StoreClosedError(AlertsError):
    """The store was used after :meth:`AlertStore.close`."""


@dataclass(slots=True)
class StoredAlert:
    """An alert with the store's bookkeeping the pipeline needs."""

    alert: Alert
    device_kind: str
    inactive_ms: int


@dataclass(frozen=True, slots=True)
class OutboxRow:
    """A notification waiting in (or sent from) the outbox."""

    notification: Notification
    status: str
    attempts: int
    next_ms: int
    sent_ms: int
    last_error: str


class StoreReads:
    """What both alert stores (SQLite here, PostgreSQL in :mod:`alerts.store_pg`) do the same
    way: the reads, and the bookkeeping of what was written through this object. A store sets
    :attr:`_p`, its SQL placeholder, and provides ``_query`` and ``mark_sent_many``."""

    _p: ClassVar[str] = "?"
    _lock: threading.RLock
    _dirty: set[int]
    _silences_changed: bool

    def _query(self, sql: str, args: Sequence[Any] = ()) -> list[tuple[Any, ...]]:
        raise NotImplementedError

    def mark_sent_many(self, note_ids: Sequence[str], ms: int) -> None:
        """The channel accepted these, in one transaction."""
        raise NotImplementedError

    def get(self, alert_id: int) -> StoredAlert | None:
        """One alert by id."""
        rows = self._query(f"SELECT {_COLUMNS} FROM alerts WHERE id = {self._p}", (alert_id,))  # noqa: S608
        return _row(rows[0]) if rows else None

    def find(self, device_id: str, kind: str) -> StoredAlert | None:
        """The alert of (device, kind), if any."""
        p = self._p
        rows = self._query(
            f"SELECT {_COLUMNS} FROM alerts WHERE device_id = {p} AND kind = {p}",  # noqa: S608
            (device_id, kind),
        )
        return _row(rows[0]) if rows else None

    def take_dirty(self) -> set[int]:
        """Ids of alerts written through this store object since the last call."""
        with self._lock:
            dirty, self._dirty = self._dirty, set()
        return dirty

    def take_silences_changed(self) -> bool:
        """Whether silences were added or ended through this store object since the last call."""
        with self._lock:
            changed, self._silences_changed = self._silences_changed, False
        return changed

    def open_alerts(self) -> list[StoredAlert]:
        """Pending and active alerts."""
        return [
            _row(r)
            for r in self._query(
                f"SELECT {_COLUMNS} FROM alerts WHERE state != 'cleared' ORDER BY id"  # noqa: S608
            )
        ]

    def alerts(
        self,
        state: str | None = None,
        site: str | None = None,
        kind: str | None = None,
        device_id: str | None = None,
        limit: int = 500,
        *,
        min_severity: int | None = None,
    ) -> list[Alert]:
        """Alerts, newest activity first, filtered (``min_severity``: that severity or worse)."""
        p = self._p
        where: list[str] = []
        args: list[str | int] = []
        if min_severity is not None:
            where.append(f"severity >= {p}")
            args.append(int(min_severity))
        for col, val in (
            ("state", state),
            ("site", site),
            ("kind", kind),
            ("device_id", device_id),
        ):
            if val:
                where.append(f"{col} = {p}")
                args.append(val)
        sql = f"SELECT {_COLUMNS} FROM alerts"  # noqa: S608 - column names are constants
        if where:
            sql += " WHERE " + " AND ".join(where)
        sql += f" ORDER BY last_event_ms DESC, id DESC LIMIT {p}"
        return [_row(r).alert for r in self._query(sql, [*args, limit])]

    def silences(self, active_at_ms: int | None = None) -> list[Silence]:
        """All silences, or those active at a time."""
        sql = "SELECT id, starts_ms, ends_ms, author, reason, device_id, site, kind FROM silences"
        args: list[Any] = []
        if active_at_ms is not None:
            sql += f" WHERE starts_ms <= {self._p} AND ends_ms > {self._p}"
            args = [active_at_ms, active_at_ms]
        return [Silence(*r) for r in self._query(sql + " ORDER BY id", args)]

    def due(self, now_ms: int, receiver: str | None = None, limit: int = 100) -> list[OutboxRow]:
        """Pending notifications whose time has come, oldest first."""
        p = self._p
        sql = (
            "SELECT id, receiver, body, status, attempts, next_ms, sent_ms, last_error "  # noqa: S608
            f"FROM outbox WHERE status = 'pending' AND next_ms <= {p}"
        )
        args: list[Any] = [now_ms]
        if receiver is not None:
            sql += f" AND receiver = {p}"
            args.append(receiver)
        sql += f" ORDER BY created_ms, id LIMIT {p}"
        args.append(limit)
        return [_outbox(r) for r in self._query(sql, args)]

    def outbox(self, status: str | None = None) -> list[OutboxRow]:
        """Every outbox row (or those with a status), oldest first."""
        sql = (
            "SELECT id, receiver, body, status, attempts, next_ms, sent_ms, last_error FROM outbox"
        )
        args: list[Any] = []
        if status is not None:
            sql += f" WHERE status = {self._p}"
            args.append(status)
        return [_outbox(r) for r in self._query(sql + " ORDER BY created_ms, id", args)]

    def mark_sent(self, note_id: str, ms: int) -> None:
        """The channel accepted it."""
        self.mark_sent_many([note_id], ms)

    def counts(self) -> dict[str, int]:
        """Alerts by state and outbox rows by status (for /metrics and stats)."""
        out: dict[str, int] = {}
        for state, n in self._query("SELECT state, count(*) FROM alerts GROUP BY state"):
            out[f"alerts_{state}"] = int(n)
        for status, n in self._query("SELECT status, count(*) FROM outbox GROUP BY status"):
            out[f"outbox_{status}"] = int(n)
        return out


class AlertStore(StoreReads):
    """SQLite store of alerts, history, silences and the outbox.

    Args:
        path: Database file (created with its folder).
    """

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._db: sqlite3.Connection | None = sqlite3.connect(
            self.path, timeout=30.0, isolation_level=None, check_same_thread=False
        )
        self._lock = threading.RLock()
        self._dirty: set[int] = set()
        self._silences_changed = True
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute("PRAGMA synchronous=FULL")
        self._db.executescript(_SCHEMA)

    def close(self) -> None:
        """Close the database."""
        with self._lock:
            if self._db is not None:
                self._db.close()
                self._db = None

    def __enter__(self) -> AlertStore:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    @contextmanager
    def _tx(self) -> Iterator[sqlite3.Connection]:
        with self._lock:
            if self._db is None:
                raise StoreClosedError("the alert store is closed")
            db = self._db
            db.execute("BEGIN IMMEDIATE")
            try:
                yield db
            except BaseException:
                db.execute("ROLLBACK")
                raise
            db.execute("COMMIT")

    def _query(self, sql: str, args: Sequence[Any] = ()) -> list[tuple[Any, ...]]:
        with self._lock:
            if self._db is None:
                raise StoreClosedError("the alert store is closed")
            return self._db.execute(sql, args).fetchall()

    # -- alerts ------------------------------------------------------------------------------

    def upsert(self, rows: Iterable[dict[str, Any]]) -> list[int]:
        """Record events: one alert per (device, kind), created or updated atomically.

        Each row: ``device_id, kind, device_kind, site, grp, severity, ms, explanation, data
        (dict), late (bool), inactive (ms the condition is already gone, 0 if present)``.

        Returns:
            The alert ids, in row order.
        """
        ids: list[int] = []
        history: list[tuple[int, int, Transition, str]] = []
        with self._tx() as db:
            for r in rows:
                args = {**r, "data": _dumps(r.get("data", {})), "late": int(r["late"])}
                (alert_id,) = db.execute(_UPSERT, args).fetchone()
                ids.append(int(alert_id))
                detail = f"[{Severity(r['severity'])}] {r['explanation']}"
                history.append((alert_id, r["ms"], Transition.EVENT, detail))
            db.executemany("INSERT INTO alert_history VALUES (?, ?, ?, ?)", history)
            self._dirty.update(ids)
        return ids

    def upsert_loaded(self, rows: Sequence[dict[str, Any]]) -> list[StoredAlert]:
        """:meth:`upsert` for a batch, returning the alerts as stored (not marked dirty: the
        caller holds them): one ``executemany`` and one read of the rows, instead of a statement
        and a reload per event. Rows of the same (device, kind) make one alert.

        Returns:
            The alerts written, one per distinct (device, kind), in no particular order.
        """
        return self.write_events([], rows)[1]

    def write_events(
        self, known: Sequence[tuple[int, dict[str, Any]]], fresh: Sequence[dict[str, Any]]
    ) -> tuple[list[int], list[StoredAlert]]:
        """A batch of events in one transaction: :meth:`refresh` of the alerts the caller holds
        as open (``known``) and :meth:`upsert_loaded` of the others (``fresh``).

        Returns:
            The ids of ``known`` that were upserted instead (no longer open), and the alerts
            ``fresh`` wrote.
        """
        if not known and not fresh:
            return [], []
        with self._tx() as db:
            history: list[tuple[int, int, Transition, str]] = []
            missed = _refresh_in(db, known, history) if known else []
            self._dirty.update(missed)
            found = _upsert_in(db, fresh, history) if fresh else []
            db.executemany("INSERT INTO alert_history VALUES (?, ?, ?, ?)", history)
        return missed, found

    def refresh(self, rows: Sequence[tuple[int, dict[str, Any]]]) -> list[int]:
        """Record events of alerts the caller holds as open, by id: the update :meth:`upsert`
        makes of an open alert, in one statement for the batch. They are not marked dirty: the
        caller applies :func:`refreshed` to what it holds. An alert that turns out not to be
        open any more is upserted instead (and marked dirty).

        Each row: (alert id, the row :meth:`upsert` takes).

        Returns:
            The ids that were upserted instead.
        """
        return self.write_events(rows, [])[0]

    def set_inactive(self, device_id: str, kinds_active: Sequence[str], ms: int) -> int:
        """The device's detector reports only ``kinds_active`` now: its other open alerts are
        inactive since ``ms`` (unless already), the listed ones active again. Kinds no detector
        shows (``no_data``, ``installation``, ``joint``, ``maintenance_overdue``) are left alone.

        Returns:
            Alerts newly marked inactive.
        """
        kinds = _dumps(list(kinds_active))
        with self._tx() as db:
            gone = db.execute(
                "UPDATE alerts SET inactive_ms = ? WHERE device_id = ? AND state != 'cleared' "
                "AND inactive_ms = 0 AND kind NOT IN (SELECT value FROM json_each(?)) "
                "AND kind NOT IN ('no_data', 'installation', 'joint', 'maintenance_overdue') "
                "RETURNING id",
                (ms, device_id, kinds),
            ).fetchall()
            back = db.execute(
                "UPDATE alerts SET inactive_ms = 0 WHERE device_id = ? AND state != 'cleared' "
                "AND inactive_ms != 0 AND kind IN (SELECT value FROM json_each(?)) RETURNING id",
                (device_id, kinds),
            ).fetchall()
            self._dirty.update(int(r[0]) for r in gone + back)
            return len(gone)

    def upsert_inactive(self, alert_id: int, ms: int) -> None:
        """Mark one alert's condition gone since ``ms`` (it clears after its hysteresis)."""
        with self._tx() as db:
            db.execute(
                "UPDATE alerts SET inactive_ms = ? WHERE id = ? AND inactive_ms = 0", (ms, alert_id)
            )
            self._dirty.add(alert_id)

    def load(self, ids: Iterable[int]) -> list[StoredAlert]:
        """Several alerts by id (missing ids are skipped)."""
        rows = self._query(
            f"SELECT {_COLUMNS} FROM alerts WHERE id IN (SELECT value FROM json_each(?))",  # noqa: S608
            (_dumps(sorted(ids)),),
        )
        return [_row(r) for r in rows]

    def history(self, alert_id: int) -> list[tuple[int, str, str]]:
        """(ms, what, detail) of an alert, oldest first."""
        return [
            (int(ms), str(w), str(d))
            for ms, w, d in self._query(
                "SELECT ms, what, detail FROM alert_history WHERE alert_id = ? ORDER BY ms, rowid",
                (alert_id,),
            )
        ]

    def acknowledge(self, alert_id: int, who: str, ms: int, comment: str = "") -> Alert | None:
        """Acknowledge an alert (stops repeats and escalation)."""
        with self._tx() as db:
            cur = db.execute(
                "UPDATE alerts SET acknowledged = 1, ack_by = ?, ack_ms = ? WHERE id = ?",
                (who, ms, alert_id),
            )
            if cur.rowcount == 0:
                return None
            db.execute(
                "INSERT INTO alert_history VALUES (?, ?, ?, ?)", (alert_id, ms, Transition.ACK, who)
            )
            self._dirty.add(alert_id)
            if comment:
                _comment(db, alert_id, who, ms, comment)
        found = self.get(alert_id)
        return None if found is None else found.alert

    def unacknowledge(self, alert_id: int, who: str, ms: int) -> Alert | None:
        """Take an acknowledgement back."""
        with self._tx() as db:
            cur = db.execute(
                "UPDATE alerts SET acknowledged = 0, ack_by = '', ack_ms = 0 WHERE id = ?",
                (alert_id,),
            )
            if cur.rowcount == 0:
                return None
            db.execute(
                "INSERT INTO alert_history VALUES (?, ?, ?, ?)",
                (alert_id, ms, Transition.UNACK, who),
            )
            self._dirty.add(alert_id)
        found = self.get(alert_id)
        return None if found is None else found.alert

    def comment(self, alert_id: int, who: str, ms: int, text: str) -> Alert | None:
        """Add a comment."""
        with self._tx() as db:
            if not db.execute("SELECT 1 FROM alerts WHERE id = ?", (alert_id,)).fetchone():
                return None
            _comment(db, alert_id, who, ms, text)
            self._dirty.add(alert_id)
        found = self.get(alert_id)
        return None if found is None else found.alert

    # -- silences ----------------------------------------------------------------------------

    def add_silence(self, s: Silence) -> Silence:
        """Store a silence; returns it with its id."""
        with self._tx() as db:
            cur = db.execute(
                "INSERT INTO silences (starts_ms, ends_ms, author, reason, device_id, site, kind) "
                "VALUES (?, ?, ?, ?, ?, ?, ?)",
                (s.starts_ms, s.ends_ms, s.author, s.reason, s.device_id, s.site, s.kind),
            )
            new_id = int(cur.lastrowid or 0)
            self._silences_changed = True
        return Silence(
            new_id, s.starts_ms, s.ends_ms, s.author, s.reason, s.device_id, s.site, s.kind
        )

    def end_silence(self, silence_id: int, ms: int) -> bool:
        """End a silence now (kept for the record)."""
        with self._tx() as db:
            cur = db.execute(
                "UPDATE silences SET ends_ms = min(ends_ms, ?) WHERE id = ?", (ms, silence_id)
            )
            self._silences_changed = True
            return cur.rowcount > 0

    # -- outbox ------------------------------------------------------------------------------

    def record(
        self,
        notifications: Sequence[Notification],
        alerts: Iterable[Alert],
        history: Iterable[tuple[int, int, Transition, str]] = (),
    ) -> int:
        """Put notifications in the outbox and the alerts' new state (lifecycle, notified marks)
        with their history lines, in one transaction.

        Returns:
            Notifications newly recorded (an id already there is not recorded twice).
        """
        with self._tx() as db:
            db.executemany(_WRITE, [_written(a) for a in alerts])
            db.executemany("INSERT INTO alert_history VALUES (?, ?, ?, ?)", list(history))
            before = db.total_changes
            db.executemany(
                "INSERT OR IGNORE INTO outbox (id, receiver, body, next_ms, created_ms) "
                "VALUES (?, ?, ?, ?, ?)",
                [
                    (n.id, n.receiver, _dumps(n.as_dict()), n.created_ms, n.created_ms)
                    for n in notifications
                ],
            )
            return db.total_changes - before

    def mark_sent_many(self, note_ids: Sequence[str], ms: int) -> None:
        """The channel accepted these, in one transaction (one fsync for a burst)."""
        if not note_ids:
            return
        with self._tx() as db:
            db.executemany(
                "UPDATE outbox SET status = 'sent', sent_ms = ?, attempts = attempts + 1 "
                "WHERE id = ?",
                [(ms, i) for i in note_ids],
            )

    def mark_failed(self, note_id: str, error: str, retry_at_ms: int | None) -> None:
        """A failed attempt: retry at ``retry_at_ms``, or give up (None)."""
        with self._tx() as db:
            if retry_at_ms is None:
                db.execute(
                    "UPDATE outbox SET status = 'failed', attempts = attempts + 1, last_error = ? "
                    "WHERE id = ?",
                    (error[:500], note_id),
                )
            else:
                db.execute(
                    "UPDATE outbox SET attempts = attempts + 1, next_ms = ?, last_error = ? "
                    "WHERE id = ?",
                    (retry_at_ms, error[:500], note_id),
                )


def _event_args(r: dict[str, Any]) -> dict[str, Any]:
    return {**r, "data": _dumps(r.get("data", {})), "late": int(r["late"])}


def _event_line(alert_id: int, r: dict[str, Any]) -> tuple[int, int, Transition, str]:
    return (alert_id, r["ms"], Transition.EVENT, f"[{Severity(r['severity'])}] {r['explanation']}")


def _refresh_in(
    db: sqlite3.Connection,
    rows: Sequence[tuple[int, dict[str, Any]]],
    history: list[tuple[int, int, Transition, str]],
) -> list[int]:
    """:data:`_REFRESH` of each row; a row whose alert is cleared by now is upserted instead
    (its id returned). Appends the history lines."""
    before = db.total_changes
    db.executemany(_REFRESH, [{**_event_args(r), "id": i} for i, r in rows])
    missed: list[int] = []
    if db.total_changes - before != len(rows):
        ids = _dumps(sorted({i for i, _ in rows}))
        gone = {
            int(i)
            for (i,) in db.execute(
                "SELECT id FROM alerts WHERE id IN (SELECT value FROM json_each(?)) "
                "AND state = 'cleared'",
                (ids,),
            )
        }
        for i, r in rows:
            if i in gone:
                db.execute(_UPSERT, _event_args(r)).fetchone()
                missed.append(i)
    history.extend(_event_line(i, r) for i, r in rows)
    return missed


def _upsert_in(
    db: sqlite3.Connection,
    rows: Sequence[dict[str, Any]],
    history: list[tuple[int, int, Transition, str]],
) -> list[StoredAlert]:
    """:data:`_UPSERT` of every row in one ``executemany``, then the alerts read back in one
    query. Appends the history lines."""
    (last,) = db.execute("SELECT coalesce(max(id), 0) FROM alerts").fetchone()
    db.executemany(_INSERT_OR_UPDATE, [_event_args(r) for r in rows])
    # New alerts are the rows past the old last id (a range of the primary key): only their ids
    # are read, the alerts themselves are what the rows wrote (:func:`inserted`). The others
    # (cleared alerts raised again) are read back by their key.
    new_ids = {
        (str(d), str(k)): int(i)
        for i, d, k in db.execute("SELECT id, device_id, kind FROM alerts WHERE id > ?", (last,))
    }
    made: dict[int, StoredAlert] = {}
    for r in rows:
        i = new_ids.get((str(r["device_id"]), str(r["kind"])))
        if i is None:
            continue
        if i in made:
            refreshed(made[i], r)
        else:
            made[i] = inserted(i, r)
    found = list(made.values())
    ids = dict(new_ids)
    again = sorted({(str(r["device_id"]), str(r["kind"])) for r in rows} - ids.keys())
    if again:
        more = [
            _row(r)
            for r in db.execute(
                f"SELECT {_COLUMNS} FROM alerts WHERE (device_id, kind) IN "  # noqa: S608
                "(SELECT json_extract(value, '$[0]'), json_extract(value, '$[1]') "
                "FROM json_each(?))",
                (_dumps(again),),
            )
        ]
        found.extend(more)
        ids.update({(s.alert.device_id, s.alert.kind): s.alert.id for s in more})
    history.extend(_event_line(ids[(str(r["device_id"]), str(r["kind"]))], r) for r in rows)
    return found


def inserted(alert_id: int, row: dict[str, Any]) -> StoredAlert:
    """The alert :data:`_UPSERT` inserts for ``row`` (no alert of its device and kind yet), as
    a read back of it would load it."""
    alert = Alert(
        id=alert_id,
        device_id=str(row["device_id"]),
        kind=str(row["kind"]),
        site=str(row["site"]),
        group=str(row["grp"]),
        severity=Severity(row["severity"]),
        state=AlertState.PENDING,
        first_ms=int(row["ms"]),
        last_event_ms=int(row["ms"]),
        explanation=str(row["explanation"]),
        data=dict(row.get("data", {})),
        late=bool(row["late"]),
    )
    return StoredAlert(alert, str(row["device_kind"]), int(row["inactive"]))


def refreshed(s: StoredAlert, row: dict[str, Any]) -> None:
    """Apply to an alert held in memory what :meth:`AlertStore.refresh` wrote of ``row``."""
    a = s.alert
    a.severity = max(a.severity, Severity(row["severity"]))
    a.last_event_ms = max(a.last_event_ms, int(row["ms"]))
    s.inactive_ms = int(row["inactive"])
    a.explanation = str(row["explanation"])
    a.data = dict(row.get("data", {}))
    a.late = bool(row["late"])
    if row["site"]:
        a.site = str(row["site"])
    if row["grp"]:
        a.group = str(row["grp"])
    if row["device_kind"]:
        s.device_kind = str(row["device_kind"])


def _comment(db: sqlite3.Connection, alert_id: int, who: str, ms: int, text: str) -> None:
    (raw,) = db.execute("SELECT comments FROM alerts WHERE id = ?", (alert_id,)).fetchone()
    comments = _loads(raw)
    comments.append([who, ms, text])
    db.execute("UPDATE alerts SET comments = ? WHERE id = ?", (_dumps(comments), alert_id))
    db.execute(
        "INSERT INTO alert_history VALUES (?, ?, ?, ?)", (alert_id, ms, Transition.COMMENT, text)
    )


_WRITE: Final = (
    "UPDATE alerts SET severity = ?, state = ?, active_ms = ?, cleared_ms = ?, flapping = ?, "
    "transitions = ?, escalation = ?, notified_ms = ?, notified_severity = ? WHERE id = ?"
)


def _written(a: Alert) -> tuple[Any, ...]:
    """The parameters of :data:`_WRITE` for an alert's new state."""
    return (
        int(a.severity),
        a.state.value,
        a.active_ms,
        a.cleared_ms,
        int(a.flapping),
        _dumps(a.transitions),
        a.escalation,
        a.notified_ms,
        a.notified_severity,
        a.id,
    )


def _dumps(value: object) -> str:
    """JSON text (msgspec: several times faster than the standard library on the hot path)."""
    return msgspec.json.encode(value).decode()


def _loads(text: str) -> Any:  # noqa: ANN401 - JSON of any shape
    return msgspec.json.decode(text)


def _row(r: tuple[Any, ...]) -> StoredAlert:
    (
        id_,
        device_id,
        kind,
        device_kind,
        site,
        grp,
        severity,
        state,
        first_ms,
        last_event_ms,
        active_ms,
        cleared_ms,
        inactive_ms,
        explanation,
        data,
        acknowledged,
        ack_by,
        ack_ms,
        comments,
        flapping,
        transitions,
        escalation,
        notified_ms,
        notified_severity,
        late,
    ) = r
    alert = Alert(
        id=int(id_),
        device_id=device_id,
        kind=kind,
        site=site,
        group=grp,
        severity=Severity(int(severity)),
        state=AlertState(state),
        first_ms=int(first_ms),
        last_event_ms=int(last_event_ms),
        active_ms=int(active_ms),
        cleared_ms=int(cleared_ms),
        explanation=explanation,
        data=_loads(data),
        acknowledged=bool(acknowledged),
        ack_by=ack_by,
        ack_ms=int(ack_ms),
        comments=[]
        if comments == "[]"
        else [(str(c[0]), int(c[1]), str(c[2])) for c in _loads(comments)],
        flapping=bool(flapping),
        transitions=[] if transitions == "[]" else [int(t) for t in _loads(transitions)],
        escalation=int(escalation),
        notified_ms=int(notified_ms),
        notified_severity=int(notified_severity),
        late=bool(late),
    )
    return StoredAlert(alert, device_kind, int(inactive_ms))


def _outbox(r: tuple[Any, ...]) -> OutboxRow:
    note_id, receiver, body, status, attempts, next_ms, sent_ms, last_error = r
    d = _loads(body)
    note = Notification(
        id=note_id,
        receiver=receiver,
        status=d["status"],
        group=d["group"],
        title=d["title"],
        alerts=d["alerts"],
        created_ms=int(d["created_ms"]),
        attempts=int(attempts),
    )
    return OutboxRow(note, status, int(attempts), int(next_ms), int(sent_ms), last_error)
