"""The alerts HTTP API against a real uvicorn server on a free port of 127.0.0.1.

Alerts come from the real pipeline (detection events in, injected clock), the store is a real
SQLite file, and requests go over HTTP with urllib: nothing is faked. The clock is injected, so
every time in an answer is exact.
"""

from __future__ import annotations

import asyncio
import json
import socket
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from prometheus_client import CollectorRegistry, Counter

from alerts.api import create_app, parse_listen, serve_api
from alerts.errors import ListenError
from alerts.pipeline import AlertMetrics, AlertPipeline
from alerts.rules import load_rules
from alerts.store import AlertStore
from detection.base import DetectionEvent, EventKind, Severity
from detection.events import BatchOutcome
from firmware_sim.scenario import scenario_registry
from sensors.registry import load_registry
from sensors.registry_store import RegistryStore
from tests.api_server import ApiServer

T0 = 1_772_323_200_000  # 2026-03-01T00:00:00Z
MIN = 60_000
TOKEN = "test-token-4f9a"


class Clock:
    def __init__(self) -> None:
        self.ms = T0

    def __call__(self) -> int:
        return self.ms

    def advance(self, minutes: float) -> None:
        self.ms += int(minutes * MIN)


def http(
    method: str,
    url: str,
    body: Any = None,
    *,
    token: str | None = TOKEN,
    raw: bytes | None = None,
    headers: dict[str, str] | None = None,
) -> tuple[int, Any]:
    """(status, decoded JSON or text) of one request; HTTP errors are answers, not raised."""
    data = raw if raw is not None else (None if body is None else json.dumps(body).encode())
    req = urllib.request.Request(url, data=data, method=method)  # noqa: S310 - http:// only
    if token is not None:
        req.add_header("Authorization", f"Bearer {token}")
    for k, v in (headers or {}).items():
        req.add_header(k, v)
    if data is not None:
        req.add_header("Content-Type", "application/json")
    try:
        with urllib.request.urlopen(req, timeout=5) as r:  # noqa: S310
            status, ctype, payload = r.status, r.headers.get("content-type", ""), r.read()
    except urllib.error.HTTPError as exc:
        status, ctype, payload = exc.code, exc.headers.get("content-type", ""), exc.read()
    if "json" in ctype:
        return status, json.loads(payload)
    return status, payload.decode()


def _event(
    device: str,
    kind: EventKind = EventKind.LOOSENING,
    site: str = "s1",
    sev: Severity = Severity.WARNING,
) -> DetectionEvent:
    return DetectionEvent(
        device_id=device,
        kind=kind,
        severity=sev,
        ts_ms=T0,
        score=0.9,
        explanation=f"{kind.value} on {device}",
        detector="test",
        site=site,
        data={"hours_to_alarm_line": 38.0},
        device_kind="cbolt",
    )


class Env:
    def __init__(self, tmp_path: Path) -> None:
        self.clock = Clock()
        self.store = AlertStore(tmp_path / "alerts.db")
        self.metrics = AlertMetrics()
        self.pipe = AlertPipeline(
            load_rules(None), self.store, {}, clock=self.clock, metrics=self.metrics
        )
        # b1 and b3 become active (for = 0s); b2 arrives later and is still pending at T0 + 1m
        self.pipe.take(BatchOutcome(events=[_event("b1"), _event("b3", site="s2")]))
        self.pipe.evaluate()
        self.clock.advance(1)
        self.pipe.take(
            BatchOutcome(events=[_event("b2", EventKind.SENSOR_FAULT, sev=Severity.MAJOR)])
        )  # major severity
        self.ids = {a.device_id: a.id for a in self.store.alerts()}
        self.extra = CollectorRegistry()
        Counter("boltwatch_ingest_messages", "test", registry=self.extra).inc(3)
        # The registry in force: the demo's (its routes are part of the API).
        self.registry = RegistryStore(tmp_path / "data")
        demo = scenario_registry("demo")
        assert demo is not None
        self.registry.put(load_registry(demo), author="test", source="test")
        self.app = create_app(
            self.store,
            token=TOKEN,
            clock=self.clock,
            metrics_registry=self.metrics.registry,
            extra_registries=[self.extra],
            registry=self.registry,
        )

    def acknowledged(self, device: str) -> bool:
        found = self.store.get(self.ids[device])
        assert found is not None
        return found.alert.acknowledged


@pytest.fixture
def env(tmp_path: Path) -> Iterator[tuple[Env, str]]:
    e = Env(tmp_path)
    with ApiServer(e.app) as server:
        yield e, server.url
    e.store.close()


