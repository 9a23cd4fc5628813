"""Sealed chunks: one device's readings of one UTC day as one value of compressed columns.

The store keeps the newest readings as rows (the *tail*: cheap to insert, read by SQL); once a
day is older than the tail, :meth:`~ingest.store.Store.seal` moves each device's readings of that
day into one chunk (issue 17). A chunk is the columns of :mod:`ingest.store.columns` —
timestamps and ``seq`` as deltas of deltas, numeric fields as scaled decimals or XOR, the
arrival delay (``received_ms - ts_ms``) as integers — plus the sites (a short list and an index
per reading), the ``late`` flags (a bitmap) and the waveforms (lengths, then their float32
samples, zlib-compressed), in msgpack, behind a CRC-32 of those bytes (a flipped bit is an
error, not a wrong reading). Decoding gives back exactly what was stored.

Rows of a chunk are in ``(ts_ms, seq)`` order, one per reading: the store never seals a
duplicate (``(device_id, ts_ms, seq)`` is unique across the tail and the chunks together).
"""

from __future__ import annotations

import zlib
from dataclasses import dataclass
from typing import Final

import msgspec
import numpy as np
import numpy.typing as npt

from ingest.store.columns import (
    MAX_VALUES,
    ColumnError,
    decode_floats,
    decode_ints,
    encode_floats,
    encode_ints,
)

__all__ = ["ChunkRows", "decode_chunk", "encode_chunk"]

Int64 = npt.NDArray[np.int64]
Float64 = npt.NDArray[np.float64]
Objects = npt.NDArray[np.object_]

_FORMAT: Final = 1
_LEVEL: Final = 6


class _Packed(msgspec.Struct, array_like=True, forbid_unknown_fields=True):
    """The stored form (msgpack, fields by position)."""

    format: int
    ts: bytes
    seq: bytes
    delay: bytes
    late: bytes
    sites: list[str]
    site_index: bytes
    fields: dict[str, bytes]
    waves: dict[str, bytes]


@dataclass(frozen=True, slots=True)
class ChunkRows:
    """The readings of one chunk, as columns (row ``i`` is one reading).

    Attributes:
        ts_ms: Epoch milliseconds UTC, ascending (ties by ``seq``).
        seq: The device's sequence numbers.
        site: Site of each reading (object array of str).
        received_ms: When ingest received each reading (epoch ms UTC).
        late: Whether each reading was flagged late.
        values: One float64 array per numeric field stored (NaN: not reported).
        arrays: Waveform fields, one float64 array or None per reading.
    """

    ts_ms: Int64
    seq: Int64
    site: Objects
    received_ms: Int64
    late: npt.NDArray[np.bool_]
    values: dict[str, Float64]
    arrays: dict[str, list[Float64 | None]]

    def __len__(self) -> int:
        return int(self.ts_ms.size)


def _encode_waves(waves: list[Float64 | None]) -> bytes:
    lengths = np.array([-1 if w is None else w.size for w in waves], "<i4")
    samples = [np.asarray(w, "<f4").tobytes() for w in waves if w is not None]
    return zlib.compress(lengths.tobytes() + b"".join(samples), _LEVEL)


def _decode_waves(buf: bytes, n: int) -> list[Float64 | None]:
    d = zlib.decompressobj()
    try:
        raw = d.decompress(buf, 4 * MAX_VALUES + 4 * n + 1)
    except zlib.error as exc:
        raise ColumnError(f"corrupt waveforms: {exc}") from None
    if not d.eof or d.unconsumed_tail or len(raw) < 4 * n:
        raise ColumnError("truncated or oversized waveforms")
    lengths = np.frombuffer(raw, "<i4", count=n)
    if (lengths < -1).any() or 4 * n + 4 * int(lengths[lengths > 0].sum()) != len(raw):
        raise ColumnError("the waveforms' lengths do not match their samples")
    out: list[Float64 | None] = []
    at = 4 * n
    for size in lengths.tolist():
        if size < 0:
            out.append(None)
            continue
        out.append(np.frombuffer(raw, "<f4", count=size, offset=at).astype(np.float64))
        at += 4 * size
    return out


