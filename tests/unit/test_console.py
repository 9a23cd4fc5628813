"""The web console over HTTP: a real uvicorn server on a free port, the composed app of
``boltwatch run`` (:func:`boltwatch.web.build_web`), a real ingest store and alert store.

Requests go over HTTP with urllib and a cookie jar of our own (redirects not followed), so that
cookies, CSRF tokens and status codes are seen as a browser would send and get them. The browser
itself is driven in tests/integration/test_console_browser.py.
"""

from __future__ import annotations

import html
import json
import re
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import msgspec
import pytest

from alerts.pipeline import AlertMetrics, AlertPipeline
from alerts.rules import load_rules
from alerts.store import AlertStore
from boltwatch.config import parse_config
from boltwatch.web import build_web
from dashboards.console import BoltLevel
from detection.engine import Engine
from detection.events import BatchOutcome, DetectionEvent, EventKind, Severity
from ingest.store import DeadLetter, Store
from sensors.codec import TelemetryDecoder
from sensors.registry import load_registry
from tests.api_server import ApiServer

SAMPLE_REGISTRY = Path(__file__).parents[2] / "sensors" / "samples" / "registry.toml"
T0 = 1_772_323_200_000  # 2026-03-01T00:00:00Z
TOKEN = "console-test-token-8c1d"
READER = "reader-token-0123456789"
BOLT = "cb-wtg07-t1-p01"
OTHER = "cb-wtg07-t1-p04"


class _NoRedirect(urllib.request.HTTPRedirectHandler):
    def redirect_request(self, *args: object, **kwargs: object) -> None:
        return None


class Browserless:
    """HTTP with cookies kept per name (path and flags recorded), redirects returned as is."""

    def __init__(self, base: str) -> None:
        self.base = base
        self.cookies: dict[str, str] = {}
        self.set_cookie_headers: list[str] = []
        self._opener = urllib.request.build_opener(_NoRedirect)

    def request(
        self,
        method: str,
        path: str,
        form: dict[str, str] | None = None,
        headers: dict[str, str] | None = None,
    ) -> tuple[int, dict[str, str], str]:
        data = None if form is None else urllib.parse.urlencode(form).encode()
        req = urllib.request.Request(self.base + path, data=data, method=method)  # noqa: S310
        if data is not None:
            req.add_header("Content-Type", "application/x-www-form-urlencoded")
        if self.cookies:
            req.add_header("Cookie", "; ".join(f"{k}={v}" for k, v in self.cookies.items()))
        for k, v in (headers or {}).items():
            req.add_header(k, v)
        try:
            with self._opener.open(req, timeout=10) as r:
                status, hdrs, body = r.status, r.headers, r.read()
        except urllib.error.HTTPError as exc:
            status, hdrs, body = exc.code, exc.headers, exc.read()
        for raw in hdrs.get_all("set-cookie") or []:
            self.set_cookie_headers.append(raw)
            name, _, rest = raw.partition("=")
            value = rest.split(";", 1)[0]
            if value in ("", '""') or "max-age=0" in raw.lower():
                self.cookies.pop(name, None)
            else:
                self.cookies[name] = value
        return status, {k.lower(): v for k, v in hdrs.items()}, body.decode()

    def login(self, token: str) -> int:
        status, _, page = self.request("GET", "/console/login")
        assert status == 200, page
        csrf = _field(page, "csrf")
        status, _, page = self.request(
            "POST", "/console/login", {"token": token, "csrf": csrf, "next": "/console/alerts"}
        )
        return status


def _field(page: str, name: str) -> str:
    found = re.search(rf'name="{name}" value="([^"]*)"', page)
    assert found, f"no field {name} in the page"
    return html.unescape(found.group(1))


def _event(device: str, kind: EventKind, sev: Severity) -> DetectionEvent:
    return DetectionEvent(
        device_id=device,
        kind=kind,
        severity=sev,
        ts_ms=T0,
        score=0.9,
        explanation=f"{kind.value} on {device}",
        detector="test",
        site="windfarm-north",
        data={},
        device_kind="cbolt",
    )


