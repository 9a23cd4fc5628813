"""The audit reports as a reader gets them: each PDF is rendered to PNG pages with Debian's
poppler-utils (``pdftoppm``) and its text read back with ``pdftotext``.

The store holds three days of a flange's bolts (the sample registry's ``T1-flange-top``): one
steady, one losing preload after a retightening, one silent for six hours, one that never
reported; an acknowledged loosening alert and an active ``no_data`` one; a retightening
campaign done, one overdue, and two that are not the joint's or the period's. The reports are
made through :class:`ConsoleSource`, as the console and the CLI make them.
"""

from __future__ import annotations

import json
import re
import shutil
import subprocess
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from typer.testing import CliRunner

from alerts.pipeline import AlertMetrics, AlertPipeline
from alerts.rules import load_rules
from alerts.store import AlertStore
from boltwatch.cli import app
from boltwatch.config import parse_config
from boltwatch.run import build_engine
from dashboards.console import BoltLevel, ConsoleSource
from dashboards.report import (
    CampaignSummary,
    ReportError,
    Scope,
    TaskSummary,
    find_gaps,
    fleet_report,
    joint_report,
)
from dashboards.report.gaps import MIN_GAP_MS
from detection.engine import SNAPSHOT_FILE
from detection.events import BatchOutcome, DetectionEvent, EventKind, Severity
from ingest.store import Store
from sensors.codec import TelemetryDecoder
from sensors.registry import load_registry

SAMPLE_REGISTRY = Path(__file__).parents[2] / "sensors" / "samples" / "registry.toml"
T0 = 1_772_323_200_000  # 2026-03-01T00:00:00Z
HOUR = 3_600_000
DAY = 24 * HOUR
END = T0 + 3 * DAY
JOINT = "T1-flange-top"
STEADY, LOSING, GAPPY, MUTE = (f"cb-wtg07-t1-p{p:02d}" for p in (1, 4, 7, 10))
BASELINES = {STEADY: 470.0, LOSING: 465.0, GAPPY: 478.0}
RETIGHTENED_MS = T0 + 2 * HOUR
ALERT_MS = T0 + 40 * HOUR
ACK_MS = T0 + 41 * HOUR
GAP = (T0 + 30 * HOUR, T0 + 36 * HOUR)  # GAPPY's last reading before its silence, first after
RED = (0xE5, 0x39, 0x35)  # the console's colour of a bolt below 70 % of settled

pytestmark = pytest.mark.skipif(
    shutil.which("pdftoppm") is None or shutil.which("pdftotext") is None,
    reason="poppler-utils (pdftoppm, pdftotext) missing: make test installs it",
)

CAMPAIGNS = (
    CampaignSummary(
        7,
        "WO-2026-031 flange retightening",
        "done",
        T0 + HOUR,
        "marie",
        "k.nowak",
        T0 + DAY,
        T0 + 3 * HOUR,
        (TaskSummary(LOSING, "done", 301.2, RETIGHTENED_MS, "k.nowak", 2100.0, 468.4, 465.0),),
    ),
    CampaignSummary(
        8,
        "Quarterly flange check",
        "open",
        T0 + 5 * HOUR,
        "marie",
        "",
        T0 + 2 * DAY,
        None,
        (TaskSummary(STEADY, "open"),),
    ),
    # Not the joint's: a bolt of the bridge.
    CampaignSummary(
        9,
        "Splice plate survey",
        "open",
        T0,
        "paul",
        "",
        None,
        None,
        (TaskSummary("cb-oa12-g2-p1", "open"),),
    ),
    # Closed before the period.
    CampaignSummary(
        10,
        "Last year's retightening",
        "done",
        T0 - 40 * DAY,
        "paul",
        "",
        None,
        T0 - 39 * DAY,
        (TaskSummary(STEADY, "done", 400.0, None, "", None, 470.0, None),),
    ),
)


def _preload(dev: str, ms: int) -> float:
    """The steady bolts at their baselines; LOSING loses 1.2 % of it an hour from hour 24, down
    to ~43 % at the end (below the 70 % line, above the 30 % one)."""
    if dev == LOSING:
        hours = (ms - T0) / HOUR
        return 465.0 * (1 - 0.012 * max(0.0, hours - 24.0))
    return BASELINES[dev]