def encode_chunk(rows: ChunkRows) -> bytes:
    """One chunk's bytes. Rows must be in ``(ts_ms, seq)`` order with distinct keys.

    Raises:
        ValueError: Rows out of order, repeated, or more than a column holds.
    """
    n = len(rows)
    if n > MAX_VALUES:
        raise ValueError(f"{n} readings: at most {MAX_VALUES} in a chunk")
    ts, seq = rows.ts_ms, rows.seq
    if n > 1:
        step = np.diff(ts)
        if (step < 0).any() or ((step == 0) & (np.diff(seq) <= 0)).any():
            raise ValueError("a chunk's rows must be in (ts_ms, seq) order, without repeats")
    sites, site_index = np.unique(rows.site.astype(str), return_inverse=True)
    with np.errstate(over="ignore"):
        delay = rows.received_ms - ts
    packed = _Packed(
        format=_FORMAT,
        ts=encode_ints(ts),
        seq=encode_ints(seq),
        delay=encode_ints(delay),
        late=np.packbits(rows.late, bitorder="little").tobytes() if rows.late.any() else b"",
        sites=sites.tolist(),
        site_index=b"" if sites.size <= 1 else encode_ints(site_index.astype(np.int64)),
        fields={f: encode_floats(v) for f, v in rows.values.items() if not np.isnan(v).all()},
        waves={
            f: _encode_waves(w) for f, w in rows.arrays.items() if any(x is not None for x in w)
        },
    )
    body = msgspec.msgpack.encode(packed)
    return zlib.crc32(body).to_bytes(4, "little") + body


_DECODER: Final = msgspec.msgpack.Decoder(_Packed)


def decode_chunk(buf: bytes, floats: tuple[str, ...], arrays: tuple[str, ...]) -> ChunkRows:
    """The readings :func:`encode_chunk` packed, with every field of ``floats`` (NaN where the
    chunk has none) and of ``arrays`` (None where it has none).

    Raises:
        ColumnError: Not a chunk this code wrote (corrupt, truncated, unknown format).
    """
    if len(buf) < 4 or int.from_bytes(buf[:4], "little") != zlib.crc32(buf[4:]):
        raise ColumnError("the chunk's checksum does not match (truncated or corrupt)")
    try:
        p = _DECODER.decode(buf[4:])
    except msgspec.DecodeError as exc:
        raise ColumnError(f"not a chunk: {exc}") from None
    if p.format != _FORMAT:
        raise ColumnError(f"unknown chunk format {p.format}")
    ts = decode_ints(p.ts)
    n = ts.size
    seq = decode_ints(p.seq)
    delay = decode_ints(p.delay)
    if seq.size != n or delay.size != n or (n and not p.sites):
        raise ColumnError("the chunk's columns differ in length")
    if p.site_index:
        index = decode_ints(p.site_index)
        if index.size != n or index.min(initial=0) < 0 or index.max(initial=0) >= len(p.sites):
            raise ColumnError("the chunk's site index is out of range")
        site = np.array(p.sites, dtype=object)[index]
    else:
        site = np.full(n, p.sites[0] if p.sites else "", dtype=object)
    if p.late:
        if len(p.late) != (n + 7) // 8:
            raise ColumnError("the chunk's late flags differ in length")
        late = np.unpackbits(np.frombuffer(p.late, np.uint8), count=n, bitorder="little")
        late_flags = late.astype(bool)
    else:
        late_flags = np.zeros(n, bool)
    values: dict[str, Float64] = {}
    for f in floats:
        buf_f = p.fields.get(f)
        values[f] = np.full(n, np.nan) if buf_f is None else decode_floats(buf_f)
        if values[f].size != n:
            raise ColumnError(f"the chunk's column {f!r} differs in length")
    waves: dict[str, list[Float64 | None]] = {
        f: [None] * n if f not in p.waves else _decode_waves(p.waves[f], n) for f in arrays
    }
    with np.errstate(over="ignore"):
        received = ts + delay
    return ChunkRows(ts, seq, site, received, late_flags, values, waves)
