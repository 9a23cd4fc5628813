"""Retightening campaigns: maintenance work orders over a set of bolts, with before/after.

An operator opens a **campaign** for a joint's findings or a selection of bolts (scope, reason,
linked alerts, assignee, due date). Each bolt gets a **task**, and its *before* reading (the
preload level at the start) is frozen then. A task moves ``open`` → ``retightened`` when the bolt
is retightened (its own ``tightened`` event, or a technician's record on the console) →
``done`` once the bolt has embedded again and its *after* reading and new settled level are
recorded (:class:`alerts.campaign_tracker.CampaignTracker` watches for that). A campaign whose
tasks are all done is ``done``; an operator may cancel one. Every action is kept in the
campaign's log with who did it.

The store is SQLite (``campaigns.db`` beside the alert store), one connection behind a lock,
each change one transaction.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final

import msgspec

from alerts.errors import AlertsError
from sensors.sqlite_file import SqliteFile

__all__ = [
    "CAMPAIGNS_DB",
    "CAMPAIGN_STATES",
    "MAX_BOLTS",
    "TASK_STATES",
    "Campaign",
    "CampaignError",
    "CampaignStore",
    "NoSuchCampaignError",
    "Task",
]

CAMPAIGNS_DB: Final = "campaigns.db"
"""The campaigns' database file, beside the alert store."""
CAMPAIGN_STATES: Final = ("open", "done", "cancelled")
TASK_STATES: Final = ("open", "retightened", "done", "cancelled")
MAX_BOLTS: Final = 1000
"""Bolts one campaign may hold."""
_MAX_TEXT: Final = 200
_MAX_REASON: Final = 2000


class CampaignError(AlertsError, ValueError):
    """A campaign or a task record is not valid.

    Attributes:
        key: The field (``title``, ``devices``, ``due_ms``...).
        reason: What is wrong with it.
    """

    def __init__(self, key: str, reason: str) -> None:
        super().__init__(f"{key}: {reason}")
        self.key = key
        self.reason = reason


class NoSuchCampaignError(CampaignError):
    """No campaign (or no task of that bolt in it) by that id."""


@dataclass(frozen=True, slots=True)
class Task:
    """One bolt of a campaign.

    Attributes:
        campaign_id: Its campaign.
        device_id: The bolt.
        state: One of :data:`TASK_STATES`.
        before_kn: Preload level when the campaign opened, kN (None: no reading yet).
        before_ms: Time of that reading, epoch ms (0: none).
        retightened_ms: When it was retightened (0: not yet).
        retightened_by: Who: a console user, or ``device`` for the bolt's own event.
        torque_nm: Torque applied at the retightening (None: not said).
        preload_kn: Preload achieved right after it (None: not said).
        after_kn: Preload level once re-embedded, kN (None: not yet).
        after_ms: When that was recorded (0: not yet).
        settled_kn: The new settled baseline, kN (None: not yet).
        settling_seen: The bolt's detector has been seen settling since the retightening.
        escalated_ms: When the overdue task was escalated as an alert (0: not).
    """

    campaign_id: int
    device_id: str
    state: str
    before_kn: float | None
    before_ms: int
    retightened_ms: int = 0
    retightened_by: str = ""
    torque_nm: float | None = None
    preload_kn: float | None = None
    after_kn: float | None = None
    after_ms: int = 0
    settled_kn: float | None = None
    settling_seen: bool = False
    escalated_ms: int = 0

    @property
    def gain_pct(self) -> float | None:
        """After vs before, % (None until both are known)."""
        if self.before_kn is None or self.after_kn is None or self.before_kn <= 0:
            return None
        return (self.after_kn / self.before_kn - 1.0) * 100.0