def _messages() -> list[tuple[str, bytes]]:
    rng = np.random.default_rng(7)
    out = []
    for dev in (STEADY, LOSING, GAPPY):
        for seq, ms in enumerate(range(T0, END, 600_000)):
            if dev == GAPPY and GAP[0] < ms < GAP[1]:
                continue
            value = round(_preload(dev, ms) + rng.normal(0, 0.3), 2)
            reading = {"ts": ms, "seq": seq, "preload_kn": value}
            topic = f"boltwatch/v1/windfarm-north/cbolt/{dev}/telemetry"
            out.append((topic, json.dumps(reading).encode()))
    tightened = {
        "type": "tightened",
        "ts": RETIGHTENED_MS,
        "seq": 100_000,
        "torque_nm": 2100,
        "preload_kn": 468.4,
        "tool": "HYTORC-XLCT-4",
        "operator": "k.nowak",
        "tightening_pass": 3,
    }
    out.append(
        (f"boltwatch/v1/windfarm-north/cbolt/{LOSING}/event", json.dumps(tightened).encode())
    )
    return out


def _event(device: str, kind: EventKind, severity: Severity) -> DetectionEvent:
    return DetectionEvent(
        device_id=device,
        kind=kind,
        severity=severity,
        ts_ms=ALERT_MS,
        score=0.9,
        explanation=f"{kind.value} on {device}",
        detector="test",
        site="windfarm-north",
        data={},
        device_kind="cbolt",
    )


class Env:
    """A store folder as ``boltwatch run`` leaves it, and the console's source over it."""

    def __init__(self, folder: Path) -> None:
        self.folder = folder
        store = Store(folder)
        batch = TelemetryDecoder(clock=lambda: END / 1000).decode_batch(_messages())
        assert not batch.errors
        store.write(batch, [], received_ms=END)
        store.rollup(now_ms=END)
        store.close()
        self.readings = Store(folder)
        self.alerts = AlertStore(folder / "alerts.db")
        now = [ALERT_MS]
        pipe = AlertPipeline(
            load_rules(None), self.alerts, {}, clock=lambda: now[0], metrics=AlertMetrics()
        )
        pipe.take(
            BatchOutcome(
                events=[
                    _event(LOSING, EventKind.LOOSENING, Severity.MAJOR),
                    _event(MUTE, EventKind.NO_DATA, Severity.WARNING),
                ]
            )
        )
        now[0] = ALERT_MS + HOUR  # past every rule's `for`: both active
        pipe.evaluate()
        ids = {a.device_id: a.id for a in self.alerts.alerts()}
        assert self.alerts.acknowledge(ids[LOSING], "marie", ACK_MS) is not None
        self.registry = load_registry(SAMPLE_REGISTRY)
        self.levels = {d: BoltLevel(_preload(d, END) / b, True, b) for d, b in BASELINES.items()}

    def source(self, *, settled: bool = True) -> ConsoleSource:
        levels = self.levels if settled else {}
        return ConsoleSource(
            self.readings, self.alerts, self.registry, clock=lambda: END, levels=lambda: levels
        )

    def close(self) -> None:
        self.alerts.close()
        self.readings.close()


@pytest.fixture(scope="module")
def env(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Env]:
    e = Env(tmp_path_factory.mktemp("report") / "data")
    yield e
    e.close()


@pytest.fixture(scope="module")
def joint_pdf(env: Env) -> bytes:
    return joint_report(env.source(), JOINT, T0, END, CAMPAIGNS)


def _pages(pdf: bytes, folder: Path, dpi: int = 50) -> list[Image.Image]:
    """The PDF's pages as poppler renders them."""
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "r.pdf").write_bytes(pdf)
    subprocess.run(
        ["pdftoppm", "-png", "-r", str(dpi), str(folder / "r.pdf"), str(folder / "page")],
        check=True,
        capture_output=True,
    )
    files = sorted(folder.glob("page-*.png"))
    return [Image.open(f).convert("RGB") for f in files]


def _text(pdf: bytes, folder: Path) -> str:
    """The PDF's text as pdftotext reads it, in the order it was written (``-raw``: a table's
    row is one line, its cells one space apart)."""
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "t.pdf").write_bytes(pdf)
    done = subprocess.run(
        ["pdftotext", "-raw", str(folder / "t.pdf"), "-"],
        check=True,
        capture_output=True,
        text=True,
    )
    return done.stdout


def _row(text: str, start: str) -> str:
    """The first line of the text that starts with ``start`` (a table row's first cells)."""
    found = next((ln for ln in text.splitlines() if ln.startswith(start)), None)
    assert found is not None, f"no line starts with {start!r}"
    return found


def _reds(page: Image.Image) -> int:
    """Pixels of the console's < 70 % red."""
    px = np.asarray(page, dtype=np.int32)
    return int((np.abs(px - np.array(RED)).sum(axis=2) < 40).sum())


