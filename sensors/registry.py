"""The device registry: where every device sits and what every bolt went through.

Maintenance teams think in joints, not sensor ids: site → structure → joint (a flange or bolt
pattern) → bolt position. The registry is one TOML file of arrays of tables (``[[sites]]``,
``[[structures]]``, ``[[bolt_profiles]]``, ``[[joints]]`` with ``[[joints.bolts]]``,
``[[installations]]``, ``[[machines]]``, ``[[gateways]]``); ``sensors/samples/registry.toml`` is a
commented example. Loading types every value (msgspec), then checks every reference between
tables; the first problem found raises :class:`~sensors.errors.RegistryError` whose ``key`` is the
path into the file, e.g. ``joints[2].bolts[0].position``.

Lookups (:meth:`Registry.locate`, :meth:`Registry.bolt`, :meth:`Registry.history`, ...) are
dictionaries built once at load: ingest and detection call them for every reading.
"""

from __future__ import annotations

import os
import re
import tomllib
from collections.abc import Iterable
from datetime import date, datetime
from pathlib import Path
from typing import Annotated, Final, Literal, TypeVar, get_args
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

import msgspec
from msgspec import Meta

from sensors.errors import RegistryError
from sensors.schema import DEVICE_ID_PATTERN, DeviceKind

__all__ = [
    "MACHINE_KINDS",
    "SAMPLE_REGISTRY_PATH",
    "BoltInfo",
    "BoltProfile",
    "Gateway",
    "Installation",
    "Joint",
    "JointBolt",
    "Location",
    "Machine",
    "Registry",
    "RegistryFile",
    "Site",
    "Structure",
    "load_registry",
    "parse_registry",
]

SAMPLE_REGISTRY_PATH: Final = Path(__file__).with_name("samples") / "registry.toml"
"""The commented sample registry shipped beside this module."""

MACHINE_KINDS: Final = frozenset(DeviceKind) - {DeviceKind.CBOLT, DeviceKind.GATEWAY}
"""Device kinds a ``[[machines]]`` entry may have (bolts live in joints, gateways apart)."""

Id = Annotated[str, Meta(pattern=DEVICE_ID_PATTERN)]
Text = Annotated[str, Meta(min_length=1, max_length=256)]
Note = Annotated[str, Meta(max_length=4096)]
LimitName = Annotated[str, Meta(pattern=r"^[a-z][a-z0-9_]{0,63}$")]
LimitValue = Annotated[float, Meta(ge=-1e9, le=1e9)]
Pattern = Literal["circular", "linear", "grid"]
Material = Literal["steel", "aluminium", "cast_iron", "concrete", "composite"]
NutFactor = Annotated[float, Meta(ge=0.05, le=0.6)]
AwareDatetime = Annotated[datetime, Meta(tz=True)]


class Site(msgspec.Struct, kw_only=True, forbid_unknown_fields=True, frozen=True):
    """``[[sites]]``: a place with its own clock (a wind farm, a bridge, a fablab).

    Attributes:
        id: Site identifier, also the ``{site}`` segment of MQTT topics.
        name: Human-readable name.
        timezone: IANA time zone name (``Europe/Paris``), for reports and work orders.
        latitude: Degrees north, -90 to 90 (optional; give both or neither).
        longitude: Degrees east, -180 to 180 (optional; give both or neither).
    """

    id: Id
    name: Text
    timezone: Text = "UTC"
    latitude: Annotated[float, Meta(ge=-90.0, le=90.0)] | None = None
    longitude: Annotated[float, Meta(ge=-180.0, le=180.0)] | None = None

    def zone(self) -> ZoneInfo:
        """The site's time zone (the name was checked at load)."""
        return ZoneInfo(self.timezone)


class Structure(msgspec.Struct, kw_only=True, forbid_unknown_fields=True, frozen=True):
    """``[[structures]]``: what carries the joints (a wind turbine, a bridge, a building).

    Attributes:
        id: Structure identifier.
        site: Id of the site it stands on.
        name: Human-readable name.
        type: Free text such as ``wind_turbine``, ``bridge``, ``fablab``.
    """

    id: Id
    site: Id
    name: Text
    type: Text


