"""Device identity on the broker: the Mosquitto files that let a device speak only as itself.

``boltwatch broker config`` turns the registry into the files below, in one folder;
``boltwatch broker credentials DEVICE`` rotates one secret in them. Mosquitto reads the password
and ACL files again on SIGHUP (``systemctl reload mosquitto``) and then also disconnects the
clients whose credentials no longer hold.

* ``passwords`` (0600): Mosquitto's ``password_file``, ``username:$7$iterations$salt$hash`` for
  every device and for the service user;
* ``acl`` (0600): Mosquitto's ``acl_file``, what each user may publish (write) and receive (read);
* ``boltwatch.conf`` (0644): the listener snippet (``per_listener_settings``, TLS, no anonymous
  clients, the two files above);
* ``device-secrets.toml`` (0600): the secrets in clear, to provision devices (and for
  ``boltwatch simulate --credentials``);
* ``boltwatch.password`` (0600): the service user's password alone, for ``broker.password_file``
  of ``boltwatch run``.

A device's MQTT user name is its device id. Topic rights (the ACL, see :func:`acl_rules`):

* **a bolt or a machine** publishes only on its own ``boltwatch/v1/{site}/{kind}/{id}/telemetry``,
  ``event`` and ``status``, and receives only its own ``cmd``. In Sparkplug B it may be its own
  edge node ``{id}-edge`` (:func:`direct_edge_node`, what the simulator's machines do) carrying
  only itself.
* **a gateway** publishes on its own JSON topics and as its Sparkplug edge node
  (``spBv1.0/{site}/.../{gateway}[/{device}]``); for the bolts it carries, it publishes their
  ``status`` (births, last wills) and receives their ``cmd``, for every bolt of *its own site*.
  The registry does not say which bolts a gateway carries, and the device ids inside a gateway's
  batch are in the payload, where a broker cannot look: a gateway is trusted for the devices of
  its site, not beyond.
* **the service user** (``boltwatch``) receives everything under ``boltwatch/v1/#`` and
  ``spBv1.0/#`` and publishes commands (``cmd``, ``NCMD``/``DCMD``), alerts
  (``boltwatch/v1/{site}/alerts/...``, the MQTT channel) and Sparkplug host ``STATE``.

Secrets are :func:`secrets.token_urlsafe` (256 bits). Hashes use Mosquitto's own PBKDF2-SHA512
format with its default 101 iterations: more would only slow every CONNECT down, since a random
256-bit secret cannot be guessed from its hash anyway. Files are replaced atomically (a temporary
file in the folder, fsync, rename), keep the owner and group of the file they replace (so a
``chown mosquitto`` survives a re-run), and are only rewritten when their content changes.
"""

from __future__ import annotations

import base64
import binascii
import contextlib
import fcntl
import hashlib
import hmac
import os
import re
import secrets
import tomllib
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass
from enum import StrEnum
from pathlib import Path
from typing import Final, NamedTuple

from boltwatch.config import ConfigError
from sensors.registry import Registry
from sensors.schema import DEVICE_ID_PATTERN, Channel, DeviceKind
from sensors.sparkplug import NAMESPACE
from sensors.topics import PREFIX

__all__ = [
    "ACL_FILE",
    "CONF_FILE",
    "ITERATIONS",
    "PASSWORD_FILE",
    "SECRETS_FILE",
    "SERVICE_PASSWORD_FILE",
    "SERVICE_USER",
    "AclRule",
    "BrokerIdentityError",
    "ConfigReport",
    "FileChange",
    "Identity",
    "ListenerOptions",
    "Role",
    "RotationReport",
    "Secrets",
    "acl_rules",
    "acl_text",
    "conf_text",
    "direct_edge_node",
    "identities",
    "load_device_credentials",
    "new_secret",
    "password_hash",
    "password_text",
    "read_secrets",
    "rotate_credential",
    "secrets_text",
    "verify_password",
    "write_atomic",
    "write_broker_files",
]

