"""The device registry: the shipped sample, every validation error by key, lookups, nut factor."""

from __future__ import annotations

import copy
import tomllib
from collections.abc import Callable
from datetime import UTC, date, datetime, timedelta, timezone
from importlib.resources import files
from pathlib import Path
from typing import Any

import msgspec
import pytest

from sensors.errors import RegistryError
from sensors.registry import (
    SAMPLE_REGISTRY_PATH,
    Registry,
    load_registry,
    parse_registry,
)
from sensors.schema import DeviceKind

Doc = dict[str, Any]
Mutation = Callable[[Doc], None]


def _doc() -> Doc:
    """A small valid registry, as tomllib would return it."""
    return {
        "sites": [
            {
                "id": "wf",
                "name": "Wind farm",
                "timezone": "Europe/Paris",
                "latitude": 50.5,
                "longitude": 2.4,
            },
            {"id": "lab", "name": "Fablab"},
        ],
        "structures": [
            {"id": "wtg", "site": "wf", "name": "Turbine", "type": "wind_turbine"},
            {"id": "deck", "site": "wf", "name": "Deck", "type": "bridge"},
        ],
        "bolt_profiles": [
            {
                "id": "m16",
                "thread": "M16",
                "nominal_diameter_mm": 16.0,
                "grade": "8.8",
                "proof_load_kn": 94.0,
                "nominal_preload_kn": 62.5,
            },
            {
                "id": "m36",
                "thread": "M36",
                "nominal_diameter_mm": 36.0,
                "grade": "10.9",
                "proof_load_kn": 678.0,
                "nominal_preload_kn": 475.0,
                "nut_factor_min": 0.08,
                "nut_factor_max": 0.18,
            },
        ],
        "joints": [
            {
                "id": "flange",
                "structure": "wtg",
                "name": "Top flange",
                "pattern": "circular",
                "bolt_count": 12,
                "pitch_circle_diameter_mm": 720.0,
                "material": "steel",
                "bolt_profile": "m36",
                "bolts": [
                    {"position": 7, "device_id": "b7"},
                    {"position": 1, "device_id": "b1"},
                    {"position": 4, "device_id": "b4", "angle_deg": 92.5},
                ],
            },
            {
                "id": "splice",
                "structure": "deck",
                "name": "Splice plate",
                "pattern": "grid",
                "bolt_count": 8,
                "material": "steel",
                "bolt_profile": "m16",
                "bolts": [{"position": 1, "device_id": "s1"}],
            },
        ],
        "installations": [
            {
                "device_id": "s1",
                "ts": datetime(2024, 9, 3, 10, 40, tzinfo=UTC),
                "torque_nm": 200.0,
                "preload_kn": 62.5,
                "tool": "Norbar TTi 340",
                "tool_calibrated": date(2024, 6, 20),
                "operator": "S. Dupont",
            },
            {
                "device_id": "b1",
                "ts": datetime(2025, 4, 10, 9, 12, tzinfo=UTC),
                "torque_nm": 2100.0,
                "preload_kn": 470.0,
                "tool": "Hytorc",
                "tool_calibrated": date(2025, 1, 15),
                "operator": "J. Martin",
            },
        ],
        "machines": [
            {
                "device_id": "printer",
                "site": "lab",
                "kind": "printer3d",
                "model": "Prusa MK4",
                "name": "Printer 1",
                "limits": {"hotend_c_max": 275, "bed_c_max": 120.0},
            }
        ],
        "gateways": [{"device_id": "gw", "site": "wf", "name": "Gateway"}],
    }


def _set(path: tuple[str | int, ...], value: object) -> Mutation:
    def mutate(doc: Doc) -> None:
        node: Any = doc
        for step in path[:-1]:
            node = node[step]
        node[path[-1]] = value

    return mutate


def _delete(path: tuple[str | int, ...]) -> Mutation:
    def mutate(doc: Doc) -> None:
        node: Any = doc
        for step in path[:-1]:
            node = node[step]
        del node[path[-1]]

    return mutate