class BoltProfile(msgspec.Struct, kw_only=True, forbid_unknown_fields=True, frozen=True):
    """``[[bolt_profiles]]``: a bolt size and grade with its loads and accepted nut factors.

    Attributes:
        id: Profile identifier.
        thread: Thread designation, e.g. ``M16``.
        nominal_diameter_mm: Nominal diameter d (mm), the ``d`` of T = K·F·d.
        grade: Property class, e.g. ``8.8``, ``10.9``.
        proof_load_kn: Proof load (kN); M16 class 8.8 is about 94 kN.
        nominal_preload_kn: Target preload at installation (kN), at most the proof load;
            typically 60-75 % of it.
        nut_factor_min: Lowest nut factor K accepted at installation (0.05 to 0.6).
        nut_factor_max: Highest nut factor K accepted at installation (0.05 to 0.6); outside
            the range the thread is bad, dirty, galled or wrongly lubricated.
    """

    id: Id
    thread: Text
    nominal_diameter_mm: Annotated[float, Meta(gt=0.0, le=500.0)]
    grade: Text
    proof_load_kn: Annotated[float, Meta(gt=0.0, le=100_000.0)]
    nominal_preload_kn: Annotated[float, Meta(gt=0.0, le=100_000.0)]
    nut_factor_min: NutFactor = 0.10
    nut_factor_max: NutFactor = 0.30


class JointBolt(msgspec.Struct, kw_only=True, forbid_unknown_fields=True, frozen=True):
    """``[[joints.bolts]]``: one instrumented bolt position of a joint.

    Attributes:
        position: Position in the pattern, 1 to the joint's ``bolt_count``.
        device_id: The smart bolt's device id (unique across the whole registry).
        angle_deg: Angle on the pitch circle (degrees, 0 to <360, from position 1). For a
            circular pattern it defaults to ``(position - 1) * 360 / bolt_count``.
    """

    position: Annotated[int, Meta(ge=1)]
    device_id: Id
    angle_deg: Annotated[float, Meta(ge=0.0, lt=360.0)] | None = None


class Joint(msgspec.Struct, kw_only=True, forbid_unknown_fields=True, frozen=True):
    """``[[joints]]``: a bolt pattern (a flange, a splice) clamping one material.

    Attributes:
        id: Joint identifier.
        structure: Id of the structure it belongs to.
        name: Human-readable name.
        pattern: ``circular`` (a flange), ``linear`` (a row) or ``grid`` (a splice plate).
        bolt_count: Number of bolt positions in the pattern, instrumented or not.
        pitch_circle_diameter_mm: Pitch circle diameter (mm); required for a circular pattern.
        material: The clamped material; with the steel bolt it sets the temperature effect on
            preload (steel in aluminium: about +0.3 % per °C; steel in steel: about 0).
        bolt_profile: Id of the bolt profile used at every position.
        bolts: The instrumented positions (often 10-20 % of them in field practice).
    """

    id: Id
    structure: Id
    name: Text
    pattern: Pattern
    bolt_count: Annotated[int, Meta(ge=1, le=100_000)]
    pitch_circle_diameter_mm: Annotated[float, Meta(gt=0.0, le=100_000.0)] | None = None
    material: Material
    bolt_profile: Id
    bolts: tuple[JointBolt, ...] = ()


class Installation(msgspec.Struct, kw_only=True, forbid_unknown_fields=True, frozen=True):
    """``[[installations]]``: one tightening of a bolt (installation or retightening).

    Attributes:
        device_id: The bolt (must be listed in a joint).
        ts: When it was tightened; a TOML datetime with offset or an RFC 3339 string.
        torque_nm: Final torque applied (N·m).
        preload_kn: Preload measured right after tightening (kN).
        tool: Tightening tool (make and model).
        tool_serial: The tool's serial number.
        tool_calibrated: Date of the tool's calibration in force (not after ``ts``).
        operator: Who tightened it.
        tightening_pass: 1 for the installation, 2 and more for later passes/retightenings.
        note: Free text.
    """

    device_id: Id
    ts: AwareDatetime
    torque_nm: Annotated[float, Meta(gt=0.0, le=100_000.0)]
    preload_kn: Annotated[float, Meta(gt=0.0, le=100_000.0)]
    tool: Text
    tool_serial: Text | None = None
    tool_calibrated: date
    operator: Text
    tightening_pass: Annotated[int, Meta(ge=1, le=100)] = 1
    note: Note | None = None


