"""The registry kept in the store: import (validated, idempotent, reporting what changed), export
back to TOML, the audit history, and `boltwatch run` using the registry in force."""

from __future__ import annotations

import tomllib
from pathlib import Path

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