class Env:
    def __init__(self, tmp: Path) -> None:
        self.now = T0 + 3_600_000
        self.config = parse_config(
            {
                "store": {"path": str(tmp / "data")},
                "registry": {"path": str(SAMPLE_REGISTRY)},
                "console": {"users": [{"name": "reader", "token": READER, "role": "read"}]},
            },
            environ={},
        )
        self.registry = load_registry(SAMPLE_REGISTRY)
        self.store = Store(tmp / "data")
        dec = TelemetryDecoder(clock=lambda: self.now / 1000)
        messages = [
            (
                f"boltwatch/v1/windfarm-north/cbolt/{BOLT}/telemetry",
                msgspec.json.encode(
                    {
                        "ts": T0 + i * 60_000,
                        "seq": i,
                        "preload_kn": 300.0 - i,
                        "temp_c": 11.5,
                        "battery_v": 3.61,
                    }
                ),
            )
            for i in range(30)
        ]
        self.store.write(
            dec.decode_batch(messages),
            [DeadLetter("boltwatch/v1/x/cbolt/y/telemetry", b"{oops", "$", "not JSON", T0)],
            received_ms=self.now,
        )
        self.store.rollup(now_ms=self.now)
        self.alerts = AlertStore(tmp / "alerts.db")
        self.pipe = AlertPipeline(
            load_rules(None), self.alerts, {}, clock=lambda: self.now, metrics=AlertMetrics()
        )
        self.pipe.take(
            BatchOutcome(
                events=[
                    _event(BOLT, EventKind.LOOSENING, Severity.MAJOR),
                    _event(OTHER, EventKind.SENSOR_FAULT, Severity.WARNING),
                ]
            )
        )
        self.pipe.evaluate()
        self.ids = {a.device_id: a.id for a in self.alerts.alerts()}
        api = _api(self.alerts)
        self.web = build_web(
            self.config,
            api,
            token=TOKEN,
            alerts=self.alerts,
            registry=self.registry,
            engine=Engine(registry=self.registry),
            clock_ms=lambda: self.now,
        )

    def close(self) -> None:
        self.web.close()
        self.alerts.close()
        self.store.close()


def _api(alerts: AlertStore):  # type: ignore[no-untyped-def]
    from alerts.api import create_app

    return create_app(alerts, token=TOKEN, clock=lambda: T0)


@pytest.fixture
def env(tmp_path: Path) -> Iterator[tuple[Env, str]]:
    e = Env(tmp_path)
    try:
        with ApiServer(e.web.app) as server:
            yield e, server.url
    finally:
        e.close()


def test_pages_need_a_session_and_the_root_leads_to_the_console(env: tuple[Env, str]) -> None:
    _, url = env
    b = Browserless(url)
    status, headers, _ = b.request("GET", "/")
    assert status == 307
    assert headers["location"] == "/console/"
    for path in ("/console/", "/console/alerts", f"/console/devices/{BOLT}", "/console/quality"):
        status, headers, _ = b.request("GET", path)
        assert status == 303, path
        assert headers["location"].startswith("/console/login?next=")
    status, _, _ = b.request("GET", f"/console/data/series/{BOLT}?range=1d")
    assert status == 303
    status, headers, _ = b.request("GET", "/console/fleet/part", headers={"HX-Request": "true"})
    assert (status, headers["hx-redirect"]) == (401, "/console/login")


def test_login_sets_a_strict_http_only_cookie_and_a_wrong_token_is_refused(
    env: tuple[Env, str],
) -> None:
    _, url = env
    b = Browserless(url)
    assert b.login("not-the-token") == 401
    assert "bw_session" not in b.cookies
    # A login form posted without the cookie of the page that made it (cross-site) is refused.
    other = Browserless(url)
    _, _, page = b.request("GET", "/console/login")
    status, _, _ = other.request(
        "POST", "/console/login", {"token": TOKEN, "csrf": _field(page, "csrf")}
    )
    assert status == 403
    assert b.login(TOKEN) == 303
    session = next(h for h in b.set_cookie_headers if h.startswith("bw_session="))
    flags = session.lower()
    assert "httponly" in flags
    assert "samesite=strict" in flags
    assert "path=/console" in flags
    status, _, page = b.request("GET", "/console/")
    assert status == 200
    assert "admin (operator)" in page


def test_fleet_shows_the_registry_tree_coloured_by_the_worst_alert(env: tuple[Env, str]) -> None:
    _, url = env
    b = Browserless(url)
    b.login(TOKEN)
    status, headers, page = b.request("GET", "/console/")
    assert status == 200
    assert "default-src 'self'" in headers["content-security-policy"]
    assert re.search(rf'data-device="{BOLT}" data-status="major"', page)
    assert re.search(rf'data-device="{OTHER}" data-status="fault"', page)
    assert re.search(r'data-device="cb-wtg07-t1-p07" data-status="ok"', page)
    assert 'data-node="windfarm-north"' in page
    assert "Tower section 1 top flange" in page
    # Filtered by status, then by text.
    _, _, page = b.request("GET", "/console/?status=major")
    assert BOLT in page
    assert "cb-wtg07-t1-p07" not in page
    _, _, page = b.request("GET", "/console/?q=oa12")
    assert "cb-oa12-g2-p1" in page
    assert BOLT not in page
    # Every script and stylesheet is served from the console itself.
    for src in re.findall(r'(?:src|href)="([^"]+\.(?:js|css))"', page):
        assert src.startswith("/console/static/"), src
        status, _, _ = b.request("GET", src)
        assert status == 200, src


