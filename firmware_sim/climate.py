"""Site climate: air temperature over time, and the temperature of a bolted joint that follows it.

Air temperature is the sum of
  * a seasonal cycle (coldest around 15 January in the northern hemisphere),
  * a daily cycle (warmest around 15:00 local solar time),
  * weather: an Ornstein-Uhlenbeck process (random walk pulled back to zero with a time constant
    of a few days),
  * cold snaps: Poisson-distributed events, each a smooth dip of several degrees over 1-4 days.
A joint's steel has thermal mass: its temperature is the air temperature through a first-order lag
(time constant about an hour; sun and wind ignored).
All of it is vectorised: one call gives a whole run.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt
from scipy.signal import lfilter

__all__ = ["ClimateSpec", "air_temperature", "joint_temperature"]

Float64 = npt.NDArray[np.float64]
_DAY_S = 86_400.0
_YEAR_S = 365.25 * _DAY_S
# 15 January (day 15 of the year) is the coldest; 15:00 the warmest hour.
_COLDEST_DAY = 15.0
_WARMEST_HOUR = 15.0


@dataclass(frozen=True, slots=True)
class ClimateSpec:
    """Parameters of a site's climate (all temperatures in °C).

    Attributes:
        mean_c: Annual mean air temperature.
        annual_amplitude_c: Half the difference between summer and winter means.
        daily_amplitude_c: Half the day-night swing (DOMAIN: daily cycles of 5-30 °C peak to peak).
        weather_sigma_c: Standard deviation of the weather deviation (stationary).
        weather_tau_days: How fast weather returns to normal.
        cold_snaps_per_month: Expected number of cold snaps per 30 days.
        cold_snap_depth_c: Mean depth of a cold snap.
        indoor: Indoors (a fablab): no seasons or weather, a small daily swing around ``mean_c``.
    """

    mean_c: float = 10.0
    annual_amplitude_c: float = 8.0
    daily_amplitude_c: float = 5.0
    weather_sigma_c: float = 2.5
    weather_tau_days: float = 3.0
    cold_snaps_per_month: float = 0.5
    cold_snap_depth_c: float = 8.0
    indoor: bool = False

    def __post_init__(self) -> None:
        for name in ("annual_amplitude_c", "daily_amplitude_c", "weather_sigma_c"):
            if getattr(self, name) < 0:
                raise ValueError(f"{name} must be >= 0")
        if self.weather_tau_days <= 0:
            raise ValueError("weather_tau_days must be > 0")
        if self.cold_snaps_per_month < 0 or self.cold_snap_depth_c < 0:
            raise ValueError("cold snaps must be >= 0")


def air_temperature(
    spec: ClimateSpec, t_ms: npt.NDArray[np.int64], rng: np.random.Generator
) -> Float64:
    """Air temperature at each time (°C).

    Args:
        spec: The site's climate.
        t_ms: Increasing epoch milliseconds (UTC; the site's longitude is ignored).
        rng: Random source (weather and cold snaps).
    """
    t = t_ms.astype(np.float64) / 1000.0
    n = t.shape[0]
    if n == 0:
        return np.zeros(0)
    day_of_year = (t % _YEAR_S) / _DAY_S
    hour = (t % _DAY_S) / 3600.0
    daily = spec.daily_amplitude_c * np.cos(2 * np.pi * (hour - _WARMEST_HOUR) / 24.0)
    if spec.indoor:
        return spec.mean_c + 0.3 * daily + rng.normal(0.0, 0.1, n)
    seasonal = -spec.annual_amplitude_c * np.cos(2 * np.pi * (day_of_year - _COLDEST_DAY) / 365.25)
    weather = _ornstein_uhlenbeck(t, spec.weather_sigma_c, spec.weather_tau_days * _DAY_S, rng)
    snaps = _cold_snaps(t, spec, rng)
    out: Float64 = spec.mean_c + seasonal + daily + weather - snaps
    return out


def joint_temperature(
    air_c: Float64, t_ms: npt.NDArray[np.int64], tau_s: float = 3_600.0
) -> Float64:
    """Temperature of a joint's steel: the air temperature through a first-order lag (°C).

    Assumes a (nearly) regular grid: the filter uses the median step.
    """
    if air_c.shape[0] < 2:
        return air_c.copy()
    dt = float(np.median(np.diff(t_ms))) / 1000.0
    a = math.exp(-dt / tau_s)
    lagged, _ = lfilter([1.0 - a], [1.0, -a], air_c, zi=[a * air_c[0]])
    out: Float64 = np.asarray(lagged, dtype=np.float64)
    return out


def _ornstein_uhlenbeck(
    t: Float64, sigma: float, tau_s: float, rng: np.random.Generator
) -> Float64:
    """Stationary OU process on a (nearly) regular grid, generated with one linear filter."""
    n = t.shape[0]
    if sigma == 0.0 or n == 0:
        return np.zeros(n)
    dt = float(np.median(np.diff(t))) if n > 1 else 1.0
    a = math.exp(-dt / tau_s)
    noise = rng.normal(0.0, sigma * math.sqrt(1.0 - a * a), n)
    start = rng.normal(0.0, sigma)
    out, _ = lfilter([1.0], [1.0, -a], noise, zi=[a * start])
    result: Float64 = np.asarray(out, dtype=np.float64)
    return result


def _cold_snaps(t: Float64, spec: ClimateSpec, rng: np.random.Generator) -> Float64:
    """Sum of raised-cosine dips (°C, positive = colder)."""
    span_days = (t[-1] - t[0]) / _DAY_S
    count = rng.poisson(spec.cold_snaps_per_month * span_days / 30.0) if span_days > 0 else 0
    dips = np.zeros(t.shape[0])
    for _ in range(int(count)):
        centre = rng.uniform(t[0], t[-1])
        half_width = rng.uniform(0.5, 2.0) * _DAY_S
        depth = spec.cold_snap_depth_c * rng.uniform(0.6, 1.4)
        lo, hi = np.searchsorted(t, [centre - half_width, centre + half_width])
        x = (t[lo:hi] - centre) / half_width
        dips[lo:hi] += depth * 0.5 * (1.0 + np.cos(np.pi * x))
    return dips
