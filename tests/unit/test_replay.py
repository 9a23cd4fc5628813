"""``boltwatch replay``: offline, causal scoring of recorded CSV files."""

from __future__ import annotations

import csv
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

from boltwatch.cli import app
from detection.base import DetectionError
from detection.replay import parse_timestamps
from firmware_sim.offline import write_outputs
from firmware_sim.scenario import load_scenario, run_scenario

runner = CliRunner()


def _read(path: Path) -> tuple[list[str], list[list[str]]]:
    with path.open(newline="") as f:
        rows = list(csv.reader(f))
    return rows[0], rows[1:]


@pytest.fixture(scope="module")
def sim_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("sim")
    write_outputs(run_scenario(load_scenario("demo"), seed=3), out)
    return out


def test_timestamps_in_every_documented_form() -> None:
    ts = parse_timestamps(
        ["2026-03-01T00:05:00Z", "2026-03-01 00:05:00", "2026-03-01T01:05:00+01:00", "1772323500"]
    )
    assert ts.tolist() == [1772323500.0] * 4
    with pytest.raises(DetectionError, match="row 2"):
        parse_timestamps(["1772323500", "yesterday"])


def test_cbolt_replay_keeps_every_row_and_column(sim_dir: Path, tmp_path: Path) -> None:
    out = tmp_path / "scored.csv"
    result = runner.invoke(
        app, ["replay", str(sim_dir / "cbolt.csv"), "--kind", "cbolt", "--out", str(out)]
    )
    assert result.exit_code == 0, result.output
    header_in, rows_in = _read(sim_dir / "cbolt.csv")
    header_out, rows_out = _read(out)
    assert header_out == [*header_in, "anomaly_score", "alert"]
    assert [r[: len(header_in)] for r in rows_out] == rows_in
    scores = np.array([float(r[-2]) for r in rows_out])
    assert np.all((scores >= 0) & (scores <= 1))
    alerts = {r[-1] for r in rows_out}
    assert "loosening" in alerts  # the demo has a loosening bolt
    loose_devices = {r[1] for r in rows_out if r[-1] == "loosening"}
    assert all("loose" in d or "vib" in d for d in loose_devices), loose_devices
    assert "scored" in result.output


def test_replay_is_causal_by_truncation(sim_dir: Path, tmp_path: Path) -> None:
    header, rows = _read(sim_dir / "cbolt.csv")
    cut = len(rows) * 2 // 3
    part = tmp_path / "part.csv"
    with part.open("w", newline="") as f:
        w = csv.writer(f, lineterminator="\n")
        w.writerow(header)
        w.writerows(rows[:cut])
    full_out, part_out = tmp_path / "full-out.csv", tmp_path / "part-out.csv"
    for src, dst in ((sim_dir / "cbolt.csv", full_out), (part, part_out)):
        r = runner.invoke(app, ["replay", str(src), "--kind", "cbolt", "--out", str(dst)])
        assert r.exit_code == 0, r.output
    assert _read(part_out)[1] == _read(full_out)[1][:cut]


def test_machine_kind_replay(sim_dir: Path, tmp_path: Path) -> None:
    out = tmp_path / "printer.csv"
    r = runner.invoke(
        app, ["replay", str(sim_dir / "printer3d.csv"), "-k", "printer3d", "-o", str(out)]
    )
    assert r.exit_code == 0, r.output
    _, rows = _read(out)
    assert any(row[-1] for row in rows)  # the demo's printer runs away


def test_univariate_and_multivariate(tmp_path: Path) -> None:
    rng = np.random.default_rng(1)
    n = 2_000
    values = 20 + rng.normal(0, 0.5, n)
    values[1500:1520] += 15
    uni = tmp_path / "uni.csv"
    with uni.open("w", newline="") as f:
        w = csv.writer(f, lineterminator="\n")
        w.writerow(["timestamp", "value"])
        for i, v in enumerate(values):
            w.writerow([1_772_323_200 + 60 * i, f"{v:.3f}"])
    out = tmp_path / "uni-out.csv"
    r = runner.invoke(app, ["replay", str(uni), "--kind", "univariate", "--out", str(out)])
    assert r.exit_code == 0, r.output
    _, rows = _read(out)
    flagged = [i for i, row in enumerate(rows) if row[-1]]
    assert flagged
    assert all(1500 <= i < 1530 for i in flagged)

    multi = tmp_path / "multi.csv"
    a = rng.normal(0, 1, n)
    b = 2 * a + rng.normal(0, 0.1, n)
    b[1600:1700] = -2 * a[1600:1700]  # the relation between the channels breaks
    with multi.open("w", newline="") as f:
        w = csv.writer(f, lineterminator="\n")
        w.writerow(["timestamp", "pressure", "flow"])
        for i in range(n):
            w.writerow([f"2026-03-01 00:{i // 60 % 60:02d}:{i % 60:02d}", a[i], b[i]])
    out = tmp_path / "multi-out.csv"
    r = runner.invoke(app, ["replay", str(multi), "--kind", "multivariate", "--out", str(out)])
    assert r.exit_code == 0, r.output
    _, rows = _read(out)
    scores = np.array([float(row[-2]) for row in rows])
    assert scores[1600:1700].mean() > scores[500:1500].mean() + 0.2


@pytest.mark.parametrize(
    ("content", "kind", "message"),
    [
        ("timestamp,device_id,temp_c\n2026-03-01T00:00:00Z,b1,3\n", "cbolt", "preload_kn"),
        ("time,value\n1,2\n", "univariate", "timestamp"),
        ("timestamp,value\n1,2\n2,abc\n", "univariate", "row 2"),
        ("timestamp,value\n1,2\n", "bogus", "known:"),
    ],
)
def test_bad_input_is_one_clear_line(tmp_path: Path, content: str, kind: str, message: str) -> None:
    src = tmp_path / "in.csv"
    src.write_text(content)
    r = runner.invoke(app, ["replay", str(src), "--kind", kind, "--out", str(tmp_path / "o.csv")])
    assert r.exit_code == 2
    assert message in r.output
    assert "Traceback" not in r.output
    assert not (tmp_path / "o.csv").exists()


def test_evaluate_prints_the_tables(tmp_path: Path) -> None:
    import json

    r = runner.invoke(
        app, ["evaluate", "--seeds", "1", "-s", "sudden-loss", "-s", "demo", "--json"]
    )
    assert r.exit_code == 0, r.output
    report = json.loads(r.output)
    rows = {row["scenario"]: row for row in report["bolts"]}
    assert rows["sudden-loss"]["recall"] == "2/2"
    # Three readings confirm a step (two spikes in a row are common), as the rule's three
    # samples: a sudden loss is caught when the rule fires, within the half hour.
    assert float(rows["sudden-loss"]["delay h"]) <= 0.5
    assert rows["all"]["loose"] == "2"  # the demo scenario counts as a machine scenario here
    assert any(m["kind"] == "printer3d" for m in report["machines"])
    if report["skab"]:
        assert report["skab"][0]["f1"] >= report["skab"][-1]["f1"]
        assert any(s["algorithm"].startswith("boltwatch") for s in report["skab"])
    else:  # a checkout without ../shared/data/skab
        assert "not found" in report["skab_note"]
    bad = runner.invoke(app, ["evaluate", "-s", "nope"])
    assert bad.exit_code == 2
    assert "nope" in bad.output
