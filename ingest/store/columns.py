"""Compressed columns: how a chunk of one device's readings is kept small (issue 17).

A chunk holds a device's readings over a time span as columns: the timestamps, the ``seq``
counters and one column per numeric field. Each column is encoded on its own, with numpy, and
decoded exactly (a round trip gives the same ``int64`` / ``float64`` bits, ``NaN`` where a field
was not reported):

* **integers** (timestamps, ``seq``): the first value, then the deltas of the deltas (regular
  sampling makes them 0; clock jitter makes them small), in the narrowest integer type that
  holds them all, compressed with zlib.
* **floats**: a reading's numbers come from decimal text (JSON), so most columns are decimals of
  a few digits. When ``k / 10**d`` gives every value back bit for bit for some ``d`` of 0-6, the
  column is stored as the integers ``k`` (their deltas, narrowest type, zlib) and the scale
  ``d``; otherwise as the XOR of each value's bits with the previous one's (Gorilla's idea: close
  values share their high bits), zlib-compressed. Missing values (``NaN``) are a bitmap and are
  left out of the values.

A column is ``bytes``: a one-byte header (the format), then the format's own fields. Formats are
versioned by their header byte: a new one never changes an old one's meaning.
"""

from __future__ import annotations

import struct
import zlib
from typing import Final

import numpy as np
import numpy.typing as npt

__all__ = [
    "MAX_VALUES",
    "ColumnError",
    "decode_floats",
    "decode_ints",
    "encode_floats",
    "encode_ints",
]

Int64 = npt.NDArray[np.int64]
Float64 = npt.NDArray[np.float64]

_LEVEL: Final = 6
"""zlib level: 6 packs within a few % of 9 at a fraction of its time."""
_MAX_DECIMALS: Final = 6
MAX_VALUES: Final = 1 << 22
"""Values one column may hold (a chunk is far smaller: this bounds what corrupt bytes can ask
the decoder to allocate)."""
_WIDTHS: Final = ("<i1", "<i2", "<i4", "<i8")
_RANGES: Final = tuple((-(1 << (8 * w - 1)), (1 << (8 * w - 1)) - 1) for w in (1, 2, 4, 8))

# Header bytes.
_INTS: Final = 1
_FLOATS_DECIMAL: Final = 2
_FLOATS_XOR: Final = 3
_EMPTY: Final = 4


class ColumnError(ValueError):
    """A column's bytes are not one this code wrote (truncated, corrupt, unknown format)."""


def _narrow(values: Int64) -> tuple[int, bytes]:
    """The values in the narrowest integer type that holds them: (type index, bytes)."""
    if values.size == 0:
        return 0, b""
    lo, hi = int(values.min()), int(values.max())
    for i, (low, high) in enumerate(_RANGES):
        if low <= lo and hi <= high:
            return i, values.astype(_WIDTHS[i]).tobytes()
    raise AssertionError("int64 holds every int64")  # pragma: no cover


def _widen(code: int, raw: bytes, n: int) -> Int64:
    if not 0 <= code < len(_WIDTHS):
        raise ColumnError(f"unknown integer width {code}")
    t = np.dtype(_WIDTHS[code])
    if len(raw) != n * t.itemsize:
        raise ColumnError("the column's length does not match its count")
    return np.frombuffer(raw, dtype=t).astype(np.int64)


def _pack_deltas(first: int, deltas: Int64) -> bytes:
    """``first`` then the deltas, narrowed and compressed."""
    code, raw = _narrow(deltas)
    return struct.pack("<qBI", first, code, deltas.size) + zlib.compress(raw, _LEVEL)


def _unpack_deltas(buf: bytes) -> tuple[int, Int64]:
    head = struct.calcsize("<qBI")
    if len(buf) < head:
        raise ColumnError("truncated column")
    first, code, n = struct.unpack_from("<qBI", buf)
    if n > MAX_VALUES:
        raise ColumnError(f"{n} values: more than a column holds")
    try:
        raw = _inflate(buf[head:], n * 8)
    except zlib.error as exc:
        raise ColumnError(f"corrupt column: {exc}") from None
    return first, _widen(code, raw, n)


def _inflate(data: bytes, limit: int) -> bytes:
    """zlib's output, refusing more than ``limit`` bytes (corrupt input cannot blow it up)."""
    d = zlib.decompressobj()
    out = d.decompress(data, limit + 1)
    if len(out) > limit or d.unconsumed_tail:
        raise ColumnError("the column inflates past its count")
    if not d.eof or d.unused_data:
        raise ColumnError("truncated or corrupt column")
    return out


