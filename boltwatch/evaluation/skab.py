"""The Skoltech Anomaly Benchmark (SKAB): load its labelled files and score a detector on them.

SKAB is real data from a water-circulation testbed (pump, valves, accelerometers, pressure,
temperatures, current, voltage, flow) at about 1 Hz: 34 labelled experiments in ``valve1/``,
``valve2/`` and ``other/``. The data stays outside the repository (GPL-3.0, in
``../shared/data/skab``); :func:`default_skab_root` finds it.

Scoring follows SKAB's outlier protocol: each file's first ``fit_rows`` (400) rows may be used for
fitting; per-point binary predictions on the remaining rows of all 34 files are pooled, and
F1 = TP / (TP + (FP + FN) / 2), FAR = FP / (FP + TN) * 100, MAR = FN / (FN + TP) * 100.

Each file is streamed causally, as one device, through a fresh clone of the detector. A row is
predicted anomalous when :meth:`Detector.decide` reports an active alert on it (so the
detector's own hysteresis counts, exactly as it would in production); rows before ``fit_rows``
are warm-up and not scored.
"""

from __future__ import annotations

import csv
import os
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Final, NamedTuple

import numpy as np

from detection.base import Bool, DetectionError, Detector, Float64, Frame

__all__ = [
    "CHANNELS",
    "GROUPS",
    "LEADERBOARD",
    "Counts",
    "LeaderboardRow",
    "SkabFile",
    "SkabFileResult",
    "SkabResult",
    "default_skab_root",
    "evaluate_skab",
    "load_skab",
    "skab_table",
]

GROUPS: Final = ("valve1", "valve2", "other")
"""The folders of labelled experiments, in SKAB's order."""

CHANNELS: Final = (
    "Accelerometer1RMS",
    "Accelerometer2RMS",
    "Current",
    "Pressure",
    "Temperature",
    "Thermocouple",
    "Voltage",
    "Volume Flow RateRMS",
)
"""The sensor columns fed to a detector (``anomaly`` and ``changepoint`` are labels)."""

_LABELS: Final = ("anomaly", "changepoint")
_ENV_ROOT: Final = "BOLTWATCH_SKAB_DIR"


class LeaderboardRow(NamedTuple):
    """One row of SKAB's published outlier leaderboard (FAR and MAR in %)."""

    algorithm: str
    f1: float
    far_pct: float
    mar_pct: float


LEADERBOARD: Final[tuple[LeaderboardRow, ...]] = (
    LeaderboardRow("Conv-AE", 0.78, 13.55, 28.02),
    LeaderboardRow("MSET", 0.78, 39.73, 14.13),
    LeaderboardRow("T²+Q (PCA)", 0.76, 26.62, 24.92),
    LeaderboardRow("LSTM-AE", 0.74, 29.96, 25.92),
    LeaderboardRow("T-squared", 0.66, 19.21, 42.60),
    LeaderboardRow("Vanilla LSTM", 0.54, 12.54, 59.53),
    LeaderboardRow("Vanilla AE", 0.39, 2.59, 75.15),
    LeaderboardRow("Isolation Forest", 0.29, 2.56, 82.89),
)
"""SKAB's published outlier-detection table (from the dataset's README)."""


@dataclass(frozen=True, slots=True)
class SkabFile:
    """One labelled SKAB experiment.

    Attributes:
        group: ``valve1``, ``valve2`` or ``other``.
        name: File name (``3.csv``).
        ts_s: Epoch seconds of each row (the file's local time, read as UTC).
        values: The sensor columns (:data:`CHANNELS`), float64.
        anomaly: The anomaly label per row.
        changepoint: The changepoint label per row.
    """

    group: str
    name: str
    ts_s: Float64
    values: dict[str, Float64]
    anomaly: Bool
    changepoint: Bool

    @property
    def key(self) -> str:
        """``group/name``, e.g. ``valve1/3.csv``."""
        return f"{self.group}/{self.name}"

    def __len__(self) -> int:
        return int(self.ts_s.shape[0])


@dataclass(frozen=True, slots=True)
class Counts:
    """Confusion counts of binary per-point predictions, and SKAB's metrics on them."""

    tp: int = 0
    fp: int = 0
    fn: int = 0
    tn: int = 0

    @classmethod
    def of(cls, predicted: Bool, label: Bool) -> Counts:
        """Count predictions against labels (same length)."""
        if predicted.shape != label.shape:
            raise DetectionError("predicted", f"shape {predicted.shape} != labels {label.shape}")
        return cls(
            tp=int(np.count_nonzero(predicted & label)),
            fp=int(np.count_nonzero(predicted & ~label)),
            fn=int(np.count_nonzero(~predicted & label)),
            tn=int(np.count_nonzero(~predicted & ~label)),
        )

    def __add__(self, other: Counts) -> Counts:
        return Counts(
            self.tp + other.tp, self.fp + other.fp, self.fn + other.fn, self.tn + other.tn
        )

    @classmethod
    def total(cls, parts: Iterable[Counts]) -> Counts:
        """The pooled counts."""
        out = cls()
        for c in parts:
            out = out + c
        return out

    @property
    def f1(self) -> float:
        """TP / (TP + (FP + FN) / 2); 0 when there is nothing to count."""
        den = self.tp + (self.fp + self.fn) / 2
        return self.tp / den if den else 0.0

    @property
    def far_pct(self) -> float:
        """False alarm rate FP / (FP + TN), in %; 0 without normal points."""
        den = self.fp + self.tn
        return 100.0 * self.fp / den if den else 0.0

    @property
    def mar_pct(self) -> float:
        """Missed alarm rate FN / (FN + TP), in %; 0 without anomalous points."""
        den = self.fn + self.tp
        return 100.0 * self.fn / den if den else 0.0


