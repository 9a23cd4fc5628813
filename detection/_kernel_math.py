"""Scalar arithmetic that agrees with numpy to the last bit, and the hourly regressions, compiled.

The pieces :mod:`detection._preload_kernel` is built from: numpy's NaN rules (``nan_to_num``,
``fmax``, ``fmin``, ``maximum``, ``sign``), numpy's pairwise summation (so that a sum over the
48-hour ring equals ``ndarray.sum`` exactly), medians as numpy takes them, and one row of
``detection.preload._regress`` / ``_robust_regress`` (least squares of hourly means on the hour,
optionally on the temperature, then again without the 4-robust-sigma hours).
"""

from __future__ import annotations

import math
from typing import Final

import numba
import numpy as np
import numpy.typing as npt

__all__ = [
    "SLOTS",
    "curvature",
    "fmax",
    "fmin",
    "jit",
    "maximum",
    "median_sorted",
    "nan_to_num",
    "pairwise_sum",
    "regress",
    "robust_regress",
    "sign",
    "t975",
]

F64 = npt.NDArray[np.float64]
B = npt.NDArray[np.bool_]

SLOTS: Final = 48
"""Hourly means in a bolt's ring (``detection.preload.TREND_SLOTS``)."""
_BIG: Final = np.finfo(np.float64).max
_T975: Final = np.array(
    [np.inf, 12.71, 4.30, 3.18, 2.78, 2.57, 2.45, 2.36, 2.31, 2.26, 2.23, 2.20, 2.18, 2.16, 2.14]
)

jit = numba.njit(cache=True, error_model="numpy", nogil=True)
"""Compiled once, cached on disk (``make kernels``); division by zero gives inf/NaN as numpy."""


@jit
def nan_to_num(x: float) -> float:
    """``np.nan_to_num``: NaN to 0, ±inf to the largest finite float."""
    if math.isnan(x):
        return 0.0
    if x == math.inf:
        return _BIG
    if x == -math.inf:
        return -_BIG
    return x


@jit
def fmax(a: float, b: float) -> float:
    """``np.fmax``: NaN only when both are."""
    if math.isnan(a):
        return b
    if math.isnan(b):
        return a
    return a if a >= b else b


@jit
def fmin(a: float, b: float) -> float:
    """``np.fmin``."""
    if math.isnan(a):
        return b
    if math.isnan(b):
        return a
    return a if a <= b else b


@jit
def maximum(a: float, b: float) -> float:
    """``np.maximum``: NaN when either is."""
    if math.isnan(a) or math.isnan(b):
        return math.nan
    return a if a >= b else b


@jit
def sign(x: float) -> float:
    """``np.sign`` (NaN for NaN)."""
    if x > 0:
        return 1.0
    if x < 0:
        return -1.0
    if x == 0:
        return 0.0
    return math.nan


@jit
def pairwise_sum(a: F64, n: int) -> float:
    """numpy's pairwise sum of ``a[:n]`` (n ≤ 128), so that sums agree to the last bit."""
    if n < 8:
        res = 0.0
        for i in range(n):
            res += a[i]
        return res
    r0, r1, r2, r3 = a[0], a[1], a[2], a[3]
    r4, r5, r6, r7 = a[4], a[5], a[6], a[7]
    i = 8
    end = n - (n % 8)
    while i < end:
        r0 += a[i]
        r1 += a[i + 1]
        r2 += a[i + 2]
        r3 += a[i + 3]
        r4 += a[i + 4]
        r5 += a[i + 5]
        r6 += a[i + 6]
        r7 += a[i + 7]
        i += 8
    res = ((r0 + r1) + (r2 + r3)) + ((r4 + r5) + (r6 + r7))
    while i < n:
        res += a[i]
        i += 1
    return float(res)


@jit
def median_sorted(v: F64, n: int) -> float:
    """Median of the first ``n`` values of a sorted array (mean of the two middle ones)."""
    if n == 0:
        return math.nan
    hi = n // 2
    lo = (n - 1) // 2
    return float((v[lo] + v[hi]) / 2.0)