API_ROUTES = [
    ("GET", "/api/alerts"),
    ("GET", "/api/alerts/1"),
    ("POST", "/api/alerts/1/ack"),
    ("POST", "/api/alerts/1/unack"),
    ("POST", "/api/alerts/1/comment"),
    ("GET", "/api/silences"),
    ("POST", "/api/silences"),
    ("DELETE", "/api/silences/1"),
    ("GET", "/api/no-such-route"),
]


def test_every_api_route_needs_the_token(env: tuple[Env, str]) -> None:
    e, url = env
    for method, path in API_ROUTES:
        body = {"by": "mallory", "text": "x"} if method == "POST" else None
        for token in (None, "wrong", TOKEN + "x", ""):
            status, answer = http(method, url + path, body, token=token)
            assert (status, answer) == (401, {"error": "unauthorized"}), (method, path, token)
        status, _ = http(method, url + path, body, token=None, headers={"Authorization": TOKEN})
        assert status == 401
    # nothing changed
    assert not e.acknowledged("b1")
    assert e.store.silences() == []


def test_metrics_and_healthz_need_no_token(env: tuple[Env, str]) -> None:
    _, url = env
    status, text = http("GET", url + "/metrics", token=None)
    assert status == 200
    assert 'boltwatch_detection_events_total{kind="loosening",severity="warning"} 2.0' in text
    assert "boltwatch_ingest_messages_total 3.0" in text
    assert http("GET", url + "/healthz", token=None) == (200, {"status": "ok"})


def test_healthz_reports_a_closed_store(env: tuple[Env, str]) -> None:
    e, url = env
    e.store.close()
    assert http("GET", url + "/healthz", token=None) == (
        503,
        {"error": "the alert store is closed"},
    )
    assert http("GET", url + "/api/alerts") == (503, {"error": "the alert store is closed"})


def test_empty_token_is_refused(tmp_path: Path) -> None:
    with AlertStore(tmp_path / "a.db") as store:
        for token in ("", "  "):
            with pytest.raises(ValueError, match=r"alerts\.api_token"):
                create_app(store, token=token, clock=Clock())


def test_list_and_filter(env: tuple[Env, str]) -> None:
    _, url = env
    status, answer = http("GET", url + "/api/alerts")
    assert status == 200
    alerts = answer["alerts"]
    assert [a["device_id"] for a in alerts] == ["b2", "b3", "b1"]  # newest activity first
    b2 = alerts[0]
    assert (b2["kind"], b2["severity"], b2["state"]) == ("sensor_fault", "major", "pending")
    assert b2["first_ms"] == T0 + MIN

    def devices(query: str) -> list[str]:
        status, answer = http("GET", url + "/api/alerts?" + query)
        assert status == 200, answer
        return [a["device_id"] for a in answer["alerts"]]

    assert devices("state=active") == ["b3", "b1"]
    assert devices("state=pending") == ["b2"]
    assert devices("site=s2") == ["b3"]
    assert devices("kind=loosening&site=s1") == ["b1"]
    assert devices("device_id=b1") == ["b1"]
    assert devices("limit=1") == ["b2"]
    assert devices("state=&site=") == ["b2", "b3", "b1"]  # empty filters are no filters
    assert devices("site=nowhere") == []

    status, answer = http("GET", url + "/api/alerts?state=burning")
    assert status == 400
    assert answer["error"].startswith("state: 'burning' is not a state (pending, active, cleared")
    for bad in ("0", "ten", "100000"):
        status, answer = http("GET", url + f"/api/alerts?limit={bad}")
        assert status == 400
        assert answer["error"].startswith("limit: ")


def test_show_with_history(env: tuple[Env, str]) -> None:
    e, url = env
    status, a = http("GET", url + f"/api/alerts/{e.ids['b1']}")
    assert status == 200
    assert (a["device_id"], a["state"], a["active_ms"]) == ("b1", "active", T0)
    assert a["data"] == {"hours_to_alarm_line": 38.0}
    assert a["history"] == [
        {"ms": T0, "what": "event", "detail": "[warning] loosening on b1"},
        {"ms": T0, "what": "activated", "detail": ""},
    ]
    assert http("GET", url + "/api/alerts/999") == (404, {"error": "no alert 999"})
    status, answer = http("GET", url + "/api/alerts/abc")
    assert status == 404
    assert "error" in answer