@dataclass(frozen=True, slots=True)
class SkabFileResult:
    """The scored test part of one file."""

    group: str
    name: str
    test_rows: int
    counts: Counts


@dataclass(frozen=True, slots=True)
class SkabResult:
    """A detector's SKAB outlier score.

    Attributes:
        detector: Registry name of the detector.
        counts: Counts pooled over the test parts of all files.
        files: Per-file counts, in load order.
        elapsed_s: Wall-clock time of the evaluation, in seconds (for the report, not for tests).
    """

    detector: str
    counts: Counts
    files: tuple[SkabFileResult, ...] = field(default_factory=tuple)
    elapsed_s: float = 0.0

    @property
    def f1(self) -> float:
        """Pooled F1."""
        return self.counts.f1

    @property
    def far_pct(self) -> float:
        """Pooled false alarm rate, in %."""
        return self.counts.far_pct

    @property
    def mar_pct(self) -> float:
        """Pooled missed alarm rate, in %."""
        return self.counts.mar_pct

    def group(self, name: str) -> Counts:
        """Counts pooled over one group's files (``valve1``, ``valve2``, ``other``)."""
        return Counts.total(f.counts for f in self.files if f.group == name)


def default_skab_root() -> Path:
    """Where the SKAB data is: ``$BOLTWATCH_SKAB_DIR``, else ``../shared/data/skab``.

    The default is relative to the repository (``<repo>/../shared/data/skab``).
    """
    env = os.environ.get(_ENV_ROOT)
    if env:
        return Path(env)
    return Path(__file__).resolve().parents[3] / "shared" / "data" / "skab"


def _read_file(path: Path, group: str) -> SkabFile:
    with path.open(newline="", encoding="utf-8") as fh:
        reader = csv.reader(fh, delimiter=";")
        try:
            header = next(reader)
        except StopIteration:
            raise DetectionError(str(path), "empty file") from None
        rows = list(reader)
    missing = [c for c in ("datetime", *CHANNELS, *_LABELS) if c not in header]
    if missing:
        raise DetectionError(str(path), f"missing columns {missing}")
    col = {name: i for i, name in enumerate(header)}
    try:
        ts = np.array([r[col["datetime"]] for r in rows], dtype="datetime64[s]")
        num = {
            name: np.array([r[col[name]] for r in rows], dtype=np.float64)
            for name in (*CHANNELS, *_LABELS)
        }
    except (ValueError, IndexError) as exc:
        raise DetectionError(str(path), f"malformed row: {exc}") from exc
    return SkabFile(
        group=group,
        name=path.name,
        ts_s=ts.astype(np.int64).astype(np.float64),
        values={name: num[name] for name in CHANNELS},
        anomaly=num["anomaly"] > 0.5,
        changepoint=num["changepoint"] > 0.5,
    )


def load_skab(root: Path) -> list[SkabFile]:
    """The 34 labelled experiments, ordered by group then file number.

    Args:
        root: The SKAB folder (holding ``valve1/``, ``valve2/``, ``other/``).

    Raises:
        DetectionError: A group folder is missing or a file cannot be parsed.
    """
    files: list[SkabFile] = []
    for group in GROUPS:
        folder = root / group
        if not folder.is_dir():
            raise DetectionError(str(folder), "SKAB group folder not found")
        paths = sorted(folder.glob("*.csv"), key=lambda p: (len(p.stem), p.stem))
        files.extend(_read_file(p, group) for p in paths)
    return files


def _default_detector() -> Detector[Any]:
    from detection.multivariate import MultivariateDetector

    return MultivariateDetector()


def evaluate_skab(
    root: Path,
    detector_factory: Callable[[], Detector[Any]] | None = None,
    fit_rows: int = 400,
) -> SkabResult:
    """Score a detector on SKAB's outlier problem (see the module doc for the protocol).

    Args:
        root: The SKAB folder.
        detector_factory: Makes the detector; each file runs through a fresh clone of it. Default:
            :class:`detection.multivariate.MultivariateDetector` with default parameters.
        fit_rows: Rows at the start of each file that are warm-up, not test (SKAB: 400). The
            detector learns from them causally; its own warm-up length is its parameter.

    Returns:
        Pooled and per-file counts.

    Raises:
        DetectionError: The data cannot be read.
    """
    import time

    start = time.perf_counter()
    proto = (detector_factory or _default_detector)()
    results: list[SkabFileResult] = []
    for f in load_skab(root):
        det = proto.clone()
        frame = Frame.single(f.key, f.ts_s, f.values)
        _, decisions = det.process(frame)
        predicted = decisions.alert[fit_rows:] != ""
        results.append(
            SkabFileResult(
                f.group,
                f.name,
                len(f) - fit_rows,
                Counts.of(predicted.astype(np.bool_), f.anomaly[fit_rows:]),
            )
        )
    return SkabResult(
        detector=proto.name,
        counts=Counts.total(r.counts for r in results),
        files=tuple(results),
        elapsed_s=time.perf_counter() - start,
    )


def skab_table(result: SkabResult) -> list[tuple[str, float, float, float]]:
    """Boltwatch's row next to the published ones, best F1 first.

    Returns:
        Rows of (algorithm, F1, FAR %, MAR %); boltwatch's row is named
        ``boltwatch <detector>``.
    """
    rows = [(r.algorithm, r.f1, r.far_pct, r.mar_pct) for r in LEADERBOARD]
    rows.append((f"boltwatch {result.detector}", result.f1, result.far_pct, result.mar_pct))
    return sorted(rows, key=lambda r: -r[1])
