"""Write a simulation run to CSV files in the ``boltwatch replay`` input formats, with ground truth.

Files written to the output folder:

* ``cbolt.csv`` — ``timestamp,device_id,preload_kn,temp_c,torque_nm,battery_v``: every bolt
  sample the nodes sent, in arrival order (dropouts are missing rows; a node with a clock fault
  stamps its own, wrong, time); ``torque_nm`` is set on the first sample after a ``tightened``
  event. This is the ``cbolt`` replay format of ARCHITECTURE.md.
* ``{kind}.csv`` for each machine kind present — ``timestamp,device_id`` and the kind's fields.
* ``events.csv`` — ``timestamp,device_id,kind,type,torque_nm,preload_kn,battery_v,detail``.
* ``ground_truth.csv`` — one row per device: ``device_id,kind,fault,onset,end,cross70,
  settled_kn,nut_factor,joint,position`` (times RFC 3339; empty when not applicable).
* ``truth.json`` — the same plus every machine fault interval, the scenario, seed and files.

Timestamps are RFC 3339 UTC with a ``Z`` (``2026-03-01T00:05:00Z``).
"""

from __future__ import annotations

import csv
import json
import math
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np

from firmware_sim.bolts import BoltSeries
from firmware_sim.machines import MachineRun
from firmware_sim.scenario import SimulationResult

__all__ = ["iso", "write_outputs"]

Progress = Callable[[str, int], None]


def iso(ts_ms: int) -> str:
    """RFC 3339 UTC with millisecond precision only when needed."""
    dt = datetime.fromtimestamp(ts_ms / 1000.0, UTC)
    if ts_ms % 1000:
        return dt.strftime("%Y-%m-%dT%H:%M:%S.") + f"{ts_ms % 1000:03d}Z"
    return dt.strftime("%Y-%m-%dT%H:%M:%SZ")


def write_outputs(
    result: SimulationResult, out_dir: Path, progress: Progress | None = None
) -> dict[str, int]:
    """Write every file of a run; returns rows written per file.

    Args:
        result: The run.
        out_dir: Created if missing; existing files of the same names are replaced.
        progress: Called with (file name, rows written so far) while writing.
    """
    out_dir.mkdir(parents=True, exist_ok=True)
    rows: dict[str, int] = {}
    if result.bolts:
        rows["cbolt.csv"] = _write_bolts(result.bolts, out_dir / "cbolt.csv", progress)
    by_kind: dict[str, list[MachineRun]] = {}
    for run in result.machines:
        by_kind.setdefault(run.spec.kind.value, []).append(run)
    for kind, runs in by_kind.items():
        rows[f"{kind}.csv"] = _write_machines(runs, result.start_ms, out_dir / f"{kind}.csv")
    rows["events.csv"] = _write_events(result, out_dir / "events.csv")
    rows["ground_truth.csv"] = _write_truth(result, out_dir)
    return rows


def _write_bolts(groups: list[BoltSeries], path: Path, progress: Progress | None) -> int:
    # Rows in arrival order: by sample time, then group, then bolt.
    times = np.unique(np.concatenate([g.t_ms for g in groups]))
    torque_at: dict[tuple[str, int], float] = {}
    for g in groups:
        for e in g.events:
            if e.type == "tightened" and e.torque_nm is not None:
                # The first sample at or after the event carries the torque.
                k = int(np.searchsorted(g.t_ms, e.ts_ms))
                if k < g.t_ms.shape[0]:
                    torque_at[e.device_id, int(g.t_ms[k])] = e.torque_nm
    stamp_cache: dict[int, str] = {}
    n = 0
    with path.open("w", newline="", encoding="utf-8") as fh:
        w = csv.writer(fh, lineterminator="\n")
        w.writerow(["timestamp", "device_id", "preload_kn", "temp_c", "torque_nm", "battery_v"])
        cols = [
            (
                g,
                g.preload_kn.T,
                g.temp_c.T,
                g.battery_v.T,
                g.ts_ms.T,
                {int(t): k for k, t in enumerate(g.t_ms)},
            )
            for g in groups
        ]
        for step, t in enumerate(times.tolist()):
            for g, pre, tmp, bat, ts, index in cols:
                col = index.get(t)
                if col is None:
                    continue
                p_row, t_row, b_row, s_row = pre[col], tmp[col], bat[col], ts[col]
                for i, dev in enumerate(g.device_id):
                    p = p_row[i]
                    if math.isnan(p):  # the node sent nothing (dropout)
                        continue
                    stamp = int(s_row[i])
                    text = stamp_cache.get(stamp)
                    if text is None:
                        text = stamp_cache[stamp] = iso(stamp)
                    torque = torque_at.get((dev, t))
                    w.writerow(
                        [
                            text,
                            dev,
                            f"{p:.2f}",
                            f"{t_row[i]:.1f}",
                            "" if torque is None else f"{torque:g}",
                            f"{b_row[i]:.3f}",
                        ]
                    )
                    n += 1
            if progress is not None and step % 512 == 0:
                progress("cbolt.csv", n)
    if progress is not None:
        progress("cbolt.csv", n)
    return n