def _append(path: tuple[str | int, ...], value: object) -> Mutation:
    def mutate(doc: Doc) -> None:
        node: Any = doc
        for step in path:
            node = node[step]
        node.append(value)

    return mutate


def _record(device_id: str, **changes: object) -> dict[str, object]:
    rec: dict[str, object] = {
        "device_id": device_id,
        "ts": datetime(2025, 5, 12, 14, 5, tzinfo=UTC),
        "torque_nm": 2100.0,
        "preload_kn": 472.0,
        "tool": "Hytorc",
        "tool_calibrated": date(2025, 1, 15),
        "operator": "A. Lefebvre",
    }
    rec.update(changes)
    return rec


def test_the_base_document_is_valid() -> None:
    reg = parse_registry(_doc())
    assert reg.devices() == ["b1", "b4", "b7", "gw", "printer", "s1"]


# ---------------------------------------------------------------------------------------------
# Every error names its key.

ERRORS: list[tuple[str, Mutation, str]] = [
    ("site id pattern", _set(("sites", 0, "id"), "wind farm"), "sites[0].id"),
    ("duplicate site id", _set(("sites", 1, "id"), "wf"), "sites[1].id"),
    ("missing site name", _delete(("sites", 0, "name")), "sites[0].name"),
    ("bad timezone", _set(("sites", 0, "timezone"), "Europe/Lile"), "sites[0].timezone"),
    ("timezone is a folder", _set(("sites", 1, "timezone"), "Europe"), "sites[1].timezone"),
    ("latitude range", _set(("sites", 0, "latitude"), 91.0), "sites[0].latitude"),
    ("longitude range", _set(("sites", 0, "longitude"), -180.5), "sites[0].longitude"),
    ("latitude alone", _delete(("sites", 0, "longitude")), "sites[0].longitude"),
    ("structure unknown site", _set(("structures", 1, "site"), "nowhere"), "structures[1].site"),
    ("duplicate structure", _set(("structures", 1, "id"), "wtg"), "structures[1].id"),
    (
        "preload above proof",
        _set(("bolt_profiles", 0, "nominal_preload_kn"), 95.0),
        "bolt_profiles[0].nominal_preload_kn",
    ),
    (
        "proof load not positive",
        _set(("bolt_profiles", 0, "proof_load_kn"), 0),
        "bolt_profiles[0].proof_load_kn",
    ),
    (
        "diameter not positive",
        _set(("bolt_profiles", 1, "nominal_diameter_mm"), -36.0),
        "bolt_profiles[1].nominal_diameter_mm",
    ),
    (
        "nut factor min above max",
        _set(("bolt_profiles", 1, "nut_factor_min"), 0.2),
        "bolt_profiles[1].nut_factor_max",
    ),
    (
        "nut factor out of range",
        _set(("bolt_profiles", 0, "nut_factor_max"), 0.7),
        "bolt_profiles[0].nut_factor_max",
    ),
    ("joint unknown structure", _set(("joints", 0, "structure"), "wtg-9"), "joints[0].structure"),
    ("joint unknown profile", _set(("joints", 1, "bolt_profile"), "m20"), "joints[1].bolt_profile"),
    ("duplicate joint", _set(("joints", 1, "id"), "flange"), "joints[1].id"),
    ("unknown pattern", _set(("joints", 0, "pattern"), "spiral"), "joints[0].pattern"),
    ("unknown material", _set(("joints", 1, "material"), "wood"), "joints[1].material"),
    ("bolt_count zero", _set(("joints", 1, "bolt_count"), 0), "joints[1].bolt_count"),
    (
        "circular without pitch circle",
        _delete(("joints", 0, "pitch_circle_diameter_mm")),
        "joints[0].pitch_circle_diameter_mm",
    ),
    ("more bolts than positions", _set(("joints", 0, "bolt_count"), 2), "joints[0].bolts"),
    (
        "position above bolt_count",
        _set(("joints", 1, "bolts", 0, "position"), 9),
        "joints[1].bolts[0].position",
    ),
    (
        "position zero",
        _set(("joints", 0, "bolts", 2, "position"), 0),
        "joints[0].bolts[2].position",
    ),
    (
        "position not an integer",
        _set(("joints", 0, "bolts", 1, "position"), "one"),
        "joints[0].bolts[1].position",
    ),
    (
        "duplicate position",
        _set(("joints", 0, "bolts", 2, "position"), 7),
        "joints[0].bolts[2].position",
    ),
    (
        "device id pattern",
        _set(("joints", 0, "bolts", 0, "device_id"), "bolt 7!"),
        "joints[0].bolts[0].device_id",
    ),
    (
        "device id twice across joints",
        _set(("joints", 1, "bolts", 0, "device_id"), "b7"),
        "joints[1].bolts[0].device_id",
    ),
    (
        "machine reuses a bolt's id",
        _set(("machines", 0, "device_id"), "b1"),
        "machines[0].device_id",
    ),
    (
        "gateway reuses a machine's id",
        _set(("gateways", 0, "device_id"), "printer"),
        "gateways[0].device_id",
    ),
    (
        "angle out of range",
        _set(("joints", 0, "bolts", 0, "angle_deg"), 360.0),
        "joints[0].bolts[0].angle_deg",
    ),
    ("bolts as one table", _set(("joints", 1, "bolts"), {"position": 1}), "joints[1].bolts"),
    (
        "installation of unknown bolt",
        _append(("installations",), _record("b99")),
        "installations[2].device_id",
    ),
    (
        "installation of a machine",
        _append(("installations",), _record("printer")),
        "installations[2].device_id",
    ),
    (
        "installation without offset",
        _set(("installations", 1, "ts"), datetime(2025, 4, 10, 9, 12)),  # noqa: DTZ001 - the point
        "installations[1].ts",
    ),
    (
        "torque not positive",
        _set(("installations", 0, "torque_nm"), 0.0),
        "installations[0].torque_nm",
    ),
    (
        "preload not positive",
        _set(("installations", 0, "preload_kn"), -1.0),
        "installations[0].preload_kn",
    ),
    (
        "pass zero",
        _set(("installations", 0, "tightening_pass"), 0),
        "installations[0].tightening_pass",
    ),
    ("missing operator", _delete(("installations", 1, "operator")), "installations[1].operator"),
    (
        "calibration after tightening",
        _set(("installations", 0, "tool_calibrated"), date(2024, 9, 4)),
        "installations[0].tool_calibrated",
    ),
    (
        "calibration given as datetime",
        _set(("installations", 0, "tool_calibrated"), datetime(2024, 6, 20, tzinfo=UTC)),
        "installations[0].tool_calibrated",
    ),
    (
        "same tightening twice",
        _append(
            ("installations",),
            _record("b1", ts=datetime(2025, 4, 10, 11, 12, tzinfo=timezone(timedelta(hours=2)))),
        ),
        "installations[2].ts",
    ),
    ("machine kind cbolt", _set(("machines", 0, "kind"), "cbolt"), "machines[0].kind"),
    ("machine kind unknown", _set(("machines", 0, "kind"), "toaster"), "machines[0].kind"),
    ("machine unknown site", _set(("machines", 0, "site"), "wf2"), "machines[0].site"),
    ("gateway unknown site", _set(("gateways", 0, "site"), "lab2"), "gateways[0].site"),
    (
        "limit not a number",
        _set(("machines", 0, "limits", "bed_c_max"), "hot"),
        "machines[0].limits.bed_c_max",
    ),
    (
        "limit infinite",
        _set(("machines", 0, "limits", "bed_c_max"), float("inf")),
        "machines[0].limits.bed_c_max",
    ),
    (
        "limit name not snake_case",
        _set(("machines", 0, "limits", "Hotend Max"), 250.0),
        'machines[0].limits."Hotend Max"',
    ),
    ("sites not an array", _set(("sites",), {"id": "wf"}), "sites"),
]


