"""A retightening campaign end to end, in a real browser (Debian's Chromium through Playwright)
against ``boltwatch run`` fed over a real Mosquitto.

The simulator's ``retightening`` scenario (two bolts of a tower flange loosen; maintenance
retightens the joint on day 14) is generated offline and published in two parts, as its bolts
would send it. Part one, up to just before the retightening: the two bolts' alerts and the
joint's finding are raised. An operator opens a campaign from the joint's page (the alerting
bolts ticked for them). Part two: the bolts' own ``tightened`` events retighten the two tasks
and acknowledge the alerts with the campaign's reference; once the bolts have embedded again
the after readings and settled levels are recorded, the campaign is done and the alerts clear.
"""

from __future__ import annotations

import csv
import json
import subprocess
import sys
import urllib.request
from collections import defaultdict
from collections.abc import Iterator
from datetime import datetime
from pathlib import Path
from typing import Any

import pytest

from firmware_sim.scenario import scenario_registry
from tests.integration.conftest import (
    MosquittoServer,
    Reaper,
    boltwatch_run,
    free_port,
    stored_readings,
    wait_for,
)
from tests.integration.test_console_browser import CHROMIUM, CHROMIUM_ARGS, IMAGES

pytestmark = pytest.mark.integration

BOLTWATCH = Path(sys.executable).parent / "boltwatch"
TOKEN = "campaign-browser-token-77a1"
SITE = "windfarm-north"
JOINT = "wtg09-flange-1"
LOOSE = ("wtg09-f1-loose-b001", "wtg09-f1-loose-b002")
START_MS = 1_772_323_200_000  # the scenario's start, 2026-03-01T00:00:00Z
DAY_MS = 86_400_000
CUT_MS = START_MS + 14 * DAY_MS - 3_600_000  # an hour before the retightening
CHUNK_MS = 6 * 3_600_000
RULES = """
[defaults]
for = "0s"
clear_after = "30s"  # no reading comes between the two parts: quiet, the alerts must stay
group_wait = "0s"    # open until the campaign is opened, however slow the machine
"""


def _api(base: str, path: str) -> Any:
    req = urllib.request.Request(base + path, headers={"Authorization": f"Bearer {TOKEN}"})  # noqa: S310
    with urllib.request.urlopen(req, timeout=10) as r:  # noqa: S310 - http://127.0.0.1 only
        return json.loads(r.read())


def _ms(text: str) -> int:
    return round(datetime.fromisoformat(text.replace("Z", "+00:00")).timestamp() * 1000)


class Recording:
    """The scenario's readings and events as the bolts publish them: per time chunk, one batch
    message per bolt (``{"readings": [...]}``), events as messages of their own."""

    def __init__(self, folder: Path) -> None:
        self.messages: list[tuple[int, str, bytes]] = []  # (ms, topic, payload)
        per_chunk: dict[tuple[int, str], list[dict[str, object]]] = defaultdict(list)
        seq: dict[str, int] = defaultdict(int)
        with (folder / "cbolt.csv").open() as f:
            for row in csv.DictReader(f):
                ms = _ms(row["timestamp"])
                dev = row["device_id"]
                seq[dev] += 1
                reading: dict[str, object] = {
                    "ts": ms,
                    "seq": seq[dev],
                    "preload_kn": float(row["preload_kn"]),
                }
                if row["temp_c"]:
                    reading["temp_c"] = float(row["temp_c"])
                if row["battery_v"]:
                    reading["battery_v"] = float(row["battery_v"])
                per_chunk[(ms - (ms - START_MS) % CHUNK_MS, dev)].append(reading)
        for (chunk, dev), readings in per_chunk.items():
            topic = f"boltwatch/v1/{SITE}/cbolt/{dev}/telemetry"
            self.messages.append((chunk, topic, json.dumps({"readings": readings}).encode()))
        with (folder / "events.csv").open() as f:
            for i, row in enumerate(csv.DictReader(f)):
                if row["type"] != "tightened":
                    continue
                ms = _ms(row["timestamp"])
                event = {
                    "type": "tightened",
                    "ts": ms,
                    "seq": 1_000_000 + i,
                    "torque_nm": float(row["torque_nm"]),
                    "preload_kn": float(row["preload_kn"]),
                    "operator": "maintenance crew",
                }
                topic = f"boltwatch/v1/{SITE}/cbolt/{row['device_id']}/event"
                # Before the chunk holding its time: the tightening comes first.
                self.messages.append((ms - 1, topic, json.dumps(event).encode()))
        self.messages.sort(key=lambda m: m[0])

    def readings(self, since_ms: int, until_ms: int) -> int:
        """Readings in the telemetry messages of ``[since_ms, until_ms)``."""
        return sum(
            len(json.loads(p)["readings"])
            for ms, t, p in self.messages
            if since_ms <= ms < until_ms and t.endswith("/telemetry")
        )

    def publish(self, port: int, since_ms: int, until_ms: int) -> int:
        """Publish the messages of ``[since_ms, until_ms)`` (QoS 1, in time order)."""
        from paho.mqtt import publish

        chosen = [(t, p) for ms, t, p in self.messages if since_ms <= ms < until_ms]
        for i in range(0, len(chosen), 200):
            publish.multiple(
                [{"topic": t, "payload": p, "qos": 1} for t, p in chosen[i : i + 200]],
                hostname="127.0.0.1",
                port=port,
                client_id=f"campaign-fleet-{since_ms}-{i}",
            )
        return len(chosen)


