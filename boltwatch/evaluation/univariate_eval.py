"""The univariate detector against NAB's windowed-Gaussian baseline and the null detector.

``python -m boltwatch.evaluation.univariate_eval`` prints one markdown table of normalised
windowed scores (:mod:`boltwatch.evaluation.windowed`: 0 = never firing, 100 = perfect), one row
per corpus:

* **SKAB, one channel at a time.** Each of SKAB's eight sensor channels is a corpus of 34 series
  (one per labelled experiment). The anomalies of a series are SKAB's labelled changepoints (the
  ``changepoint`` column: the onset and end of the experiment's anomaly and the visible changes
  within it, 2-4 per file), each with NAB's window centred on it (10 % of the series' rows
  shared among them). Tables are printed for all 34 files and for the held-out files: the
  detector's parameters were chosen on ``valve1`` (:data:`SKAB_TUNING_GROUPS`) only, so
  ``valve2`` and ``other`` are the held-out part.
* **Simulated machine series.** One channel of a fablab machine with one fault of the kind that
  channel shows (:data:`MACHINE_CASES`), sampled every ``dt_s`` seconds for ``hours``; the
  fault's onset is drawn in the middle of the run and it lasts to the end. Parameters were chosen
  on seeds :data:`MACHINE_TUNING_SEEDS`; the table uses :data:`MACHINE_HELDOUT_SEEDS`.

Columns: the univariate detector, NAB's windowed Gaussian, chance level (independent uniform
scores) and null. Every threshold is swept over each corpus (NAB's rule); the univariate detector
is also scored at its own alert threshold (``UnivariateParams.threshold``), which needs no sweep.
The chance column matters: on a channel that does not show an anomaly, firing at random at the
best rate scores about 20 on these corpora, so only a score above chance says a detector sees it.
Besides the table, :func:`main` runs SKAB's own outlier protocol (per-point F1, FAR, MAR) for
the multivariate detector, with the published leaderboard beside it.
"""

from __future__ import annotations

import argparse
import math
import sys
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Final

import numpy as np
import numpy.typing as npt

from boltwatch.evaluation.baselines import null_scores, random_scores, windowed_gaussian
from boltwatch.evaluation.skab import CHANNELS, GROUPS, SkabFile, default_skab_root, load_skab
from boltwatch.evaluation.windowed import (
    STANDARD,
    LabelledSeries,
    Profile,
    WindowedScore,
    anomaly_windows,
    score_at,
    sweep,
)
from detection.base import Frame
from detection.univariate import UnivariateDetector, UnivariateParams

__all__ = [
    "MACHINE_CASES",
    "MACHINE_HELDOUT_SEEDS",
    "MACHINE_TUNING_SEEDS",
    "SKAB_TUNING_GROUPS",
    "Corpus",
    "CorpusResult",
    "MachineCase",
    "evaluate",
    "machine_corpora",
    "main",
    "markdown_table",
    "skab_corpora",
    "univariate_scores",
]

Float64 = npt.NDArray[np.float64]
Scorer = Callable[[Float64, Float64], Float64]
"""(timestamps in s, values) -> one score per row, causal."""

SKAB_TUNING_GROUPS: Final = ("valve1",)
"""SKAB groups the univariate detector's parameters were chosen on."""
MACHINE_TUNING_SEEDS: Final = tuple(range(1, 6))
"""Machine-series seeds the parameters were chosen on."""
MACHINE_HELDOUT_SEEDS: Final = tuple(range(101, 111))
"""Machine-series seeds of the reported table (nobody tunes on them)."""


@dataclass(frozen=True, slots=True)
class MachineCase:
    """One simulated machine channel and the fault it should reveal.

    Attributes:
        kind: Machine kind (``laser_cutter``...).
        fault: Fault kind injected.
        channel: Reading field scored.
    """

    kind: str
    fault: str
    channel: str

    @property
    def name(self) -> str:
        """``kind.channel / fault``."""
        return f"{self.kind}.{self.channel} / {self.fault}"


MACHINE_CASES: Final = (
    MachineCase("laser_cutter", "flow_loss", "flow_lpm"),
    MachineCase("laser_cutter", "chiller_failure", "chiller_water_c"),
    MachineCase("embroidery", "tension_fault", "thread_tension_g"),
    MachineCase("printer3d", "heater_failure", "hotend_duty_pct"),
    MachineCase("cnc_mill", "bearing_outer", "vib_rms_mms"),
    MachineCase("cnc_mill", "tool_wear", "spindle_a"),
)
"""The machine channels of the table, each with a fault that changes it."""


@dataclass(frozen=True, slots=True)
class Corpus:
    """Labelled series and their values: one row of the table.

    Attributes:
        name: Row name.
        series: The labelled series.
        values: The values of each series (same rows).
    """

    name: str
    series: tuple[LabelledSeries, ...]
    values: tuple[Float64, ...]