class Machine(msgspec.Struct, kw_only=True, forbid_unknown_fields=True, frozen=True):
    """``[[machines]]``: a fablab machine (any kind but ``cbolt`` and ``gateway``).

    Attributes:
        device_id: The machine's device id (unique across the whole registry).
        site: Id of its site.
        kind: Device kind, e.g. ``printer3d``, ``laser_cutter``, ``cnc_mill``.
        model: Make and model.
        name: Human-readable name.
        limits: Named limits in the unit of the field they bound, by convention
            ``<reading field>_max`` / ``_min`` (``hotend_c_max = 275``).
    """

    device_id: Id
    site: Id
    kind: DeviceKind
    model: Text
    name: Text
    limits: dict[LimitName, LimitValue] = msgspec.field(default_factory=dict)


class Gateway(msgspec.Struct, kw_only=True, forbid_unknown_fields=True, frozen=True):
    """``[[gateways]]``: a gateway relaying readings of a site's devices.

    Attributes:
        device_id: The gateway's device id (unique across the whole registry).
        site: Id of its site.
        name: Human-readable name.
    """

    device_id: Id
    site: Id
    name: Text


class RegistryFile(msgspec.Struct, kw_only=True, forbid_unknown_fields=True, frozen=True):
    """The whole registry file as typed, before the references between tables are checked."""

    sites: tuple[Site, ...] = ()
    structures: tuple[Structure, ...] = ()
    bolt_profiles: tuple[BoltProfile, ...] = ()
    joints: tuple[Joint, ...] = ()
    installations: tuple[Installation, ...] = ()
    machines: tuple[Machine, ...] = ()
    gateways: tuple[Gateway, ...] = ()


class Location(msgspec.Struct, kw_only=True, frozen=True):
    """Where a device sits.

    Attributes:
        site: Site id.
        structure: Structure id (bolts only).
        joint: Joint id (bolts only).
        position: Bolt position in the joint, from 1 (bolts only).
        angle_deg: Angle on the pitch circle (degrees), if known.
        kind: Device kind (``cbolt`` for every joint bolt).
    """

    site: str
    structure: str | None = None
    joint: str | None = None
    position: int | None = None
    angle_deg: float | None = None
    kind: DeviceKind


class BoltInfo(msgspec.Struct, kw_only=True, frozen=True):
    """A smart bolt with its place, profile and tightening history.

    Attributes:
        device_id: The bolt's device id.
        site: Site id.
        structure: Structure id.
        joint: The joint it clamps.
        profile: Its bolt profile.
        position: Position in the joint, from 1.
        angle_deg: Angle on the pitch circle (degrees); None for a non-circular pattern
            without an explicit angle.
        history: Installation and retightenings, oldest first.
    """

    device_id: str
    site: str
    structure: str
    joint: Joint
    profile: BoltProfile
    position: int
    angle_deg: float | None
    history: tuple[Installation, ...]


_T = TypeVar("_T")