@jit
def regress(  # noqa: PLR0912, PLR0915 - numpy's _regress, operation by operation
    hours: F64, y: F64, temp: F64, with_temp: bool, mask: B, resid_out: F64
) -> tuple[float, float, float, float, float, float]:
    """One row of ``detection.preload._regress``: (level, slope, slope_se, tempco, temp_span, n);
    the residual per hour goes to ``resid_out`` (0 outside the mask)."""
    w = SLOTS
    m = np.zeros(w, np.bool_)
    wv = np.zeros(w)
    x = np.zeros(w)
    yy = np.zeros(w)
    tt = np.zeros(w)
    for j in range(w):
        ok = mask[j] and math.isfinite(y[j])
        if with_temp:
            ok = ok and math.isfinite(temp[j])
        m[j] = ok
        if ok:
            wv[j] = 1.0
            x[j] = hours[j]
            yy[j] = y[j]
            if with_temp:
                tt[j] = temp[j]
    n = pairwise_sum(wv, w)
    nz = n if n >= 1.0 else 1.0
    xm = pairwise_sum(x, w) / nz
    ym = pairwise_sum(yy, w) / nz
    xc = np.zeros(w)
    yc = np.zeros(w)
    for j in range(w):
        if m[j]:
            xc[j] = x[j] - xm
            yc[j] = yy[j] - ym
    buf = np.empty(w)
    for j in range(w):
        buf[j] = xc[j] * xc[j]
    sxx = pairwise_sum(buf, w)
    for j in range(w):
        buf[j] = xc[j] * yc[j]
    sxy = pairwise_sum(buf, w)
    k = 2.0
    span = 0.0
    tempco = math.nan
    resid = np.zeros(w)
    if not with_temp:
        slope = sxy / sxx
        for j in range(w):
            resid[j] = yc[j] - slope * xc[j]
        var_factor = 1.0 / sxx
    else:
        tm = pairwise_sum(tt, w) / nz
        tc = np.zeros(w)
        for j in range(w):
            if m[j]:
                tc[j] = tt[j] - tm
        for j in range(w):
            buf[j] = tc[j] * tc[j]
        stt = pairwise_sum(buf, w)
        for j in range(w):
            buf[j] = xc[j] * tc[j]
        sxt = pairwise_sum(buf, w)
        for j in range(w):
            buf[j] = tc[j] * yc[j]
        sty = pairwise_sum(buf, w)
        det = sxx * stt - sxt * sxt
        weak = (not (stt > 1e-6 * (n if n >= 1.0 else 1.0))) or (not (abs(det) > 1e-9 * sxx * stt))
        if weak:
            slope = sxy / sxx
            tempco = math.nan
        else:
            slope = (stt * sxy - sxt * sty) / det
            tempco = (sxx * sty - sxt * sxy) / det
        tcn = nan_to_num(tempco)
        for j in range(w):
            resid[j] = yc[j] - slope * xc[j] - tcn * tc[j]
        k = 3.0
        tmax = -math.inf
        tmin = math.inf
        for j in range(w):
            if m[j]:
                tmax = max(tmax, tt[j])
                tmin = min(tmin, tt[j])
        span = tmax - tmin if n > 0 else 0.0
        var_factor = 1.0 / sxx if weak else stt / det
    for j in range(w):
        buf[j] = resid[j] * resid[j] * wv[j]
    dof = n - k
    sigma2 = pairwise_sum(buf, w) / (dof if dof >= 1.0 else 1.0)
    slope_se = np.sqrt(sigma2 * var_factor)
    last = -math.inf
    for j in range(w):
        if m[j]:
            last = max(last, x[j])
    level = ym + slope * (last - xm)
    for j in range(w):
        resid_out[j] = resid[j] if m[j] else 0.0
    if not n >= k + 1.0:
        return math.nan, math.nan, math.nan, math.nan, span, n
    return level, slope, slope_se, tempco, span, n


