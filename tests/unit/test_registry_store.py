"""The registry kept in the store: import (validated, idempotent, reporting what changed), export
back to TOML, the audit history, and `boltwatch run` using the registry in force."""

from __future__ import annotations

import tomllib
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner

from boltwatch.cli import app
from boltwatch.config import parse_config
from boltwatch.run import _registry
from firmware_sim.scenario import scenario_registry
from sensors.errors import RegistryError
from sensors.registry import SAMPLE_REGISTRY_PATH, load_registry, parse_registry
from sensors.registry_store import RegistryStore, diff, to_toml

_DEMO = scenario_registry("demo")
assert _DEMO is not None  # the demo ships its registry
DEMO: Path = _DEMO
T = 1_772_323_200_000


def _count(reg_file: object) -> int:
    return sum(
        len(getattr(reg_file, t))
        for t in (
            "sites",
            "structures",
            "bolt_profiles",
            "joints",
            "installations",
            "machines",
            "gateways",
        )
    )


@pytest.mark.parametrize("path", [SAMPLE_REGISTRY_PATH, DEMO], ids=["sample", "demo"])
def test_export_reads_back_to_the_same_registry(path: Path) -> None:
    reg = load_registry(path)
    again = parse_registry(tomllib.loads(to_toml(reg.file)))
    assert again.file == reg.file
    assert diff(reg.file, again.file) == []


def test_import_is_validated_idempotent_and_audited(tmp_path: Path) -> None:
    sample = load_registry(SAMPLE_REGISTRY_PATH)
    with RegistryStore(tmp_path, clock=lambda: T) as db:
        assert db.current() is None
        version, changes = db.put(sample, author="ann", source="import sample")
        assert version == 1
        assert {c.what for c in changes} == {"added"}
        assert len(changes) == _count(sample.file)
        assert db.current().file == sample.file  # type: ignore[union-attr]
        # The same registry again: nothing written.
        assert db.put(sample, author="bob", source="import sample") == (1, [])
        assert [v.version for v in db.versions()] == [1]
        # A machine renamed, a gateway removed: two changes, each with before and after.
        data = tomllib.loads(SAMPLE_REGISTRY_PATH.read_text())
        data["machines"][0]["name"] = "Printer 1 (back bench)"
        gone = data["gateways"].pop()["device_id"]
        version, changes = db.put(parse_registry(data), author="bob", source="api")
        assert version == 2
        assert [str(c) for c in changes] == [
            f"changed machine {data['machines'][0]['device_id']}",
            f"removed gateway {gone}",
        ]
        renamed = changes[0]
        assert renamed.before is not None
        assert "front bench" in renamed.before
        assert renamed.after is not None
        assert "back bench" in renamed.after
        lines = db.history("machines", data["machines"][0]["device_id"])
        assert [(c.version, c.what, c.author) for c in lines] == [
            (1, "added", "ann"),
            (2, "changed", "bob"),
        ]
        with pytest.raises(RegistryError, match="author"):
            db.put(sample, author=" ", source="api")
    # Another process sees the same registry in force.
    with RegistryStore(tmp_path) as other:
        assert other.current().file.gateways == tuple(  # type: ignore[union-attr]
            g for g in sample.file.gateways if g.device_id != gone
        )


def test_the_command_line_imports_exports_and_lists_the_history(tmp_path: Path) -> None:
    runner = CliRunner()
    store = tmp_path / "data"
    first = runner.invoke(
        app, ["registry", "import", str(DEMO), "--author", "ann", "--store", str(store)]
    )
    assert first.exit_code == 0, first.output
    assert "added joint splice-1" in first.output
    assert "registry version 1 in force" in first.output
    exported = tmp_path / "exported.toml"
    done = runner.invoke(app, ["registry", "export", "--store", str(store), "--out", str(exported)])
    assert done.exit_code == 0, done.output
    assert load_registry(exported).file == load_registry(DEMO).file
    again = runner.invoke(
        app, ["registry", "import", str(exported), "--author", "bob", "--store", str(store)]
    )
    assert again.exit_code == 0
    assert "registry unchanged (version 1)" in again.output
    # A broken file: one line naming the key, exit 2, nothing changed.
    bad = tmp_path / "bad.toml"
    bad.write_text(DEMO.read_text().replace('pattern = "circular"', 'pattern = "spiral"'))
    refused = runner.invoke(
        app, ["registry", "import", str(bad), "--author", "bob", "--store", str(store)]
    )
    assert refused.exit_code == 2
    assert "joints[0].pattern" in refused.output
    assert "Traceback" not in refused.output
    history = runner.invoke(
        app, ["registry", "history", "--store", str(store), "--table", "joints"]
    )
    assert history.exit_code == 0
    assert "splice-1" in history.output
    assert "ann" in history.output
    empty = runner.invoke(app, ["registry", "export", "--store", str(tmp_path / "none")])
    assert empty.exit_code == 2
    assert "holds no registry yet" in empty.output


def test_the_service_uses_the_registry_in_force_unless_the_config_names_a_file(
    tmp_path: Path,
) -> None:
    config = parse_config({"store": {"path": str(tmp_path / "data")}}, environ={})
    assert _registry(config) is None
    assert not (tmp_path / "data").exists()  # looking did not create a store
    with RegistryStore(tmp_path / "data") as db:
        db.put(load_registry(DEMO), author="ann", source="test")
    in_force = _registry(config)
    assert in_force is not None
    assert in_force.file == load_registry(DEMO).file
    named = parse_config(
        {
            "store": {"path": str(tmp_path / "data")},
            "registry": {"path": str(SAMPLE_REGISTRY_PATH)},
        },
        environ={},
    )
    assert _registry(named).file == load_registry(SAMPLE_REGISTRY_PATH).file  # type: ignore[union-attr]


