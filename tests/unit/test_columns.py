"""Compressed columns (ingest/store/columns.py): exact round trips of any int64 and float64
(NaN, infinities, -0.0 included), small sizes on the columns smart bolts send, and corrupt bytes
refused with ColumnError, never another exception."""

from __future__ import annotations

import contextlib

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from ingest.store.columns import (
    MAX_VALUES,
    ColumnError,
    decode_floats,
    decode_ints,
    encode_floats,
    encode_ints,
)

INT64 = hnp.arrays(np.int64, st.integers(0, 300), elements=st.integers(-(2**63), 2**63 - 1))
FLOAT64 = hnp.arrays(
    np.float64, st.integers(0, 300), elements=st.floats(allow_nan=True, allow_infinity=True)
)


@given(INT64)
@settings(max_examples=200, deadline=None)
def test_any_integers_come_back_exactly(values: np.ndarray) -> None:
    back = decode_ints(encode_ints(values))
    assert back.dtype == np.int64
    np.testing.assert_array_equal(back, values)


@given(FLOAT64)
@settings(max_examples=300, deadline=None)
def test_any_floats_come_back_bit_for_bit(values: np.ndarray) -> None:
    back = decode_floats(encode_floats(values))
    assert back.dtype == np.float64
    assert back.shape == values.shape
    missing = np.isnan(values)
    np.testing.assert_array_equal(np.isnan(back), missing)
    np.testing.assert_array_equal(back[~missing].view(np.uint64), values[~missing].view(np.uint64))


@given(
    hnp.arrays(np.int64, st.integers(1, 200), elements=st.integers(-(10**9), 10**9)),
    st.integers(0, 6),
)
@settings(max_examples=200, deadline=None)
def test_decimal_text_is_kept_as_scaled_integers(k: np.ndarray, d: int) -> None:
    # What JSON gives for "123.45": the double nearest to k / 10^d.
    values = np.array([float(f"{x}e-{d}") for x in k.tolist()])
    buf = encode_floats(values)
    assert buf[0] == 2  # the decimal format
    np.testing.assert_array_equal(decode_floats(buf).view(np.uint64), values.view(np.uint64))


def test_a_bolts_day_packs_into_a_few_bytes_a_reading() -> None:
    rng = np.random.default_rng(3)
    n = 288  # a day at 5 minutes
    ts = 1_772_323_200_000 + np.arange(n) * 300_000 + rng.integers(-40, 40, n)
    seq = np.arange(1000, 1000 + n)
    t = np.arange(n) * 300.0
    preload = np.round(465 + 2.3 * np.sin(2 * np.pi * t / 86_400) + rng.normal(0, 0.8, n), 2)
    temp = np.round(12 + 6 * np.sin(2 * np.pi * t / 86_400), 1)
    battery = np.round(3.62 - t * 1e-8, 3)
    rssi = np.round(-71 + rng.normal(0, 1.5, n)).astype(float)
    preload[[17, 200]] = np.nan  # lost fields
    sizes = {
        "ts_ms": len(encode_ints(ts)),
        "seq": len(encode_ints(seq)),
        "preload_kn": len(encode_floats(preload)),
        "temp_c": len(encode_floats(temp)),
        "battery_v": len(encode_floats(battery)),
        "rssi_dbm": len(encode_floats(rssi)),
    }
    per_reading = sum(sizes.values()) / n
    print(f"\n{sizes} -> {per_reading:.2f} bytes a reading")
    assert per_reading < 8.0, sizes
    assert sizes["seq"] < 40  # a counter is next to nothing
    raw = n * 8 * 6
    assert sum(sizes.values()) < raw / 6


@pytest.mark.parametrize(
    ("name", "order"), [("noise around a level", 0), ("jittered clock", 1), ("drifting step", 2)]
)
def test_integers_are_stored_the_smallest_way(name: str, order: int) -> None:
    rng = np.random.default_rng(4)
    n = 2_000
    i = np.arange(n, dtype=np.int64)
    values = {
        "noise around a level": 5_000_000 + rng.integers(-100, 100, n),
        "jittered clock": 1_772_323_200_000 + i * 300_000 + rng.integers(-40, 40, n),
        "drifting step": 1_772_323_200_000 + i * 1_000 + i * i // 4,
    }[name]
    buf = encode_ints(values)
    assert buf[1] == order  # the layout chosen, after the format byte
    assert decode_ints(buf).tolist() == values.tolist()
    assert len(buf) < 1.2 * n  # about a byte a value, or less


@pytest.mark.parametrize(
    "buf",
    [
        b"",
        b"\x01",
        b"\x01" + b"\x00" * 13,
        b"\x02\x00" + (10).to_bytes(4, "little") + (0).to_bytes(4, "little") + b"garbage",
        b"\x03\x00" + (MAX_VALUES + 1).to_bytes(4, "little") + (0).to_bytes(4, "little"),
        b"\x02\x09" + b"\x00" * 30,
        b"\x09hello",
    ],
)
def test_corrupt_bytes_are_a_column_error(buf: bytes) -> None:
    with pytest.raises(ColumnError):
        decode_ints(buf)
    with pytest.raises(ColumnError):
        decode_floats(buf)


@given(st.binary(max_size=200))
@settings(max_examples=500, deadline=None)
def test_any_bytes_decode_or_raise_column_error(buf: bytes) -> None:
    for decode in (decode_ints, decode_floats):
        with contextlib.suppress(ColumnError):
            decode(buf)


@given(st.binary(min_size=1, max_size=64), st.integers(0, 200))
@settings(max_examples=300, deadline=None)
def test_a_flipped_byte_of_a_real_column_never_escapes(noise: bytes, at: int) -> None:
    good = bytearray(encode_floats(np.round(np.linspace(400, 470, 50), 2)))
    for i, b in enumerate(noise):
        good[(at + i) % len(good)] ^= b
    with contextlib.suppress(ColumnError):
        decode_floats(bytes(good))
