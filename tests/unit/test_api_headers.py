"""Every answer of the alerts API, errors included, carries the security headers and is JSON.

Over a real uvicorn server (``tests/api_server.py``) with http.client, so that the requests are
what a client sends on the wire: a declared ``Content-Length`` over the limit, a chunked body
over it, a refused token, a rate-limited client, an unknown route, a wrong method.
"""

from __future__ import annotations

import http.client
import json
from collections.abc import Iterator
from pathlib import Path

import pytest

from alerts.api import MAX_BODY_BYTES, SECURITY_HEADERS, create_app
from alerts.ratelimit import RateLimits
from tests.api_server import ApiServer
from tests.unit.test_alerts_api import TOKEN, Env

WRONG = "not-the-token"
BIG = b'{"by": "a", "text": "' + b"x" * MAX_BODY_BYTES + b'"}'


class Frozen:
    """Monotonic time that never moves: a drained bucket stays drained."""

    def __call__(self) -> float:
        return 0.0


@pytest.fixture
def env(tmp_path: Path) -> Iterator[Env]:
    e = Env(tmp_path)
    yield e
    e.store.close()


def send(
    port: int,
    method: str,
    path: str,
    *,
    token: str | None = TOKEN,
    body: bytes | Iterator[bytes] | None = None,
    headers: dict[str, str] | None = None,
) -> tuple[int, http.client.HTTPMessage, bytes]:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    try:
        all_headers = dict(headers or {})
        if token is not None:
            all_headers["Authorization"] = f"Bearer {token}"
        chunked = body is not None and not isinstance(body, bytes)
        conn.request(method, path, body=body, headers=all_headers, encode_chunked=chunked)
        r = conn.getresponse()
        return r.status, r.headers, r.read()
    finally:
        conn.close()


def assert_guarded(status: int, headers: http.client.HTTPMessage, body: bytes) -> None:
    for name, value in SECURITY_HEADERS:
        assert headers[name.decode()] == value.decode(), (status, name)
    assert headers["Content-Type"] == "application/json", status
    assert isinstance(json.loads(body)["error"], str), status


def chunks() -> Iterator[bytes]:
    for _ in range(MAX_BODY_BYTES // 4096 + 2):
        yield b" " * 4096


@pytest.mark.parametrize(
    "case",
    [
        ("GET", "/no-such-page", None, None, 404),
        ("GET", "/api/alerts/999", TOKEN, None, 404),
        ("GET", "/api/no-such-route", TOKEN, None, 404),
        ("GET", "/api/alerts", None, None, 401),
        ("GET", "/api/alerts", WRONG, None, 401),
        ("PUT", "/api/silences", TOKEN, None, 405),
        ("GET", "/api/alerts?limt=5", TOKEN, None, 400),
        ("POST", "/api/silences", TOKEN, b"{}", 422),
        # Declared too large: refused before anything is read, whatever the route or the token
        ("POST", "/api/alerts/1/comment", TOKEN, BIG, 413),
        ("POST", "/api/alerts/1/comment", None, BIG, 413),
        ("GET", "/api/alerts", TOKEN, BIG, 413),
        ("GET", "/healthz", None, BIG, 413),
        # Chunked, no Content-Length: refused while it is read
        ("POST", "/api/alerts/1/comment", TOKEN, "chunked", 413),
    ],
    ids=lambda case: f"{case[0]} {case[1]} {case[4]}{' chunked' if case[3] == 'chunked' else ''}",
)
def test_error_answers_carry_the_headers(
    env: Env, case: tuple[str, str, str | None, bytes | str | None, int]
) -> None:
    method, path, token, body, expected = case
    with ApiServer(env.app) as server:
        payload = chunks() if body == "chunked" else body
        assert not isinstance(payload, str)
        status, headers, content = send(server.port, method, path, token=token, body=payload)
    assert status == expected, content
    assert_guarded(status, headers, content)
    if status == 413:
        assert json.loads(content) == {"error": f"the body is larger than {MAX_BODY_BYTES} bytes"}
    if status == 405:
        assert sorted(headers["Allow"].split(", ")) == ["GET", "HEAD", "POST"]  # both routes
    assert not env.acknowledged("b1")
    assert [c for a in env.store.alerts() for c in a.comments] == []


def test_429_carries_the_headers(env: Env) -> None:
    app = create_app(
        env.store,
        token=TOKEN,
        clock=env.clock,
        rate_limits=RateLimits(rate_per_s=1, burst=5, auth_failures_per_min=1),
        monotonic=Frozen(),
    )
    with ApiServer(app) as server:  # its start-up probe of /healthz takes one token
        statuses = []
        for _ in range(6):
            status, headers, content = send(server.port, "GET", "/api/alerts")
            statuses.append(status)
            if status == 429:
                break
        assert statuses[-1] == 429, statuses
        assert_guarded(status, headers, content)
        assert headers["Retry-After"] == "1"
    # and the lockout after a failed login
    app = create_app(
        env.store,
        token=TOKEN,
        clock=env.clock,
        rate_limits=RateLimits(rate_per_s=0, auth_failures_per_min=1),
        monotonic=Frozen(),
    )
    with ApiServer(app) as server:
        assert send(server.port, "GET", "/api/alerts", token=WRONG)[0] == 401
        status, headers, content = send(server.port, "GET", "/api/alerts")
        assert status == 429
        assert_guarded(status, headers, content)
        assert headers["Retry-After"] == "60"