SERVICE_USER: Final = "boltwatch"
"""Default user name of the boltwatch service (ingest, alerts' MQTT channel, commands)."""
PASSWORD_FILE: Final = "passwords"  # noqa: S105 - a file name
ACL_FILE: Final = "acl"
CONF_FILE: Final = "boltwatch.conf"
SECRETS_FILE: Final = "device-secrets.toml"
SERVICE_PASSWORD_FILE: Final = "boltwatch.password"  # noqa: S105 - a file name
ITERATIONS: Final = 101
"""PBKDF2 iterations of a new hash: Mosquitto 2's default (``mosquitto_passwd``)."""

_LOCK_FILE: Final = ".boltwatch-broker.lock"
_ID: Final = re.compile(DEVICE_ID_PATTERN)
_SECRET_BYTES: Final = 32
_SALT_BYTES: Final = 12
_PLACEHOLDER_CERT: Final = Path("/etc/mosquitto/certs/boltwatch-broker.crt")
_PLACEHOLDER_KEY: Final = Path("/etc/mosquitto/certs/boltwatch-broker.key")
# The channels a device publishes on; ``cmd`` is boltwatch's, the device only receives it.
_DEVICE_CHANNELS: Final = (Channel.TELEMETRY, Channel.EVENT, Channel.STATUS)


class BrokerIdentityError(ConfigError):
    """The broker files cannot be made: ``key`` names the option, file or device at fault."""


class Role(StrEnum):
    """What an MQTT user is to the ACL."""

    SERVICE = "service"
    DEVICE = "device"
    GATEWAY = "gateway"


@dataclass(frozen=True, slots=True)
class Identity:
    """One MQTT user.

    Attributes:
        username: The MQTT user name (a device's id; the service user's name).
        role: Device, gateway or the service.
        site: The device's site (the ``{site}`` topic segment and Sparkplug group); empty for
            the service.
        kind: The device's kind; None for the service.
    """

    username: str
    role: Role
    site: str = ""
    kind: DeviceKind | None = None


class AclRule(NamedTuple):
    """One ``topic ACCESS FILTER`` line of a user's block."""

    access: str
    """``read`` (receive) or ``write`` (publish)."""
    topic: str


class FileChange(StrEnum):
    """What a run did to a file."""

    CREATED = "created"
    UPDATED = "updated"
    UNCHANGED = "unchanged"


@dataclass(frozen=True, slots=True)
class ListenerOptions:
    """The listeners of ``boltwatch.conf``.

    Attributes:
        port: TLS listener port (devices and boltwatch).
        bind: Address the TLS listener binds to; None = every interface.
        tls_cert: The broker's certificate chain (PEM); None = a placeholder path to replace.
        tls_key: Its private key (PEM); None = a placeholder path.
        tls_ca: CA bundle Mosquitto would check client certificates with (``cafile``); None =
            left out (devices authenticate with their password, not a certificate).
        local_port: Also a plain-MQTT listener on 127.0.0.1 with the same password and ACL
            files (for boltwatch on the broker's own host); None = none.
    """

    port: int = 8883
    bind: str | None = None
    tls_cert: Path | None = None
    tls_key: Path | None = None
    tls_ca: Path | None = None
    local_port: int | None = None


@dataclass(frozen=True, slots=True)
class Secrets:
    """The content of ``device-secrets.toml``.

    Attributes:
        service_user: The service's MQTT user name.
        service_password: Its password.
        devices: Device id -> secret (the device's MQTT password; its user name is its id).
    """

    service_user: str
    service_password: str
    devices: dict[str, str]

    def all(self) -> dict[str, str]:
        """User name -> password, the service user first."""
        return {self.service_user: self.service_password, **self.devices}


@dataclass(frozen=True, slots=True)
class ConfigReport:
    """What ``boltwatch broker config`` changed.

    Attributes:
        out_dir: The folder of the files.
        users: MQTT users in the files (devices and the service user).
        added: Users that got their first secret.
        removed: Users no longer in the registry (their lines are gone).
        rotated: Users whose secret was replaced (``--rotate-all``).
        kept: Users whose secret stayed.
        files: File name -> what happened to it.
    """

    out_dir: Path
    users: int
    added: tuple[str, ...]
    removed: tuple[str, ...]
    rotated: tuple[str, ...]
    kept: tuple[str, ...]
    files: dict[str, FileChange]

    @property
    def changed(self) -> bool:
        """Whether any file was created or rewritten."""
        return any(c is not FileChange.UNCHANGED for c in self.files.values())