class Registry:
    """A validated registry with its lookups.

    Build it with :func:`load_registry`, :func:`parse_registry` or :meth:`empty`; constructing it
    from a :class:`RegistryFile` checks every reference.
    """

    __slots__ = ("_bolts", "_file", "_joint_bolts", "_kinds", "_locations")

    def __init__(self, file: RegistryFile) -> None:
        """Check the references between the tables of ``file`` and build the lookups.

        Raises:
            RegistryError: The first problem found, ``key`` naming it in the file.
        """
        sites = _unique(file.sites, "sites", "id")
        structures = _unique(file.structures, "structures", "id")
        profiles = _unique(file.bolt_profiles, "bolt_profiles", "id")
        _unique(file.joints, "joints", "id")
        for i, site in enumerate(file.sites):
            _check_site(site, f"sites[{i}]")
        for i, structure in enumerate(file.structures):
            _check_ref(structure.site, sites, f"structures[{i}].site", "site")
        for i, profile in enumerate(file.bolt_profiles):
            _check_profile(profile, f"bolt_profiles[{i}]")
        owner: dict[str, str] = {}  # device id -> key of its first declaration
        joints = tuple(
            _check_joint(joint, f"joints[{i}]", structures, profiles, owner)
            for i, joint in enumerate(file.joints)
        )
        _check_machines(file, sites, owner)
        history = _histories(
            file.installations, {b.device_id for j in joints for b in j.bolts}, owner
        )

        self._file = msgspec.structs.replace(file, joints=joints)
        self._joint_bolts = {
            j.id: _bolt_infos(j, structures[j.structure], profiles[j.bolt_profile], history)
            for j in joints
        }
        self._bolts = {b.device_id: b for infos in self._joint_bolts.values() for b in infos}
        self._locations = {
            b.device_id: Location(
                site=b.site,
                structure=b.structure,
                joint=b.joint.id,
                position=b.position,
                angle_deg=b.angle_deg,
                kind=DeviceKind.CBOLT,
            )
            for b in self._bolts.values()
        }
        for machine in file.machines:
            self._locations[machine.device_id] = Location(site=machine.site, kind=machine.kind)
        for gateway in file.gateways:
            self._locations[gateway.device_id] = Location(
                site=gateway.site, kind=DeviceKind.GATEWAY
            )
        self._kinds = {d: loc.kind for d, loc in self._locations.items()}

    @classmethod
    def empty(cls) -> Registry:
        """A registry without any site or device (what runs when no file is configured)."""
        return cls(RegistryFile())

    @property
    def file(self) -> RegistryFile:
        """Every table as loaded, with circular angles filled in."""
        return self._file

    @property
    def sites(self) -> tuple[Site, ...]:
        """Sites, in file order."""
        return self._file.sites

    @property
    def structures(self) -> tuple[Structure, ...]:
        """Structures, in file order."""
        return self._file.structures

    @property
    def bolt_profiles(self) -> tuple[BoltProfile, ...]:
        """Bolt profiles, in file order."""
        return self._file.bolt_profiles

    @property
    def joints(self) -> tuple[Joint, ...]:
        """Joints, in file order; circular patterns have every bolt's ``angle_deg`` filled in."""
        return self._file.joints

    @property
    def installations(self) -> tuple[Installation, ...]:
        """Installation records, in file order."""
        return self._file.installations

    @property
    def machines(self) -> tuple[Machine, ...]:
        """Machines, in file order."""
        return self._file.machines

    @property
    def gateways(self) -> tuple[Gateway, ...]:
        """Gateways, in file order."""
        return self._file.gateways

    def devices(self) -> list[str]:
        """Every device id (bolts, machines, gateways), sorted."""
        return sorted(self._locations)

    def kind_of(self, device_id: str) -> DeviceKind | None:
        """The device's kind (``cbolt`` for a joint bolt), None if it is not registered."""
        return self._kinds.get(device_id)

    def locate(self, device_id: str) -> Location | None:
        """Where the device sits (site → structure → joint → position), None if unregistered."""
        return self._locations.get(device_id)

    def bolt(self, device_id: str) -> BoltInfo | None:
        """The bolt's joint, profile, position, angle and history; None if not a joint bolt."""
        return self._bolts.get(device_id)

    def history(self, device_id: str) -> list[Installation]:
        """The bolt's installation and retightenings, oldest first (empty if none or unknown)."""
        info = self._bolts.get(device_id)
        return list(info.history) if info is not None else []

    def joint_bolts(self, joint_id: str) -> list[BoltInfo]:
        """The instrumented bolts of a joint, by position.

        Raises:
            KeyError: No joint has this id.
        """
        return list(self._joint_bolts[joint_id])

    def nut_factor(self, installation: Installation) -> float:
        """Nut factor K = T / (F · d) of a tightening, with d from the bolt's profile.

        Args:
            installation: A record of a registered bolt (torque in N·m, preload in kN).

        Returns:
            K, dimensionless (about 0.20 dry, 0.15 lubricated).

        Raises:
            KeyError: The record's device is not a bolt of this registry.
        """
        profile = self._bolts[installation.device_id].profile
        return installation.torque_nm / (
            installation.preload_kn * 1000.0 * profile.nominal_diameter_mm / 1000.0
        )


