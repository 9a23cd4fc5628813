"""Offline, causal scoring of recorded data: ``boltwatch replay IN.csv --kind KIND --out OUT.csv``.

The output has every input row and column, in order, plus ``anomaly_score`` (0..1) and ``alert``
(empty, or the event kind active at that row). Row ``i``'s score depends only on rows ``<= i``:
rows are fed to the detector in file order per device (a row older than its device's previous
row is evaluated as a late reading, never reordered before rows that came earlier), in chunks
whose state carries over.

Input columns per kind (ARCHITECTURE.md): ``cbolt`` — ``timestamp,device_id,preload_kn[,temp_c]
[,torque_nm][,battery_v]``; ``univariate`` — ``timestamp,value``; ``multivariate`` — timestamp and
numeric columns; machine kinds — ``timestamp,device_id`` and the kind's fields. Timestamps are
RFC 3339 / ISO 8601 (``2026-03-01T00:05:00Z``, ``2026-03-01 00:05:00``, with or without an offset)
or epoch seconds.
"""

from __future__ import annotations

import csv
import math
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Final

import numpy as np

from detection.base import DetectionError, DetectionEvent, Detector, Float64, Frame, Int64

__all__ = [
    "CHUNK_ROWS",
    "ReplaySummary",
    "parse_timestamps",
    "replay_csv",
    "replay_rows",
]

CHUNK_ROWS: Final = 50_000
"""Rows scored per chunk (state carries across chunks)."""

_SINGLE_DEVICE: Final = frozenset({"univariate", "multivariate"})
_NON_NUMERIC: Final = frozenset({"timestamp", "device_id", "site", "kind"})


@dataclass(frozen=True, slots=True)
class ReplaySummary:
    """What a replay did.

    Attributes:
        rows: Rows scored.
        devices: Distinct devices.
        alerts: Rows with an active alert, per alert kind.
        events: Alert edges (starts and escalations) found.
    """

    rows: int
    devices: int
    alerts: dict[str, int]
    events: list[DetectionEvent]


def parse_timestamps(texts: Sequence[str], column: str = "timestamp") -> Float64:
    """Epoch seconds from RFC 3339 / ISO 8601 strings or epoch-second numbers.

    Raises:
        DetectionError: A value is neither (the message names the row, counted from 1).
    """
    out = np.empty(len(texts), np.float64)
    for i, text in enumerate(texts):
        s = text.strip()
        try:
            out[i] = float(s)
            continue
        except ValueError:
            pass
        try:
            dt = datetime.fromisoformat(s[:-1] + "+00:00" if s.endswith(("Z", "z")) else s)
        except ValueError:
            raise DetectionError(
                column,
                f"row {i + 1}: {text!r} is not an RFC 3339 / ISO 8601 time or epoch seconds",
            ) from None
        if dt.tzinfo is None:
            dt = dt.replace(tzinfo=UTC)
        out[i] = dt.timestamp()
    return out


def _floats(texts: Sequence[str], column: str) -> Float64:
    out = np.empty(len(texts), np.float64)
    for i, text in enumerate(texts):
        s = text.strip()
        if not s:
            out[i] = math.nan
            continue
        try:
            out[i] = float(s)
        except ValueError:
            raise DetectionError(column, f"row {i + 1}: {text!r} is not a number") from None
    return out


class _Slots:
    """Device id -> slot, in order of first appearance."""

    def __init__(self) -> None:
        self.ids: dict[str, int] = {}

    def __call__(self, device_ids: Sequence[str]) -> Int64:
        get = self.ids.setdefault
        return np.fromiter((get(d, len(self.ids)) for d in device_ids), np.int64, len(device_ids))