@dataclass(frozen=True, slots=True)
class Campaign:
    """A retightening campaign with its tasks.

    Attributes:
        id: Its number, from 1.
        title: One line ("Retighten flange F3").
        reason: Why (free text: the findings it answers).
        scope: What it covers: ``joint:<id>`` or ``bolts`` (a selection).
        assignee: Who is to do it.
        due_ms: When it is due, epoch ms (0: no due date).
        opened_ms: When it was opened.
        opened_by: Who opened it.
        state: One of :data:`CAMPAIGN_STATES`.
        closed_ms: When it was done or cancelled (0: open).
        alert_ids: The alerts it answers (acknowledged with its reference on retightening).
        tasks: One per bolt, in the order given.
    """

    id: int
    title: str
    reason: str
    scope: str
    assignee: str
    due_ms: int
    opened_ms: int
    opened_by: str
    state: str
    closed_ms: int
    alert_ids: tuple[int, ...]
    tasks: tuple[Task, ...]

    @property
    def ref(self) -> str:
        """How messages name it: ``campaign #7``."""
        return f"campaign #{self.id}"

    @property
    def joint(self) -> str | None:
        """The joint of a ``joint:<id>`` scope."""
        return self.scope.removeprefix("joint:") if self.scope.startswith("joint:") else None

    def overdue(self, now_ms: int) -> bool:
        """Open, with a due date passed."""
        return self.state == "open" and 0 < self.due_ms < now_ms

    def task(self, device_id: str) -> Task | None:
        """The task of one bolt."""
        return next((t for t in self.tasks if t.device_id == device_id), None)

    def counts(self) -> dict[str, int]:
        """Tasks per state."""
        out = dict.fromkeys(TASK_STATES, 0)
        for t in self.tasks:
            out[t.state] += 1
        return out


_SCHEMA: Final = """
CREATE TABLE IF NOT EXISTS campaigns (
    id INTEGER PRIMARY KEY,
    title TEXT NOT NULL,
    reason TEXT NOT NULL,
    scope TEXT NOT NULL,
    assignee TEXT NOT NULL,
    due_ms INTEGER NOT NULL,
    opened_ms INTEGER NOT NULL,
    opened_by TEXT NOT NULL,
    state TEXT NOT NULL,
    closed_ms INTEGER NOT NULL DEFAULT 0,
    alert_ids TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS campaign_tasks (
    campaign_id INTEGER NOT NULL REFERENCES campaigns (id),
    pos INTEGER NOT NULL,
    device_id TEXT NOT NULL,
    state TEXT NOT NULL,
    before_kn REAL,
    before_ms INTEGER NOT NULL,
    retightened_ms INTEGER NOT NULL DEFAULT 0,
    retightened_by TEXT NOT NULL DEFAULT '',
    torque_nm REAL,
    preload_kn REAL,
    after_kn REAL,
    after_ms INTEGER NOT NULL DEFAULT 0,
    settled_kn REAL,
    settling_seen INTEGER NOT NULL DEFAULT 0,
    escalated_ms INTEGER NOT NULL DEFAULT 0,
    PRIMARY KEY (campaign_id, device_id)
);
CREATE INDEX IF NOT EXISTS campaign_tasks_device ON campaign_tasks (device_id, state);
CREATE TABLE IF NOT EXISTS campaign_log (
    campaign_id INTEGER NOT NULL,
    ms INTEGER NOT NULL,
    who TEXT NOT NULL,
    text TEXT NOT NULL
);
"""
_TASK_COLUMNS: Final = (
    "campaign_id, device_id, state, before_kn, before_ms, retightened_ms, retightened_by, "
    "torque_nm, preload_kn, after_kn, after_ms, settled_kn, settling_seen, escalated_ms"
)
_CAMPAIGN_COLUMNS: Final = (
    "id, title, reason, scope, assignee, due_ms, opened_ms, opened_by, state, closed_ms, alert_ids"
)