def test_ack_needs_the_csrf_token_and_is_written_with_the_user(env: tuple[Env, str]) -> None:
    e, url = env
    b = Browserless(url)
    b.login(TOKEN)
    alert_id = e.ids[BOLT]
    status, _, _ = b.request("POST", f"/console/alerts/{alert_id}/ack", {"comment": "on it"})
    assert status == 403
    found = e.alerts.get(alert_id)
    assert found is not None
    assert not found.alert.acknowledged
    _, _, page = b.request("GET", f"/console/alerts/{alert_id}")
    csrf = _field(page, "csrf")
    status, headers, _ = b.request(
        "POST",
        f"/console/alerts/{alert_id}/ack",
        {"csrf": csrf, "comment": "crew sent", "next": f"/console/alerts/{alert_id}"},
    )
    assert (status, headers["location"]) == (303, f"/console/alerts/{alert_id}")
    found = e.alerts.get(alert_id)
    assert found is not None
    assert (found.alert.acknowledged, found.alert.ack_by) == (True, "admin")
    assert ("admin", e.now, "crew sent") in [tuple(c) for c in found.alert.comments]
    assert ("ack", "admin") in [(w, d) for _, w, d in e.alerts.history(alert_id)]
    # The header form of the token (what htmx sends) works too.
    status, _, _ = b.request(
        "POST",
        f"/console/alerts/{alert_id}/comment",
        {"text": "bolt retightened"},
        headers={"X-CSRF-Token": csrf},
    )
    assert status == 303
    _, _, page = b.request("GET", f"/console/alerts/{alert_id}")
    assert "bolt retightened" in page
    assert "by admin" in page


def test_a_reader_sees_but_cannot_act(env: tuple[Env, str]) -> None:
    e, url = env
    b = Browserless(url)
    assert b.login(READER) == 303
    alert_id = e.ids[BOLT]
    _, _, page = b.request("GET", f"/console/alerts/{alert_id}")
    assert "reader (read)" in page
    assert "Acknowledge" not in page
    csrf = _field(page, "csrf")
    status, _, page = b.request("POST", f"/console/alerts/{alert_id}/ack", {"csrf": csrf})
    assert status == 403
    assert "may only read" in page
    status, _, _ = b.request(
        "POST", "/console/silences", {"csrf": csrf, "device_id": BOLT, "hours": "2", "reason": "x"}
    )
    assert status == 403
    found = e.alerts.get(alert_id)
    assert found is not None
    assert not found.alert.acknowledged
    assert e.alerts.silences() == []


def test_silence_from_the_page_names_a_wrong_field(env: tuple[Env, str]) -> None:
    e, url = env
    b = Browserless(url)
    b.login(TOKEN)
    _, _, page = b.request("GET", "/console/")
    csrf = _field(page, "csrf")
    status, _, page = b.request(
        "POST",
        "/console/silences",
        {"csrf": csrf, "device_id": BOLT, "hours": "1e9", "reason": "x"},
    )
    assert status == 422
    assert "hours" in page
    status, _, _ = b.request(
        "POST",
        "/console/silences",
        {"csrf": csrf, "device_id": BOLT, "hours": "2", "reason": "retightening crew"},
    )
    assert status == 303
    (silence,) = e.alerts.silences()
    assert (silence.author, silence.device_id, silence.ends_ms - silence.starts_ms) == (
        "admin",
        BOLT,
        7_200_000,
    )


def test_series_quality_and_device_pages(env: tuple[Env, str]) -> None:
    e, url = env
    b = Browserless(url)
    b.login(TOKEN)
    status, _, body = b.request("GET", f"/console/data/series/{BOLT}?range=1d")
    assert status == 200
    data = msgspec.json.decode(body)
    assert data["source"] == "raw"
    assert len(data["t"]) == 30
    assert data["fields"]["preload_kn"][:2] == [300.0, 299.0]
    assert data["t"][0] == T0 / 1000
    # The loosening alert is an open episode on the chart.
    assert [(e["kind"], e["severity"], e["to"]) for e in data["episodes"]] == [
        ("loosening", "major", None)
    ]
    assert data["events"] == []
    # Longer ranges draw means: hourly up to 30 days, daily beyond.
    e.store.rollup(now_ms=T0 + 3_600_000)
    for range_name, source in (("30d", "1h"), ("1y", "1d")):
        status, _, body = b.request("GET", f"/console/data/series/{BOLT}?range={range_name}")
        assert status == 200
        data = msgspec.json.decode(body)
        assert data["source"] == source
        assert data["t"] == [(T0 - T0 % (86_400_000 if source == "1d" else 3_600_000)) / 1000]
    status, _, body = b.request("GET", f"/console/data/series/{BOLT}?range=2y")
    assert status == 422
    assert "range" in body
    status, _, page = b.request("GET", f"/console/devices/{BOLT}")
    assert status == 200
    assert "M36" in page  # the bolt's profile, from the registry
    assert "Installation and tightening history" in page
    status, _, _ = b.request("GET", "/console/devices/no-such-device")
    assert status == 404
    status, _, page = b.request("GET", "/console/quality")
    assert status == 200
    assert "not JSON" in page
    assert re.search(rf"{BOLT}</a></td><td class=\"num\">3.61<", page)
    assert "{oops" in page


