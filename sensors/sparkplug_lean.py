"""A lean decoder for the common Sparkplug B DATA payload: scalar FLOAT/DOUBLE metrics.

pysparkplug builds a frozen dataclass, an enum and a metadata object per metric (about 6.5 µs
of a reading's 8.8 µs through :class:`~sensors.sparkplug.SparkplugDecoder`, measured with
``bench/ingest.py`` (f)). An edge node relaying its bolts sends mostly ``DDATA`` of ``FLOAT``
or ``DOUBLE`` metrics (historical ones each with its own timestamp): for those,
:func:`lean_data` reads the protobuf payload directly and hands back the same name, alias,
timestamp, value and null flag pysparkplug's ``Metric.from_pb`` would.

It answers only where the result is certainly the same: a payload with its timestamp and
``seq``, every metric without metadata, its name given or resolved by the birth's alias, and its
datatype (given, or the birth's) ``FLOAT``, ``DOUBLE`` or ``UINT64`` (a ``seq`` metric). For
anything else, and on any exception, it returns None and the caller decodes through pysparkplug,
which raises the typed error the message deserves. ``tests/unit/test_sparkplug_lean.py``
checks that both paths give the same readings and errors.

pysparkplug's protobuf module is private (``pysparkplug._protobuf``): if a release moves it, the
import fails, :data:`AVAILABLE` is False and every message takes the pysparkplug path.
"""

from __future__ import annotations

from typing import Any, Final, NamedTuple

import pysparkplug as psp

try:
    from pysparkplug._protobuf import Payload as _Payload

    AVAILABLE: bool = True
except ImportError:  # pragma: no cover - a pysparkplug release without the module
    _Payload = None
    AVAILABLE = False

__all__ = ["AVAILABLE", "LeanMetric", "lean_data"]

_FLOAT: Final = int(psp.DataType.FLOAT)
_DOUBLE: Final = int(psp.DataType.DOUBLE)
_UINT64: Final = int(psp.DataType.UINT64)
_UNKNOWN: Final = int(psp.DataType.UNKNOWN)
_UINT64_END: Final = 2**64


class LeanMetric(NamedTuple):
    """What :func:`sensors.sparkplug._group_metrics` reads of a metric (as ``psp.Metric``)."""

    name: str
    alias: int | None
    timestamp: int | None
    value: Any
    is_null: bool


def lean_data(
    payload: bytes, birth: psp.NBirth | psp.DBirth
) -> tuple[int, list[LeanMetric]] | None:
    """The payload's timestamp and metrics, or None where pysparkplug must decode it."""
    if _Payload is None:
        return None
    try:
        return _lean(payload, birth)
    except Exception:  # noqa: BLE001 - any surprise: pysparkplug decodes and names the error
        return None


def _lean(payload: bytes, birth: psp.NBirth | psp.DBirth) -> tuple[int, list[LeanMetric]] | None:
    pb = _Payload.FromString(payload)
    if not pb.HasField("timestamp") or not pb.HasField("seq"):
        return None
    out: list[LeanMetric] = []
    append = out.append
    for m in pb.metrics:
        if m.HasField("metadata"):
            return None
        name = m.name
        if not name:
            name = birth.get_name(m.alias)  # KeyError: not declared, pysparkplug says so
        dt = m.datatype
        if dt == _UNKNOWN:
            dt = int(birth.get_dtype(name))
        field = m.WhichOneof("value")
        value = getattr(m, field) if field is not None else None
        if dt == _UINT64:
            if value is not None and not 0 <= value < _UINT64_END:
                return None
        elif dt not in (_FLOAT, _DOUBLE):
            return None
        append(
            LeanMetric(
                name,
                m.alias if m.HasField("alias") else None,
                m.timestamp if m.HasField("timestamp") else None,
                value,
                m.is_null,
            )
        )
    return pb.timestamp, out
