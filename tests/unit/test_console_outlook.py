"""What the console adds to the numbers: a bolt's compensated preload, trend and forecast (from
the detector's own view), a machine's channels and spectrum, and a fleet page that stays small
at scale. The detector is fed real decoded batches; the console is served over HTTP."""

from __future__ import annotations

import json
import math
import re
from collections.abc import Iterator
from pathlib import Path

import msgspec
import numpy as np
import pytest

from boltwatch.web import bolt_outlook
from dashboards.charts import CHANNELS
from dashboards.console.outlook import compensate, eta_text, forecast, trend_text
from dashboards.console.source import FOLD_OK, ConsoleSource, Status
from detection.engine import Engine
from detection.preload import MIN_TREND_HOURS, BoltPreloadDetector, Outlook
from firmware_sim.machines import cnc_waveform
from ingest import IngestMetrics
from ingest.store import Store
from sensors.codec import TelemetryDecoder
from sensors.schema import DeviceKind
from tests.api_server import ApiServer
from tests.unit.test_console import BOLT, T0, TOKEN, Browserless, Env

STEP_MS = 300_000
HOUR_S = 3600.0


def _bolt_messages(
    dev: str, hours: float, loss_pct_per_h: float, after_h: float
) -> list[tuple[str, bytes]]:
    """A bolt at 50 kN with a daily temperature cycle (steel in aluminium: +0.3 %/°C), losing
    ``loss_pct_per_h`` of its preload per hour after ``after_h`` hours."""
    rng = np.random.default_rng(3)
    out = []
    for k in range(round(hours * 3_600_000 / STEP_MS)):
        h = k * STEP_MS / 3_600_000
        temp = 12.0 + 6.0 * math.sin(2 * math.pi * h / 24.0)
        loss = max(0.0, h - after_h) * loss_pct_per_h / 100.0
        preload = 50.0 * (1 - loss) * (1 + 0.003 * (temp - 12.0)) * (1 + rng.normal(0, 0.002))
        reading = {
            "ts": T0 + k * STEP_MS,
            "seq": k,
            "preload_kn": round(preload, 3),
            "temp_c": temp,
        }
        out.append((f"boltwatch/v1/s/cbolt/{dev}/telemetry", json.dumps(reading).encode()))
    return out


def _feed(engine: Engine, messages: list[tuple[str, bytes]]) -> None:
    dec = TelemetryDecoder()
    for i in range(0, len(messages), 100):
        batch = dec.decode_batch(messages[i : i + 100])
        assert not batch.errors
        engine.process_batch(batch)


@pytest.fixture(scope="module")
def engine() -> Engine:
    e = Engine({"cbolt": BoltPreloadDetector()})
    _feed(e, _bolt_messages("steady", 72, 0.0, 0.0) + _bolt_messages("losing", 72, 0.25, 48.0))
    return e


def test_the_detector_forecasts_a_losing_bolt_and_not_a_steady_one(engine: Engine) -> None:
    got = bolt_outlook(engine)(["steady", "losing", "never-seen"])
    assert set(got) == {"steady", "losing"}
    steady, losing = got["steady"], got["losing"]
    assert steady.armed
    assert losing.armed
    # Steel in aluminium: the filter learned a positive coefficient near 0.3 %/°C of 50 kN.
    assert 0.05 < steady.tempco_kn_per_c < 0.3
    # -0.25 %/h over the last day is -6 %/day (of the baseline; the level has slipped a little).
    assert abs(steady.trend_pct_per_day) < 1.0
    assert -7.5 < losing.trend_pct_per_day < -4.5
    assert math.isinf(steady.eta_s)
    # From ~94 % to the 70 % line at ~6 %/day: about four days after the newest reading.
    days = (losing.eta_s - losing.t_last_s) / 86_400
    assert 2.5 < days < 6.0, days
    assert losing.line_kn == pytest.approx(0.7 * losing.baseline_kn)


def test_no_forecast_while_settling_or_with_too_few_hours() -> None:
    e = Engine({"cbolt": BoltPreloadDetector()})
    _feed(e, _bolt_messages("young", 3, 0.0, 0.0))
    (o,) = bolt_outlook(e)(["young"]).values()
    assert not o.armed
    assert math.isnan(o.slope_kn_per_h)
    assert forecast(o, None, 86_400) is None
    assert trend_text(o) == eta_text(o, 0.0) == ""
    assert MIN_TREND_HOURS >= 6