@dataclass(frozen=True, slots=True)
class CorpusResult:
    """Scores of every detector on one corpus.

    Attributes:
        corpus: Row name.
        n_series: Series in the corpus.
        n_windows: Anomaly windows scored.
        swept: Per detector, its score at the corpus-optimal threshold.
        at_threshold: Per detector with a threshold of its own, its score there.
    """

    corpus: str
    n_series: int
    n_windows: int
    swept: dict[str, WindowedScore]
    at_threshold: dict[str, WindowedScore] = field(default_factory=dict)


def _skab_series(f: SkabFile, channel: str) -> LabelledSeries:
    windows = anomaly_windows(len(f), np.flatnonzero(f.changepoint))
    return LabelledSeries(f"{f.key}:{channel}", f.ts_s, windows)


def skab_corpora(root: Path, groups: Sequence[str] = GROUPS, *, suffix: str = "") -> list[Corpus]:
    """One corpus per SKAB channel, over the labelled files of ``groups``.

    Args:
        root: The SKAB folder.
        groups: Which groups' files to include.
        suffix: Appended to each corpus name (``" (held out)"``).

    Raises:
        DetectionError: The data cannot be read.
    """
    files = [f for f in load_skab(root) if f.group in groups]
    return [
        Corpus(
            f"SKAB {channel}{suffix}",
            tuple(_skab_series(f, channel) for f in files),
            tuple(f.values[channel] for f in files),
        )
        for channel in CHANNELS
    ]


def _machine_series(
    case: MachineCase, seed: int, hours: float, dt_s: float
) -> tuple[LabelledSeries, Float64]:
    from firmware_sim.machines import MachineFault, MachineSpec, simulate_machine

    rng = np.random.default_rng(seed)
    span_s = hours * 3600.0
    onset_s = float(rng.uniform(0.45, 0.7) * span_s)
    severity = float(rng.uniform(0.5, 1.0))
    t_s = np.arange(0.0, span_s, dt_s)
    spec = MachineSpec(
        case.kind,  # type: ignore[arg-type]  # validated into a DeviceKind by MachineSpec
        f"{case.kind}-{seed}",
        (MachineFault(case.fault, onset_s, None, severity),),
    )
    run = simulate_machine(spec, t_s, rng)
    ts = 1.7e9 + t_s
    name = f"{case.name} seed {seed}"
    return LabelledSeries.from_anomalies(name, ts, [1.7e9 + onset_s]), run.values[case.channel]


def machine_corpora(
    seeds: Sequence[int],
    *,
    cases: Sequence[MachineCase] = MACHINE_CASES,
    hours: float = 12.0,
    dt_s: float = 10.0,
) -> list[Corpus]:
    """One corpus per machine case: one simulated run per seed, one fault each.

    Args:
        seeds: One run per seed.
        cases: The machine channels and faults.
        hours: Length of each run, h.
        dt_s: Sampling interval, s.
    """
    out: list[Corpus] = []
    for case in cases:
        pairs = [_machine_series(case, seed, hours, dt_s) for seed in seeds]
        out.append(Corpus(case.name, tuple(p[0] for p in pairs), tuple(p[1] for p in pairs)))
    return out


def univariate_scores(
    ts_s: Float64, values: Float64, params: UnivariateParams | None = None
) -> Float64:
    """The univariate detector's score of every row of one series (a fresh detector)."""
    det = UnivariateDetector(params)
    scores = det.update(Frame.single("series", ts_s, {"value": values}))
    return scores.score


def _gaussian(_ts_s: Float64, values: Float64) -> Float64:
    return windowed_gaussian(values)


def _null(ts_s: Float64, _values: Float64) -> Float64:
    return null_scores(ts_s.shape[0])


def default_scorers(params: UnivariateParams | None = None, seed: int = 0) -> dict[str, Scorer]:
    """The table's columns: the univariate detector, the windowed Gaussian, chance, null.

    Args:
        params: The univariate detector's parameters (defaults if None).
        seed: Seed of the chance-level scores (one draw per series, in call order).
    """
    seeds = np.random.SeedSequence(seed)

    def chance(ts_s: Float64, _values: Float64) -> Float64:
        return random_scores(ts_s.shape[0], int(seeds.spawn(1)[0].generate_state(1)[0]))

    return {
        "univariate": lambda ts, x: univariate_scores(ts, x, params),
        "windowed Gaussian": _gaussian,
        "chance (uniform)": chance,
        "null": _null,
    }