def test_one_time_link_and_logout(env: tuple[Env, str]) -> None:
    e, url = env
    link = e.web.login_link(url)
    assert link is not None
    path = link[len(url) :]
    b = Browserless(url)
    status, headers, _ = b.request("GET", path)
    assert (status, headers["location"]) == (303, "/console/")
    session = b.cookies["bw_session"]
    status, _, _ = b.request("GET", "/console/")
    assert status == 200
    assert Browserless(url).request("GET", path)[0] == 401  # spent
    _, _, page = b.request("GET", "/console/")
    status, _, _ = b.request("POST", "/console/logout", {"csrf": _field(page, "csrf")})
    assert status == 303
    replay = Browserless(url)
    replay.cookies["bw_session"] = session
    assert replay.request("GET", "/console/")[0] == 303


@pytest.mark.parametrize(
    ("users", "key", "why"),
    [
        ([{"name": "ann", "token": "short"}], "console.users[0].token", "length"),
        ([{"name": "ann", "token": "x" * 20, "role": "boss"}], "console.users[0].role", "role"),
        ([{"name": "a b", "token": "x" * 20}], "console.users[0].name", "regex"),
        ([{"name": "admin", "token": "x" * 20}], "console.users", "admin"),
        (
            [{"name": "ann", "token": "x" * 20}, {"name": "bob", "token": "x" * 20}],
            "console.users",
            "share a token",
        ),
    ],
)
def test_console_users_are_checked_naming_the_key(
    users: list[dict[str, str]], key: str, why: str
) -> None:
    from boltwatch.config import ConfigError

    with pytest.raises(ConfigError) as caught:
        parse_config({"console": {"users": users}}, environ={})
    assert caught.value.key == key
    assert why in str(caught.value)


def test_console_tokens_are_redacted_and_the_console_can_be_turned_off(tmp_path: Path) -> None:
    from boltwatch.config import redacted

    config = parse_config(
        {"console": {"users": [{"name": "ann", "token": "secret-token-of-ann"}]}}, environ={}
    )
    assert "secret-token-of-ann" not in json.dumps(redacted(config))
    off = parse_config(
        {"store": {"path": str(tmp_path / "d")}, "console": {"enabled": False}}, environ={}
    )
    with AlertStore(tmp_path / "a.db") as alerts:
        web = build_web(
            off,
            _api(alerts),
            token=TOKEN,
            alerts=alerts,
            registry=None,
            engine=Engine(),
            clock_ms=lambda: T0,
        )
        assert web.auth is None
        assert web.login_link("http://x") is None
        with ApiServer(web.app) as server:
            assert Browserless(server.url).request("GET", "/console/")[0] == 404


def test_joint_page_draws_the_flange_coloured_by_level(env: tuple[Env, str]) -> None:
    e, url = env
    assert e.web.source is not None
    e.web.source.levels = lambda: {
        BOLT: BoltLevel(0.62, True, 300.0),
        "cb-wtg07-t1-p07": BoltLevel(0.95, True, 310.0),
        "cb-wtg07-t1-p10": BoltLevel(1.0, False, float("nan")),
    }
    b = Browserless(url)
    b.login(TOKEN)
    _, _, page = b.request("GET", "/console/")
    assert 'href="/console/joints/T1-flange-top"' in page
    status, _, page = b.request("GET", "/console/joints/T1-flange-top")
    assert status == 200
    # 12 positions on the pitch circle, 4 of them instrumented.
    assert page.count('class="empty"') == 8
    marks = dict(re.findall(r'data-device="([\w-]+)" data-level="(\w+)"', page))
    assert marks == {
        BOLT: "llow",
        OTHER: "unknown",  # a sensor fault and no level yet
        "cb-wtg07-t1-p07": "l90",
        "cb-wtg07-t1-p10": "settling",
    }
    # The faulty sensor is hatched; position 1 sits at the top of the circle.
    assert page.count('fill="url(#hatch)"') == 1
    top = re.search(r'data-position="1".*?<circle cx="([\d.]+)" cy="([\d.]+)"', page, re.S)
    assert top is not None
    assert (float(top.group(1)), float(top.group(2))) == (180.0, round(180 - 0.38 * 360, 1))
    assert "62 %" in page
    status, _, _ = b.request("GET", "/console/joints/no-such-joint")
    assert status == 404
