"""A bolt's tightening history as its page shows it: the registry's installation records and
the ``tightened`` events the bolt (or its tool) sent, one list, oldest first.

Each row has the target preload (the bolt profile's), the achieved one, the torque, the nut
factor K = T / (F · d) with its verdict against the profile's accepted range (outside it, the
thread is bad, dirty, galled or wrongly lubricated), the tool and its calibration date, the
operator and the tightening pass. A device event that repeats a registry record (same time
within a minute, same torque) is shown once, as the registry's.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import date
from typing import Final

from sensors.registry import BoltInfo, Installation

__all__ = ["Tightening", "tightenings"]

_SAME_MS: Final = 60_000


@dataclass(frozen=True, slots=True)
class Tightening:
    """One tightening of a bolt.

    Attributes:
        ts_ms: When, epoch ms.
        source: ``registry`` (an installation record) or ``device`` (a ``tightened`` event).
        tightening_pass: 1 for the installation, more for later passes (None: not said).
        torque_nm: Torque applied, N·m.
        preload_kn: Preload achieved, kN.
        target_kn: The profile's target preload, kN (None: the bolt is not registered).
        nut_factor: K = T / (F · d) (NaN without the bolt's diameter).
        verdict: ``ok``, ``low`` or ``high`` against the profile's range ("" when unknown).
        tool: Tightening tool ("" when not said).
        tool_calibrated: The tool's calibration date, if recorded.
        operator: Who tightened it ("" when not said).
        note: The record's note, if any.
    """

    ts_ms: int
    source: str
    tightening_pass: int | None
    torque_nm: float
    preload_kn: float
    target_kn: float | None
    nut_factor: float
    verdict: str
    tool: str
    tool_calibrated: date | None
    operator: str
    note: str


def tightenings(
    bolt: BoltInfo | None,
    records: Sequence[Installation],
    events: Sequence[Mapping[str, object]],
) -> list[Tightening]:
    """Registry records and stored ``tightened`` events of one bolt, merged, oldest first.

    Args:
        bolt: The bolt's registry entry (profile: target, diameter, accepted K); None when the
            bolt is not registered (no target, no K).
        records: Its installation records.
        events: Its stored events (``Store.events`` rows); those not ``tightened`` are skipped.
    """
    rows = [_from_record(bolt, r) for r in records]
    for e in events:
        if e.get("type") != "tightened":
            continue
        row = _from_event(bolt, e)
        if row is None:
            continue
        if any(
            r.source == "registry"
            and abs(r.ts_ms - row.ts_ms) <= _SAME_MS
            and math.isclose(r.torque_nm, row.torque_nm, rel_tol=1e-3)
            for r in rows
        ):
            continue
        rows.append(row)
    return sorted(rows, key=lambda r: r.ts_ms)


def _from_record(bolt: BoltInfo | None, r: Installation) -> Tightening:
    k, verdict = _nut_factor(bolt, r.torque_nm, r.preload_kn)
    return Tightening(
        ts_ms=round(r.ts.timestamp() * 1000),
        source="registry",
        tightening_pass=r.tightening_pass,
        torque_nm=r.torque_nm,
        preload_kn=r.preload_kn,
        target_kn=bolt.profile.nominal_preload_kn if bolt is not None else None,
        nut_factor=k,
        verdict=verdict,
        tool=r.tool,
        tool_calibrated=r.tool_calibrated,
        operator=r.operator,
        note=r.note or "",
    )


def _from_event(bolt: BoltInfo | None, e: Mapping[str, object]) -> Tightening | None:
    fields = e.get("event")
    if not isinstance(fields, Mapping):
        return None
    torque, preload = fields.get("torque_nm"), fields.get("preload_kn")
    if not isinstance(torque, int | float) or not isinstance(preload, int | float):
        return None
    ts = e.get("ts_ms")
    passes = fields.get("tightening_pass")
    k, verdict = _nut_factor(bolt, float(torque), float(preload))
    return Tightening(
        ts_ms=int(ts) if isinstance(ts, int | float) else 0,
        source="device",
        tightening_pass=int(passes) if isinstance(passes, int) else None,
        torque_nm=float(torque),
        preload_kn=float(preload),
        target_kn=bolt.profile.nominal_preload_kn if bolt is not None else None,
        nut_factor=k,
        verdict=verdict,
        tool=str(fields.get("tool") or ""),
        tool_calibrated=None,
        operator=str(fields.get("operator") or ""),
        note="",
    )


def _nut_factor(bolt: BoltInfo | None, torque_nm: float, preload_kn: float) -> tuple[float, str]:
    if bolt is None or preload_kn <= 0:
        return math.nan, ""
    p = bolt.profile
    k = torque_nm / (preload_kn * 1000.0 * p.nominal_diameter_mm / 1000.0)
    if k < p.nut_factor_min:
        return k, "low"
    if k > p.nut_factor_max:
        return k, "high"
    return k, "ok"