def _outlook(level: float, slope_kn_per_h: float, *, base: float = 50.0) -> Outlook:
    hours = (level - 35.0) / -slope_kn_per_h if slope_kn_per_h < 0 else math.inf
    return Outlook(
        level, base, True, 0.15, 12.0, 1000.0, slope_kn_per_h, 0.7 * base, 1000.0 + hours * HOUR_S
    )


def test_forecast_line_runs_to_the_alarm_line_or_a_third_of_the_range() -> None:
    # 45 kN falling 0.5 kN/h: the 35 kN line in 20 h.
    f = forecast(_outlook(45.0, -0.5), 1000.0, 7 * 86_400)
    assert f is not None
    assert f.eta_s == pytest.approx(1000.0 + 20 * HOUR_S)
    assert f.t_s == pytest.approx((1000.0, 1000.0 + 20 * HOUR_S))
    assert f.kn == pytest.approx((45.0, 35.0))
    assert "70 % line in 20.0 h" in f.text
    # A one-day chart draws 8 h of it; the ETA stays the same.
    short = forecast(_outlook(45.0, -0.5), 1000.0, 86_400)
    assert short is not None
    assert short.t_s[1] - short.t_s[0] == pytest.approx(8 * HOUR_S)
    assert short.eta_s == f.eta_s
    # Chart data newer than the detector's level: the line starts at the chart's end.
    later = forecast(_outlook(45.0, -0.5), 1000.0 + HOUR_S, 86_400)
    assert later is not None
    assert later.kn[0] == pytest.approx(44.5)
    # Rising: no crossing.
    up = forecast(_outlook(45.0, 0.01), 1000.0, 86_400)
    assert up is not None
    assert up.eta_s is None
    assert "steady" in up.text
    assert trend_text(_outlook(45.0, -0.5)) == "-24.0 %/day"
    assert eta_text(_outlook(30.0, -0.5), 2000.0) == "below the 70 % line"


def test_compensation_uses_the_detectors_coefficient() -> None:
    o = _outlook(45.0, -0.5)  # 0.15 kN/°C around 12 °C
    assert compensate([46.5, None, 45.0], [22.0, 10.0, None], o) == [
        pytest.approx(45.0),
        None,
        None,
    ]


@pytest.fixture
def served(tmp_path: Path, engine: Engine) -> Iterator[tuple[Env, str]]:
    e = Env(tmp_path)
    assert e.web.source is not None
    # The console's bolt is the detector's losing bolt.
    losing = bolt_outlook(engine)(["losing"])["losing"]
    e.web.source.outlook = lambda ids: {BOLT: losing} if BOLT in ids else {}
    try:
        with ApiServer(e.web.app) as server:
            yield e, server.url
    finally:
        e.close()


def test_bolt_series_carries_the_compensated_preload_and_the_forecast(
    served: tuple[Env, str],
) -> None:
    _, url = served
    b = Browserless(url)
    b.login(TOKEN)
    status, _, body = b.request("GET", f"/console/data/series/{BOLT}?range=1d")
    assert status == 200
    data = json.loads(body)
    comp = data["fields"]["preload_comp_kn"]
    assert len(comp) == len(data["t"]) == 30
    assert all(c is not None for c in comp)
    assert data["units"]["preload_comp_kn"] == "kN"
    f = data["forecast"]
    assert f["t"][0] >= data["t"][-1]
    assert f["kn"][1] < f["kn"][0]
    assert "70 % line" in f["text"]
    _, _, page = b.request("GET", f"/console/devices/{BOLT}")
    assert "%/day" in re.search(r'id="trend">([^<]*)<', page).group(1)  # type: ignore[union-attr]
    assert 'data-forecast="1"' in page
    _, _, joint = b.request("GET", "/console/joints/T1-flange-top")
    row = re.search(rf'<tr[^>]*data-device="{BOLT}".*?</tr>', joint, re.S)
    assert row is not None
    assert re.search(r'class="num trend">-\d+\.\d %/day<', row.group(0))
    assert "70 % line" in row.group(0)


def _mill_store(tmp_path: Path) -> Store:
    store = Store(tmp_path / "data")
    wave = cnc_waveform(
        rpm=12_000.0,
        fs_hz=4096.0,
        n=4096,
        rng=np.random.default_rng(1),
        active_faults=frozenset({"chatter"}),
    )
    dec = TelemetryDecoder(clock=lambda: T0 / 1000)
    msgs = [
        (
            "boltwatch/v1/fablab-lille/cnc_mill/cnc-mill-1/telemetry",
            msgspec.json.encode(
                {
                    "ts": T0 + k * 10_000,
                    "seq": k,
                    "spindle_a": 4.0,
                    "vib_rms_mms": 3.2,
                    "spindle_rpm": 12_000.0,
                    "fs_hz": 4096.0,
                    **({"vib_ms2": wave.tolist()} if k in (2, 5) else {}),
                }
            ),
        )
        for k in range(8)
    ]
    store.write(dec.decode_batch(msgs), received_ms=T0)
    return store


