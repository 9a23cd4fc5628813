"""Configuration: one TOML file, overridden by ``BOLTWATCH_<SECTION>_<KEY>`` environment variables.

Every error names the offending key (``broker.port``) and, when the value came from the
environment, the variable (``BOLTWATCH_BROKER_PORT``). Unknown sections and keys are errors, so a
typo never silently falls back to a default. Secrets (``password``, ``token``) may be given as
``*_file`` paths and are redacted by :func:`redacted`.
"""

from __future__ import annotations

import os
import re
import tomllib
from collections.abc import Mapping
from pathlib import Path
from typing import Annotated, Any, Final, Literal

import msgspec
from msgspec import Meta

from ingest.settings import (
    BrokerConfig,
    ClusterConfig,
    InfluxConfig,
    IngestConfig,
    SettingsError,
    StoreConfig,
)
from ingest.settings import Section as _Section

__all__ = [
    "ENV_PREFIX",
    "AlertsConfig",
    "BrokerConfig",
    "ClusterConfig",
    "Config",
    "ConfigError",
    "ConsoleConfig",
    "ConsoleUser",
    "InfluxConfig",
    "IngestConfig",
    "LogConfig",
    "RegistryConfig",
    "StoreConfig",
    "load_config",
    "parse_config",
    "redacted",
]

ENV_PREFIX: Final = "BOLTWATCH_"
# Environment variables with our prefix that are not config keys.
_RESERVED_ENV: Final = frozenset({"BOLTWATCH_CONFIG"})
_SECRET_KEYS: Final = frozenset({"password", "token", "api_token"})
# A web origin as browsers send it in ``Origin``: scheme, host (name, IPv4 or [IPv6]), port.
_ORIGIN: Final = re.compile(r"https?://(?:[A-Za-z0-9.-]+|\[[0-9A-Fa-f:.]+\])(?::[0-9]{1,5})?")


class ConfigError(SettingsError):
    """The configuration is invalid.

    Attributes:
        key: The offending key as ``section.key`` (or the file, for a syntax error).
        reason: What is wrong and, where useful, what is allowed.
    """


class RegistryConfig(_Section, frozen=True):
    """``[registry]``: the device registry (sites, joints, bolts, machines).

    Attributes:
        path: TOML file of the registry; none means every device is unknown but accepted.
    """

    path: str | None = None


class LogConfig(_Section, frozen=True):
    """``[log]``.

    Attributes:
        level: Log level.
        json: One JSON object per line instead of text.
    """

    level: Literal["debug", "info", "warning", "error"] = "info"
    json: bool = False


class AlertsConfig(_Section, frozen=True):
    """``[alerts]``: the alert pipeline and its HTTP API.

    Attributes:
        rules: TOML file of alert rules, routes and receivers (see ``alerts/samples/rules.toml``);
            none means the built-in rules: every alert printed on the console.
        store: SQLite file of alerts, silences and the outbox (default ``<store.path>/alerts.db``).
        api_listen: ``host:port`` of the HTTP API (alerts, silences, ``/metrics``); empty: off.
        api_token: Bearer token the API requires (or ``api_token_file``; or
            ``BOLTWATCH_ALERTS_API_TOKEN``). Without one, the API is not started.
        api_token_file: File whose first line is the token.
        api_rate_per_s: Requests per second the API answers per client address, and per token,
            before 429 (with ``Retry-After``); 0 turns rate limiting off.
        api_burst: Requests a client (or the token) may send at once before ``api_rate_per_s``
            applies.
        api_auth_failures_per_min: Failed authentications (no or wrong token) per minute per
            client address; past them the address gets 429 on ``/api`` until one has drained.
            0 turns it off.
        api_cors_origins: Origins (``https://ops.example.com``) whose web pages may call the API
            (CORS); empty: none, and no ``Access-Control-*`` headers are sent.
        interval_s: How often alert lifecycles are evaluated and the outbox is drained.
    """

    rules: str | None = None
    store: str = ""
    api_listen: str = "127.0.0.1:8080"
    api_token: str | None = None
    api_token_file: str | None = None
    api_rate_per_s: Annotated[float, Meta(ge=0.0, le=1_000_000.0)] = 20.0
    api_burst: Annotated[int, Meta(ge=1, le=1_000_000)] = 40
    api_auth_failures_per_min: Annotated[float, Meta(ge=0.0, le=1_000_000.0)] = 5.0
    api_cors_origins: list[str] = msgspec.field(default_factory=list)
    interval_s: Annotated[float, Meta(gt=0.0, le=3_600.0)] = 1.0