@dataclass(frozen=True, slots=True)
class RotationReport:
    """What ``boltwatch broker credentials`` did.

    Attributes:
        username: The user whose secret was issued.
        secret: The new secret (shown once).
        files: File name -> what happened to it.
    """

    username: str
    secret: str
    files: dict[str, FileChange]


# ---------------------------------------------------------------------------------------------
# Pure functions: identities, ACL, password lines, config text.


def identities(registry: Registry) -> list[Identity]:
    """Every device of the registry as an MQTT user, sorted by site, kind and id."""
    out: list[Identity] = []
    for device_id in registry.devices():
        loc = registry.locate(device_id)
        if loc is None:  # pragma: no cover - devices() lists located devices only
            continue
        role = Role.GATEWAY if loc.kind is DeviceKind.GATEWAY else Role.DEVICE
        out.append(Identity(device_id, role, loc.site, loc.kind))
    out.sort(key=lambda i: (i.site, str(i.kind), i.username))
    return out


def direct_edge_node(device_id: str) -> str:
    """The Sparkplug edge node id of a device that speaks Sparkplug B on its own connection.

    ``{device_id}-edge`` cut to 64 characters, as :class:`firmware_sim.firmware.DirectUplink`
    names it by default.
    """
    return f"{device_id}-edge"[:64]


def _json_topic(ident: Identity, channel: Channel | str, device: str | None = None) -> str:
    kind = ident.kind.value if ident.kind is not None else "+"
    return f"{PREFIX}/{ident.site}/{kind}/{device or ident.username}/{channel}"


def _sparkplug_node(group: str, edge: str, devices: str | None) -> list[AclRule]:
    """An edge node's Sparkplug rights: its N* messages, and D* of ``devices`` (an id or ``+``)."""
    spb = f"{NAMESPACE}/{group}"
    rules = [AclRule("write", f"{spb}/{t}/{edge}") for t in ("NBIRTH", "NDATA", "NDEATH")]
    rules.append(AclRule("read", f"{spb}/NCMD/{edge}"))
    if devices is not None:
        rules += [
            AclRule("write", f"{spb}/{t}/{edge}/{devices}") for t in ("DBIRTH", "DDATA", "DDEATH")
        ]
        rules.append(AclRule("read", f"{spb}/DCMD/{edge}/{devices}"))
    # Sparkplug 3 host applications announce themselves on spBv1.0/STATE/{host_id}.
    rules.append(AclRule("read", f"{NAMESPACE}/STATE/+"))
    return rules


def acl_rules(ident: Identity) -> list[AclRule]:
    """The topics one user may publish (``write``) and receive (``read``).

    Anything not listed is refused: Mosquitto drops a publication on another topic (MQTT 5
    clients get the reason code "not authorized" in their PUBACK) and does not deliver messages
    of other topics to the user's subscriptions, whatever filter it subscribed with.
    """
    if ident.role is Role.SERVICE:
        return [
            AclRule("read", f"{PREFIX}/#"),
            AclRule("read", f"{NAMESPACE}/#"),
            AclRule("write", f"{PREFIX}/+/+/+/{Channel.CMD}"),
            AclRule("write", f"{PREFIX}/+/alerts/#"),
            AclRule("write", f"{NAMESPACE}/+/NCMD/+"),
            AclRule("write", f"{NAMESPACE}/+/DCMD/+/+"),
            AclRule("write", f"{NAMESPACE}/STATE/+"),
        ]
    rules = [AclRule("write", _json_topic(ident, c)) for c in _DEVICE_CHANNELS]
    rules.append(AclRule("read", _json_topic(ident, Channel.CMD)))
    if ident.role is Role.GATEWAY:
        bolts = Identity("+", Role.DEVICE, ident.site, DeviceKind.CBOLT)
        rules.append(AclRule("write", _json_topic(bolts, Channel.STATUS)))
        rules.append(AclRule("read", _json_topic(bolts, Channel.CMD)))
        rules += _sparkplug_node(ident.site, ident.username, "+")
    else:
        rules += _sparkplug_node(ident.site, direct_edge_node(ident.username), ident.username)
    return rules