@pytest.mark.parametrize(("mutate", "key"), [pytest.param(m, k, id=name) for name, m, k in ERRORS])
def test_each_error_names_its_key(mutate: Mutation, key: str) -> None:
    doc = _doc()
    mutate(doc)
    with pytest.raises(RegistryError) as info:
        parse_registry(doc)
    assert info.value.key == key
    assert info.value.reason
    assert str(info.value).startswith(f"{key}: ")


def test_error_cases_are_distinct_keys() -> None:
    assert len({key for _, _, key in ERRORS}) >= 12


@pytest.mark.parametrize(
    ("mutate", "key"),
    [
        (_set(("site",), [{"id": "x", "name": "X"}]), "site"),
        (_set(("sites", 1, "tz"), "UTC"), "sites[1].tz"),
        (_set(("joints", 0, "bolts", 1, "torque_nm"), 200), "joints[0].bolts[1].torque_nm"),
        (_set(("installations", 1, "operater"), "J."), "installations[1].operater"),
    ],
)
def test_unknown_key_is_rejected_by_name(mutate: Mutation, key: str) -> None:
    doc = _doc()
    mutate(doc)
    with pytest.raises(RegistryError) as info:
        parse_registry(doc)
    assert info.value.key == key
    assert "unknown key" in info.value.reason
    assert isinstance(info.value.__cause__, msgspec.ValidationError)