def load_registry(path: str | os.PathLike[str]) -> Registry:
    """Read and validate a registry TOML file.

    Args:
        path: The TOML file.

    Returns:
        The validated registry.

    Raises:
        RegistryError: The file cannot be read (key: the path), is not valid TOML (key:
            ``path:line:column``) or its content is invalid (key: the path into the file).
    """
    where = os.fspath(path)
    try:
        with open(where, "rb") as f:
            data = tomllib.load(f)
    except OSError as exc:
        raise RegistryError(where, f"cannot read: {exc.strerror or exc}") from exc
    except UnicodeDecodeError as exc:
        raise RegistryError(where, f"not UTF-8 text: {exc.reason}") from exc
    except tomllib.TOMLDecodeError as exc:
        # Python 3.11 has no exc.lineno (3.14 adds it): the message ends "(at line L, column C)".
        text = str(exc)
        m = _TOML_AT.search(text)
        if m is None:
            raise RegistryError(where, f"TOML syntax error: {text}") from exc
        raise RegistryError(
            f"{where}:{m['line']}:{m['col']}", f"TOML syntax error: {text[: m.start()]}"
        ) from exc
    return parse_registry(data)


def parse_registry(data: dict[str, object]) -> Registry:
    """Validate a registry already parsed from TOML (or built in code).

    Args:
        data: The document: arrays of tables under ``sites``, ``structures``, ``bolt_profiles``,
            ``joints``, ``installations``, ``machines``, ``gateways``.

    Returns:
        The validated registry.

    Raises:
        RegistryError: The first problem found; ``key`` names it, e.g.
            ``joints[2].bolts[0].position``.
    """
    try:
        file = msgspec.convert(data, RegistryFile)
    except msgspec.ValidationError as exc:
        key, reason = _translate(str(exc), data)
        raise RegistryError(key, reason) from exc
    return Registry(file)


# ---------------------------------------------------------------------------------------------
# Checks between tables.


def _unique(items: Iterable[_T], section: str, attr: str) -> dict[str, _T]:
    """Index entries by id; a repeated id is an error at the repeat."""
    out: dict[str, _T] = {}
    first: dict[str, int] = {}
    for i, item in enumerate(items):
        ident: str = getattr(item, attr)
        if ident in out:
            raise RegistryError(
                f"{section}[{i}].{attr}",
                f"duplicate {attr} {ident!r} (first at {section}[{first[ident]}])",
            )
        out[ident] = item
        first[ident] = i
    return out


def _check_ref(ident: str, known: dict[str, _T], key: str, what: str) -> None:
    if ident not in known:
        listed = ", ".join(sorted(known)) or "none"
        raise RegistryError(key, f"unknown {what} {ident!r} (known: {listed})")


def _claim(owner: dict[str, str], device_id: str, key: str) -> None:
    """Record where a device id is declared; a second declaration anywhere is an error."""
    if device_id in owner:
        raise RegistryError(
            f"{key}.device_id", f"device {device_id!r} is already declared at {owner[device_id]}"
        )
    owner[device_id] = key


def _check_site(site: Site, key: str) -> None:
    try:
        ZoneInfo(site.timezone)
    # "Europe" names a directory (OSError), "zone.tab" a file that is not a zone (ValueError).
    except (ZoneInfoNotFoundError, OSError, ValueError) as exc:
        raise RegistryError(
            f"{key}.timezone", f"{site.timezone!r} is not an IANA time zone (e.g. Europe/Paris)"
        ) from exc
    if (site.latitude is None) != (site.longitude is None):
        missing = "longitude" if site.longitude is None else "latitude"
        raise RegistryError(f"{key}.{missing}", "give latitude and longitude together")