def evaluate(
    corpora: Sequence[Corpus],
    scorers: Mapping[str, Scorer],
    *,
    thresholds: Mapping[str, float] | None = None,
    profile: Profile = STANDARD,
) -> list[CorpusResult]:
    """Windowed scores of every scorer on every corpus.

    Args:
        corpora: The table's rows.
        scorers: The table's columns.
        thresholds: Per scorer with an alert threshold of its own, that threshold (scored
            besides the swept one).
        profile: NAB weights.
    """
    results: list[CorpusResult] = []
    for corpus in corpora:
        swept: dict[str, WindowedScore] = {}
        fixed: dict[str, WindowedScore] = {}
        n_windows = 0
        for name, scorer in scorers.items():
            scores = [scorer(s.ts_s, x) for s, x in zip(corpus.series, corpus.values, strict=True)]
            sw = sweep(corpus.series, scores, profile=profile)
            n_windows = sw.n_windows
            swept[name] = sw.best
            if thresholds and name in thresholds:
                fixed[name] = score_at(corpus.series, scores, thresholds[name], profile=profile)
        results.append(CorpusResult(corpus.name, len(corpus.series), n_windows, swept, fixed))
    return results


def _cell(s: WindowedScore) -> str:
    return f"{s.normalised:.1f} ({s.tp_windows}/{s.tp_windows + s.fn_windows}, {s.fp_detections})"


def markdown_table(results: Sequence[CorpusResult]) -> str:
    """The results as one markdown table.

    Cells read ``score (detected windows/windows, false-positive detections)``; swept columns
    use each corpus's optimal threshold, the ``@`` columns the detector's own threshold.
    """
    if not results:
        return ""
    names = list(results[0].swept)
    fixed = list(results[0].at_threshold)
    head = ["corpus", "series", *names, *(f"{n} @ own threshold" for n in fixed)]
    lines = ["| " + " | ".join(head) + " |", "|---|" + "---:|" * (len(head) - 1)]
    for r in results:
        cells = [r.corpus, str(r.n_series)]
        cells += [_cell(r.swept[n]) for n in names]
        cells += [_cell(r.at_threshold[n]) for n in fixed]
        lines.append("| " + " | ".join(cells) + " |")
    means = [_mean([r.swept[n].normalised for r in results]) for n in names] + [
        _mean([r.at_threshold[n].normalised for r in results]) for n in fixed
    ]
    lines.append("| mean of rows | | " + " | ".join(f"{m:.1f}" for m in means) + " |")
    return "\n".join(lines)


def _mean(xs: Sequence[float]) -> float:
    return math.fsum(xs) / len(xs) if xs else math.nan


def _skab_f1_table(root: Path) -> str:
    from boltwatch.evaluation.skab import evaluate_skab, skab_table

    result = evaluate_skab(root)
    lines = ["| algorithm | F1 | FAR % | MAR % |", "|---|---:|---:|---:|"]
    lines += [
        f"| {a} | {f1:.2f} | {far:.2f} | {mar:.2f} |" for a, f1, far, mar in skab_table(result)
    ]
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> int:
    """Print the windowed-score table and SKAB's F1/FAR for the multivariate detector.

    Args:
        argv: Command-line arguments (default: ``sys.argv[1:]``).

    Returns:
        The exit status.
    """
    parser = argparse.ArgumentParser(
        prog="python -m boltwatch.evaluation.univariate_eval", description=__doc__.split("\n")[0]
    )
    parser.add_argument("--skab", type=Path, default=None, help="SKAB folder")
    parser.add_argument("--no-skab", action="store_true", help="leave SKAB out")
    parser.add_argument("--hours", type=float, default=12.0, help="length of a machine run, h")
    parser.add_argument("--dt", type=float, default=10.0, help="machine sampling interval, s")
    parser.add_argument(
        "--tuning", action="store_true", help="score the tuning seeds and groups instead"
    )
    args = parser.parse_args(argv)
    params = UnivariateParams()
    own = {"univariate": params.threshold}
    out = sys.stdout
    root = args.skab or default_skab_root()
    if not args.no_skab:
        if args.tuning:
            parts = [("valve1 (tuning)", skab_corpora(root, SKAB_TUNING_GROUPS))]
        else:
            held = tuple(g for g in GROUPS if g not in SKAB_TUNING_GROUPS)
            parts = [
                ("all 34 files", skab_corpora(root)),
                (f"held out ({', '.join(held)})", skab_corpora(root, held)),
            ]
        for title, skab in parts:
            out.write(f"## SKAB {title}, one channel at a time (NAB standard profile)\n\n")
            table = markdown_table(evaluate(skab, default_scorers(params), thresholds=own))
            out.write(table + "\n\n")
    seeds = MACHINE_TUNING_SEEDS if args.tuning else MACHINE_HELDOUT_SEEDS
    machines = machine_corpora(seeds, hours=args.hours, dt_s=args.dt)
    out.write(f"## Simulated machine series, seeds {seeds[0]}-{seeds[-1]}\n\n")
    out.write(markdown_table(evaluate(machines, default_scorers(params), thresholds=own)) + "\n")
    if not args.no_skab and not args.tuning:
        out.write("\n## SKAB outlier protocol (F1, FAR, MAR), multivariate detector\n\n")
        out.write(_skab_f1_table(root) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