def test_unknown_key_lists_the_known_ones() -> None:
    doc = _doc()
    doc["sites"][0]["tz"] = "UTC"
    with pytest.raises(RegistryError, match=r"known: id, name, timezone, latitude, longitude"):
        parse_registry(doc)


def test_device_collision_says_where_it_was_first() -> None:
    doc = _doc()
    doc["machines"][0]["device_id"] = "s1"
    with pytest.raises(RegistryError, match=r"already declared at joints\[1\]\.bolts\[0\]"):
        parse_registry(doc)


# ---------------------------------------------------------------------------------------------
# Loading files.


def test_toml_syntax_error_names_file_and_line(tmp_path: Path) -> None:
    path = tmp_path / "registry.toml"
    path.write_text('[[sites]]\nid = "wf"\nname = "Wind farm\n', encoding="utf-8")
    with pytest.raises(RegistryError) as info:
        load_registry(path)
    assert info.value.key.startswith(f"{path}:3:")
    assert "TOML syntax error" in info.value.reason
    assert isinstance(info.value.__cause__, tomllib.TOMLDecodeError)


def test_toml_duplicate_key_names_its_line(tmp_path: Path) -> None:
    path = tmp_path / "registry.toml"
    path.write_text('[[sites]]\nid = "wf"\n\nid = "wf2"\nname = "x"\n', encoding="utf-8")
    with pytest.raises(RegistryError) as info:
        load_registry(str(path))
    assert info.value.key.startswith(f"{path}:4:")


def test_missing_file_names_the_file(tmp_path: Path) -> None:
    path = tmp_path / "nope.toml"
    with pytest.raises(RegistryError) as info:
        load_registry(path)
    assert info.value.key == str(path)
    assert isinstance(info.value.__cause__, FileNotFoundError)


def test_loaded_file_errors_use_keys_into_the_file(tmp_path: Path) -> None:
    path = tmp_path / "registry.toml"
    path.write_text(
        '[[sites]]\nid = "wf"\nname = "Wind farm"\nlocation = "north"\n', encoding="utf-8"
    )
    with pytest.raises(RegistryError) as info:
        load_registry(path)
    assert info.value.key == "sites[0].location"


def test_toml_datetimes_and_rfc3339_strings_both_load(tmp_path: Path) -> None:
    text = SAMPLE_REGISTRY_PATH.read_text(encoding="utf-8")
    reg = load_registry(SAMPLE_REGISTRY_PATH)
    assert 'ts = "2025-05-12T14:05:00Z"' in text
    stamps = [r.ts for r in reg.installations]
    assert all(ts.tzinfo is not None for ts in stamps)
    assert datetime(2025, 5, 12, 14, 5, tzinfo=UTC) in stamps
    local = tmp_path / "local.toml"
    local.write_text(text.replace("2025-04-10T09:12:00+02:00", "2025-04-10T09:12:00"), "utf-8")
    with pytest.raises(RegistryError) as info:
        load_registry(local)
    assert info.value.key == "installations[0].ts"


# ---------------------------------------------------------------------------------------------
# The shipped sample.