class ConsoleUser(msgspec.Struct, kw_only=True, forbid_unknown_fields=True, frozen=True):
    """``[[console.users]]``: one person who may log in to the console.

    Attributes:
        name: Shown in the page and written in the alert history with every action.
        token: The secret the user logs in with (at least 16 characters).
        role: ``read`` (sees everything) or ``operator`` (also acknowledges, comments, silences).
    """

    name: Annotated[str, Meta(pattern=r"^[A-Za-z0-9][A-Za-z0-9_.@-]{0,63}$")]
    token: Annotated[str, Meta(min_length=16, max_length=256)]
    role: Literal["read", "operator"] = "read"


class ConsoleConfig(_Section, frozen=True):
    """``[console]``: the built-in web console, served at ``/console`` beside the alerts API.

    Attributes:
        enabled: Serve it (it needs the API: ``alerts.api_listen`` and a token).
        users: Who may log in, each with a token and a role. The API token always logs in too,
            as the operator ``admin``.
    """

    enabled: bool = True
    users: list[ConsoleUser] = msgspec.field(default_factory=list)


class Config(msgspec.Struct, kw_only=True, forbid_unknown_fields=True, frozen=True):
    """The whole configuration; every section has working defaults (the embedded setup)."""

    broker: BrokerConfig = msgspec.field(default_factory=BrokerConfig)
    ingest: IngestConfig = msgspec.field(default_factory=IngestConfig)
    store: StoreConfig = msgspec.field(default_factory=StoreConfig)
    influx: InfluxConfig = msgspec.field(default_factory=InfluxConfig)
    registry: RegistryConfig = msgspec.field(default_factory=RegistryConfig)
    log: LogConfig = msgspec.field(default_factory=LogConfig)
    alerts: AlertsConfig = msgspec.field(default_factory=AlertsConfig)
    console: ConsoleConfig = msgspec.field(default_factory=ConsoleConfig)
    cluster: ClusterConfig = msgspec.field(default_factory=ClusterConfig)
    detection: dict[str, Any] = msgspec.field(default_factory=dict)
    """``[detection.<detector>]`` tables of hyper-parameters, checked against each detector's
    parameters (:mod:`boltwatch.detection_config`)."""


_SECTIONS: Final[dict[str, type[_Section]]] = {
    f.name: f.type for f in msgspec.structs.fields(Config) if f.name != "detection"
}
"""The sections of plain keys (environment overrides apply to them)."""


def _fields(section: str) -> dict[str, Any]:
    return {f.name: f.type for f in msgspec.structs.fields(_SECTIONS[section])}


def _env_overrides(
    environ: Mapping[str, str],
) -> tuple[dict[str, dict[str, Any]], dict[str, str]]:
    """Parse ``BOLTWATCH_<SECTION>_<KEY>`` variables into ``{section: {key: value}}``."""
    out: dict[str, dict[str, Any]] = {}
    origin: dict[str, str] = {}
    for var in sorted(environ):
        if not var.startswith(ENV_PREFIX) or var in _RESERVED_ENV:
            continue
        rest = var[len(ENV_PREFIX) :].lower()
        section = next((s for s in _SECTIONS if rest.startswith(s + "_")), None)
        if section is None:
            raise ConfigError(
                var, f"no config section matches; sections are {', '.join(sorted(_SECTIONS))}"
            )
        key = rest[len(section) + 1 :]
        fields = _fields(section)
        if key not in fields:
            raise ConfigError(
                f"{section}.{key}",
                f"unknown key (from {var}); keys of [{section}] are {', '.join(sorted(fields))}",
            )
        raw = environ[var]
        value: Any = raw
        if "list[" in str(fields[key]):
            value = [part.strip() for part in raw.split(",") if part.strip()]
        out.setdefault(section, {})[key] = value
        origin[f"{section}.{key}"] = var
    return out, origin