def _describe(ident: Identity) -> str:
    if ident.role is Role.SERVICE:
        return "boltwatch service: receives every device topic; publishes commands, alerts"
    kind = ident.kind.value if ident.kind is not None else "?"
    if ident.role is Role.GATEWAY:
        return (
            f"gateway of site {ident.site}: its own topics; births, wills and commands of the "
            f"site's bolts; Sparkplug edge node {ident.username} with any device"
        )
    return (
        f"{kind} of site {ident.site}: its own topics only; Sparkplug edge node "
        f"{direct_edge_node(ident.username)} carrying itself"
    )


def acl_text(users: Iterable[Identity]) -> str:
    """A Mosquitto ``acl_file``: a ``user`` block per identity, nothing for anonymous clients."""
    lines = [
        "# boltwatch: who may publish and receive what. Written by `boltwatch broker config`;",
        "# re-run it rather than editing this file. Mosquitto reads it again on SIGHUP.",
        "# Nothing is granted to anonymous clients (they are refused anyway) and there are no",
        "# `pattern` lines: each user has exactly the topics of its block.",
    ]
    for ident in users:
        lines += ["", f"# {_describe(ident)}", f"user {ident.username}"]
        lines += [f"topic {r.access} {r.topic}" for r in acl_rules(ident)]
    return "\n".join(lines) + "\n"


def password_hash(password: str, *, salt: bytes | None = None, iterations: int = ITERATIONS) -> str:
    """A Mosquitto 2 password-file hash: ``$7$iterations$salt$hash`` (PBKDF2-HMAC-SHA512).

    Args:
        password: The secret.
        salt: Salt bytes (default: 12 random bytes, as ``mosquitto_passwd``).
        iterations: PBKDF2 iterations (Mosquitto's default 101).
    """
    salt = salt if salt is not None else secrets.token_bytes(_SALT_BYTES)
    digest = hashlib.pbkdf2_hmac("sha512", password.encode(), salt, iterations)
    b64 = base64.b64encode
    return f"$7${iterations}${b64(salt).decode()}${b64(digest).decode()}"


def verify_password(password: str, hashed: str) -> bool:
    """Whether ``hashed`` (a ``$7$`` hash of a password file) is the hash of ``password``.

    Another or a malformed hash is False (it is then replaced by a ``$7$`` one).
    """
    parts = hashed.split("$")
    if len(parts) != 5 or parts[0] or parts[1] != "7" or not parts[2].isdigit():
        return False
    try:
        salt = base64.b64decode(parts[3], validate=True)
        digest = base64.b64decode(parts[4], validate=True)
    except (binascii.Error, ValueError):
        return False
    iterations = int(parts[2])
    if not 1 <= iterations <= 10_000_000:
        return False
    mine = hashlib.pbkdf2_hmac("sha512", password.encode(), salt, iterations)
    return hmac.compare_digest(mine, digest)


def password_text(users: Mapping[str, str], previous: Mapping[str, str] | None = None) -> str:
    """A Mosquitto ``password_file``: ``username:hash`` per user, in the mapping's order.

    Args:
        users: User name -> password.
        previous: User name -> hash of the file being replaced: a hash that still matches its
            user's password is kept, so that a re-run leaves the file as it was.
    """
    previous = previous or {}
    lines = []
    for user, password in users.items():
        old = previous.get(user)
        hashed = old if old is not None and verify_password(password, old) else None
        lines.append(f"{user}:{hashed or password_hash(password)}")
    return "".join(f"{line}\n" for line in lines)


def _parse_password_file(text: str) -> dict[str, str]:
    out: dict[str, str] = {}
    for line in text.splitlines():
        user, sep, hashed = line.strip().partition(":")
        if sep and user and not user.startswith("#"):
            out[user] = hashed
    return out


def _conf_path(path: Path, option: str) -> str:
    text = str(path)
    if any(c in text for c in "\r\n\0"):
        raise BrokerIdentityError(option, f"{text!r}: a path in mosquitto.conf is one line")
    return text