def encode_ints(values: Int64) -> bytes:
    """A column of integers (timestamps in ms, ``seq``): first value, then deltas of deltas."""
    v = np.asarray(values, dtype=np.int64)
    if v.size == 0:
        return bytes([_EMPTY])
    if v.size > MAX_VALUES:
        raise ValueError(f"{v.size} values: at most {MAX_VALUES} in a column")
    # Differences wrap in int64 like the decoder's sums, so any int64 comes back exactly.
    with np.errstate(over="ignore"):
        d = np.diff(v)
        dd = np.diff(d, prepend=np.int64(0))
    return bytes([_INTS]) + _pack_deltas(int(v[0]), dd)


def decode_ints(buf: bytes) -> Int64:
    """The integers :func:`encode_ints` encoded.

    Raises:
        ColumnError: Not a column of integers this code wrote.
    """
    if not buf:
        raise ColumnError("empty column")
    if buf[0] == _EMPTY:
        return np.zeros(0, np.int64)
    if buf[0] != _INTS:
        raise ColumnError(f"not an integer column (format {buf[0]})")
    first, dd = _unpack_deltas(buf[1:])
    with np.errstate(over="ignore"):
        d = np.cumsum(dd, dtype=np.int64)
        out = np.empty(dd.size + 1, np.int64)
        out[0] = first
        np.cumsum(d, dtype=np.int64, out=out[1:])
        out[1:] += np.int64(first)
    return out


def _decimals(v: Float64) -> int | None:
    """The fewest decimals ``d`` (0-6) with ``round(v·10^d) / 10^d == v`` bit for bit, and the
    integers in int64 range; None when there is none."""
    if v.size == 0:
        return 0
    big = float(np.max(np.abs(v)))
    for d in range(_MAX_DECIMALS + 1):
        scale = 10.0**d
        if big * scale >= 2.0**53:
            return None
        k = np.round(v * scale).astype(np.int64)
        if np.array_equal((k / scale).view(np.uint64), v.view(np.uint64)):  # -0.0 is not 0.0
            return d
    return None


def encode_floats(values: Float64) -> bytes:
    """A column of floats (``NaN``: not reported), as scaled decimals when exact, else XOR."""
    v = np.asarray(values, dtype=np.float64)
    n = v.size
    if n > MAX_VALUES:
        raise ValueError(f"{n} values: at most {MAX_VALUES} in a column")
    missing = np.isnan(v)
    mask = np.packbits(missing, bitorder="little").tobytes() if missing.any() else b""
    present = v[~missing]
    head = struct.pack("<II", n, len(mask)) + mask
    d = _decimals(present) if np.isfinite(present).all() else None
    if d is not None:
        k = np.round(present * 10.0**d).astype(np.int64)
        first = int(k[0]) if k.size else 0
        deltas = np.diff(k) if k.size else np.zeros(0, np.int64)
        return bytes([_FLOATS_DECIMAL, d]) + head + _pack_deltas(first, deltas)
    bits = present.view(np.uint64)
    xored = bits ^ np.concatenate([np.zeros(1, np.uint64), bits[:-1]])
    raw = xored.astype("<u8").tobytes()
    return bytes([_FLOATS_XOR, 0]) + head + zlib.compress(raw, _LEVEL)


def decode_floats(buf: bytes) -> Float64:
    """The floats :func:`encode_floats` encoded (``NaN`` where they were missing).

    Raises:
        ColumnError: Not a column of floats this code wrote.
    """
    if len(buf) < 10 or buf[0] not in (_FLOATS_DECIMAL, _FLOATS_XOR):
        raise ColumnError("not a float column")
    fmt, d = buf[0], buf[1]
    n, mask_len = struct.unpack_from("<II", buf, 2)
    at = 10 + mask_len
    if n > MAX_VALUES or mask_len not in (0, (n + 7) // 8) or len(buf) < at:
        raise ColumnError("truncated or corrupt column")
    if mask_len:
        missing = np.unpackbits(
            np.frombuffer(buf[10:at], np.uint8), count=n, bitorder="little"
        ).astype(bool)
    else:
        missing = np.zeros(n, bool)
    m = int(n - missing.sum())
    if fmt == _FLOATS_DECIMAL:
        if d > _MAX_DECIMALS:
            raise ColumnError(f"{d} decimals")
        first, deltas = _unpack_deltas(buf[at:])
        if deltas.size != max(m - 1, 0):
            raise ColumnError("the column's length does not match its count")
        k = np.empty(m, np.int64)
        if m:
            k[0] = first
            np.cumsum(deltas, out=k[1:])
            k[1:] += first
        present = k / 10.0**d
    else:
        try:
            raw = _inflate(buf[at:], m * 8)
        except zlib.error as exc:
            raise ColumnError(f"corrupt column: {exc}") from None
        if len(raw) != m * 8:
            raise ColumnError("the column's length does not match its count")
        xored = np.frombuffer(raw, dtype="<u8").astype(np.uint64)
        present = np.bitwise_xor.accumulate(xored).view(np.float64)
    out = np.full(n, np.nan)
    out[~missing] = present
    return out