def test_ack_unack_comment_round_trip(env: tuple[Env, str]) -> None:
    e, url = env
    b1 = e.ids["b1"]
    e.clock.advance(5)
    status, a = http("POST", url + f"/api/alerts/{b1}/ack", {"by": "alice", "comment": "on it"})
    assert status == 200
    assert (a["acknowledged"], a["ack_by"], a["ack_ms"]) == (True, "alice", T0 + 6 * MIN)
    assert a["comments"] == [{"author": "alice", "ms": T0 + 6 * MIN, "text": "on it"}]
    assert e.acknowledged("b1")

    e.clock.advance(1)
    status, a = http("POST", url + f"/api/alerts/{b1}/unack", {"by": "bob"})
    assert status == 200
    assert (a["acknowledged"], a["ack_by"], a["ack_ms"]) == (False, "", 0)

    status, a = http("POST", url + f"/api/alerts/{b1}/comment", {"by": "bob", "text": "torqued"})
    assert status == 200
    assert [c["text"] for c in a["comments"]] == ["on it", "torqued"]

    _, shown = http("GET", url + f"/api/alerts/{b1}")
    assert [(h["ms"], h["what"], h["detail"]) for h in shown["history"][2:]] == [
        (T0 + 6 * MIN, "ack", "alice"),
        (T0 + 6 * MIN, "comment", "on it"),
        (T0 + 7 * MIN, "unack", "bob"),
        (T0 + 7 * MIN, "comment", "torqued"),
    ]


def test_ack_and_comment_errors(env: tuple[Env, str]) -> None:
    e, url = env
    b1 = e.ids["b1"]
    for path, body, field in [
        ("ack", {}, "by"),
        ("ack", {"by": "  "}, "by"),
        ("ack", {"by": 7}, "by"),
        ("ack", {"by": "a", "comment": ["x"]}, "comment"),
        ("unack", {}, "by"),
        ("comment", {"by": "a"}, "text"),
        ("comment", {"text": "t"}, "by"),
    ]:
        status, answer = http("POST", url + f"/api/alerts/{b1}/{path}", body)
        assert status == 422, (path, body, answer)
        assert answer["error"].startswith(f"{field}: "), answer
    status, answer = http("POST", url + f"/api/alerts/{b1}/ack", raw=b"")
    assert (status, answer) == (422, {"error": "by: required"})
    status, answer = http("POST", url + f"/api/alerts/{b1}/ack", raw=b"{not json")
    assert status == 400
    assert answer["error"].startswith("the body is not JSON")
    status, answer = http("POST", url + f"/api/alerts/{b1}/ack", raw=b"[1, 2]")
    assert (status, answer) == (400, {"error": "the body must be a JSON object"})
    assert http("POST", url + "/api/alerts/999/ack", {"by": "a"}) == (
        404,
        {"error": "no alert 999"},
    )
    assert http("POST", url + "/api/alerts/999/comment", {"by": "a", "text": "t"})[0] == 404
    status, answer = http("DELETE", url + f"/api/alerts/{b1}")
    assert status == 405
    assert "error" in answer
    assert not e.acknowledged("b1")


def test_silence_create_list_delete(env: tuple[Env, str]) -> None:
    e, url = env
    now = e.clock()
    status, s = http(
        "POST",
        url + "/api/silences",
        {"author": "ops", "reason": "retightening", "site": "s1", "duration": "2h"},
    )
    assert status == 201
    assert s == {
        "id": s["id"],
        "starts_ms": now,
        "ends_ms": now + 120 * MIN,
        "author": "ops",
        "reason": "retightening",
        "device_id": "",
        "site": "s1",
        "kind": "",
    }
    status, later = http(
        "POST",
        url + "/api/silences",
        {
            "author": "ops",
            "reason": "next week",
            "device_id": "b3",
            "starts": "2026-03-08T08:00:00+01:00",
            "ends": T0 + 7 * 1440 * MIN + 10 * 60 * MIN,
        },
    )
    assert status == 201
    assert later["starts_ms"] == T0 + 7 * 1440 * MIN + 7 * 60 * MIN

    def listed(query: str = "") -> list[int]:
        status, answer = http("GET", url + "/api/silences" + query)
        assert status == 200
        return [x["id"] for x in answer["silences"]]

    assert listed() == [s["id"], later["id"]]
    assert listed("?active=true") == [s["id"]]
    assert listed("?active=false") == [later["id"]]

    e.clock.advance(10)
    status, ended = http("DELETE", url + f"/api/silences/{s['id']}")
    assert status == 200
    assert ended["ends_ms"] == e.clock()
    assert listed("?active=true") == []
    assert listed("?active=false") == [s["id"], later["id"]]
    assert http("DELETE", url + "/api/silences/999") == (404, {"error": "no silence 999"})
    status, answer = http("GET", url + "/api/silences?active=maybe")
    assert status == 400
    assert answer["error"].startswith("active: ")


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"reason": "r", "site": "s1", "duration": "1h"}, "author"),
        ({"author": "a", "site": "s1", "duration": "1h"}, "reason"),
        ({"author": "a", "reason": "r", "duration": "1h"}, "device_id"),
        ({"author": "a", "reason": "r", "site": "", "duration": "1h"}, "device_id"),
        ({"author": "a", "reason": "r", "site": 3, "duration": "1h"}, "site"),
        ({"author": "a", "reason": "r", "site": "s1"}, "ends"),
        ({"author": "a", "reason": "r", "site": "s1", "duration": "soon"}, "duration"),
        ({"author": "a", "reason": "r", "site": "s1", "duration": "0s"}, "ends"),
        ({"author": "a", "reason": "r", "site": "s1", "duration": "1h", "ends": T0}, "duration"),
        ({"author": "a", "reason": "r", "site": "s1", "ends": T0 - 1}, "ends"),
        ({"author": "a", "reason": "r", "site": "s1", "ends": "yesterday"}, "ends"),
        ({"author": "a", "reason": "r", "site": "s1", "ends": "2026-03-02T00:00:00"}, "ends"),
        ({"author": "a", "reason": "r", "site": "s1", "ends": True}, "ends"),
        ({"author": "a", "reason": "r", "site": "s1", "starts": [], "duration": "1h"}, "starts"),
    ],
)
def test_silence_validation_names_the_field(
    env: tuple[Env, str], body: dict[str, Any], field: str
) -> None:
    e, url = env
    status, answer = http("POST", url + "/api/silences", body)
    assert status == 422, answer
    assert answer["error"].startswith(f"{field}: "), answer
    assert e.store.silences() == []


