"""Joint analytics: maintenance teams think in joints, not sensor ids.

Across the instrumented bolts of one joint (a flange, a splice), after each batch:

* **k of n low** — at least ``k_low`` bolts below the warning fraction of their own baselines;
* **uneven preload** — a bolt's preload ratio (level / settled baseline) further than
  ``spread_pct`` below the joint's median ratio: a loose bolt among healthy neighbours under the
  same temperature and load, which is itself evidence of loosening rather than weather;
* **asymmetry** — for circular patterns, the first harmonic of the ratios around the pitch circle
  (``|Σ r_i·e^{iθ_i}| / n``) above ``asymmetry_pct``: one side of the flange is relaxing.

Events (``joint``) name the bolts and their positions. State is one small record per joint (joints
are few: the per-bolt state stays in the preload detector's arrays).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np

from detection.base import DetectionEvent, EventKind, Float64, Int64, Severity

__all__ = ["JointAnalyzer", "JointBoltRef", "JointParams"]


@dataclass(frozen=True, slots=True)
class JointParams:
    """Hyper-parameters of the joint analytics.

    Attributes:
        k_low: Bolts below the warning fraction that make a joint event.
        warning_ratio: A bolt is low below this fraction of its baseline.
        spread_pct: A bolt this many % (of baseline) below the joint median ratio is uneven.
        asymmetry_pct: First-harmonic amplitude (% of baseline) that makes an asymmetric joint.
        min_bolts: Joints with fewer armed bolts are not judged for spread and asymmetry.
    """

    k_low: int = 2
    warning_ratio: float = 0.80
    spread_pct: float = 8.0
    asymmetry_pct: float = 5.0
    min_bolts: int = 3


@dataclass(frozen=True, slots=True)
class JointBoltRef:
    """Where a bolt sits: its joint, position and angle on the pitch circle (degrees or None)."""

    joint: str
    position: int
    angle_deg: float | None
    site: str = ""


@dataclass(slots=True)
class _JointState:
    slots: list[int] = field(default_factory=list)
    refs: list[JointBoltRef] = field(default_factory=list)
    active: str = ""


class JointAnalyzer:
    """Joint-level rules over the bolts' level ratios.

    Args:
        params: Hyper-parameters.
    """

    def __init__(self, params: JointParams | None = None) -> None:
        self.params = params or JointParams()
        self._joints: dict[str, _JointState] = {}
        self._of_slot: dict[int, str] = {}

    def add_bolt(self, slot: int, ref: JointBoltRef) -> None:
        """Place a bolt (by its slot in the preload detector) in its joint."""
        old = self._of_slot.get(slot)
        if old is not None:
            st = self._joints[old]
            i = st.slots.index(slot)
            del st.slots[i]
            del st.refs[i]
        st = self._joints.setdefault(ref.joint, _JointState())
        st.slots.append(slot)
        st.refs.append(ref)
        self._of_slot[slot] = ref.joint

    @property
    def joints(self) -> list[str]:
        """Known joint ids."""
        return list(self._joints)

    def evaluate(
        self,
        touched: Int64,
        ratio: Float64,
        armed: np.ndarray[tuple[int], np.dtype[np.bool_]],
        device_ids: list[str],
        ts_ms: int,
    ) -> list[DetectionEvent]:
        """Judge the joints of the bolts just updated.

        Args:
            touched: Slots updated by the batch.
            ratio: Level / baseline per slot (all slots of the preload detector).
            armed: Whether each slot has a settled baseline.
            device_ids: Device id per slot.
            ts_ms: Time to stamp events with (the batch's newest reading).

        Returns:
            A ``joint`` event when a joint's finding appears or changes.
        """
        p = self.params
        events: list[DetectionEvent] = []
        names = {self._of_slot[s] for s in touched.tolist() if s in self._of_slot}
        for name in sorted(names):
            st = self._joints[name]
            sl = np.array(st.slots, np.int64)
            ok = armed[sl] & np.isfinite(ratio[sl])
            if not ok.any():
                continue
            r = ratio[sl]
            findings: list[str] = []
            sev = Severity.INFO
            low = np.flatnonzero(ok & (r < p.warning_ratio))
            if low.size >= p.k_low:
                findings.append(
                    f"{low.size} of {int(ok.sum())} bolts below {p.warning_ratio * 100:.0f} %: "
                    + self._list(st, low, r)
                )
                sev = Severity.MAJOR
            data: dict[str, float] = {"bolts": float(ok.sum()), "low": float(low.size)}
            if ok.sum() >= p.min_bolts:
                med = float(np.median(r[ok]))
                uneven = np.flatnonzero(ok & ((med - r) * 100.0 > p.spread_pct))
                data["median_ratio"] = med
                if uneven.size:
                    findings.append(
                        f"uneven: {self._list(st, uneven, r)} vs joint median {med * 100:.0f} %"
                    )
                    sev = max(sev, Severity.WARNING)
                angles = [st.refs[i].angle_deg for i in np.flatnonzero(ok)]
                if all(a is not None for a in angles):
                    theta = np.radians(np.array(angles, dtype=np.float64))
                    rr = r[ok]
                    amp = abs(complex(np.sum((rr - rr.mean()) * np.exp(1j * theta)))) * 2 / rr.size
                    data["asymmetry_pct"] = amp * 100.0
                    if amp * 100.0 > p.asymmetry_pct and rr.size >= p.min_bolts:
                        phase = (
                            math.degrees(
                                math.atan2(
                                    -float(np.sum((rr - rr.mean()) * np.sin(theta))),
                                    -float(np.sum((rr - rr.mean()) * np.cos(theta))),
                                )
                            )
                            % 360.0
                        )
                        findings.append(
                            f"asymmetric: {amp * 100:.1f} % first harmonic, lowest near "
                            f"{phase:.0f} deg"
                        )
                        sev = max(sev, Severity.WARNING)
            key = ";".join(f.split(":")[0] for f in findings)
            if findings and key != st.active:
                site = next((ref.site for ref in st.refs if ref.site), "")
                worst = int(sl[ok][np.argmin(r[ok])])
                events.append(
                    DetectionEvent(
                        device_id=device_ids[worst],
                        kind=EventKind.JOINT,
                        severity=sev,
                        ts_ms=ts_ms,
                        score=float(min(1.0, max(0.0, 1.0 - float(np.min(r[ok]))))),
                        explanation=f"joint {name}: " + "; ".join(findings),
                        detector="joint",
                        site=site,
                        data=data,
                    )
                )
            st.active = key
        return events

    @staticmethod
    def _list(st: _JointState, idx: Int64, r: Float64) -> str:
        return ", ".join(
            f"position {st.refs[i].position} ({r[i] * 100:.0f} %)" for i in idx.tolist()
        )
