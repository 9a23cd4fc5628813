"""Held-out evaluation of the bolt detector on field fleets (:mod:`firmware_sim.field`).

Protocol: the detector's parameters are tuned on :data:`TUNING_SEEDS` only; the reported table
comes from :data:`HELDOUT_SEEDS` (20 seeds x 60 bolts, disjoint from the tuning seeds), one row
per scenario, with a plain Grafana-style rule beside it (preload below 80 % of the first day's
median for 3 samples in a row).

Per bolt, the first ``loosening`` event is compared with the truth:

* a non-loosening bolt with any loosening alert is a **false-alert bolt**;
* a loosening bolt alerted before its onset is a false alert too (the alert carried no news);
* **recall**: loosening bolts alerted at or after onset;
* **delay**: hours from onset to the alert; **lead**: hours from the alert to the moment the true
  preload crossed 70 % of its settled level (gradual loosening only).
"""

from __future__ import annotations

import math
import statistics
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Final

import numpy as np
import numpy.typing as npt
from rich.table import Table

from boltwatch.evaluation.scenarios import grafana_rule
from detection.base import EventKind, Frame
from detection.preload import BoltPreloadDetector, PreloadParams
from firmware_sim.field import FIELD_SCENARIOS, FieldBolt, simulate_field

__all__ = [
    "FIELD_SETS",
    "HELDOUT_SEEDS",
    "TUNING_SEEDS",
    "FieldOutcome",
    "evaluate_field",
    "field_frame",
    "field_table",
    "summarise_field",
]

TUNING_SEEDS: Final = tuple(range(1, 61))
"""Seeds the detector's parameters may be tuned on."""
HELDOUT_SEEDS: Final = tuple(range(1001, 1021))
"""Seeds nobody tunes on: the reported table."""
FIELD_SETS: Final = {"heldout": HELDOUT_SEEDS, "tuning": TUNING_SEEDS}
"""``boltwatch evaluate --field NAME``: the seed sets."""
GRADUAL: Final = frozenset({"vibration-loosening", "creep"})


@dataclass(slots=True)
class FieldOutcome:
    """One field bolt: truth, the detector's first alerts, and the Grafana-style rule's.

    ``grafana`` is the rule's first firing; ``grafana_since_onset`` its first firing at or after
    the onset (NaN for a bolt without one), what "before rule" compares with: a firing before
    the loosening began is a false alert of the rule, not a detection of this loosening.
    """

    device_id: str
    scenario: str
    seed: int
    onset: float
    cross70: float
    first_loosening: float
    first_low: float
    grafana: float
    grafana_since_onset: float
    active_at_end: bool

    @property
    def loosening(self) -> bool:
        """Whether the bolt really loosens."""
        return self.scenario in ("vibration-loosening", "creep", "sudden-loss")

    @property
    def false_alert(self) -> bool:
        """A loosening alert on a bolt that does not loosen, or before the loosening began."""
        if not math.isfinite(self.first_loosening):
            return False
        return not self.loosening or self.first_loosening < self.onset

    @property
    def grafana_false(self) -> bool:
        """The Grafana-style rule fired on a bolt that does not loosen, or before the onset."""
        if not math.isfinite(self.grafana):
            return False
        return not self.loosening or self.grafana < self.onset


def field_frame(bolts: Sequence[FieldBolt]) -> Frame:
    """The bolts as one frame sorted by (slot, time), as the engine would see their readings."""
    parts = [np.full(b.ts_s.shape[0], i, np.int64) for i, b in enumerate(bolts)]
    slot = np.concatenate(parts) if parts else np.zeros(0, np.int64)
    ids = np.empty(slot.shape[0], object)
    ids[:] = [bolts[int(s)].truth.device_id for s in slot]

    def cat(name: str) -> npt.NDArray[np.float64]:
        return np.concatenate([getattr(b, name) for b in bolts]).astype(np.float64)

    return Frame(
        slot=slot,
        device_id=ids,
        ts_s=cat("ts_s"),
        values={
            name: cat(name)
            for name in ("preload_kn", "temp_c", "torque_nm", "battery_v", "battery_swap")
        },
    )


def _first(times: dict[str, float], dev: str, t: float) -> None:
    if dev not in times:
        times[dev] = t


