"""Option parsing shared by the channels: typed fields, unknown keys, secrets, redacted URLs.

Every channel keeps its options in a frozen dataclass; :func:`parse_options` fills it from a
receiver's table (TOML) and names the offending key in every error, as ``{key}.{option}``.
Error messages never repeat an option's value (a value may be a secret, and URLs often carry
tokens); they say what was expected instead.

A secret option ``name`` may be given in three ways, at most one of them:
``name = "..."`` (inline), ``name_file = "/run/secrets/x"`` (the file's content, read once at
construction, trailing newline removed) or ``name_env = "VAR"`` (an environment variable, read
once at construction).
"""

from __future__ import annotations

import dataclasses
import os
import types
import typing
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Final, TypeVar
from urllib.parse import urlsplit

from alerts.errors import RuleError

__all__ = ["RECEIVER_KEYS", "check_url", "parse_options", "redact_url", "resolve_secret"]

RECEIVER_KEYS: Final = frozenset({"name", "channel"})
"""Keys of a ``[[receivers]]`` entry that belong to the receiver, not to its channel: they are
accepted and ignored by :func:`parse_options`."""

_T = TypeVar("_T")


def _describe(value: object) -> str:
    """A value's type for error messages (never the value itself: it may be a secret)."""
    return {bool: "a boolean", int: "an integer", float: "a number", str: "a string"}.get(
        type(value), f"a {type(value).__name__}"
    )


# Field type -> (accepted Python types, what to say when the value is something else).
_SCALARS: Final[dict[object, tuple[tuple[type, ...], str]]] = {
    bool: ((bool,), "true or false"),
    int: ((int,), "an integer"),
    float: ((int, float), "a number"),
    str: ((str,), "a string"),
}


def _convert(value: object, hint: object, where: str) -> object:
    """Check ``value`` against a field's type (``str``, ``int``, ``float``, ``bool``,
    ``tuple[str, ...]``, or one of them ``| None``) and convert lists to tuples."""
    if isinstance(hint, types.UnionType) or typing.get_origin(hint) is typing.Union:
        if value is None:
            return None
        hint = next(a for a in typing.get_args(hint) if a is not type(None))
    if typing.get_origin(hint) is tuple:
        if not isinstance(value, list | tuple):
            raise RuleError(where, f"expected a list of strings, got {_describe(value)}")
        for i, item in enumerate(value):
            if not isinstance(item, str):
                raise RuleError(f"{where}[{i}]", f"expected a string, got {_describe(item)}")
        return tuple(value)
    accepted, expected = _SCALARS[hint]  # a KeyError is a bug in a channel, not bad config
    # bool is an int to Python, not to a config file.
    if not isinstance(value, accepted) or (hint is not bool and isinstance(value, bool)):
        raise RuleError(where, f"expected {expected}, got {_describe(value)}")
    return float(value) if hint is float else value  # type: ignore[arg-type]


def parse_options(cls: type[_T], options: Mapping[str, Any], key: str) -> _T:
    """Build the options dataclass ``cls`` from a receiver's table.

    Args:
        cls: A frozen dataclass whose fields are the options (defaults make them optional).
        options: The receiver's table; ``name`` and ``channel`` (:data:`RECEIVER_KEYS`) are
            ignored.
        key: The receiver's key path (``receivers[2]``); errors name ``{key}.{option}``.

    Returns:
        The options, type-checked (lists become tuples, integers given for numbers become floats).

    Raises:
        RuleError: An unknown option (the message lists the known ones), a missing required
            option, or a value of the wrong type.
    """
    if not dataclasses.is_dataclass(cls):
        raise TypeError(f"{cls!r} is not a dataclass")
    fields = {f.name: f for f in dataclasses.fields(cls)}
    hints = typing.get_type_hints(cls)
    for name in options:
        if name not in fields and name not in RECEIVER_KEYS:
            known = ", ".join(sorted(fields))
            raise RuleError(f"{key}.{name}", f"unknown option (known: {known})")
    values: dict[str, object] = {}
    for name, f in fields.items():
        if name in options:
            values[name] = _convert(options[name], hints[name], f"{key}.{name}")
        elif f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING:
            raise RuleError(f"{key}.{name}", "required option is missing")
    return cls(**values)


def resolve_secret(
    name: str,
    *,
    inline: str | None,
    file: str | None,
    env: str | None,
    key: str,
    environ: Mapping[str, str] | None = None,
) -> str | None:
    """The value of a secret option given inline, as ``{name}_file`` or as ``{name}_env``.

    Args:
        name: The option's name (``password``, ``secret``...).
        inline: ``{name}`` as given.
        file: ``{name}_file``: path of a file holding the secret (trailing newline removed).
        env: ``{name}_env``: name of an environment variable holding it.
        key: The receiver's key path, for errors.
        environ: Environment to read (default ``os.environ``).

    Returns:
        The secret, or None when none of the three is given.

    Raises:
        RuleError: More than one form given, an unreadable or empty file, or an unset or empty
            variable. The message never contains the secret.
    """
    given = [n for n, v in ((name, inline), (f"{name}_file", file), (f"{name}_env", env)) if v]
    if len(given) > 1:
        raise RuleError(f"{key}.{given[1]}", f"give only one of {', '.join(given)}")
    if inline:
        return inline
    if file:
        try:
            text = Path(file).read_text(encoding="utf-8")
        except (OSError, UnicodeDecodeError) as exc:
            reason = exc.strerror if isinstance(exc, OSError) else "not UTF-8 text"
            raise RuleError(f"{key}.{name}_file", f"cannot read {file}: {reason}") from None
        value = text.rstrip("\r\n")
        if not value:
            raise RuleError(f"{key}.{name}_file", f"{file} is empty")
        return value
    if env:
        value = (os.environ if environ is None else environ).get(env, "")
        if not value:
            raise RuleError(f"{key}.{name}_env", f"environment variable {env} is not set or empty")
        return value
    return None


def check_url(url: str, schemes: tuple[str, ...], where: str) -> None:
    """Check that ``url`` has one of ``schemes`` and a host.

    Raises:
        RuleError: Named ``where``; the message does not repeat the URL (it may hold a token).
    """
    try:
        parts = urlsplit(url)
        port = parts.port
    except ValueError:
        raise RuleError(where, "not a valid URL (bad port?)") from None
    del port
    if parts.scheme not in schemes:
        shown = f"{parts.scheme}://" if parts.scheme else "no scheme"
        raise RuleError(where, f"expected a {' or '.join(schemes)} URL, got {shown}")
    if not parts.hostname:
        raise RuleError(where, "the URL has no host")


def redact_url(url: str) -> str:
    """``scheme://host:port`` of a URL: enough to say where, without paths, queries or
    credentials (which may hold tokens)."""
    parts = urlsplit(url)
    try:
        port = f":{parts.port}" if parts.port else ""
    except ValueError:
        port = ""
    return f"{parts.scheme}://{parts.hostname or ''}{port}"
