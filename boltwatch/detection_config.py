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
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

import msgspec

from boltwatch.config import ConfigError

if TYPE_CHECKING:
    from _typeshed import DataclassInstance

__all__ = ["detector_params", "sample_toml"]


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


def sample_toml(names: Sequence[str] | None = None) -> str:
    """The ``[detection.<detector>]`` tables of the given detectors (every registered one that
    has parameters if None), every key commented out at its default with its description: what
    ``boltwatch config detection`` prints, derived from each detector's parameter dataclass and
    its docstring, so it cannot drift from the code.

    Raises:
        ConfigError: A name is not a registered detector.
    """
    from detection.base import DetectionError
    from detection.registry import DETECTORS, detector_class

    detector_class("cbolt")  # fills the registry
    chosen = sorted(DETECTORS) if names is None else list(names)
    blocks: list[str] = []
    for name in chosen:
        try:
            cls = detector_class(name)
        except DetectionError:
            known = ", ".join(sorted(DETECTORS))
            raise ConfigError(f"detection.{name}", f"no such detector; known: {known}") from None
        if dataclasses.is_dataclass(cls.params_type) and dataclasses.fields(cls.params_type):
            blocks.append(_table(f"detection.{name}", cls.params_type(), cls.__doc__ or ""))
    return "\n".join(blocks)


def _table(key: str, params: DataclassInstance, owner_doc: str) -> str:
    """One table, then its nested dataclasses as sub-tables."""
    doc = _attribute_docs(type(params).__doc__ or "")
    first = (owner_doc.strip().splitlines() or [""])[0]
    lines = [f"# [{key}]" + (f"  # {first}" if first else "")]
    nested: list[str] = []
    for f in dataclasses.fields(params):
        value = getattr(params, f.name)
        if dataclasses.is_dataclass(value) and not isinstance(value, type):
            nested.append(_table(f"{key}.{f.name}", value, doc.get(f.name, "")))
            continue
        what = doc.get(f.name, "")
        if value is None:  # no TOML for "unset": say what to write instead
            lines.append(
                f"# {f.name} = <{_type_name(f.type)}>  # unset by default. {what}".rstrip()
            )
            continue
        lines.append(f"# {f.name} = {_toml_value(value)}" + (f"  # {what}" if what else ""))
    return "\n".join(lines) + "\n" + "".join("\n" + n for n in nested)


def _type_name(annotation: object) -> str:
    text = str(annotation)
    return text.replace(" | None", "").replace("None | ", "")


def _toml_value(value: object) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, str):
        return f'"{value}"'
    if isinstance(value, tuple | list):
        return "[" + ", ".join(_toml_value(v) for v in value) + "]"
    return repr(value)


def _attribute_docs(doc: str) -> dict[str, str]:
    """``name: description`` of a Google-style ``Attributes:`` section, one line each."""
    out: dict[str, str] = {}
    lines = doc.splitlines()
    try:
        start = next(i for i, line in enumerate(lines) if line.strip() == "Attributes:")
    except StopIteration:
        return out
    indent: int | None = None
    name = ""
    for line in lines[start + 1 :]:
        if not line.strip():
            continue
        depth = len(line) - len(line.lstrip())
        if indent is None:
            indent = depth
        if depth < indent:
            break
        head, sep, rest = line.strip().partition(": ")
        if depth == indent and sep and head.isidentifier():
            name = head
            out[name] = rest.strip()
        elif name:
            out[name] += " " + line.strip()
    return out