def conf_text(out_dir: Path, options: ListenerOptions) -> str:
    """The ``boltwatch.conf`` snippet: per-listener settings, a TLS listener, optionally a plain
    one on 127.0.0.1, each refusing anonymous clients and using the password and ACL files of
    ``out_dir`` (absolute paths).

    Raises:
        BrokerIdentityError: A path holds a line break (it would inject config lines).
    """
    where = out_dir.resolve()
    auth = [
        "allow_anonymous false",
        f"password_file {_conf_path(where / PASSWORD_FILE, '--out')}",
        f"acl_file {_conf_path(where / ACL_FILE, '--out')}",
    ]
    lines = [
        "# boltwatch: device identity on the broker. Written by `boltwatch broker config`;",
        "# re-run it rather than editing this file.",
        "#",
        "# Run Mosquitto with it (`mosquitto -c boltwatch.conf`) or include it from your",
        "# mosquitto.conf (Debian: copy it to /etc/mosquitto/conf.d/). Mosquitto reads the",
        "# password and ACL files again on SIGHUP (`systemctl reload mosquitto`); a change of the",
        "# listeners below needs a restart.",
        "",
        "# Authentication and ACLs are set for each listener (they follow its `listener` line).",
        "per_listener_settings true",
        "",
        "# Devices and boltwatch, over TLS (clients check the broker's certificate).",
        f"listener {options.port}" + (f" {options.bind}" if options.bind else ""),
    ]
    if options.tls_cert is None:
        lines += [
            "# PLACEHOLDER: the broker's certificate chain (PEM). Put it there, or run",
            "# `boltwatch broker config` again with --tls-cert.",
        ]
    lines.append(f"certfile {_conf_path(options.tls_cert or _PLACEHOLDER_CERT, '--tls-cert')}")
    if options.tls_key is None:
        lines += [
            "# PLACEHOLDER: the certificate's private key (PEM, readable by the mosquitto user",
            "# only). Put it there, or run `boltwatch broker config` again with --tls-key.",
        ]
    lines.append(f"keyfile {_conf_path(options.tls_key or _PLACEHOLDER_KEY, '--tls-key')}")
    if options.tls_ca is None:
        lines += [
            "# Devices log in with their password. For client certificates as well (mutual TLS),",
            "# add `cafile` (the CA of the client certificates) and `require_certificate true`.",
        ]
    else:
        lines += [
            "# CA of client certificates. Add `require_certificate true` to also require one",
            "# from every client (mutual TLS); devices then need a certificate and a password.",
            f"cafile {_conf_path(options.tls_ca, '--tls-ca')}",
        ]
    lines += auth
    if options.local_port is not None:
        lines += [
            "",
            "# Plain MQTT on the loopback interface only, for boltwatch on this host: same",
            "# passwords and ACL, no TLS (nothing leaves the machine).",
            f"listener {options.local_port} 127.0.0.1",
            *auth,
        ]
    return "\n".join(lines) + "\n"


def secrets_text(data: Secrets) -> str:
    """``device-secrets.toml``: the service user and every device's secret, in clear."""
    lines = [
        "# boltwatch broker credentials: SECRET. Written by `boltwatch broker config` and",
        "# `boltwatch broker credentials`; keep it mode 0600, give each device its own line",
        "# (MQTT user name = device id, password = the value) and nothing else.",
        "",
        "[service]",
        f'username = "{data.service_user}"',
        f'password = "{data.service_password}"',
        "",
        "[devices]",
    ]
    lines += [f'{device} = "{secret}"' for device, secret in data.devices.items()]
    return "\n".join(lines) + "\n"


def new_secret() -> str:
    """A new device secret: 32 random bytes, URL-safe base64 (43 characters)."""
    return secrets.token_urlsafe(_SECRET_BYTES)


# ---------------------------------------------------------------------------------------------
# Files.