class CampaignStore(SqliteFile):
    """Campaigns, their tasks and their logs in SQLite.

    Args:
        path: The database file (created, with its folder).
    """

    def __init__(self, path: str | Path) -> None:
        super().__init__(path, _SCHEMA)

    # -- writes ---------------------------------------------------------------------------------

    def open(
        self,
        *,
        title: str,
        devices: Sequence[str],
        before: Mapping[str, tuple[float, int]],
        by: str,
        ms: int,
        reason: str = "",
        scope: str = "bolts",
        assignee: str = "",
        due_ms: int = 0,
        alert_ids: Iterable[int] = (),
    ) -> Campaign:
        """Open a campaign: one task per bolt, each with its *before* reading frozen.

        Args:
            title: One line, required.
            devices: The bolts (at least one, each once, at most :data:`MAX_BOLTS`).
            before: Per bolt, its current preload level (kN) and that reading's time; a bolt
                missing here has no before reading (not reported yet).
            by: Who opens it.
            ms: Now, epoch ms.
            reason: Why.
            scope: ``joint:<id>`` or ``bolts``.
            assignee: Who is to do it.
            due_ms: Due date, epoch ms (0: none; otherwise after ``ms``).
            alert_ids: The alerts it answers.

        Raises:
            CampaignError: A field is not valid (its name in ``key``).
        """
        title = _text("title", title, _MAX_TEXT, required=True)
        reason = _text("reason", reason, _MAX_REASON)
        assignee = _text("assignee", assignee, _MAX_TEXT)
        by = _text("by", by, _MAX_TEXT, required=True)
        scope = _text("scope", scope, _MAX_TEXT, required=True)
        if not devices:
            raise CampaignError("devices", "choose at least one bolt")
        if len(devices) > MAX_BOLTS:
            raise CampaignError("devices", f"at most {MAX_BOLTS} bolts in one campaign")
        if len(set(devices)) != len(devices):
            raise CampaignError("devices", "a bolt is listed twice")
        if due_ms and due_ms <= ms:
            raise CampaignError("due_ms", "the due date is already past")
        alerts = tuple(sorted({int(a) for a in alert_ids}))
        with self._tx() as db:
            cur = db.execute(
                "INSERT INTO campaigns (title, reason, scope, assignee, due_ms, opened_ms, "
                "opened_by, state, alert_ids) VALUES (?, ?, ?, ?, ?, ?, ?, 'open', ?)",
                (title, reason, scope, assignee, due_ms, ms, by, _dumps(alerts)),
            )
            cid = int(cur.lastrowid or 0)
            db.executemany(
                "INSERT INTO campaign_tasks (campaign_id, pos, device_id, state, before_kn, "
                "before_ms) VALUES (?, ?, ?, 'open', ?, ?)",
                [(cid, i, dev, *before.get(dev, (None, 0))) for i, dev in enumerate(devices)],
            )
            _log(db, cid, ms, by, f"opened for {len(devices)} bolt(s): {title}")
        found = self.get(cid)
        assert found is not None  # noqa: S101 - just written
        return found

    def retighten(
        self,
        device_id: str,
        *,
        ms: int,
        by: str,
        torque_nm: float | None = None,
        preload_kn: float | None = None,
        campaign_id: int | None = None,
    ) -> list[Task]:
        """The bolt was retightened: its open tasks (of one campaign, or of every open one)
        move to ``retightened``.

        Returns:
            The tasks moved (none: the bolt has no open task).

        Raises:
            CampaignError: ``torque_nm`` or ``preload_kn`` is not a positive number.
        """
        for key, value in (("torque_nm", torque_nm), ("preload_kn", preload_kn)):
            if value is not None and not (0.0 < value < 1e6):
                raise CampaignError(key, "must be a positive number")
        by = _text("by", by, _MAX_TEXT, required=True)
        sql = (
            "SELECT t.campaign_id FROM campaign_tasks t JOIN campaigns c ON c.id = t.campaign_id "
            "WHERE t.device_id = ? AND t.state = 'open' AND c.state = 'open'"
        )
        args: list[Any] = [device_id]
        if campaign_id is not None:
            sql += " AND t.campaign_id = ?"
            args.append(campaign_id)
        with self._tx() as db:
            ids = [int(r[0]) for r in db.execute(sql, args).fetchall()]
            for cid in ids:
                db.execute(
                    "UPDATE campaign_tasks SET state = 'retightened', retightened_ms = ?, "
                    "retightened_by = ?, torque_nm = ?, preload_kn = ? "
                    "WHERE campaign_id = ? AND device_id = ?",
                    (ms, by, torque_nm, preload_kn, cid, device_id),
                )
                what = f"{device_id} retightened"
                if torque_nm is not None:
                    what += f" at {torque_nm:g} N·m"
                if preload_kn is not None:
                    what += f", {preload_kn:.1f} kN"
                _log(db, cid, ms, by, what)
        return [t for cid in ids if (t := self.task(cid, device_id)) is not None]

    def settling(self, campaign_id: int, device_id: str) -> None:
        """The bolt's detector is seen settling after its retightening."""
        with self._tx() as db:
            db.execute(
                "UPDATE campaign_tasks SET settling_seen = 1 "
                "WHERE campaign_id = ? AND device_id = ?",
                (campaign_id, device_id),
            )

    def settle(
        self, campaign_id: int, device_id: str, *, after_kn: float, settled_kn: float, ms: int
    ) -> Campaign:
        """The retightened bolt has embedded again: record its *after* reading and its new
        settled level; the task is done, and the campaign too when it was the last one.

        Raises:
            NoSuchCampaignError: No retightened task of that bolt in that campaign.
        """
        with self._tx() as db:
            n = db.execute(
                "UPDATE campaign_tasks SET state = 'done', after_kn = ?, after_ms = ?, "
                "settled_kn = ? WHERE campaign_id = ? AND device_id = ? AND state = 'retightened'",
                (after_kn, ms, settled_kn, campaign_id, device_id),
            ).rowcount
            if n == 0:
                raise NoSuchCampaignError("device_id", f"no retightened task of {device_id}")
            _log(
                db,
                campaign_id,
                ms,
                "boltwatch",
                f"{device_id} re-embedded: {after_kn:.1f} kN now, settled at {settled_kn:.1f} kN",
            )
            (left,) = db.execute(
                "SELECT count(*) FROM campaign_tasks WHERE campaign_id = ? AND state NOT IN "
                "('done', 'cancelled')",
                (campaign_id,),
            ).fetchone()
            if left == 0:
                db.execute(
                    "UPDATE campaigns SET state = 'done', closed_ms = ? WHERE id = ? "
                    "AND state = 'open'",
                    (ms, campaign_id),
                )
                _log(db, campaign_id, ms, "boltwatch", "done: every bolt retightened and settled")
        return self._must(campaign_id)

    def escalated(self, campaign_id: int, device_id: str, ms: int) -> None:
        """The overdue task was escalated as an alert."""
        with self._tx() as db:
            db.execute(
                "UPDATE campaign_tasks SET escalated_ms = ? "
                "WHERE campaign_id = ? AND device_id = ?",
                (ms, campaign_id, device_id),
            )
            _log(db, campaign_id, ms, "boltwatch", f"{device_id} overdue: escalated")

    def cancel(self, campaign_id: int, *, by: str, ms: int, reason: str = "") -> Campaign:
        """Cancel an open campaign (its unfinished tasks too).

        Raises:
            NoSuchCampaignError: No open campaign by that id.
        """
        by = _text("by", by, _MAX_TEXT, required=True)
        reason = _text("reason", reason, _MAX_REASON)
        with self._tx() as db:
            n = db.execute(
                "UPDATE campaigns SET state = 'cancelled', closed_ms = ? WHERE id = ? "
                "AND state = 'open'",
                (ms, campaign_id),
            ).rowcount
            if n == 0:
                raise NoSuchCampaignError("id", f"no open campaign #{campaign_id}")
            db.execute(
                "UPDATE campaign_tasks SET state = 'cancelled' WHERE campaign_id = ? "
                "AND state != 'done'",
                (campaign_id,),
            )
            _log(db, campaign_id, ms, by, "cancelled" + (f": {reason}" if reason else ""))
        return self._must(campaign_id)

    # -- reads ----------------------------------------------------------------------------------

    def get(self, campaign_id: int) -> Campaign | None:
        """One campaign with its tasks."""
        found = self._campaigns("WHERE id = ?", (campaign_id,))
        return found[0] if found else None

    def campaigns(
        self, *, state: str | None = None, joint: str | None = None, device: str | None = None
    ) -> list[Campaign]:
        """Campaigns, newest first: in one state, of one joint, or holding one bolt."""
        where: list[str] = []
        args: list[Any] = []
        if state is not None:
            where.append("state = ?")
            args.append(state)
        if joint is not None:
            where.append("scope = ?")
            args.append(f"joint:{joint}")
        if device is not None:
            where.append("id IN (SELECT campaign_id FROM campaign_tasks WHERE device_id = ?)")
            args.append(device)
        return self._campaigns(("WHERE " + " AND ".join(where)) if where else "", args)

    def pending(self) -> list[Task]:
        """Tasks not yet done of the open campaigns (what the tracker watches)."""
        cols = ", ".join(f"t.{c.strip()}" for c in _TASK_COLUMNS.split(","))
        with self._lock:
            rows = self._db.execute(
                f"SELECT {cols} FROM campaign_tasks t JOIN campaigns c "  # noqa: S608
                "ON c.id = t.campaign_id WHERE c.state = 'open' "
                "AND t.state IN ('open', 'retightened') ORDER BY t.campaign_id, t.pos"
            ).fetchall()
        return [_task(r) for r in rows]

    def task(self, campaign_id: int, device_id: str) -> Task | None:
        """One task."""
        with self._lock:
            row = self._db.execute(
                f"SELECT {_TASK_COLUMNS} FROM campaign_tasks "  # noqa: S608
                "WHERE campaign_id = ? AND device_id = ?",
                (campaign_id, device_id),
            ).fetchone()
        return _task(row) if row else None

    def log(self, campaign_id: int) -> list[tuple[int, str, str]]:
        """The campaign's log: (ms, who, what), oldest first."""
        with self._lock:
            rows = self._db.execute(
                "SELECT ms, who, text FROM campaign_log WHERE campaign_id = ? ORDER BY rowid",
                (campaign_id,),
            ).fetchall()
        return [(int(ms), str(who), str(text)) for ms, who, text in rows]

    def _must(self, campaign_id: int) -> Campaign:
        found = self.get(campaign_id)
        if found is None:  # pragma: no cover - checked by the caller's update
            raise NoSuchCampaignError("id", f"no campaign #{campaign_id}")
        return found

    def _campaigns(self, where: str, args: Sequence[Any]) -> list[Campaign]:
        with self._lock:
            rows = self._db.execute(
                f"SELECT {_CAMPAIGN_COLUMNS} FROM campaigns {where} ORDER BY id DESC",  # noqa: S608
                args,
            ).fetchall()
            tasks: dict[int, list[Task]] = {}
            if rows:
                ids = [int(r[0]) for r in rows]
                marks = ", ".join("?" * len(ids))
                for t in self._db.execute(
                    f"SELECT {_TASK_COLUMNS} FROM campaign_tasks "  # noqa: S608
                    f"WHERE campaign_id IN ({marks}) ORDER BY campaign_id, pos",
                    ids,
                ).fetchall():
                    tasks.setdefault(int(t[0]), []).append(_task(t))
        return [
            Campaign(
                id=int(r[0]),
                title=r[1],
                reason=r[2],
                scope=r[3],
                assignee=r[4],
                due_ms=int(r[5]),
                opened_ms=int(r[6]),
                opened_by=r[7],
                state=r[8],
                closed_ms=int(r[9]),
                alert_ids=tuple(msgspec.json.decode(r[10], type=list[int])),
                tasks=tuple(tasks.get(int(r[0]), ())),
            )
            for r in rows
        ]


def _text(key: str, value: str, limit: int, *, required: bool = False) -> str:
    value = value.strip()
    if required and not value:
        raise CampaignError(key, "required")
    if len(value) > limit:
        raise CampaignError(key, f"at most {limit} characters")
    if any(ord(c) < 32 and c not in "\n\t" for c in value):
        raise CampaignError(key, "control characters are not allowed")
    return value


def _log(db: sqlite3.Connection, campaign_id: int, ms: int, who: str, text: str) -> None:
    db.execute("INSERT INTO campaign_log VALUES (?, ?, ?, ?)", (campaign_id, ms, who, text))


def _dumps(value: object) -> str:
    return msgspec.json.encode(value).decode()


def _task(r: Sequence[Any]) -> Task:
    return Task(
        campaign_id=int(r[0]),
        device_id=str(r[1]),
        state=str(r[2]),
        before_kn=r[3],
        before_ms=int(r[4]),
        retightened_ms=int(r[5]),
        retightened_by=str(r[6]),
        torque_nm=r[7],
        preload_kn=r[8],
        after_kn=r[9],
        after_ms=int(r[10]),
        settled_kn=r[11],
        settling_seen=bool(r[12]),
        escalated_ms=int(r[13]),
    )