def _write_machines(runs: list[MachineRun], start_ms: int, path: Path) -> int:
    fields = list(runs[0].values)
    # Round and format each column once with numpy, not value by value in Python.
    text: list[list[list[str]]] = []
    for run in runs:
        cols = []
        for f in fields:
            column = np.round(run.values[f], 3).tolist()
            cols.append(["" if math.isnan(v) else f"{v:g}" for v in column])
        text.append([list(row) for row in zip(*cols, strict=True)] if cols else [])
    merged = sorted(
        (float(t), r, k) for r, run in enumerate(runs) for k, t in enumerate(run.t_s.tolist())
    )
    stamps: dict[int, str] = {}
    n = 0
    with path.open("w", newline="", encoding="utf-8") as fh:
        w = csv.writer(fh, lineterminator="\n")
        w.writerow(["timestamp", "device_id", *fields])
        for t, r, k in merged:
            values = text[r][k]
            if not any(values):
                continue  # the machine reported nothing at that time
            ts = start_ms + round(t * 1000)
            stamp = stamps.get(ts)
            if stamp is None:
                stamp = stamps[ts] = iso(ts)
            w.writerow([stamp, runs[r].spec.device_id, *values])
            n += 1
    return n


def _write_events(result: SimulationResult, path: Path) -> int:
    rows: list[tuple[int, list[str]]] = []
    for g in result.bolts:
        rows += [
            (
                e.ts_ms,
                [
                    iso(e.ts_ms),
                    e.device_id,
                    "cbolt",
                    e.type,
                    "" if e.torque_nm is None else f"{e.torque_nm:g}",
                    "" if e.preload_kn is None else f"{e.preload_kn:g}",
                    "" if e.battery_v is None else f"{e.battery_v:g}",
                    "",
                ],
            )
            for e in g.events
        ]
    for run in result.machines:
        for ev in run.events:
            ts = result.start_ms + round(ev.t_s * 1000)
            detail = json.dumps(dict(ev.fields), sort_keys=True, default=str) if ev.fields else ""
            rows.append(
                (
                    ts,
                    [iso(ts), run.spec.device_id, run.spec.kind.value, ev.type, "", "", "", detail],
                )
            )
    rows.sort(key=lambda r: r[0])
    with path.open("w", newline="", encoding="utf-8") as fh:
        w = csv.writer(fh, lineterminator="\n")
        w.writerow(
            [
                "timestamp",
                "device_id",
                "kind",
                "type",
                "torque_nm",
                "preload_kn",
                "battery_v",
                "detail",
            ]
        )
        w.writerows(r for _, r in rows)
    return len(rows)


def _opt_iso(ts_ms: int | None) -> str:
    return "" if ts_ms is None else iso(ts_ms)


def _write_truth(result: SimulationResult, out_dir: Path) -> int:
    devices: list[dict[str, Any]] = []
    for g in result.bolts:
        devices += [
            {
                "device_id": t.device_id,
                "kind": "cbolt",
                "fault": t.fault.value,
                "onset": _opt_iso(t.onset_ms),
                "end": _opt_iso(t.end_ms),
                "cross70": _opt_iso(t.cross70_ms),
                "settled_kn": t.settled_kn,
                "nut_factor": t.nut_factor,
                "joint": t.joint,
                "position": t.position,
            }
            for t in g.truth
        ]
    for run in result.machines:
        faults = sorted({iv.kind for iv in run.intervals})
        devices.append(
            {
                "device_id": run.spec.device_id,
                "kind": run.spec.kind.value,
                "fault": "+".join(faults) if faults else "none",
                "onset": _opt_iso(
                    min(
                        (result.start_ms + round(iv.start_s * 1000) for iv in run.intervals),
                        default=None,
                    )
                ),
                "end": _opt_iso(
                    max(
                        (result.start_ms + round(iv.end_s * 1000) for iv in run.intervals),
                        default=None,
                    )
                ),
                "cross70": "",
                "settled_kn": "",
                "nut_factor": "",
                "joint": "",
                "position": "",
                "intervals": [
                    {
                        "kind": iv.kind,
                        "start": iso(result.start_ms + round(iv.start_s * 1000)),
                        "end": iso(result.start_ms + round(iv.end_s * 1000)),
                    }
                    for iv in run.intervals
                ],
            }
        )
    columns = [
        "device_id",
        "kind",
        "fault",
        "onset",
        "end",
        "cross70",
        "settled_kn",
        "nut_factor",
        "joint",
        "position",
    ]
    with (out_dir / "ground_truth.csv").open("w", newline="", encoding="utf-8") as fh:
        w = csv.DictWriter(fh, columns, extrasaction="ignore", lineterminator="\n")
        w.writeheader()
        w.writerows(devices)
    meta = {
        "scenario": result.scenario,
        "seed": result.seed,
        "site": result.site,
        "start": iso(result.start_ms),
        "duration_s": result.duration_s,
        "devices": devices,
    }
    (out_dir / "truth.json").write_text(json.dumps(meta, indent=1), encoding="utf-8")
    return len(devices)
