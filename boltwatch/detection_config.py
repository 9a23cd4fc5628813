"""``[detection.<detector>]``: each detector's hyper-parameters in the configuration file.

A table per detector, named as in :data:`detection.registry.DETECTORS` (``cbolt``, ``printer3d``,
...); its keys are the fields of the detector's parameter dataclass (``PreloadParams`` for
``cbolt``), nested dataclasses as sub-tables (``[detection.cbolt.sensor]``). Unknown detectors
and keys, wrong types and non-finite numbers are :class:`~boltwatch.config.ConfigError` naming
the key (``detection.cbolt.min_learn_h``)::

    [detection.cbolt]
    min_loss_pct = 4.0

    [detection.cbolt.sensor]
    shift_readings = 4
"""

from __future__ import annotations

import dataclasses
import math
import typing
from collections.abc import Mapping
from typing import Any

import msgspec

from boltwatch.config import ConfigError

__all__ = ["detector_params"]


def detector_params(tables: Mapping[str, Any]) -> dict[str, object]:
    """Validated parameters per detector name (only those the tables name).

    Raises:
        ConfigError: Naming ``detection.<detector>[.<key>...]``.
    """
    from detection.base import DetectionError
    from detection.registry import DETECTORS, detector_class

    out: dict[str, object] = {}
    for name, table in tables.items():
        key = f"detection.{name}"
        try:
            cls = detector_class(name)
        except DetectionError:
            known = ", ".join(sorted(DETECTORS))
            raise ConfigError(key, f"no such detector; known: {known}") from None
        if not isinstance(table, dict):
            raise ConfigError(key, "must be a table ([detection.NAME])")
        out[name] = _build(cls.params_type, table, key)
    return out


def _build(params_type: type[Any], table: Mapping[str, Any], key: str) -> object:
    """``params_type`` (a dataclass) from its defaults and ``table``, checked key by key."""
    default = params_type()
    hints = typing.get_type_hints(params_type)
    names = [f.name for f in dataclasses.fields(params_type)]
    changes: dict[str, Any] = {}
    for name, value in table.items():
        where = f"{key}.{name}"
        if name not in names:
            raise ConfigError(where, f"unknown key; keys of [{key}] are {', '.join(names)}")
        current = getattr(default, name)
        if dataclasses.is_dataclass(current):
            if not isinstance(value, dict):
                raise ConfigError(where, f"must be a table ([{where}])")
            changes[name] = _build(type(current), value, where)
            continue
        try:
            converted = msgspec.convert(value, hints[name])
        except msgspec.ValidationError as exc:
            raise ConfigError(where, str(exc)) from None
        if isinstance(converted, float) and not math.isfinite(converted):
            raise ConfigError(where, f"must be a finite number, got {converted}")
        changes[name] = converted
    return dataclasses.replace(default, **changes)