def _check_profile(profile: BoltProfile, key: str) -> None:
    if profile.nominal_preload_kn > profile.proof_load_kn:
        raise RegistryError(
            f"{key}.nominal_preload_kn",
            f"{profile.nominal_preload_kn:g} kN is above the proof load "
            f"{profile.proof_load_kn:g} kN",
        )
    if profile.nut_factor_min >= profile.nut_factor_max:
        raise RegistryError(
            f"{key}.nut_factor_max",
            f"{profile.nut_factor_max:g} must be above nut_factor_min {profile.nut_factor_min:g}",
        )


def _check_joint(
    joint: Joint,
    key: str,
    structures: dict[str, Structure],
    profiles: dict[str, BoltProfile],
    owner: dict[str, str],
) -> Joint:
    """Check a joint and its bolts; return it with circular angles filled in."""
    _check_ref(joint.structure, structures, f"{key}.structure", "structure")
    _check_ref(joint.bolt_profile, profiles, f"{key}.bolt_profile", "bolt profile")
    if joint.pattern == "circular" and joint.pitch_circle_diameter_mm is None:
        raise RegistryError(
            f"{key}.pitch_circle_diameter_mm", "required when pattern is 'circular'"
        )
    if len(joint.bolts) > joint.bolt_count:
        raise RegistryError(
            f"{key}.bolts",
            f"{len(joint.bolts)} bolts listed but bolt_count is {joint.bolt_count}",
        )
    positions: dict[int, int] = {}
    bolts: list[JointBolt] = []
    for j, bolt in enumerate(joint.bolts):
        where = f"{key}.bolts[{j}]"
        if bolt.position > joint.bolt_count:
            raise RegistryError(
                f"{where}.position",
                f"{bolt.position} is above the joint's bolt_count {joint.bolt_count}",
            )
        if bolt.position in positions:
            raise RegistryError(
                f"{where}.position",
                f"position {bolt.position} is taken by {key}.bolts[{positions[bolt.position]}]",
            )
        positions[bolt.position] = j
        _claim(owner, bolt.device_id, where)
        if joint.pattern == "circular" and bolt.angle_deg is None:
            bolt = msgspec.structs.replace(  # noqa: PLW2901 - the filled-in copy replaces it
                bolt, angle_deg=(bolt.position - 1) * 360.0 / joint.bolt_count
            )
        bolts.append(bolt)
    return msgspec.structs.replace(joint, bolts=tuple(bolts))


def _check_machines(file: RegistryFile, sites: dict[str, Site], owner: dict[str, str]) -> None:
    for i, machine in enumerate(file.machines):
        _claim(owner, machine.device_id, f"machines[{i}]")
        _check_ref(machine.site, sites, f"machines[{i}].site", "site")
        if machine.kind not in MACHINE_KINDS:
            raise RegistryError(
                f"machines[{i}].kind",
                f"{machine.kind.value!r} is not a machine kind; bolts go in [[joints.bolts]], "
                "gateways in [[gateways]]",
            )
    for i, gateway in enumerate(file.gateways):
        _claim(owner, gateway.device_id, f"gateways[{i}]")
        _check_ref(gateway.site, sites, f"gateways[{i}].site", "site")


def _histories(
    records: Iterable[Installation], bolts: set[str], owner: dict[str, str]
) -> dict[str, list[Installation]]:
    """Check the installation records; return them per bolt, oldest first."""
    history: dict[str, list[Installation]] = {}
    seen: dict[tuple[str, datetime, int], int] = {}
    for i, rec in enumerate(records):
        key = f"installations[{i}]"
        if rec.device_id not in bolts:
            where = owner.get(rec.device_id)
            raise RegistryError(
                f"{key}.device_id",
                f"{rec.device_id!r} is not a bolt of any joint"
                + (f" (it is declared at {where})" if where else ""),
            )
        if rec.tool_calibrated > rec.ts.date():
            raise RegistryError(
                f"{key}.tool_calibrated",
                f"{rec.tool_calibrated.isoformat()} is after the tightening "
                f"({rec.ts.isoformat()}); give the calibration in force at the time",
            )
        # Two passes may share a time stamp (records kept to the minute), not the same pass.
        ident = (rec.device_id, rec.ts, rec.tightening_pass)
        if ident in seen:
            raise RegistryError(
                f"{key}.ts", f"same bolt, time and tightening_pass as installations[{seen[ident]}]"
            )
        seen[ident] = i
        history.setdefault(rec.device_id, []).append(rec)
    for recs in history.values():
        recs.sort(key=lambda r: (r.ts, r.tightening_pass))
    return history


