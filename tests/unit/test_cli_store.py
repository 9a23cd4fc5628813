"""`boltwatch stats|export|deadletters` on a real store file."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from boltwatch.cli import app
from ingest.store import DeadLetter, Store
from sensors.codec import TelemetryDecoder
from sensors.examples import EXAMPLES, T0

runner = CliRunner()


@pytest.fixture
def store_dir(tmp_path: Path) -> Path:
    path = tmp_path / "store"
    decoder = TelemetryDecoder(clock=lambda: T0 / 1000 + 60)
    batch = decoder.decode_batch((e.topic, e.payload) for e in EXAMPLES)
    dead = [
        DeadLetter(EXAMPLES[i].topic, EXAMPLES[i].payload, err.field, err.reason, T0 + 1_000)
        for i, err in batch.errors
    ]
    # A message rejected only because it came from a device the registry did not know then:
    # valid today, so `deadletters replay` must store it.
    dead.append(
        DeadLetter(
            "boltwatch/v1/bridge-a/cbolt/bolt-0099/telemetry",
            b'{"ts": %d, "seq": 5, "preload_kn": 44.5}' % T0,
            "device_id",
            "unknown device 'bolt-0099' (strict registry)",
            T0 + 2_000,
        )
    )
    with Store(path) as store:
        store.write(batch, dead, received_ms=T0 + 1_000)
    return path


def test_stats_json(store_dir: Path) -> None:
    result = runner.invoke(app, ["stats", "--store", str(store_dir), "--json"])
    assert result.exit_code == 0, result.output
    data = json.loads(result.output)
    assert data["readings"] == 13
    assert data["devices"] >= 8
    rejected = sum(1 for e in EXAMPLES if e.rejected_because)
    assert sum(data["dead_letters"].values()) == rejected + 1
    text = runner.invoke(app, ["stats", "--store", str(store_dir)], env={"COLUMNS": "200"})
    assert "readings 13" in text.output


def test_export_is_the_replay_format(store_dir: Path, tmp_path: Path) -> None:
    out = tmp_path / "bolts.csv"
    result = runner.invoke(
        app, ["export", "--store", str(store_dir), "--out", str(out), "--device", "bolt-0007"]
    )
    assert result.exit_code == 0, result.output
    lines = out.read_text().splitlines()
    assert lines[0] == "timestamp,device_id,preload_kn,temp_c,torque_nm,battery_v"
    assert lines[1].startswith("2026-03-01T00:05:00Z,bolt-0007,61.84,11.5,")
    assert len(lines) == 1 + 4
    since = runner.invoke(
        app,
        ["export", "--store", str(store_dir), "--out", "-", "--since", "2026-03-01T00:12:00Z"],
    )
    assert since.exit_code == 0
    assert "00:05:00Z" not in since.stdout
    bad = runner.invoke(app, ["export", "--store", str(store_dir), "--out", "-", "--since", "soon"])
    assert bad.exit_code == 2


def test_deadletters_list_and_replay(store_dir: Path) -> None:
    listed = runner.invoke(
        app, ["deadletters", "list", "--store", str(store_dir)], env={"COLUMNS": "250"}
    )
    assert listed.exit_code == 0, listed.output
    assert "spoofed" in listed.output
    replayed = runner.invoke(app, ["deadletters", "replay", "--store", str(store_dir)])
    assert replayed.exit_code == 0, replayed.output
    assert "1 now valid" in replayed.output
    with Store(store_dir) as store:
        assert store.stats().readings == 14
        pending = store.dead_letters(limit=100)
    assert all("strict registry" not in d.reason for d in pending)


def test_missing_store_is_a_clear_error(tmp_path: Path) -> None:
    result = runner.invoke(app, ["stats", "--store", str(tmp_path / "nope")])
    assert result.exit_code == 2
    assert "not a boltwatch store" in result.output