def test_silence_set_over_the_api_mutes_the_pipeline(env: tuple[Env, str]) -> None:
    e, url = env
    status, s = http(
        "POST",
        url + "/api/silences",
        {"author": "ops", "reason": "maintenance", "kind": "sensor_fault", "duration": "1h"},
    )
    assert status == 201
    e.clock.advance(1)
    notes = e.pipe.evaluate()  # b1, b3 past group_wait: notified; b2 (sensor_fault) activates
    assert sorted(a["device_id"] for n in notes for a in n.alerts) == ["b1", "b3"]
    e.clock.advance(1)
    assert e.pipe.evaluate() == []  # b2 is past group_wait too, but silenced
    assert http("DELETE", url + f"/api/silences/{s['id']}")[0] == 200
    e.clock.advance(0.1)
    notes = e.pipe.evaluate()
    assert [a["device_id"] for n in notes for a in n.alerts] == ["b2"]


def test_port_in_use_is_an_os_error_naming_the_address(tmp_path: Path) -> None:
    with AlertStore(tmp_path / "a.db") as store, socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        app = create_app(store, token=TOKEN, clock=Clock())
        with pytest.raises(OSError, match=f"cannot listen on 127.0.0.1:{port}"):
            asyncio.run(serve_api(app, "127.0.0.1", port))


def test_parse_listen() -> None:
    assert parse_listen("127.0.0.1:8080") == ("127.0.0.1", 8080)
    assert parse_listen("[::1]:9000") == ("::1", 9000)
    assert parse_listen(":8080") == ("0.0.0.0", 8080)  # noqa: S104 - parsed, not bound
    assert parse_listen("localhost:1") == ("localhost", 1)
    for bad, why in [
        ("8080", "HOST:PORT"),
        ("host:http", "not a number"),
        ("host:0", "1..65535"),
        ("host:70000", "1..65535"),
        ("::1:8080", "brackets"),
    ]:
        with pytest.raises(ValueError, match=why):
            parse_listen(bad)


# -- hostile input: 4xx naming the field, never 500 (issue 14) ----------------------------------


_S = {"author": "a", "reason": "r", "site": "s"}


