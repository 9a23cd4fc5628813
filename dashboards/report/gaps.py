"""Data-quality gaps: where a bolt's readings stop for much longer than it usually reports.

A gap is a stretch of the period with no reading longer than a threshold: three times the
bolt's median interval between readings in the period, and at least an hour (a bolt that
reports every 10 minutes has a gap when it is silent for more than an hour; one that reports
hourly, for more than three). The stretch before the first reading counts only from when the
bolt was expected to report (its installation, if before the period); the stretch after the
last one counts up to the end of the period (or now, if the period ends later).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Final

import numpy as np
import numpy.typing as npt

__all__ = ["MIN_GAP_MS", "SPACING_FACTOR", "Gap", "find_gaps", "gap_threshold_ms"]

MIN_GAP_MS: Final = 3_600_000
"""The shortest silence reported as a gap, whatever the bolt's rate (1 h)."""
SPACING_FACTOR: Final = 3.0
"""A gap is longer than this many median intervals between readings."""


@dataclass(frozen=True, slots=True)
class Gap:
    """A stretch without readings.

    Attributes:
        device_id: The device.
        start_ms: Time of the reading before it, or the start of the expected stretch (epoch ms).
        end_ms: Time of the reading after it, or the end of the period (epoch ms).
        open_ended: No reading came after it within the period.
    """

    device_id: str
    start_ms: int
    end_ms: int
    open_ended: bool = False

    @property
    def duration_ms(self) -> int:
        """Its length (ms)."""
        return self.end_ms - self.start_ms


def gap_threshold_ms(ts_ms: npt.NDArray[np.int64]) -> int:
    """The silence longer than which a device has a gap: :data:`SPACING_FACTOR` times the median
    interval of ``ts_ms`` (sorted epoch ms), at least :data:`MIN_GAP_MS`."""
    if ts_ms.size < 3:
        return MIN_GAP_MS
    median = float(np.median(np.diff(ts_ms)))
    return max(MIN_GAP_MS, round(SPACING_FACTOR * median))


def find_gaps(
    device_id: str,
    ts_ms: npt.NDArray[np.int64],
    expected_from_ms: int | None,
    until_ms: int,
) -> list[Gap]:
    """The device's gaps, oldest first.

    Args:
        device_id: The device.
        ts_ms: Its readings' times in the period (epoch ms, sorted).
        expected_from_ms: From when it should have reported (the period's start, or its
            installation within the period); None: only from its first reading.
        until_ms: The end of the period (or now, if earlier).
    """
    threshold = gap_threshold_ms(ts_ms)
    gaps: list[Gap] = []
    if ts_ms.size == 0:
        if expected_from_ms is not None and until_ms - expected_from_ms > threshold:
            gaps.append(Gap(device_id, expected_from_ms, until_ms, open_ended=True))
        return gaps
    first, last = int(ts_ms[0]), int(ts_ms[-1])
    if expected_from_ms is not None and first - expected_from_ms > threshold:
        gaps.append(Gap(device_id, expected_from_ms, first))
    steps = np.diff(ts_ms)
    gaps.extend(
        Gap(device_id, int(ts_ms[i]), int(ts_ms[i + 1]))
        for i in np.flatnonzero(steps > threshold).tolist()
    )
    if until_ms - last > threshold:
        gaps.append(Gap(device_id, last, until_ms, open_ended=True))
    return gaps