def write_atomic(path: Path, data: bytes, mode: int) -> FileChange:
    """Replace ``path`` with ``data`` atomically, with permission bits ``mode``.

    Nothing is written when the file already holds ``data`` (only its mode is corrected). A
    replaced file's owner and group are kept when the process may set them (root), so a file
    handed to the ``mosquitto`` user stays readable by it.
    """
    try:
        st: os.stat_result | None = path.stat()
    except FileNotFoundError:
        st = None
    if st is not None and path.read_bytes() == data:
        if st.st_mode & 0o7777 != mode:
            path.chmod(mode)
        return FileChange.UNCHANGED
    tmp = path.with_name(f".{path.name}.{secrets.token_hex(4)}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, mode)
    try:
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())
        os.chmod(tmp, mode)  # the umask may have taken bits away
        if st is not None:
            with contextlib.suppress(PermissionError):
                os.chown(tmp, st.st_uid, st.st_gid)
        tmp.replace(path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    with contextlib.suppress(OSError):  # the rename's durability: best effort
        dir_fd = os.open(path.parent, os.O_RDONLY)
        try:
            os.fsync(dir_fd)
        finally:
            os.close(dir_fd)
    return FileChange.UPDATED if st is not None else FileChange.CREATED


@contextlib.contextmanager
def _locked(out_dir: Path) -> Iterator[None]:
    """Serialise the commands that rewrite the files of ``out_dir`` (no lost update)."""
    fd = os.open(out_dir / _LOCK_FILE, os.O_RDWR | os.O_CREAT, 0o600)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)


def _check_user(name: str, key: str) -> None:
    if not _ID.match(name):
        raise BrokerIdentityError(key, f"{name!r} must be 1-64 characters of A-Z a-z 0-9 _ -")


def read_secrets(path: Path) -> Secrets:
    """Read ``device-secrets.toml``.

    Raises:
        BrokerIdentityError: Missing, unreadable or malformed (key: the path).
    """
    where = str(path)
    try:
        data = tomllib.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError as exc:
        raise BrokerIdentityError(
            where, "no such file: run `boltwatch broker config --registry FILE --out DIR` first"
        ) from exc
    except (OSError, UnicodeDecodeError) as exc:
        raise BrokerIdentityError(where, f"cannot read: {exc}") from exc
    except tomllib.TOMLDecodeError as exc:
        raise BrokerIdentityError(where, f"not valid TOML: {exc}") from exc
    service = data.get("service")
    devices = data.get("devices", {})
    if not isinstance(service, dict) or not isinstance(devices, dict):
        raise BrokerIdentityError(where, "needs a [service] table and a [devices] table")
    user, password = service.get("username"), service.get("password")
    if not isinstance(user, str) or not isinstance(password, str) or not password:
        raise BrokerIdentityError(f"{where}: service", "needs username and password strings")
    _check_user(user, f"{where}: service.username")
    out: dict[str, str] = {}
    for device, secret in devices.items():
        _check_user(device, f"{where}: devices")
        if not isinstance(secret, str) or not secret:
            raise BrokerIdentityError(f"{where}: devices.{device}", "must be a non-empty string")
        out[device] = secret
    return Secrets(user, password, out)


def load_device_credentials(path: Path) -> dict[str, str]:
    """Device id -> secret, from ``device-secrets.toml`` or the folder holding it.

    The simulator's ``--credentials``: each simulated device (a gateway, a machine) logs in with
    its own id and secret.

    Raises:
        BrokerIdentityError: The file is missing or malformed.
    """
    return read_secrets(path / SECRETS_FILE if path.is_dir() else path).devices