def test_sample_ships_inside_the_package() -> None:
    resource = files("sensors").joinpath("samples", "registry.toml")
    assert resource.is_file()
    assert not (SAMPLE_REGISTRY_PATH.parent / "__init__.py").exists()


def test_sample_locates_every_bolt_to_its_position() -> None:
    reg = load_registry(SAMPLE_REGISTRY_PATH)
    structures = {s.id: s for s in reg.structures}
    site_ids = {s.id for s in reg.sites}
    bolts = 0
    for joint in reg.joints:
        for b in joint.bolts:
            loc = reg.locate(b.device_id)
            assert loc is not None
            assert loc.kind is DeviceKind.CBOLT
            assert loc.joint == joint.id
            assert loc.structure == joint.structure
            assert loc.site == structures[joint.structure].site
            assert loc.site in site_ids
            assert loc.position == b.position
            assert 1 <= b.position <= joint.bolt_count
            bolts += 1
    assert bolts == sum(1 for d in reg.devices() if reg.kind_of(d) is DeviceKind.CBOLT)
    assert bolts >= 6


def test_sample_content_matches_its_description() -> None:
    reg = load_registry(SAMPLE_REGISTRY_PATH)
    assert {s.id for s in reg.sites} >= {"windfarm-north"}
    flange = next(j for j in reg.joints if j.id == "T1-flange-top")
    assert flange.pattern == "circular"
    assert flange.bolt_count == 12
    assert len(flange.bolts) == 4
    profiles = {p.id: p for p in reg.bolt_profiles}
    assert profiles[flange.bolt_profile].thread == "M36"
    assert profiles[flange.bolt_profile].grade == "10.9"
    m16 = next(p for p in reg.bolt_profiles if p.thread == "M16")
    assert m16.grade == "8.8"
    assert m16.proof_load_kn == pytest.approx(94.0, abs=1.0)
    structures = {s.id: s for s in reg.structures}
    assert structures[flange.structure].site == "windfarm-north"
    assert any(s.type == "bridge" for s in reg.structures)
    assert {m.kind for m in reg.machines} == {
        DeviceKind.PRINTER3D,
        DeviceKind.LASER_CUTTER,
        DeviceKind.CNC_MILL,
    }
    assert any(r.tightening_pass == 2 for r in reg.installations)
    for rec in reg.installations:
        info = reg.bolt(rec.device_id)
        assert info is not None
        k = reg.nut_factor(rec)
        assert info.profile.nut_factor_min <= k <= info.profile.nut_factor_max, rec.device_id


def test_sample_retightened_bolt_has_one_history() -> None:
    reg = load_registry(SAMPLE_REGISTRY_PATH)
    retightened = [r.device_id for r in reg.installations if r.tightening_pass == 2]
    history = reg.history(retightened[0])
    assert [r.tightening_pass for r in history] == [1, 2]
    assert history[0].ts < history[1].ts


# ---------------------------------------------------------------------------------------------
# Lookups.


def test_circular_angles_are_computed_unless_given() -> None:
    reg = parse_registry(_doc())
    angles = {b.position: b.angle_deg for b in reg.joint_bolts("flange")}
    assert angles == {1: 0.0, 4: 92.5, 7: 180.0}
    loc = reg.locate("b7")
    assert loc is not None
    assert loc.angle_deg == 180.0
    assert {b.position: b.angle_deg for b in reg.joints[0].bolts} == angles


def test_circular_angle_uses_bolt_count() -> None:
    doc = _doc()
    doc["joints"][0]["bolt_count"] = 8
    reg = parse_registry(doc)
    assert [b.angle_deg for b in reg.joint_bolts("flange")] == [0.0, 92.5, 270.0]


def test_non_circular_pattern_has_no_angle() -> None:
    reg = parse_registry(_doc())
    info = reg.bolt("s1")
    assert info is not None
    assert info.angle_deg is None
    assert info.joint.id == "splice"
    assert info.profile.id == "m16"
    assert (info.site, info.structure, info.position) == ("wf", "deck", 1)