def _bolt_infos(
    joint: Joint,
    structure: Structure,
    profile: BoltProfile,
    history: dict[str, list[Installation]],
) -> tuple[BoltInfo, ...]:
    """The bolts of a checked joint, by position."""
    return tuple(
        BoltInfo(
            device_id=b.device_id,
            site=structure.site,
            structure=structure.id,
            joint=joint,
            profile=profile,
            position=b.position,
            angle_deg=b.angle_deg,
            history=tuple(history.get(b.device_id, ())),
        )
        for b in sorted(joint.bolts, key=lambda b: b.position)
    )


# ---------------------------------------------------------------------------------------------
# msgspec's messages to keys of the file.

_TOML_AT: Final = re.compile(r"\s*\(at line (?P<line>\d+), column (?P<col>\d+)\)\s*$")
_FIELD_MSG: Final = re.compile(
    r"^Object (?P<what>missing required|contains unknown) field `(?P<name>[^`]+)`$"
)
_TOKEN: Final = re.compile(r"([^.\[\]]+)|\[(\d+)\]")
_BARE_KEY: Final = re.compile(r"^[A-Za-z0-9_-]+$")
_CHOICES: Final[dict[str, tuple[str, ...]]] = {
    "pattern": get_args(Pattern),
    "material": get_args(Material),
    "kind": tuple(k.value for k in DeviceKind if k in MACHINE_KINDS),
}
_TABLES: Final[dict[str, type[msgspec.Struct]]] = {
    "": RegistryFile,
    "sites": Site,
    "structures": Structure,
    "bolt_profiles": BoltProfile,
    "joints": Joint,
    "joints.bolts": JointBolt,
    "installations": Installation,
    "machines": Machine,
    "gateways": Gateway,
}


def _translate(message: str, data: object) -> tuple[str, str]:
    """Key and reason of a msgspec message (``"... - at `$.joints[2].bolts[0].position`"``)."""
    reason, _, where = message.partition(" - at `")
    dict_key = where.startswith("key` in `")
    where = where.removeprefix("key` in `").rstrip("`").removeprefix("$").removeprefix(".")
    m = _FIELD_MSG.match(reason)
    if m is not None:
        key = f"{where}.{m['name']}" if where else m["name"]
        if m["what"] == "missing required":
            return key, "required key is missing"
        table = _TABLES.get(re.sub(r"\[\d+\]", "", where))
        known = ", ".join(f.name for f in msgspec.structs.fields(table)) if table else ""
        return key, "unknown key" + (f" (known: {known})" if known else "")
    if where.endswith("[...]") or dict_key:
        # msgspec does not say which entry of a table of limits is wrong: find it again.
        where = where.removesuffix("[...]")
        return _bad_limit(where, data) or (where, reason)
    if reason.startswith("Invalid enum value"):
        choices = _CHOICES.get(where.rpartition(".")[2])
        if choices:
            reason += f" (one of: {', '.join(choices)})"
    if reason.startswith("Expected `array`, got `object`"):
        reason += " (an array of tables is written [[name]], not [name])"
    return where or "registry", reason


def _bad_limit(where: str, data: object) -> tuple[str, str] | None:
    """Key and reason of the first bad entry of the ``limits`` table at ``where``."""
    node = data
    for name, index in _TOKEN.findall(where):
        if name and isinstance(node, dict):
            node = node.get(name)
        elif index and isinstance(node, list) and int(index) < len(node):
            node = node[int(index)]
        else:
            return None
    if not isinstance(node, dict):
        return None
    for name, value in node.items():
        shown = name if isinstance(name, str) and _BARE_KEY.match(name) else f'"{name}"'
        try:
            msgspec.convert(name, LimitName)
        except msgspec.ValidationError:
            return f"{where}.{shown}", "limit names are snake_case: a-z, 0-9 and _, up to 64"
        try:
            msgspec.convert(value, LimitValue)
        except msgspec.ValidationError as exc:
            return f"{where}.{shown}", str(exc)
    return None