def test_joint_report_renders_to_pages_that_are_not_blank(joint_pdf: bytes, tmp_path: Path) -> None:
    assert joint_pdf.startswith(b"%PDF-")
    pages = _pages(joint_pdf, tmp_path)
    # Facts and drawing, four preload plots, then the tables.
    assert len(pages) >= 3
    for page in pages:
        grey = np.asarray(page.convert("L"))
        assert grey.max() == 255  # paper
        assert (grey < 128).mean() > 0.005  # and ink on it


def test_joint_report_text_has_the_joint_its_bolts_records_alerts_campaigns_and_gaps(
    joint_pdf: bytes, tmp_path: Path
) -> None:
    text = _text(joint_pdf, tmp_path)
    assert "Audit report: joint T1-flange-top" in text
    assert "Tower section 1 top flange" in text
    assert "Europe/Paris" in text
    for dev in (STEADY, LOSING, GAPPY, MUTE):
        assert dev in text
    # The bolts' table: LOSING ends below 70 % of settled, MUTE has no reading and is silent.
    assert re.search(r"^4 cb-wtg07-t1-p04 432 \d+\.\d 465\.0 4\d % < 70 %$", text, re.MULTILINE)
    assert f"10 {MUTE} 0 no reading, sensor silent or faulty" in text
    assert "1 below 80 %, 1 below 70 %, 0 below 30 % of settled" in text
    # Installation records of the registry, and the bolt's own tightened event (pass 3).
    assert _row(text, f"{MUTE} 2025-04-10 09:35 1 2,100 455.0 475.0 0.128 ok").endswith(
        "Hytorc Stealth 8 2025-01-15 J. Martin registry"
    )
    assert "A. Lefebvre" in _row(text, f"{MUTE} 2025-05-12 16:05 2 ")
    # K = 2100 N·m / (468.4 kN · 36 mm) = 0.125, within the profile's 0.08-0.18.
    retightened = f"{LOSING} 2026-03-01 03:00 3 2,100 468.4 475.0 0.125 ok HYTORC-XLCT-4 k.nowak"
    assert retightened + " device" in text
    # The loosening alert with who acknowledged it and when (Paris time: UTC+1).
    alert = _row(text, f"{LOSING} loosening major 2026-03-02 18:00 active ")
    assert "marie 2026-03-02 18:00" in alert
    assert "not acknowledged" in _row(text, f"{MUTE} no_data warning ")
    # Campaigns: the done one with the before/after preload, the overdue one; no other.
    assert "Campaign 7: WO-2026-031 flange retightening" in text
    task = f"{LOSING} done 301.2 2026-03-01 03:00 k.nowak 2,100 468.4 465.0 156 %"
    assert task in text.splitlines()
    assert "due 2026-03-03 01:00 (overdue)" in text
    assert "Campaign 8: Quarterly flange check" in text
    assert "2: 1 done, 1 overdue" in text
    assert "Splice plate survey" not in text
    assert "Last year's retightening" not in text
    # Gaps: GAPPY's six hours (Paris time), MUTE's whole period.
    lines = text.splitlines()
    assert f"{GAPPY} 2026-03-02 07:00 2026-03-02 13:00 6 h" in lines
    assert f"{MUTE} 2026-03-01 01:00 2026-03-04 01:00 3 d no reading since" in lines
    gaps = text.split("Data-quality gaps")[1]
    assert STEADY not in gaps
    assert LOSING not in gaps


def test_the_drawing_colours_a_low_bolt_red(env: Env, joint_pdf: bytes, tmp_path: Path) -> None:
    # Without settled baselines every bolt is "settling": only the legend's key is red.
    settling = joint_report(env.source(settled=False), JOINT, T0, END)
    low = _pages(joint_pdf, tmp_path / "low", dpi=100)[0]
    none = _pages(settling, tmp_path / "settling", dpi=100)[0]
    assert _reds(low) > _reds(none) + 20
    text = _text(settling, tmp_path)
    assert "0 below 80 %" in text
    assert _row(text, f"4 {LOSING} 432 ").endswith("settling (no baseline)")


