"""Compressed columns: how a chunk of one device's readings is kept small (issue 17).

A chunk holds a device's readings over a time span as columns: the timestamps, the ``seq``
counters and one column per numeric field. Each column is encoded on its own, with numpy, and
decoded exactly (a round trip gives the same ``int64`` / ``float64`` bits, ``NaN`` where a field
was not reported):

* **integers** (timestamps, ``seq``): whichever is smallest of the values less their median
  (noise around a level), the first value then the steps less their median step (regular
  sampling with clock jitter) and the first value then the changes of the steps (a drifting
  step), in the narrowest integer type that holds them all, their bytes shuffled (all low bytes,
  then the next ones...), compressed with zlib.
* **floats**: a reading's numbers come from decimal text (JSON), so most columns are decimals of
  a few digits. When ``k / 10**d`` gives every value back bit for bit for some ``d`` of 0-6, the
  column is stored as the integers ``k`` (as above) and the scale ``d``; otherwise as the XOR of
  each value's bits with the previous one's (Gorilla's idea: close values share their high
  bits), shuffled and zlib-compressed. Missing values (``NaN``) are a bitmap and are left out of
  the values.

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


def _shuffle(raw: bytes, width: int) -> bytes:
    """The values' bytes grouped by significance (all first bytes, then all second bytes...):
    the high bytes of small numbers are nearly all alike, which zlib then packs to almost
    nothing (Blosc's byte shuffle)."""
    if width == 1 or not raw:
        return raw
    return np.frombuffer(raw, np.uint8).reshape(-1, width).T.tobytes()


def _unshuffle(raw: bytes, width: int) -> bytes:
    if width == 1 or not raw:
        return raw
    if len(raw) % width:
        raise ColumnError("the column's length does not match its count")
    return np.frombuffer(raw, np.uint8).reshape(width, -1).T.tobytes()


_PACK: Final = struct.Struct("<BqqBI")  # order, first, base, width code, count of stored values


def _transform(v: Int64, order: int) -> tuple[int, int, Int64]:
    """``(first, base, x)`` of one way of storing ``v``: order 0 the values less their median;
    1 the first value, then the steps less their median step (regular sampling with jitter);
    2 the first value, then the steps' changes (deltas of deltas: a drifting step). Wrapping
    int64 arithmetic, as the inverse's sums, so any int64 comes back exactly."""
    with np.errstate(over="ignore"):
        if order == 0:
            x, first = v, 0
        elif order == 1:
            x, first = np.diff(v), int(v[0])
        else:
            x, first = np.diff(np.diff(v), prepend=np.int64(0)), int(v[0])
        if order == 2 or x.size == 0:
            return first, 0, x
        base = int(np.partition(x, x.size // 2)[x.size // 2])
        return first, base, x - np.int64(base)


def _pack(v: Int64) -> bytes:
    """Integers in the smallest of the three ways of :func:`_transform`, each narrowed to the
    smallest type, bytes shuffled, zlib-compressed."""
    best = b""
    for order in (0, 1, 2) if v.size else (0,):
        first, base, x = _transform(v, order)
        code, raw = _narrow(x)
        width = np.dtype(_WIDTHS[code]).itemsize
        packed = _PACK.pack(order, first, base, code, x.size) + zlib.compress(
            _shuffle(raw, width), _LEVEL
        )
        if not best or len(packed) < len(best):
            best = packed
    return best


def _unpack(buf: bytes) -> Int64:
    """The integers :func:`_pack` packed."""
    if len(buf) < _PACK.size:
        raise ColumnError("truncated column")
    order, first, base, code, n = _PACK.unpack_from(buf)
    if n > MAX_VALUES:
        raise ColumnError(f"{n} values: more than a column holds")
    if order > 2 or not 0 <= code < len(_WIDTHS):
        raise ColumnError(f"unknown integer layout {order}/{code}")
    try:
        raw = _inflate(buf[_PACK.size :], n * 8)
    except zlib.error as exc:
        raise ColumnError(f"corrupt column: {exc}") from None
    x = _widen(code, _unshuffle(raw, np.dtype(_WIDTHS[code]).itemsize), n)
    with np.errstate(over="ignore"):
        x += np.int64(base)
        if order == 0:
            return x
        out = np.empty(n + 1, np.int64)
        out[0] = first
        if order == 2:
            x = np.cumsum(x, dtype=np.int64)
        np.cumsum(x, dtype=np.int64, out=out[1:])
        out[1:] += np.int64(first)
    return out


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
    """A column of integers (timestamps in ms, ``seq``)."""
    v = np.asarray(values, dtype=np.int64)
    if v.size == 0:
        return bytes([_EMPTY])
    if v.size > MAX_VALUES:
        raise ValueError(f"{v.size} values: at most {MAX_VALUES} in a column")
    return bytes([_INTS]) + _pack(v)


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
    return _unpack(buf[1:])


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
        return bytes([_FLOATS_DECIMAL, d]) + head + _pack(k)
    bits = present.view(np.uint64)
    xored = bits ^ np.concatenate([np.zeros(1, np.uint64), bits[:-1]])
    raw = _shuffle(xored.astype("<u8").tobytes(), 8)
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
        k = _unpack(buf[at:])
        if k.size != m:
            raise ColumnError("the column's length does not match its count")
        present = k / 10.0**d
    else:
        try:
            raw = _inflate(buf[at:], m * 8)
        except zlib.error as exc:
            raise ColumnError(f"corrupt column: {exc}") from None
        if len(raw) != m * 8:
            raise ColumnError("the column's length does not match its count")
        xored = np.frombuffer(_unshuffle(raw, 8), dtype="<u8").astype(np.uint64)
        present = np.bitwise_xor.accumulate(xored).view(np.float64)
    out = np.full(n, np.nan)
    out[~missing] = present
    return out
