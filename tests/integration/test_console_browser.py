"""The web console in a real browser: Debian's Chromium driven by Playwright (pinned to the
release made for it, launched with ``executable_path``: no browser is downloaded), against
``boltwatch run`` fed by the simulator over a real Mosquitto.

A maintenance engineer's path: log in, watch the loosening bolt turn from ok to alerting on the
fleet page without reloading, see it coloured on the flange's drawing (the demo's registry), open
the bolt's page with its compensated preload and forecast, look at a machine's channels and a
mill's vibration spectrum, acknowledge the alert, and find the acknowledgement in the API and the
alert's history under the user's name. Every
request the browser makes goes to the console's own address. The screenshots taken on the way
are the README's pictures (docs/images/console-*.png).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from firmware_sim.machines import cnc_waveform
from firmware_sim.scenario import scenario_registry
from tests.integration.conftest import MosquittoServer, Reaper, boltwatch_run, free_port, wait_for

pytestmark = pytest.mark.integration

BOLTWATCH = Path(sys.executable).parent / "boltwatch"
CHROMIUM = Path("/usr/bin/chromium")
IMAGES = Path(__file__).parents[2] / "docs" / "images"
TOKEN = "console-browser-token-5b2e"
LOOSE = "bridge-loose-b001"
JOINT = "splice-1"
MACHINE = "laser-1"
MILL = "console-mill-probe"
PROBE = "console-live-probe"
# As the machine's probe runs it: without the background-networking flags Chromium tries
# Google's hosts at start, which this closed network refuses.
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]


def _api(base: str, path: str) -> Any:
    req = urllib.request.Request(base + path, headers={"Authorization": f"Bearer {TOKEN}"})  # noqa: S310
    with urllib.request.urlopen(req, timeout=10) as r:  # noqa: S310 - http://127.0.0.1 only
        return json.loads(r.read())


@pytest.fixture
def service(mosquitto: MosquittoServer, reaper: Reaper, tmp_path: Path) -> Iterator[str]:
    """``boltwatch run`` with its API and console on a free port; its base URL."""
    port = free_port()
    config = tmp_path / "boltwatch.toml"
    config.write_text(
        f"""