def test_store_reads_the_newest_waveform_and_skips_waveforms_for_charts(tmp_path: Path) -> None:
    with _mill_store(tmp_path) as store:
        ts, samples, values = store.latest_waveform(DeviceKind.CNC_MILL, "cnc-mill-1", "vib_ms2")  # type: ignore[misc]
        assert ts == T0 + 50_000
        assert samples.size == 4096
        assert values["fs_hz"] == 4096.0
        assert math.isnan(values["feed_mm_min"])
        assert store.latest_waveform(DeviceKind.CNC_MILL, "nobody", "vib_ms2") is None
        with pytest.raises(KeyError):
            store.latest_waveform(DeviceKind.CNC_MILL, "cnc-mill-1", "spindle_a")
        full = store.readings(DeviceKind.CNC_MILL)
        light = store.readings(DeviceKind.CNC_MILL, waveforms=False)
        assert sum(a is not None for a in full.arrays["vib_ms2"]) == 2
        assert all(a is None for a in light.arrays["vib_ms2"])
        assert light.values["vib_rms_mms"].tolist() == full.values["vib_rms_mms"].tolist()


def test_machine_page_draws_its_kinds_channels_and_the_mills_spectrum(tmp_path: Path) -> None:
    e = Env(tmp_path / "env")
    mill = _mill_store(tmp_path / "mill")
    try:
        assert e.web.source is not None
        e.web.source.readings = mill  # the console reads the mill's store
        with ApiServer(e.web.app) as server:
            b = Browserless(server.url)
            b.login(TOKEN)
            status, _, page = b.request("GET", "/console/devices/cnc-mill-1")
            assert status == 200
            assert "CNC mill" in page  # the registry's name
            charts = re.findall(r'class="chart" id="chart-\d+" data-left="([^"]*)"', page)
            assert charts == [",".join(c.left) for c in CHANNELS[DeviceKind.CNC_MILL]]
            assert 'data-zones="1.4,2.8,4.5"' in page
            assert 'id="spectrum"' in page
            _, _, body = b.request("GET", "/console/data/spectrum/cnc-mill-1")
            sp = json.loads(body)["spectrum"]
            assert sp["fs_hz"] == 4096.0
            assert sp["samples"] == 4096
            assert sp["zone"] == "C"
            f, psd = np.array(sp["f"]), np.array(sp["psd"])
            assert f[-1] == pytest.approx(2048.0)
            # Chatter: the strongest line lies in the chatter band, far above the median.
            peak = f[np.argmax(psd)]
            assert 300 < peak < 2000, peak
            assert psd.max() > 100 * np.median(psd)
            # A printer has no spectrum; a machine without a waveform yet has none to show.
            _, _, page = b.request("GET", "/console/devices/prusa-mk4-1")
            assert 'id="spectrum"' not in page
            _, _, body = b.request("GET", "/console/data/spectrum/prusa-mk4-1")
            assert json.loads(body)["spectrum"] is None
    finally:
        mill.close()
        e.close()


def test_fleet_page_lists_exceptions_of_a_large_joint_and_counts_the_rest(
    served: tuple[Env, str],
) -> None:
    e, _ = served
    src: ConsoleSource = e.web.source  # type: ignore[assignment]
    fleet = src.fleet()
    joints = {n.id: n for s in fleet.sites for t in s.children for n in t.children}
    # The sample registry's joints have few bolts: every one is listed.
    assert all(n.folded == 0 for n in joints.values())
    limit = FOLD_OK["joint"]
    from dashboards.console import source

    source.FOLD_OK["joint"] = 1
    try:
        fleet = src.fleet()
        flange = next(
            n
            for s in fleet.sites
            for t in s.children
            for n in t.children
            if n.id == "T1-flange-top"
        )
        listed = {d.device_id for d in flange.devices}
        assert listed == {d for d in listed if d in (BOLT, "cb-wtg07-t1-p04")}  # the alerting ones
        assert flange.folded == 2
        assert flange.counts[Status.OK] == 2
        assert flange.total() == 4
        # The joint's own page lists every bolt.
        view = src.joint("T1-flange-top")
        assert view is not None
        assert len(view.rows) == 4
    finally:
        source.FOLD_OK["joint"] = limit