def _translate(exc: msgspec.ValidationError, origin: Mapping[str, str]) -> ConfigError:
    text = str(exc)
    key = "config"
    if " - at `$." in text:
        text, _, rest = text.partition(" - at `$.")
        key = rest.rstrip("`")
    elif text.startswith("Object contains unknown field `"):
        # Unknown top-level section: msgspec puts no path on it.
        name = text.split("`")[1]
        known = ", ".join(sorted([*_SECTIONS, "detection"]))
        return ConfigError(name, f"unknown section; sections are {known}")
    if text.startswith("Object contains unknown field `"):
        name = text.split("`")[1]
        section = key
        fields = ", ".join(sorted(_fields(section))) if section in _SECTIONS else ""
        return ConfigError(f"{section}.{name}", f"unknown key; keys of [{section}] are {fields}")
    if key in origin:
        text = f"{text} (from {origin[key]})"
    return ConfigError(key, text)


def parse_config(data: Mapping[str, Any], environ: Mapping[str, str] | None = None) -> Config:
    """Validate a config mapping (a parsed TOML document) with environment overrides applied.

    Args:
        data: The TOML document as a dict.
        environ: Environment to read overrides from (default: ``os.environ``).

    Raises:
        ConfigError: Naming the offending key.
    """
    env = os.environ if environ is None else environ
    overrides, origin = _env_overrides(env)
    merged: dict[str, Any] = {k: (dict(v) if isinstance(v, dict) else v) for k, v in data.items()}
    for section, values in overrides.items():
        current = merged.get(section)
        if current is not None and not isinstance(current, dict):
            raise ConfigError(section, "must be a table ([section])")
        merged.setdefault(section, {}).update(values)
    try:
        # strict=False lets environment strings become ints, floats and booleans.
        config = msgspec.convert(merged, Config, strict=False)
    except msgspec.ValidationError as exc:
        raise _translate(exc, origin) from exc
    _check(config)
    from boltwatch.detection_config import detector_params  # detectors load only when needed

    detector_params(config.detection)  # raises ConfigError naming detection.<name>.<key>
    return config


def _check(config: Config) -> None:
    """Checks that span keys or need more than a type."""
    url = config.broker.url
    scheme, sep, rest = url.partition("://")
    if not sep or scheme not in ("mqtt", "mqtts"):
        raise ConfigError(
            "broker.url", f"{url!r} must look like mqtt://host:port or mqtts://host:port"
        )
    host, _, port = rest.rstrip("/").rpartition(":")
    if not host or not port.isdigit() or not 1 <= int(port) <= 65_535:
        raise ConfigError("broker.url", f"{url!r} needs a host and a port from 1 to 65535")
    if config.broker.password is not None and config.broker.password_file is not None:
        raise ConfigError("broker.password_file", "give password or password_file, not both")
    if (config.broker.tls_cert_file is None) != (config.broker.tls_key_file is None):
        raise ConfigError("broker.tls_key_file", "a client certificate needs its key, and back")
    for key in ("password_file", "tls_ca_file", "tls_cert_file", "tls_key_file"):
        path = getattr(config.broker, key)
        if path is not None and not Path(path).is_file():
            raise ConfigError(f"broker.{key}", f"no such file: {path}")
    listen = config.ingest.metrics_listen
    if listen:
        host, _, port = listen.rpartition(":")
        if not host or not port.isdigit() or not 0 <= int(port) <= 65_535:
            raise ConfigError("ingest.metrics_listen", f"{listen!r} must be host:port (or empty)")
    if not config.broker.topics:
        raise ConfigError("broker.topics", "subscribe to at least one topic filter")
    _check_influx(config)
    _check_cluster(config)
    if config.registry.path is not None and not Path(config.registry.path).is_file():
        raise ConfigError("registry.path", f"no such file: {config.registry.path}")
    _check_alerts(config)
    names = [u.name for u in config.console.users]
    tokens = [u.token for u in config.console.users]
    if len(set(names)) != len(names) or "admin" in names:
        raise ConfigError("console.users", "user names must be unique (admin is the API token's)")
    if len(set(tokens)) != len(tokens):
        raise ConfigError("console.users", "two users share a token")