@pytest.fixture
def service(mosquitto: MosquittoServer, reaper: Reaper, tmp_path: Path) -> Iterator[str]:
    port = free_port()
    rules = tmp_path / "rules.toml"
    rules.write_text(RULES)
    config = tmp_path / "boltwatch.toml"
    config.write_text(
        f"""
[broker]
url = "{mosquitto.url}"
client_id = "campaign-ingest"
[ingest]
metrics_listen = ""
[store]
path = "{tmp_path / "data"}"
[registry]
path = "{scenario_registry("retightening")}"
[alerts]
rules = "{rules}"
api_listen = "127.0.0.1:{port}"
api_token = "{TOKEN}"
interval_s = 0.2
"""
    )
    with boltwatch_run(reaper, config, tmp_path / "run.log"):
        yield f"http://127.0.0.1:{port}"


def test_a_campaign_from_the_joint_page_to_the_after_readings(
    mosquitto: MosquittoServer, service: str, tmp_path: Path
) -> None:
    if not CHROMIUM.exists():
        pytest.skip(f"{CHROMIUM} is not installed (`make test` installs the chromium package)")
    from playwright.sync_api import expect, sync_playwright

    sim = subprocess.run(
        [
            str(BOLTWATCH),
            "simulate",
            "--scenario",
            "retightening",
            "--duration",
            "19d",
            "--out",
            str(tmp_path / "sim"),
        ],
        capture_output=True,
        timeout=120,
        check=False,
    )
    assert sim.returncode == 0, sim.stderr.decode()
    recording = Recording(tmp_path / "sim")

    # Part one: the two bolts loosen; their alerts and the joint's finding are raised. Checked
    # once the whole part is stored (and so evaluated): a finding seen mid-way may change later.
    recording.publish(mosquitto.port, 0, CUT_MS)
    part_one = recording.readings(0, CUT_MS)
    wait_for(
        lambda: stored_readings(tmp_path / "data") >= part_one,
        180,
        f"part one's {part_one:,} readings stored",
    )

    def open_alerts(device: str) -> list[dict[str, Any]]:
        return [
            a
            for a in _api(service, f"/api/alerts?device_id={device}")["alerts"]
            if a["state"] != "cleared"
        ]

    def raised() -> bool:
        kinds = {a["kind"] for dev in LOOSE for a in open_alerts(dev)}
        return "joint" in kinds and all(open_alerts(d) for d in LOOSE)

    wait_for(raised, 180, "the loose bolts' alerts and the joint's finding")
    open_now = {a["id"] for dev in LOOSE for a in open_alerts(dev)}
    healthy = [f"wtg09-f1-b{i:03d}" for i in range(1, 7)]
    assert not any(open_alerts(d) for d in healthy), "a healthy bolt is alerting"

    IMAGES.mkdir(parents=True, exist_ok=True)
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)
        try:
            context = browser.new_context(viewport={"width": 1280, "height": 900})
            page = context.new_page()
            page.set_default_timeout(60_000)
            page.goto(f"{service}/console/joints/{JOINT}")
            page.fill("input[name=token]", TOKEN)
            page.click("button[type=submit]")
            expect(page.locator("h1")).to_contain_text("Tower flange 1")

            # The form is open (the joint has findings) with the alerting bolts ticked.
            form = page.locator("#open-campaign form")
            expect(form).to_be_visible()
            for dev in LOOSE:
                expect(form.locator(f'input[name=bolt][value="{dev}"]')).to_be_checked()
            for dev in healthy:
                expect(form.locator(f'input[name=bolt][value="{dev}"]')).not_to_be_checked()
            form.locator("input[name=assignee]").fill("kim")
            form.locator("input[name=due]").fill("2027-01-31")
            form.locator("button[type=submit]").click()
            expect(page.locator("h1")).to_contain_text("Campaign #1: Retighten Tower flange 1")
            expect(page.locator("#campaign-state")).to_contain_text("open")
            links = page.locator("#campaign-alerts a").all_inner_texts()
            linked = {int(t) for t in links}
            assert linked == open_now, (linked, open_now)  # what the test saw open is linked
            for dev in LOOSE:
                row = page.locator(f'#tasks tr[data-device="{dev}"]')
                expect(row).to_have_attribute("data-state", "open")
                expect(row.locator("td.before")).to_contain_text("kN")

            # A technician's phone: the campaign's page on a small screen.
            phone = context.new_page()  # the same session
            phone.set_viewport_size({"width": 390, "height": 844})
            phone.goto(f"{service}/console/campaigns/1")
            expect(phone.locator("form.task").first).to_be_visible()
            width = phone.evaluate("document.documentElement.scrollWidth")
            assert width <= 390 + 1, f"the page is {width} px wide on a 390 px screen"
            phone.screenshot(path=str(IMAGES / "console-campaign-phone.png"), full_page=True)
            phone.close()

            # Part two: the retightening (the bolts' tightened events) and the re-embedding.
            recording.publish(mosquitto.port, CUT_MS, START_MS + 19 * DAY_MS)

            def done() -> bool:
                page.goto(f"{service}/console/campaigns/1")
                return "done" in page.locator("#campaign-state").inner_text()

            wait_for(done, 240, "the campaign to be done (both bolts retightened and settled)")
            for dev in LOOSE:
                row = page.locator(f'#tasks tr[data-device="{dev}"]')
                expect(row).to_have_attribute("data-state", "done")
                before = float(row.locator("td.before").inner_text().split()[0])
                after = float(row.locator("td.after").inner_text().split()[0])
                settled = float(row.locator("td.settled").inner_text().split()[0])
                assert after > before * 1.1, (dev, before, after)
                assert settled > before * 1.1, (dev, before, settled)
            expect(page.locator("#campaign-log")).to_contain_text("retightened at 3304.8 N·m")
            page.screenshot(path=str(IMAGES / "console-campaign.png"), full_page=True)

            # The joint's audit report, downloaded from its page, lists all of it.
            page.goto(f"{service}/console/joints/{JOINT}")
            got = page.request.get(f"{service}/console/joints/{JOINT}/report.pdf?days=400")
            assert got.ok, got.text()
            assert got.headers["content-type"] == "application/pdf"
            (tmp_path / "report.pdf").write_bytes(got.body())
        finally:
            browser.close()
    text = subprocess.run(
        ["pdftotext", "-raw", str(tmp_path / "report.pdf"), "-"],
        capture_output=True,
        check=True,
        timeout=60,
    ).stdout.decode()
    assert "Campaign 1: Retighten Tower flange 1" in text
    for dev in LOOSE:
        rows = [line for line in text.splitlines() if line.startswith(f"{dev} done ")]
        assert rows, f"no campaign row of {dev} in the report"
        assert "maintenance crew" in rows[0]
        assert "3,305" in rows[0] or "3305" in rows[0], rows[0]
    assert "campaign #1 (admin)" in text  # who acknowledged the alerts

    # The linked alerts: acknowledged with the campaign's reference, then cleared.
    for alert_id in linked:
        shown = _api(service, f"/api/alerts/{alert_id}")
        assert shown["acknowledged"], shown
        assert shown["ack_by"] == "campaign #1 (admin)", shown
        assert any("campaign #1" in c["text"] for c in shown["comments"]), shown

    def cleared() -> bool:  # one request a poll: the API answers 20 a second per token
        state = {a["id"]: a["state"] for a in _api(service, "/api/alerts")["alerts"]}
        return all(state.get(i) == "cleared" for i in linked)

    wait_for(cleared, 180, "the campaign's alerts to clear")