@pytest.mark.parametrize(
    "case",
    [
        ("GET", f"/api/alerts/{2**64}", None, 404, "alert_id"),
        ("POST", f"/api/alerts/{2**63}/ack", {"by": "a"}, 404, "alert_id"),
        ("POST", f"/api/alerts/{10**40}/comment", {"by": "a", "text": "t"}, 404, "alert_id"),
        ("DELETE", f"/api/silences/{2**64}", None, 404, "silence_id"),
        ("POST", "/api/silences", {**_S, "ends": 1e300}, 422, "ends"),
        ("POST", "/api/silences", {**_S, "ends": 10**30}, 422, "ends"),
        ("POST", "/api/silences", {**_S, "starts": -1e300, "duration": "1h"}, 422, "starts"),
        ("POST", "/api/silences", {**_S, "duration": 1e300}, 422, "duration"),
        ("POST", "/api/silences", {**_S, "duration": "9" * 400}, 422, "duration"),
        ("POST", "/api/silences", {**_S, "duration": 10**400}, 422, "duration"),
        ("POST", "/api/silences", {**_S, "ends": "9999-12-31T23:59:59-23:00"}, 422, "ends"),
        ("POST", "/api/silences", {**_S, "author": "a" * 300, "duration": "1h"}, 422, "author"),
        ("POST", "/api/alerts/1/comment", {"by": "a", "text": "[" * 30_000}, 422, "text"),
        ("POST", "/api/alerts/1/comment", {"by": "\ud800", "text": "t"}, 422, "by"),
    ],
    ids=lambda case: f"{case[0]} {case[1][:30]} {case[4]}",
)
def test_hostile_input_is_4xx_naming_the_field(
    env: tuple[Env, str], case: tuple[str, str, Any, int, str]
) -> None:
    e, url = env
    method, path, body, status, field = case
    got, answer = http(method, url + path, body)
    assert got == status, answer
    assert answer["error"].startswith(f"{field}: "), answer
    assert e.store.silences() == []


@pytest.mark.parametrize(
    "raw",
    [
        b"[" * 30_000,
        b'{"by": "a", "text": ' + b"[" * 30_000 + b"]" * 30_000 + b"}",
        b'{"by": "a", "text": "t", "x": ' + b"9" * 5_000 + b"}",
        b'{"by": "a", "text": NaN}',
        b"\xff\xfe",
    ],
    ids=["brackets", "deep", "huge-int", "nan", "not-utf8"],
)
def test_hostile_bodies_are_400(env: tuple[Env, str], raw: bytes) -> None:
    e, url = env
    status, answer = http("POST", url + f"/api/alerts/{e.ids['b1']}/comment", raw=raw)
    assert status in (400, 422), answer
    assert "error" in answer


def _headers(url: str, method: str = "GET", token: str | None = TOKEN) -> tuple[int, Any]:
    req = urllib.request.Request(url, method=method)  # noqa: S310 - http:// only
    if token is not None:
        req.add_header("Authorization", f"Bearer {token}")
    try:
        with urllib.request.urlopen(req, timeout=5) as r:  # noqa: S310
            return r.status, r.headers
    except urllib.error.HTTPError as exc:
        return exc.code, exc.headers


def test_security_headers_on_every_response(env: tuple[Env, str]) -> None:
    e, url = env
    cases = [
        ("GET", "/api/alerts", TOKEN, 200),
        ("GET", f"/api/alerts/{e.ids['b1']}", TOKEN, 200),
        ("GET", "/api/alerts/999", TOKEN, 404),
        ("GET", "/api/alerts", None, 401),
        ("GET", "/api/alerts?limit=x", TOKEN, 400),
        ("POST", "/api/silences", TOKEN, 422),
        ("GET", "/no-such-page", None, 404),
        ("GET", "/metrics", None, 200),
        ("GET", "/healthz", None, 200),
    ]
    for method, path, token, status in cases:
        got, headers = _headers(url + path, method, token)
        assert got == status, path
        assert headers["Content-Security-Policy"] == "default-src 'self'", path
        assert headers["X-Content-Type-Options"] == "nosniff", path
        assert headers["Referrer-Policy"] == "no-referrer", path


def test_a_bug_is_a_json_500_with_the_headers(tmp_path: Path) -> None:
    """Not input: the one way to a 500 is a bug; still no traceback, still the headers."""
    with AlertStore(tmp_path / "a.db") as store:

        def broken_clock() -> int:
            raise RuntimeError("a bug")

        app = create_app(store, token=TOKEN, clock=broken_clock)
        with ApiServer(app) as server:
            status, answer = http("POST", server.url + "/api/alerts/1/ack", {"by": "a"})
            assert (status, answer) == (500, {"error": "internal error (logged)"})
            _, headers = _headers(server.url + "/api/silences?active=true")
            assert headers["X-Content-Type-Options"] == "nosniff"


def test_port_in_use_names_the_setting(tmp_path: Path) -> None:
    with AlertStore(tmp_path / "a.db") as store, socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        app = create_app(store, token=TOKEN, clock=Clock())
        with pytest.raises(ListenError) as info:
            asyncio.run(serve_api(app, "127.0.0.1", port))
        assert info.value.key == "alerts.api_listen"
        assert str(info.value).startswith(f"alerts.api_listen: cannot listen on 127.0.0.1:{port}")