def test_fleet_report_of_a_site_and_of_a_structure(env: Env, tmp_path: Path) -> None:
    pdf = fleet_report(env.source(), Scope("site", "windfarm-north"), T0, END, CAMPAIGNS)
    assert len(_pages(pdf, tmp_path / "site")) >= 2
    text = _text(pdf, tmp_path / "site")
    assert "Fleet report: site windfarm-north" in text
    assert "75 % reporting: 3 of 4 registered bolts" in text
    assert "12, of which 4 instrumented" in text
    assert "1 below 80 %, 1 below 70 %, 0 below 30 % of settled" in text
    assert "2: 1 done, 1 overdue (8)" in text
    # positions, bolts, reporting, lowest %, below 80/70/30, alerts, gaps, worst state
    assert _row(text, f"{JOINT} wtg-07 ") == f"{JOINT} wtg-07 12 4 3 43 % 1 1 0 2 2 < 70 %"
    for dev in (STEADY, LOSING, GAPPY, MUTE):
        assert dev in text
    assert "marie 2026-03-02 18:00" in text

    bridge = fleet_report(env.source(), Scope("structure", "oa12-deck"), T0, END, CAMPAIGNS)
    text = _text(bridge, tmp_path / "bridge")
    assert "Fleet report: structure oa12-deck" in text
    assert "0 % reporting: 0 of 2 registered bolts" in text
    assert "1: 0 done, 0 overdue" in text  # the splice survey has no due date
    assert "Splice plate survey" in text
    assert "OA12-G2-splice" in text
    assert STEADY not in text


@pytest.mark.parametrize(
    ("call", "key"),
    [
        (lambda s: joint_report(s, "no-such-joint", T0, END), "joint"),
        (lambda s: joint_report(s, JOINT, END, T0), "from"),
        (lambda s: joint_report(s, JOINT, T0, T0), "from"),
        (lambda s: fleet_report(s, Scope("site", "atlantis"), T0, END), "site"),
        (lambda s: fleet_report(s, Scope("structure", "nope"), T0, END), "structure"),
    ],
)
def test_unknown_scope_or_empty_period_is_an_error_naming_it(
    env: Env, call: object, key: str
) -> None:
    assert callable(call)
    with pytest.raises(ReportError) as info:
        call(env.source())
    assert info.value.key == key
    assert str(info.value).startswith(f"{key}: ")


def test_reports_can_be_made_in_threads_at_once(env: Env, tmp_path: Path) -> None:
    source = env.source()
    with ThreadPoolExecutor(2) as pool:
        pdfs = list(pool.map(lambda _: joint_report(source, JOINT, T0, END, CAMPAIGNS), range(2)))
    for i, pdf in enumerate(pdfs):
        assert "Campaign 7" in _text(pdf, tmp_path / str(i))


def test_gaps_are_long_against_the_bolts_own_rate() -> None:
    ten_min = np.arange(T0, T0 + DAY, 600_000, dtype=np.int64)
    holed = ten_min[(ten_min < T0 + 5 * HOUR) | (ten_min >= T0 + 5 * HOUR + 90 * 60_000)]
    (gap,) = find_gaps("b", holed, T0, T0 + DAY)
    assert (gap.start_ms, gap.end_ms) == (T0 + 5 * HOUR - 600_000, T0 + 5 * HOUR + 90 * 60_000)
    assert not gap.open_ended
    # 50 minutes missing: shorter than the 1 h floor.
    short = ten_min[(ten_min < T0 + 5 * HOUR) | (ten_min >= T0 + 5 * HOUR + 40 * 60_000)]
    assert find_gaps("b", short, T0, T0 + DAY) == []
    # Hourly readings: 2 h of silence is within 3 intervals, 4 h is not.
    hourly = np.arange(T0, T0 + DAY, HOUR, dtype=np.int64)
    assert find_gaps("b", np.delete(hourly, [5]), T0, T0 + DAY) == []
    (four,) = find_gaps("b", np.delete(hourly, [5, 6, 7]), T0, T0 + DAY)
    assert four.duration_ms == 4 * HOUR
    # Silent since a time, and a bolt installed within the period counts from then.
    (tail,) = find_gaps("b", ten_min[ten_min < T0 + 20 * HOUR], None, T0 + DAY)
    assert tail.open_ended
    assert tail.end_ms == T0 + DAY
    late = ten_min[ten_min >= T0 + 6 * HOUR]
    assert find_gaps("b", late, T0 + 6 * HOUR, T0 + DAY) == []
    assert find_gaps("b", late, T0, T0 + DAY)[0].duration_ms == 6 * HOUR
    assert MIN_GAP_MS == HOUR


def _config(env: Env, tmp_path: Path) -> Path:
    f = tmp_path / "boltwatch.toml"
    f.write_text(f'[store]\npath = "{env.folder}"\n[registry]\npath = "{SAMPLE_REGISTRY}"\n')
    return f