def test_the_api_puts_and_removes_entries_validated_and_audited(tmp_path: Path) -> None:
    from alerts.api import create_app
    from alerts.store import AlertStore
    from tests.api_server import ApiServer
    from tests.unit.test_alerts_api import TOKEN, http

    registry = RegistryStore(tmp_path / "data")
    registry.put(load_registry(DEMO), author="ann", source="import")
    with AlertStore(tmp_path / "alerts.db") as alerts:
        app = create_app(alerts, token=TOKEN, clock=lambda: T, registry=registry)
        with ApiServer(app) as server:
            base = server.url + "/api/registry"
            status, body = http("GET", base)
            assert status == 200
            assert body["version"] == 1
            assert [j["id"] for j in body["registry"]["joints"]] == ["splice-1"]
            printer = {
                "device_id": "printer-2",
                "site": "demo-site",
                "kind": "printer3d",
                "model": "Prusa MK4",
                "name": "Printer 2",
            }
            status, body = http("PUT", f"{base}/machines/printer-2", printer)
            assert status == 200, body
            assert body["version"] == 2
            assert [(c["what"], c["table"], c["key"]) for c in body["changes"]] == [
                ("added", "machines", "printer-2")
            ]
            assert "next start" in body["applies"]
            # Invalid edits: the field is named, nothing changes.
            joint = next(j for j in msgspec_builtins(registry)["joints"] if j["id"] == "splice-1")
            bad = [
                ({**joint, "pattern": "spiral"}, "joints[splice-1].pattern"),
                ({**joint, "bolt_profile": "nope"}, "joints[splice-1].bolt_profile"),
                (
                    {
                        **joint,
                        "bolts": [*joint["bolts"][:-1], {**joint["bolts"][-1], "position": 9}],
                    },
                    "joints[splice-1].bolts[7].position",
                ),
                ({**joint, "id": "splice-2"}, "joints[splice-1]"),
            ]
            for entry, key in bad:
                status, body = http("PUT", f"{base}/joints/splice-1", entry)
                assert status == 422, (key, body)
                assert body["error"].startswith(key), body
            status, body = http("DELETE", f"{base}/bolt_profiles/M16-8_8")
            assert status == 422  # a joint uses it
            assert "bolt_profile" in body["error"]
            assert [v.version for v in registry.versions()] == [1, 2]
            status, body = http("DELETE", f"{base}/machines/printer-2")
            assert status == 200
            assert body["changes"][0]["what"] == "removed"
            assert http("DELETE", f"{base}/machines/printer-2")[0] == 404
            assert http("PUT", f"{base}/nothing/x", printer)[0] == 404
            assert http("GET", f"{base}/history?table=nothing")[0] == 422
            status, body = http("GET", f"{base}/history?table=machines&key=printer-2")
            assert [(c["version"], c["what"], c["author"]) for c in body["changes"]] == [
                (2, "added", "api"),
                (3, "removed", "api"),
            ]
            assert http("GET", base, token=None)[0] == 401
    registry.close()


def msgspec_builtins(store: RegistryStore) -> dict[str, list[dict[str, Any]]]:
    import msgspec

    current = store.current()
    assert current is not None
    data: dict[str, list[dict[str, Any]]] = msgspec.to_builtins(current.file)
    return data


def test_the_running_service_follows_a_registry_edited_in_the_store(tmp_path: Path) -> None:
    """The engine the service runs gets the new registry between batches: a bolt moved to a new
    joint is placed there, without a restart."""
    import json

    from boltwatch.wiring import RegistryFollower
    from detection.engine import Engine
    from detection.preload import BoltPreloadDetector
    from sensors.codec import TelemetryDecoder

    store = RegistryStore(tmp_path / "data")
    demo = load_registry(DEMO)
    store.put(demo, author="ann", source="import")
    engine = Engine({"cbolt": BoltPreloadDetector()}, registry=store.current())
    msgs = [
        (
            f"boltwatch/v1/demo-site/cbolt/{b.device_id}/telemetry",
            json.dumps({"ts": T, "seq": 1, "preload_kn": 60.0}).encode(),
        )
        for b in demo.joint_bolts("splice-1")
    ]
    engine.process_batch(TelemetryDecoder().decode_batch(msgs))
    detector = engine.detectors["cbolt"]
    assert isinstance(detector, BoltPreloadDetector)
    assert detector.joints.joints == ["splice-1"]
    applied: list[object] = []
    follower = RegistryFollower(store, store.version(), [engine.use_registry, applied.append])
    assert follower.check() is None  # nothing new
    data = tomllib.loads(DEMO.read_text())
    moved = data["joints"][0]["bolts"].pop()
    data["joints"].append(
        {
            **{k: v for k, v in data["joints"][0].items() if k != "bolts"},
            "id": "splice-2",
            "name": "Second flange",
            "bolts": [{**moved, "position": 1}],
        }
    )
    store.put(parse_registry(data), author="bob", source="api")
    assert follower.check() == 2
    assert follower.check() is None
    assert engine.registry is applied[0]
    assert sorted(detector.joints.joints) == ["splice-1", "splice-2"]
    store.close()
