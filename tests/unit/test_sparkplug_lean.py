"""The lean Sparkplug B DATA path gives exactly what pysparkplug's path gives, or steps aside."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any
from unittest import mock

import numpy as np
import pysparkplug as psp
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from pysparkplug._protobuf import Payload

import sensors.sparkplug as spb
from sensors.codec import DecodedBatch
from sensors.sparkplug import SparkplugDecoder
from sensors.sparkplug_lean import AVAILABLE, lean_data

T0 = 1_772_323_500_000
NOW_S = T0 / 1000 + 3_600.0
DT = psp.DataType
BIRTH_TOPIC = "spBv1.0/fablab/DBIRTH/edge-1/dev-1"
DATA_TOPIC = "spBv1.0/fablab/DDATA/edge-1/dev-1"


def _m(name: str | None, value: Any, dt: DT = DT.DOUBLE, **kw: Any) -> psp.Metric:
    return psp.Metric(timestamp=kw.pop("ts", None), name=name, datatype=dt, value=value, **kw)


def _birth() -> bytes:
    metrics = (
        _m("kind", "cbolt", DT.STRING),
        _m("preload_kn", 40.0, alias=1),
        _m("temp_c", 20.0, DT.FLOAT, alias=2),
        _m("seq", 1, DT.UINT64, alias=3),
        _m("battery_v", 3, DT.INT32, alias=4),  # an odd datatype: never the lean path
    )
    return bytes(psp.DBirth(timestamp=T0, seq=0, metrics=metrics).encode())


def _data(*metrics: psp.Metric, dtypes: bool = True, seq: int | None = 1) -> bytes:
    raw = bytes(
        psp.DData(timestamp=T0 + 1_000, seq=seq or 0, metrics=metrics).encode(include_dtypes=dtypes)
    )
    if seq is not None:
        return raw
    pb = Payload.FromString(raw)  # pysparkplug cannot leave the seq out: protobuf can
    pb.ClearField("seq")
    return bytes(pb.SerializeToString())


def _decode(payload: bytes, *, lean: bool) -> tuple[DecodedBatch, int]:
    dec = SparkplugDecoder(clock=lambda: NOW_S)
    dec.decode_batch([(BIRTH_TOPIC, _birth())])
    if lean:
        out = dec.decode_batch([(DATA_TOPIC, payload)])
    else:
        with mock.patch.object(spb, "lean_data", return_value=None):
            out = dec.decode_batch([(DATA_TOPIC, payload)])
    return out, dec.lean_messages


def _view(out: DecodedBatch) -> dict[str, Any]:
    cols = {
        k.value: (
            list(c.device_id),
            c.ts_ms.tolist(),
            c.seq.tolist(),
            {f: np.asarray(v).tolist() for f, v in c.values.items()},
        )
        for k, c in out.telemetry.items()
    }
    errors = [(i, e.field, str(e)) for i, e in out.errors]
    return {"columns": repr(cols), "errors": errors}


def _same(payload: bytes) -> int:
    """Both paths agree; returns how many messages the lean path took (0 or 1)."""
    fast, taken = _decode(payload, lean=True)
    slow, none = _decode(payload, lean=False)
    assert none == 0
    assert _view(fast) == _view(slow)
    return taken


CASES: dict[str, tuple[Callable[[], bytes], int]] = {
    # name: (payload, 1 if the lean path must take it)
    "historical doubles": (
        lambda: _data(*(_m("preload_kn", 40.0 + k, ts=T0 + k * 1000) for k in range(50))),
        1,
    ),
    "by alias, no datatype": (
        lambda: _data(_m(None, 40.5, alias=1), _m(None, 21.5, DT.FLOAT, alias=2), dtypes=False),
        1,
    ),
    "seq metric": (lambda: _data(_m("preload_kn", 40.0), _m("seq", 17, DT.UINT64)), 1),
    "null metric": (lambda: _data(_m("preload_kn", 40.0), _m("temp_c", None, is_null=True)), 1),
    "folder name": (lambda: _data(_m("Telemetry/preload_kn", 40.0)), 1),
    "NaN is out of range": (lambda: _data(_m("preload_kn", float("nan"))), 1),
    "unknown metric": (lambda: _data(_m("preload_kn", 40.0), _m("torque", 1.0)), 1),
    "twice at one timestamp": (lambda: _data(_m("preload_kn", 40.0), _m("preload_kn", 41.0)), 1),
    "required field missing": (lambda: _data(_m("temp_c", 20.0, DT.FLOAT)), 1),
    "future timestamp": (lambda: _data(_m("preload_kn", 40.0, ts=T0 + 10 * 86_400_000)), 1),
    "an int metric": (lambda: _data(_m("preload_kn", 40.0), _m("battery_v", 3, DT.INT32)), 0),
    "alias not declared": (lambda: _data(_m(None, 40.5, alias=9), dtypes=False), 0),
    "no seq": (lambda: _data(_m("preload_kn", 40.0), seq=None), 0),
    "not protobuf": (lambda: b"\xff\x00garbage", 0),
}


@pytest.mark.parametrize("case", list(CASES))
def test_the_lean_path_gives_what_pysparkplug_gives(case: str) -> None:
    make, taken = CASES[case]
    assert AVAILABLE
    assert _same(make()) == taken


def test_the_lean_path_takes_an_edge_nodes_historical_ddata() -> None:
    """The shape of bench/ingest.py (f): 100 historical DOUBLE metrics with their timestamps."""
    payload = _data(*(_m("preload_kn", 60.0 + k / 100, ts=T0 + k * 1000) for k in range(100)))
    birth = psp.DBirth.decode(_birth())
    got = lean_data(payload, birth)
    assert got is not None
    ts, metrics = got
    assert ts == T0 + 1_000
    assert [m.timestamp for m in metrics] == [T0 + k * 1000 for k in range(100)]
    assert [m.value for m in metrics] == [60.0 + k / 100 for k in range(100)]


_NAMES = st.sampled_from(["preload_kn", "temp_c", "seq", "battery_v", "torque", None])
_TYPES = st.sampled_from([DT.DOUBLE, DT.FLOAT, DT.UINT64, DT.INT32, DT.BOOLEAN, DT.STRING])
_VALUES = st.one_of(
    st.none(),
    st.floats(allow_nan=True, width=32),
    st.integers(min_value=0, max_value=2**32 - 1),
    st.booleans(),
)


@st.composite
def _metrics(draw: st.DrawFn) -> psp.Metric:
    name = draw(_NAMES)
    alias = draw(st.one_of(st.none(), st.integers(min_value=1, max_value=5)))
    if name is None and alias is None:
        alias = 1
    dt = draw(_TYPES)
    value: Any = draw(_VALUES)
    if dt is DT.STRING:
        value = draw(st.text(max_size=3))
    elif dt is DT.BOOLEAN:
        value = draw(st.booleans())
    elif dt in (DT.UINT64, DT.INT32) and not isinstance(value, int):
        value = draw(st.integers(min_value=0, max_value=2**31 - 1))
    elif dt in (DT.DOUBLE, DT.FLOAT) and not isinstance(value, float):
        value = draw(st.floats(min_value=-1e6, max_value=1e6, width=32))
    ts = draw(st.one_of(st.none(), st.integers(min_value=T0 - 5_000, max_value=T0 + 5_000)))
    return psp.Metric(
        timestamp=ts,
        name=name,
        datatype=dt,
        value=value,
        alias=alias,
        is_null=draw(st.booleans()) and value is None,
    )


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(_metrics(), min_size=1, max_size=6), st.booleans())
def test_both_paths_agree_on_any_metrics(metrics: list[psp.Metric], dtypes: bool) -> None:
    try:
        payload = _data(*metrics, dtypes=dtypes)
    except Exception:  # noqa: BLE001 - pysparkplug cannot encode this combination: nothing to send
        return
    _same(payload)