def test_cli_writes_the_joint_report_and_says_where(env: Env, tmp_path: Path) -> None:
    out = tmp_path / "report.pdf"
    args = ["report", "joint", JOINT, "--from", "2026-03-01", "--to", "2026-03-04T00:00:00Z"]
    result = CliRunner().invoke(app, [*args, "--out", str(out), "-c", str(_config(env, tmp_path))])
    assert result.exit_code == 0, result.output
    pages = len(_pages(out.read_bytes(), tmp_path / "pages"))
    assert result.output.strip() == f"{out}: {pages} pages, {out.stat().st_size:,} bytes"
    text = _text(out.read_bytes(), tmp_path)
    assert "marie 2026-03-02 18:00" in text
    # No detector snapshot in the folder: no settled baseline, no lines.
    assert _row(text, f"4 {LOSING} 432 ").endswith("settling (no baseline)")
    assert "There was no campaign in this period." in text

    fleet = tmp_path / "fleet.pdf"
    args = ["report", "fleet", "--site", "windfarm-north", "--from", "2026-03-01"]
    args += ["--to", "2026-03-04", "--out", str(fleet), "-c", str(_config(env, tmp_path))]
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 0, result.output
    assert "75 % reporting" in _text(fleet.read_bytes(), tmp_path)


def test_cli_takes_the_settled_baselines_from_the_detectors_snapshot(
    env: Env, tmp_path: Path
) -> None:
    folder = tmp_path / "data"
    shutil.copytree(env.folder, folder)
    config = parse_config({"store": {"path": str(folder)}}, environ={})
    engine = build_engine(config, env.registry)
    decoder = TelemetryDecoder(clock=lambda: END / 1000)
    messages = sorted(_messages(), key=lambda m: json.loads(m[1])["ts"])
    for i in range(0, len(messages), 200):
        engine.process_batch(decoder.decode_batch(messages[i : i + 200]))
    engine.save(folder / SNAPSHOT_FILE)
    f = tmp_path / "boltwatch.toml"
    f.write_text(f'[store]\npath = "{folder}"\n[registry]\npath = "{SAMPLE_REGISTRY}"\n')
    out = tmp_path / "r.pdf"
    args = ["report", "joint", JOINT, "--from", "2026-03-01", "--to", "2026-03-04"]
    result = CliRunner().invoke(app, [*args, "--out", str(out), "-c", str(f)])
    assert result.exit_code == 0, result.output
    text = _text(out.read_bytes(), tmp_path)
    # The steady bolts settled where they sit; the retightened one had not settled yet.
    assert re.search(rf"^1 {STEADY} 432 469\.\d 469\.\d 100 % ≥ 90 % of settled$", text, re.M)
    assert re.search(rf"^7 {GAPPY} 397 47\d\.\d 47\d\.\d 100 % ≥ 90 % of settled$", text, re.M)
    assert _row(text, f"4 {LOSING} 432 ").endswith("settling (no baseline)")


def test_cli_refuses_a_folder_without_a_store(tmp_path: Path) -> None:
    (tmp_path / "empty").mkdir()
    f = tmp_path / "boltwatch.toml"
    f.write_text(f'[store]\npath = "{tmp_path / "empty"}"\n')
    args = ["report", "joint", JOINT, "--out", str(tmp_path / "r.pdf"), "-c", str(f)]
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 2
    assert "store.path: " in result.output
    assert "is not a boltwatch store" in result.output
    assert list((tmp_path / "empty").iterdir()) == []  # nothing created there


@pytest.mark.parametrize(
    ("args", "said"),
    [
        (["joint", "nope"], "joint: no joint 'nope' in the registry"),
        (["joint", JOINT, "--from", "2026-03-04", "--to", "2026-03-01"], "--from: the period"),
        (["joint", JOINT, "--from", "yesterday"], "--from: 'yesterday' is not an RFC 3339"),
        (["fleet"], "--site or --structure: give exactly one"),
        (["fleet", "--site", "atlantis"], "site: no site 'atlantis'"),
    ],
)
def test_cli_errors_are_one_line_and_status_2(
    env: Env, tmp_path: Path, args: list[str], said: str
) -> None:
    out = tmp_path / "r.pdf"
    config = ["-c", str(_config(env, tmp_path)), "--out", str(out)]
    result = CliRunner().invoke(app, ["report", *args, *config])
    assert result.exit_code == 2, result.output
    lines = result.output.strip().splitlines()
    assert len(lines) == 1
    assert said in lines[0]
    assert "Traceback" not in result.output
    assert not out.exists()
