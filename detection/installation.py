"""The nut-factor check at installation: is the preload what the torque promised?

Torque and preload are linked by T = K · F · d (d the nominal diameter). With T in N·m, F in kN and
d in mm the units cancel to K = T / (F · d). A K outside about 0.10-0.30 at a ``tightened`` event
means a bad thread, dirt, galling, or missing or excess lubricant (DOMAIN.md): the joint is not
clamped as designed, whatever the torque wrench said.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from detection.base import Bool, Float64

__all__ = ["InstallationParams", "check_nut_factor", "nut_factor"]


@dataclass(frozen=True, slots=True)
class InstallationParams:
    """The accepted nut-factor band.

    Attributes:
        k_min: Lowest plausible nut factor.
        k_max: Highest plausible nut factor.
    """

    k_min: float = 0.10
    k_max: float = 0.30


def nut_factor(torque_nm: Float64, preload_kn: Float64, diameter_mm: Float64) -> Float64:
    """K = T / (F · d), T in N·m, F in kN, d in mm (NaN where an input is missing or F <= 0)."""
    with np.errstate(all="ignore"):
        k: Float64 = np.where(preload_kn > 0, torque_nm / (preload_kn * diameter_mm), np.nan)
    return k


def check_nut_factor(
    torque_nm: Float64, preload_kn: Float64, diameter_mm: Float64, params: InstallationParams
) -> tuple[Float64, Bool]:
    """The nut factor of each tightening and whether it is outside the band.

    Returns:
        (K, outside) — ``outside`` is False where K could not be computed.
    """
    k = nut_factor(torque_nm, preload_kn, diameter_mm)
    outside: Bool = np.isfinite(k) & ((k < params.k_min) | (k > params.k_max))
    return k, outside