def _check_cluster(config: Config) -> None:
    c = config.cluster
    for url in c.urls:
        if not url.startswith(("nats://", "tls://")):
            raise ConfigError("cluster.urls", f"{url!r} must start with nats:// or tls://")
    if c.password is not None and c.password_file is not None:
        raise ConfigError("cluster.password_file", "give password or password_file, not both")
    if c.credentials_file is not None and c.user is not None:
        raise ConfigError("cluster.credentials_file", "give user or credentials_file, not both")
    for key in (
        "password_file",
        "credentials_file",
        "tls_ca_file",
        "tls_cert_file",
        "tls_key_file",
    ):
        path = getattr(c, key)
        if path is not None and not Path(path).is_file():
            raise ConfigError(f"cluster.{key}", f"no such file: {path}")
    if c.tls_key_file is not None and c.tls_cert_file is None:
        raise ConfigError("cluster.tls_key_file", "a key needs its tls_cert_file")
    if (
        c.alerts_db
        and not c.alerts_db.startswith(("postgresql://", "postgres://"))
        and ("=" not in c.alerts_db)
    ):
        raise ConfigError(
            "cluster.alerts_db",
            f"{c.alerts_db!r} is neither a postgresql:// URI nor a key=value connection string",
        )


def _check_alerts(config: Config) -> None:
    a = config.alerts
    for key in ("rules", "api_token_file"):
        path = getattr(a, key)
        if path is not None and not Path(path).is_file():
            raise ConfigError(f"alerts.{key}", f"no such file: {path}")
    if a.api_token is not None and a.api_token_file is not None:
        raise ConfigError("alerts.api_token_file", "give api_token or api_token_file, not both")
    if a.api_listen:
        host, _, port = a.api_listen.rpartition(":")
        if not host or not port.isdigit() or not 0 <= int(port) <= 65_535:
            raise ConfigError("alerts.api_listen", f"{a.api_listen!r} must be host:port (or empty)")
    for origin in a.api_cors_origins:
        if not _ORIGIN.fullmatch(origin):
            raise ConfigError(
                "alerts.api_cors_origins",
                f"{origin!r} is not an origin: scheme://host[:port], like https://ops.example.com "
                "(no path, no trailing slash, no wildcard)",
            )


def _check_influx(config: Config) -> None:
    influx = config.influx
    if influx.url and not influx.url.startswith(("http://", "https://")):
        raise ConfigError("influx.url", f"{influx.url!r} must start with http:// or https://")
    if influx.token is not None and influx.token_file is not None:
        raise ConfigError("influx.token_file", "give token or token_file, not both")
    if influx.token_file is not None and not Path(influx.token_file).is_file():
        raise ConfigError("influx.token_file", f"no such file: {influx.token_file}")


def load_config(
    path: str | os.PathLike[str] | None = None, environ: Mapping[str, str] | None = None
) -> Config:
    """Load the config file (or only defaults and environment when ``path`` is None).

    Raises:
        ConfigError: The file is missing or unreadable, is not valid TOML (names the line), or a
            key is invalid (names the key).
    """
    data: dict[str, Any] = {}
    if path is not None:
        p = Path(path)
        try:
            with p.open("rb") as fh:
                data = tomllib.load(fh)
        except FileNotFoundError as exc:
            raise ConfigError(str(p), "no such config file") from exc
        except tomllib.TOMLDecodeError as exc:
            raise ConfigError(str(p), f"not valid TOML: {exc}") from exc
        except OSError as exc:
            raise ConfigError(str(p), f"cannot read: {exc.strerror}") from exc
    return parse_config(data, environ)


def redacted(config: Config) -> dict[str, Any]:
    """The config as a dict with secrets replaced by ``"***"`` (safe to print or log)."""
    out: dict[str, Any] = msgspec.to_builtins(config)
    for section in out.values():
        if isinstance(section, dict):
            for key in section:
                if key in _SECRET_KEYS and section[key] is not None:
                    section[key] = "***"
    for user in out["console"]["users"]:
        user["token"] = "***"  # noqa: S105 - the redaction mark, not a password
    return out