def test_quality_page_shows_ingest_rate_backlog_and_the_weakest_signals(tmp_path: Path) -> None:
    e = Env(tmp_path)
    try:
        dec = TelemetryDecoder(clock=lambda: e.now / 1000)
        msgs = [
            (
                f"boltwatch/v1/windfarm-north/{kind}/{dev}/telemetry",
                msgspec.json.encode({"ts": T0 + 60_000 * k, "seq": k, "rssi_dbm": dbm, **extra}),
            )
            for k in range(3)
            for kind, dev, dbm, extra in (
                ("gateway", "gw-weak", -97.0, {}),
                ("cbolt", "cb-strong", -61.0, {"preload_kn": 50.0}),
            )
        ]
        e.store.write(dec.decode_batch(msgs), received_ms=e.now)
        e.store.rollup(now_ms=e.now)
        metrics = IngestMetrics()
        clock = [100.0]
        src: ConsoleSource = e.web.source  # type: ignore[assignment]
        src.flow = metrics.totals
        src.monotonic = lambda: clock[0]
        first = src.quality()
        assert first.rate_per_s is None  # nothing to compare with yet
        assert first.signals == [("gw-weak", -97.0), ("cb-strong", -61.0)]
        # The newest reading (T0 + 29 min) against the clock (T0 + 1 h).
        assert first.newest_age_s == pytest.approx(31 * 60)
        metrics.readings.labels(kind="cbolt").inc(500)
        metrics.queue_depth.set(12)
        metrics.connected.set(1)
        clock[0] += 2.0
        assert src.quality().rate_per_s == pytest.approx(250.0)
        clock[0] += 0.5  # within a second: the same figure, not a noisy one
        assert src.quality().rate_per_s == pytest.approx(250.0)
        with ApiServer(e.web.app) as server:
            b = Browserless(server.url)
            b.login(TOKEN)
            _, _, page = b.request("GET", "/console/quality")
            assert re.search(r'id="rate">[\d.,]+ readings/s<', page)
            assert "12 messages" in page
            assert page.index("gw-weak") < page.index("cb-strong")
            # Alerts filtered by severity: major or worse leaves the warning out.
            _, _, page = b.request("GET", "/console/alerts?severity=major")
            assert BOLT in page
            assert "cb-wtg07-t1-p04" not in page
            _, _, page = b.request("GET", "/console/alerts?severity=warning")
            assert "cb-wtg07-t1-p04" in page
    finally:
        e.close()


def test_bolt_page_lists_registry_records_and_device_tightenings_with_their_nut_factor(
    tmp_path: Path,
) -> None:
    e = Env(tmp_path)
    try:
        record = e.registry.history(BOLT)[0]  # 2,100 N·m, 470 kN on an M36: K 0.124, ok
        at = round(record.ts.timestamp() * 1000)
        topic = f"boltwatch/v1/windfarm-north/cbolt/{BOLT}/event"

        def tightened(ts: int, seq: int, torque: float, preload: float) -> tuple[str, bytes]:
            body = {"type": "tightened", "ts": ts, "seq": seq, "torque_nm": torque}
            return topic, msgspec.json.encode({**body, "preload_kn": preload, "tool": "wrench"})

        dec = TelemetryDecoder(clock=lambda: e.now / 1000)
        batch = dec.decode_batch(
            [
                tightened(at + 20_000, 1, record.torque_nm, record.preload_kn),  # the same, seen
                tightened(T0 + 600_000, 2, 2100.0, 300.0),  # retightened: K 0.194, over 0.18
            ]
        )
        assert not batch.errors
        e.store.write(batch, received_ms=e.now)
        with ApiServer(e.web.app) as server:
            b = Browserless(server.url)
            b.login(TOKEN)
            _, _, page = b.request("GET", f"/console/devices/{BOLT}")
        rows = re.findall(r'<tr data-source="(\w+)" data-verdict="(\w*)">(.*?)</tr>', page, re.S)
        sources = [(src, verdict) for src, verdict, _ in rows]
        registry_rows = e.registry.history(BOLT)
        assert sources == [("registry", "ok")] * len(registry_rows) + [("device", "high")]
        assert "0.124" in rows[0][2]
        assert "0.194" in rows[-1][2]
        assert "wrench" in rows[-1][2]
    finally:
        e.close()