def evaluate_field(
    seeds: Sequence[int] = HELDOUT_SEEDS,
    bolts: int = 60,
    params: PreloadParams | None = None,
    progress: Callable[[str], None] | None = None,
) -> list[FieldOutcome]:
    """Simulate a field fleet per seed, run the bolt detector over it, and score each bolt."""
    out: list[FieldOutcome] = []
    for seed in seeds:
        if progress is not None:
            progress(f"field fleet seed {seed}")
        fleet = simulate_field(seed, bolts)
        frame = field_frame(fleet)
        det = BoltPreloadDetector(params)
        _, dec = det.process(frame)
        loose: dict[str, float] = {}
        low: dict[str, float] = {}
        for ev in dec.events:
            if ev.kind is EventKind.LOOSENING:
                _first(loose, ev.device_id, ev.ts_ms / 1000.0)
            elif ev.kind is EventKind.PRELOAD_LOW:
                _first(low, ev.device_id, ev.ts_ms / 1000.0)
        ends = np.r_[np.flatnonzero(frame.slot[1:] != frame.slot[:-1]), len(frame) - 1]
        for i, b in enumerate(fleet):
            dev = b.truth.device_id
            out.append(
                FieldOutcome(
                    device_id=dev,
                    scenario=b.truth.scenario,
                    seed=seed,
                    onset=b.truth.onset_s,
                    cross70=b.truth.cross70_s,
                    first_loosening=loose.get(dev, math.nan),
                    first_low=low.get(dev, math.nan),
                    grafana=grafana_rule(b.ts_s, b.preload_kn),
                    grafana_since_onset=grafana_rule(b.ts_s, b.preload_kn, since=b.truth.onset_s)
                    if b.truth.loosening
                    else math.nan,
                    active_at_end=dec.alert[ends[i]] == EventKind.LOOSENING.value,
                )
            )
    return out


def _med(xs: list[float]) -> str:
    return f"{statistics.median(xs):.1f}" if xs else "-"


def summarise_field(outcomes: Sequence[FieldOutcome]) -> list[dict[str, str]]:
    """One row per scenario and a total: the detector and the Grafana-style rule side by side."""
    groups: dict[str, list[FieldOutcome]] = {s: [] for s in FIELD_SCENARIOS}
    for o in outcomes:
        groups.setdefault(o.scenario, []).append(o)
    groups["all"] = list(outcomes)
    rows = []
    for name, bs in groups.items():
        if not bs:
            continue
        loose = [b for b in bs if b.loosening]
        caught = [b for b in loose if math.isfinite(b.first_loosening) and not b.false_alert]
        g_caught = [b for b in loose if math.isfinite(b.grafana) and not b.grafana_false]
        leads = [
            (b.cross70 - b.first_loosening) / 3600.0
            for b in caught
            if b.scenario in GRADUAL and math.isfinite(b.cross70)
        ]
        g_leads = [
            (b.cross70 - b.grafana) / 3600.0
            for b in g_caught
            if b.scenario in GRADUAL and math.isfinite(b.cross70)
        ]
        earlier = [
            b
            for b in caught
            if b.scenario in GRADUAL
            and (
                not math.isfinite(b.grafana_since_onset)
                or b.first_loosening < b.grafana_since_onset
            )
        ]
        gradual = [b for b in caught if b.scenario in GRADUAL]
        rows.append(
            {
                "scenario": name,
                "bolts": str(len(bs)),
                "false-alert bolts": str(sum(b.false_alert for b in bs)),
                "on at end": str(sum(b.active_at_end for b in bs if not b.loosening)),
                "recall": f"{len(caught)}/{len(loose)}" if loose else "-",
                "delay h": _med([(b.first_loosening - b.onset) / 3600.0 for b in caught]),
                "lead h": _med(leads),
                "before rule": f"{len(earlier)}/{len(gradual)}" if gradual else "-",
                "rule false": str(sum(b.grafana_false for b in bs)),
                "rule recall": f"{len(g_caught)}/{len(loose)}" if loose else "-",
                "rule lead h": _med(g_leads),
            }
        )
    return rows


def field_table(rows: Sequence[dict[str, str]], title: str) -> Table:
    """The rows of :func:`summarise_field` as a table (the detector's columns, then the rule's)."""
    table = Table(title=title)
    for key in rows[0] if rows else ():
        table.add_column(key, justify="left" if key == "scenario" else "right")
    for row in rows:
        table.add_row(*row.values(), style="bold" if row["scenario"] == "all" else None)
    return table