def replay_rows(
    header: list[str],
    rows: list[list[str]],
    detector: Detector[Any],
    kind: str,
    slots: _Slots | None = None,
    offset: int = 0,
) -> tuple[Float64, list[str], list[DetectionEvent]]:
    """Score one chunk of CSV rows (in file order); the detector's state carries over.

    Args:
        header: Column names.
        rows: The chunk's rows.
        detector: The detector (state is updated).
        kind: The replay kind (``cbolt``, ``univariate``, ``multivariate`` or a machine kind).
        slots: Device-slot map shared across chunks.
        offset: Row number of the chunk's first row in the file (for error messages).

    Returns:
        Per row: anomaly score, active alert kind ("" for none); and the alert edges.

    Raises:
        DetectionError: A required column is missing or a value does not parse.
    """
    slots = slots if slots is not None else _Slots()
    cols = {name: [r[j] if j < len(r) else "" for r in rows] for j, name in enumerate(header)}
    if "timestamp" not in cols:
        raise DetectionError("timestamp", f"the {kind} input needs a timestamp column")
    try:
        ts = parse_timestamps(cols["timestamp"])
    except DetectionError as exc:
        raise DetectionError(exc.key, _shift_row(exc.reason, offset)) from None
    n = len(rows)
    if kind in _SINGLE_DEVICE:
        ids = ["series"] * n
        names = [c for c in header if c != "timestamp"]
        if kind == "univariate":
            if "value" not in cols:
                raise DetectionError("value", "the univariate input needs a value column")
            names = ["value"]
    else:
        if "device_id" not in cols:
            raise DetectionError("device_id", f"the {kind} input needs a device_id column")
        ids = cols["device_id"]
        names = [c for c in header if c not in _NON_NUMERIC]
        if kind == "cbolt" and "preload_kn" not in cols:
            raise DetectionError("preload_kn", "the cbolt input needs a preload_kn column")
    values: dict[str, Float64] = {}
    for name in names:
        try:
            values[name] = _floats(cols[name], name)
        except DetectionError as exc:
            raise DetectionError(exc.key, _shift_row(exc.reason, offset)) from None
    slot = slots(ids)
    order = np.argsort(slot, kind="stable").astype(np.int64)
    id_arr = np.empty(n, object)
    id_arr[:] = ids
    frame = Frame(slot=slot, device_id=id_arr, ts_s=ts, values=values).take(order)
    scores, decisions = detector.process(frame)
    score = np.empty(n)
    score[order] = scores.score
    alert: list[str] = [""] * n
    for pos, row in enumerate(order.tolist()):
        alert[row] = str(decisions.alert[pos])
    return score, alert, decisions.events


def _shift_row(reason: str, offset: int) -> str:
    if offset and reason.startswith("row "):
        head, _, rest = reason.partition(":")
        return f"row {int(head[4:]) + offset}:{rest}"
    return reason


def _chunks(reader: Iterator[list[str]], size: int) -> Iterator[list[list[str]]]:
    chunk: list[list[str]] = []
    for row in reader:
        if not row:
            continue
        chunk.append(row)
        if len(chunk) >= size:
            yield chunk
            chunk = []
    if chunk:
        yield chunk


def replay_csv(
    src: Path,
    out: Path,
    detector: Detector[Any],
    kind: str,
    progress: Callable[[int], None] | None = None,
    chunk_rows: int = CHUNK_ROWS,
) -> ReplaySummary:
    """Score a CSV file into another, adding ``anomaly_score`` and ``alert`` columns.

    Args:
        src: Input CSV (a header row, then data).
        out: Output CSV (written through a temporary file, renamed at the end).
        detector: A fresh detector for the kind.
        kind: The replay kind.
        progress: Called with the rows done so far after each chunk.
        chunk_rows: Rows per chunk.

    Raises:
        DetectionError: Bad input (missing column, unparsable value), naming column and row.
        OSError: The files cannot be read or written.
    """
    slots = _Slots()
    alerts: dict[str, int] = {}
    events: list[DetectionEvent] = []
    done = 0
    tmp = out.with_name(out.name + ".part")
    with (
        src.open(newline="", encoding="utf-8") as fin,
        tmp.open("w", newline="", encoding="utf-8") as fout,
    ):
        reader = csv.reader(fin)
        header = next(reader, None)
        if header is None:
            raise DetectionError("header", f"{src} is empty")
        header = [h.strip() for h in header]
        for extra in ("anomaly_score", "alert"):
            if extra in header:
                raise DetectionError(extra, "the input already has this column")
        writer = csv.writer(fout, lineterminator="\n")
        writer.writerow([*header, "anomaly_score", "alert"])
        for chunk in _chunks(reader, chunk_rows):
            score, alert, evs = replay_rows(header, chunk, detector, kind, slots, done)
            events += evs
            for row, sc, al in zip(chunk, score.tolist(), alert, strict=True):
                writer.writerow([*row, f"{sc:.4f}", al])
                if al:
                    alerts[al] = alerts.get(al, 0) + 1
            done += len(chunk)
            if progress is not None:
                progress(done)
    tmp.replace(out)
    return ReplaySummary(rows=done, devices=len(slots.ids), alerts=alerts, events=events)