def test_joint_bolts_are_sorted_by_position() -> None:
    reg = parse_registry(_doc())
    assert [b.device_id for b in reg.joint_bolts("flange")] == ["b1", "b4", "b7"]
    with pytest.raises(KeyError):
        reg.joint_bolts("no-such-joint")


def test_history_is_sorted_by_time_then_pass() -> None:
    doc = _doc()
    paris = timezone(timedelta(hours=2))
    doc["installations"] = [
        _record("b7", ts=datetime(2025, 6, 1, 8, 0, tzinfo=UTC), tightening_pass=3),
        _record("b7", ts=datetime(2025, 4, 10, 9, 30, tzinfo=paris), tightening_pass=2),
        _record("b7", ts="2025-04-10T07:30:00Z", tightening_pass=1),
        _record("b1"),
    ]
    reg = parse_registry(doc)
    history = reg.history("b7")
    assert [r.tightening_pass for r in history] == [1, 2, 3]
    assert history[0].ts == history[1].ts
    info = reg.bolt("b7")
    assert info is not None
    assert list(info.history) == history
    assert [r.device_id for r in reg.history("b1")] == ["b1"]
    assert reg.history("b4") == []
    assert reg.history("printer") == []
    assert reg.history("nobody") == []


def test_nut_factor_uses_the_bolts_profile() -> None:
    reg = parse_registry(_doc())
    m16 = reg.history("s1")[0]
    assert (m16.torque_nm, m16.preload_kn) == (200.0, 62.5)
    assert reg.nut_factor(m16) == pytest.approx(0.2)
    m36 = reg.history("b1")[0]
    assert reg.nut_factor(m36) == pytest.approx(2100.0 / (470_000.0 * 0.036))


def test_nut_factor_of_an_unregistered_bolt_raises() -> None:
    reg = parse_registry(_doc())
    rec = msgspec.structs.replace(reg.history("s1")[0], device_id="elsewhere")
    with pytest.raises(KeyError):
        reg.nut_factor(rec)


def test_kinds_and_locations_of_every_device() -> None:
    reg = parse_registry(_doc())
    assert reg.kind_of("b1") is DeviceKind.CBOLT
    assert reg.kind_of("printer") is DeviceKind.PRINTER3D
    assert reg.kind_of("gw") is DeviceKind.GATEWAY
    assert reg.kind_of("nobody") is None
    printer = reg.locate("printer")
    assert printer is not None
    assert (printer.site, printer.structure, printer.joint, printer.position) == (
        "lab",
        None,
        None,
        None,
    )
    assert reg.locate("nobody") is None
    assert reg.bolt("printer") is None
    assert reg.machines[0].limits == {"hotend_c_max": 275.0, "bed_c_max": 120.0}


def test_defaults_are_applied() -> None:
    reg = parse_registry(_doc())
    lab = reg.sites[1]
    assert lab.timezone == "UTC"
    assert (lab.latitude, lab.longitude) == (None, None)
    assert reg.sites[0].zone().key == "Europe/Paris"
    m16 = reg.bolt_profiles[0]
    assert (m16.nut_factor_min, m16.nut_factor_max) == (0.10, 0.30)
    assert all(r.tightening_pass == 1 for r in reg.installations)


def test_tables_are_frozen() -> None:
    reg = parse_registry(_doc())
    with pytest.raises(AttributeError):
        reg.sites[0].name = "renamed"  # type: ignore[misc]


@pytest.mark.parametrize("registry", [Registry.empty(), parse_registry({})])
def test_empty_registry_is_valid(registry: Registry) -> None:
    assert registry.devices() == []
    assert registry.sites == ()
    assert registry.locate("b1") is None
    assert registry.kind_of("b1") is None
    assert registry.history("b1") == []


def test_parse_does_not_change_its_input() -> None:
    doc = _doc()
    before = copy.deepcopy(doc)
    parse_registry(doc)
    assert doc == before


def test_unknown_choice_lists_the_allowed_ones() -> None:
    doc = _doc()
    doc["joints"][0]["pattern"] = "spiral"
    with pytest.raises(RegistryError, match=r"one of: circular, linear, grid"):
        parse_registry(doc)
