"""Property tests: no input bytes make the decoder raise anything but PayloadError."""

from __future__ import annotations

import json
from typing import Any

import numpy as np
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from sensors import DeviceKind, PayloadError, TelemetryDecoder, encode_reading
from sensors.examples import T0
from sensors.schema import FIELD_INFO, READING_TYPES

NOW_S = T0 / 1000
DEC = TelemetryDecoder(clock=lambda: NOW_S)
KINDS = [k.value for k in DeviceKind]
CHANNELS = ["telemetry", "event", "status", "cmd"]

topics = st.builds(
    lambda site, kind, dev, ch: f"boltwatch/v1/{site}/{kind}/{dev}/{ch}",
    st.sampled_from(["s1", "bad site", ""]),
    st.sampled_from([*KINDS, "nope"]),
    st.sampled_from(["d1", "d/2", "x" * 70]),
    st.sampled_from([*CHANNELS, "other"]),
) | st.text(max_size=80)

json_values = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(min_value=-(2**70), max_value=2**70)
    | st.floats(allow_nan=False)
    | st.text(max_size=20),
    lambda children: (
        st.lists(children, max_size=5)
        | st.dictionaries(
            st.sampled_from(
                [
                    "ts",
                    "seq",
                    "preload_kn",
                    "temp_c",
                    "kind",
                    "device_id",
                    "readings",
                    "type",
                    "state",
                    "vib_ms2",
                    "fs_hz",
                    "hotend_c",
                    "torque_nm",
                    "x",
                ]
            )
            | st.text(max_size=8),
            children,
            max_size=8,
        )
    ),
    max_leaves=30,
)


def _check(topic: str, payload: bytes) -> None:
    try:
        out = DEC.decode(topic, payload)
    except PayloadError:
        return
    for cols in out.telemetry.values():
        n = len(cols)
        assert cols.ts_ms.shape == cols.seq.shape == (n,)
        assert all(v.shape == (n,) for v in cols.values.values())
        # Accepted values are finite or NaN (= not reported); never infinite.
        assert all(not np.isinf(v).any() for v in cols.values.values())


@settings(max_examples=400, suppress_health_check=[HealthCheck.too_slow])
@given(topic=topics, payload=st.binary(max_size=300))
def test_random_bytes_only_raise_payload_error(topic: str, payload: bytes) -> None:
    _check(topic, payload)


@settings(max_examples=400, suppress_health_check=[HealthCheck.too_slow])
@given(topic=topics, value=json_values)
def test_random_json_only_raises_payload_error(topic: str, value: Any) -> None:
    _check(topic, json.dumps(value).encode())


@st.composite
def cbolt_like(draw: st.DrawFn) -> tuple[str, dict[str, Any]]:
    kind = draw(st.sampled_from(list(DeviceKind)))
    d: dict[str, Any] = {
        "ts": draw(st.integers(min_value=0, max_value=2 * T0)),
        "seq": draw(st.integers(min_value=-5, max_value=2**64)),
    }
    for f in FIELD_INFO[kind]:
        if f.name == "vib_ms2":
            continue
        if f.required or draw(st.booleans()):
            d[f.name] = draw(
                st.floats(allow_nan=False, allow_infinity=True) | st.integers(-(10**12), 10**12)
            )
    return kind.value, d


@settings(max_examples=400)
@given(item=cbolt_like())
def test_near_valid_readings_are_accepted_exactly_when_in_range(
    item: tuple[str, dict[str, Any]],
) -> None:
    kind_s, d = item
    kind = DeviceKind(kind_s)
    topic = f"boltwatch/v1/s/{kind_s}/d1/telemetry"
    info = {f.name: f for f in FIELD_INFO[kind]}
    in_range = (
        946_684_800_000 <= d["ts"] <= NOW_S * 1000 + 86_400_000
        and 0 <= d["seq"] < 2**63
        and all(info[k].lo <= v <= info[k].hi for k, v in d.items() if k in info)
    )
    payload = json.dumps(d).encode()
    try:
        out = DEC.decode(topic, payload)
    except PayloadError:
        assert not in_range, payload
        return
    assert in_range, payload
    cols = out.telemetry[kind]
    for k, v in d.items():
        if k in info:
            assert cols.values[k][0] == float(v)
    # What was accepted encodes back to something that decodes the same.
    again = DEC.decode(topic, encode_reading(_struct(kind, d)))
    assert again.telemetry[kind].seq.tolist() == cols.seq.tolist()


def _struct(kind: DeviceKind, d: dict[str, Any]) -> Any:
    import msgspec

    return msgspec.convert(d, READING_TYPES[kind])