@jit
def robust_regress(
    hours: F64, y: F64, temp: F64, with_temp: bool, mask: B
) -> tuple[float, float, float, float, float, float]:
    """``detection.preload._robust_regress`` for one row: fit, drop 4-robust-sigma hours, refit."""
    w = SLOTS
    resid = np.zeros(w)
    fit = regress(hours, y, temp, with_temp, mask, resid)
    n = fit[5]
    sig = math.inf
    if n >= 10:
        vals = np.empty(w)
        c = 0
        for j in range(w):
            if mask[j]:
                vals[c] = abs(resid[j])
                c += 1
        srt = np.sort(vals[:c])
        sig = 1.4826 * median_sorted(srt, c)
        if not math.isfinite(sig):
            sig = math.inf
    cut = 4.0 * fmax(sig, 1e-9)
    keep = np.zeros(w, np.bool_)
    for j in range(w):
        keep[j] = mask[j] and not (abs(resid[j]) > cut)
    return regress(hours, y, temp, with_temp, keep, resid)


@jit
def curvature(hours: F64, y: F64, temp: F64, mask: B) -> tuple[float, float]:
    """One row of ``detection.preload._curvature``: (c, its standard error) of
    ``y = a + b·h + c·h² + k·T`` over the masked hours (NaN with fewer than 6)."""
    w = SLOTS
    m = np.zeros(w, np.bool_)
    wv = np.zeros(w)
    for j in range(w):
        m[j] = mask[j] and math.isfinite(y[j]) and math.isfinite(temp[j])
        if m[j]:
            wv[j] = 1.0
    n = pairwise_sum(wv, w)
    nz = n if n >= 1.0 else 1.0
    u = _centred(hours, hours, False, m, nz)
    v = _centred(hours, hours, True, m, nz)
    yc = _centred(y, y, False, m, nz)
    tc = _centred(temp, temp, False, m, nz)
    suu, suv, svv = _dot(u, u), _dot(u, v), _dot(v, v)
    sut, svt, stt = _dot(u, tc), _dot(v, tc), _dot(tc, tc)
    suy, svy, sty = _dot(u, yc), _dot(v, yc), _dot(tc, yc)
    det2 = suu * svv - suv * suv
    b2 = (svv * suy - suv * svy) / det2
    c2 = (suu * svy - suv * suy) / det2
    det3 = (
        suu * (svv * stt - svt * svt)
        - suv * (suv * stt - svt * sut)
        + sut * (suv * svt - svv * sut)
    )
    b3 = (
        suy * (svv * stt - svt * svt)
        - suv * (svy * stt - svt * sty)
        + sut * (svy * svt - svv * sty)
    ) / det3
    c3 = (
        suu * (svy * stt - svt * sty)
        - suy * (suv * stt - svt * sut)
        + sut * (suv * sty - svy * sut)
    ) / det3
    k3 = (
        suu * (svv * sty - svy * svt)
        - suv * (suv * sty - svy * sut)
        + suy * (suv * svt - svv * sut)
    ) / det3
    weak = (not (stt > 1e-6 * nz)) or (not (abs(det3) > 1e-9 * det2 * stt))
    b, c, k = (b2, c2, 0.0) if weak else (b3, c3, k3)
    buf = np.empty(w)
    for j in range(w):
        r = yc[j] - b * u[j] - c * v[j] - k * tc[j]
        buf[j] = r * r * wv[j]
    dof = n - 3.0 if weak else n - 4.0
    s2 = pairwise_sum(buf, w) / fmax(dof, 1.0)
    var_factor = suu / det2 if weak else (suu * stt - sut * sut) / det3
    q = s2 * var_factor
    se = math.sqrt(q) if q >= 0.0 else math.nan
    if n < 6.0:
        return math.nan, math.nan
    return c, se


@jit
def _centred(a: F64, a2: F64, square: bool, m: B, nz: float) -> F64:
    """``a`` (or ``a·a2``) where ``m``, minus its mean there; 0 elsewhere."""
    w = SLOTS
    x = np.zeros(w)
    for j in range(w):
        if m[j]:
            x[j] = a[j] * a2[j] if square else a[j]
    mean = pairwise_sum(x, w) / nz
    out = np.zeros(w)
    for j in range(w):
        if m[j]:
            out[j] = x[j] - mean
    return out


@jit
def _dot(a: F64, b: F64) -> float:
    buf = np.empty(SLOTS)
    for j in range(SLOTS):
        buf[j] = a[j] * b[j]
    return pairwise_sum(buf, SLOTS)


@jit
def t975(dof: float) -> float:
    d = int(dof)
    if d < _T975.shape[0]:
        return float(_T975[max(d, 0)])
    return 2.0