[broker]
url = "{mosquitto.url}"
client_id = "console-ingest"
[ingest]
metrics_listen = ""
[store]
path = "{tmp_path / "data"}"
[registry]
path = "{scenario_registry("demo")}"
[alerts]
api_listen = "127.0.0.1:{port}"
api_token = "{TOKEN}"
interval_s = 0.2
"""
    )
    with boltwatch_run(reaper, config, tmp_path / "run.log"):
        yield f"http://127.0.0.1:{port}"


def _simulate(broker: str, hours: int) -> None:
    sim = subprocess.run(
        [
            str(BOLTWATCH),
            "simulate",
            "--scenario",
            "demo",
            "--broker",
            broker,
            "--speed",
            "20000",
            "--duration",
            f"{hours}h",
        ],
        capture_output=True,
        timeout=180,
        check=False,
        env=os.environ,
    )
    assert sim.returncode == 0, sim.stderr.decode()


def _publish_waveform(port: int) -> None:
    """One reading of a CNC mill with a second of spindle vibration sampled at 4 kHz, chattering
    (the simulator's vibration model), as a mill's sensor would send it."""
    from paho.mqtt import publish

    wave = cnc_waveform(
        rpm=12_000.0,
        fs_hz=4096.0,
        n=4096,
        rng=np.random.default_rng(7),
        active_faults=frozenset({"chatter"}),
    )
    reading = {
        "ts": int(time.time() * 1000),
        "seq": 1,
        "spindle_rpm": 12_000.0,
        "spindle_a": 4.2,
        "vib_rms_mms": 3.1,
        "fs_hz": 4096.0,
        "vib_ms2": [round(float(v), 4) for v in wave],
    }
    publish.single(
        f"boltwatch/v1/live/cnc_mill/{MILL}/telemetry",
        json.dumps(reading),
        qos=1,
        hostname="127.0.0.1",
        port=port,
    )


def test_a_maintenance_engineer_sees_the_loosening_bolt_and_acknowledges_it(
    mosquitto: MosquittoServer, service: str
) -> None:
    if not CHROMIUM.exists():
        pytest.skip(f"{CHROMIUM} is not installed (`make test` installs the chromium package)")
    from paho.mqtt import publish
    from playwright.sync_api import expect, sync_playwright

    IMAGES.mkdir(parents=True, exist_ok=True)
    requested: list[str] = []
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)
        try:
            page = browser.new_page(viewport={"width": 1280, "height": 900})
            page.on("request", lambda r: requested.append(r.url))
            errors: list[str] = []
            page.on("console", lambda m: errors.append(m.text) if m.type == "error" else None)
            page.set_default_timeout(60_000)

            # Log in: the console sends us to the login page, then back.
            page.goto(f"{service}/console/")
            expect(page).to_have_url(f"{service}/console/login?next=/console/")
            page.fill("input[name=token]", TOKEN)
            page.click("button[type=submit]")
            expect(page.locator("#user")).to_have_text("admin (operator)")

            # The fleet page stays open while the simulation runs: its rows update by polling.
            _simulate(mosquitto.url, 36)
            row = page.locator(f'tr[data-device="{LOOSE}"]')
            expect(row).not_to_have_attribute("data-status", "ok", timeout=180_000)
            status = row.get_attribute("data-status")
            assert status in ("warning", "major", "critical"), status
            page.screenshot(path=str(IMAGES / "console-fleet.png"), full_page=True)

            # The joint's page: the flange drawn from the registry, the loosening bolt coloured
            # by its alert, its trend and forecast in the table.
            page.click(f'details[data-node="{JOINT}"] >> summary >> a')
            expect(page.locator("h1")).to_contain_text("Pylon base flange")
            mark = page.locator(f'#joint-drawing g[data-device="{LOOSE}"]')
            expect(mark).not_to_have_attribute("data-status", "ok")
            assert mark.get_attribute("data-status") in ("warning", "major", "critical")
            assert page.locator("#joint-drawing g.bolt").count() == 8
            trend = page.locator(f'#joint tr[data-device="{LOOSE}"] td.trend')
            expect(trend).to_contain_text("%/day")
            page.screenshot(path=str(IMAGES / "console-joint.png"), full_page=True)

            # The bolt's page: raw and compensated preload, the lines, the forecast.
            mark.click()
            expect(page.locator("h1")).to_contain_text(LOOSE)
            chart = page.locator("#chart")
            expect(chart.locator("canvas")).to_have_count(1)
            assert int(chart.get_attribute("data-points") or "0") > 0
            # Its alert episodes are drawn on the chart, and its forecast to the 70 % line.
            expect(chart).not_to_have_attribute("data-episodes", "0")
            expect(chart).to_have_attribute("data-forecast-shown", "1")
            expect(page.locator("#forecast")).to_contain_text("70 % line")
            expect(page.locator("#trend")).to_contain_text("%/day")
            page.screenshot(path=str(IMAGES / "console-bolt.png"), full_page=True)

            # A machine's page: the kind's channels, one chart each, and its newest reading.
            page.goto(f"{service}/console/devices/{MACHINE}")
            expect(page.locator("h1")).to_contain_text(MACHINE)
            expect(page.locator("#charts .chart canvas")).to_have_count(2)
            expect(page.locator("#latest tr").first).to_be_visible()
            page.screenshot(path=str(IMAGES / "console-machine.png"), full_page=True)

            # A CNC mill's page draws the Welch spectrum of its newest waveform (chatter here).
            _publish_waveform(mosquitto.port)

            def stored() -> bool:
                got = page.request.get(f"{service}/console/data/spectrum/{MILL}")
                return got.ok and got.json().get("spectrum") is not None

            wait_for(stored, 60, "the mill's waveform to be stored")
            page.goto(f"{service}/console/devices/{MILL}")
            spectrum = page.locator("#spectrum")
            expect(spectrum.locator("canvas")).to_have_count(1, timeout=60_000)
            assert int(spectrum.get_attribute("data-bins") or "0") > 100
            expect(page.locator("#spectrum-info")).to_contain_text("zone")

            # Acknowledge the loosening alert from the alerts page.
            page.click("nav >> text=Alerts")
            alerts = _api(service, f"/api/alerts?device_id={LOOSE}&kind=loosening")["alerts"]
            (alert,) = alerts
            line = page.locator(f'tr[data-alert="{alert["id"]}"]')
            expect(line).to_have_attribute("data-acked", "no")
            page.screenshot(path=str(IMAGES / "console-alerts.png"), full_page=True)
            line.locator("button.ack").click()
            expect(page.locator(f'tr[data-alert="{alert["id"]}"]')).to_have_attribute(
                "data-acked", "yes"
            )
            shown = _api(service, f"/api/alerts/{alert['id']}")
            assert shown["acknowledged"] is True
            assert shown["ack_by"] == "admin"
            assert any(h["what"] == "ack" and h["detail"] == "admin" for h in shown["history"])

            # The alert's own page shows who acknowledged it, and its history.
            page.goto(f"{service}/console/alerts/{alert['id']}")
            expect(page.locator("#alert-ack")).to_contain_text("by admin")
            expect(page.locator("#history")).to_contain_text("ack")
            page.screenshot(path=str(IMAGES / "console-alert.png"), full_page=True)

            page.goto(f"{service}/console/quality")
            readings = page.locator("#readings")
            expect(readings).not_to_have_text("0")
            # Ingest runs in the service: its rate is measured between two polls.
            expect(page.locator("#rate")).to_contain_text("readings/s", timeout=60_000)
            page.screenshot(path=str(IMAGES / "console-quality.png"), full_page=True)

            # A new reading shows on the open page by itself (polled every second): the time it
            # took is printed, not asserted (the deadline is generous for a loaded machine).
            before = readings.inner_text()
            publish.single(
                f"boltwatch/v1/live/cbolt/{PROBE}/telemetry",
                json.dumps({"ts": int(time.time() * 1000), "seq": 1, "preload_kn": 40.0}),
                qos=1,
                hostname="127.0.0.1",
                port=mosquitto.port,
            )
            sent = time.monotonic()
            expect(readings).not_to_have_text(before, timeout=60_000)
            print(f"\nconsole: a new reading showed {time.monotonic() - sent:.2f} s after publish")
        finally:
            browser.close()
    outside = [u for u in requested if not u.startswith(service + "/")]
    assert outside == [], f"requests left the console: {outside[:5]}"
    assert requested, "the browser made no request"
    assert [e for e in errors if "Content Security Policy" in e] == []