def _previous_hashes(path: Path) -> dict[str, str]:
    try:
        return _parse_password_file(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        return {}
    except (OSError, UnicodeDecodeError) as exc:
        raise BrokerIdentityError(str(path), f"cannot read: {exc}") from exc


def _write_secret_files(
    out_dir: Path, data: Secrets, files: dict[str, FileChange]
) -> dict[str, FileChange]:
    """Write the password file, the secrets file and the service password (in that order: a
    crash in between leaves the secrets file holding what the broker does not know yet, which a
    re-run repairs, never a broker secret nobody has)."""
    pw_path = out_dir / PASSWORD_FILE
    text = password_text(data.all(), _previous_hashes(pw_path))
    files[PASSWORD_FILE] = write_atomic(pw_path, text.encode(), 0o600)
    files[SECRETS_FILE] = write_atomic(out_dir / SECRETS_FILE, secrets_text(data).encode(), 0o600)
    files[SERVICE_PASSWORD_FILE] = write_atomic(
        out_dir / SERVICE_PASSWORD_FILE, f"{data.service_password}\n".encode(), 0o600
    )
    return files


def write_broker_files(
    registry: Registry,
    out_dir: Path,
    *,
    options: ListenerOptions | None = None,
    service_user: str = SERVICE_USER,
    rotate_all: bool = False,
) -> ConfigReport:
    """Write (or bring up to date) the broker files of ``registry`` in ``out_dir``.

    Existing secrets are kept (unless ``rotate_all``); devices new to the registry get one;
    devices no longer in it lose theirs, their password line and their ACL block.

    Args:
        registry: The validated registry.
        out_dir: Folder of the files (created, mode 0700, if missing).
        options: The listeners of ``boltwatch.conf``.
        service_user: MQTT user name of the boltwatch service.
        rotate_all: New secrets for every user, the service user included.

    Raises:
        BrokerIdentityError: The service user name is invalid or is also a device id, or an
            existing file cannot be read.
    """
    options = options or ListenerOptions()
    _check_user(service_user, "--service-user")
    users = identities(registry)
    taken = {i.username for i in users}
    if service_user in taken:
        raise BrokerIdentityError(
            "--service-user", f"{service_user!r} is also a device id of the registry"
        )
    edges: set[str] = set()  # edge nodes of the devices that may speak Sparkplug directly
    for ident in users:
        if ident.role is not Role.DEVICE:
            continue
        edge = direct_edge_node(ident.username)
        if edge in taken or edge in edges:
            raise BrokerIdentityError(
                ident.username,
                f"its Sparkplug edge node {edge!r} would also be another device's; rename one",
            )
        edges.add(edge)
    out_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
    with _locked(out_dir):
        path = out_dir / SECRETS_FILE
        old = read_secrets(path) if path.exists() else None
        before = old.all() if old is not None else {}
        if old is not None and old.service_user != service_user:
            # A renamed service user keeps the password it had under its old name.
            before[service_user] = before.pop(old.service_user)
        wanted = [service_user, *(i.username for i in users)]
        added, rotated, kept = [], [], []
        fresh: dict[str, str] = {}
        for user in wanted:
            if user not in before:
                added.append(user)
                fresh[user] = new_secret()
            elif rotate_all:
                rotated.append(user)
                fresh[user] = new_secret()
            else:
                kept.append(user)
                fresh[user] = before[user]
        removed = sorted(u for u in before if u not in fresh)
        data = Secrets(service_user, fresh.pop(service_user), dict(sorted(fresh.items())))
        files: dict[str, FileChange] = {}
        _write_secret_files(out_dir, data, files)
        service = Identity(service_user, Role.SERVICE)
        files[ACL_FILE] = write_atomic(
            out_dir / ACL_FILE, acl_text([service, *users]).encode(), 0o600
        )
        files[CONF_FILE] = write_atomic(
            out_dir / CONF_FILE, conf_text(out_dir, options).encode(), 0o644
        )
    return ConfigReport(
        out_dir=out_dir,
        users=len(wanted),
        added=tuple(added),
        removed=tuple(removed),
        rotated=tuple(rotated),
        kept=tuple(kept),
        files=files,
    )


def rotate_credential(out_dir: Path, username: str) -> RotationReport:
    """Issue a new secret for one device (or the service user) of the files in ``out_dir``.

    Only its line of the password file changes; the ACL does not.

    Raises:
        BrokerIdentityError: The files are missing, or ``username`` is in none of them (key:
            the name; add the device to the registry and run ``boltwatch broker config``).
    """
    path = out_dir / SECRETS_FILE
    if not path.is_file():
        raise BrokerIdentityError(
            str(path), "no such file: run `boltwatch broker config --registry FILE --out DIR` first"
        )
    with _locked(out_dir):
        data = read_secrets(path)
        secret = new_secret()
        if username == data.service_user:
            data = Secrets(data.service_user, secret, data.devices)
        elif username in data.devices:
            devices = {**data.devices, username: secret}
            data = Secrets(data.service_user, data.service_password, devices)
        else:
            raise BrokerIdentityError(
                username,
                f"unknown device (not in {path}; add it to the registry and run "
                "`boltwatch broker config` again)",
            )
        files = _write_secret_files(out_dir, data, {})
    return RotationReport(username, secret, files)
