"""CORS: off unless origins are configured; then exactly those origins, nothing else."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from starlette.applications import Starlette

from alerts.api import create_app
from tests.asgi_call import Answer, asgi_call
from tests.unit.test_alerts_api import TOKEN, Env

OPS = "https://ops.example.com"
EVIL = "https://evil.example"


@pytest.fixture
def env(tmp_path: Path) -> Iterator[Env]:
    e = Env(tmp_path)
    yield e
    e.store.close()


def cors_headers(answer: Answer) -> dict[str, str]:
    return {k: v for k, v in answer.headers.items() if k.startswith("access-control-")}


async def preflight(
    app: Starlette, origin: str, method: str = "DELETE", path: str = "/api/silences/1"
) -> Answer:
    return await asgi_call(
        app,
        "OPTIONS",
        path,
        headers={
            "Origin": origin,
            "Access-Control-Request-Method": method,
            "Access-Control-Request-Headers": "authorization, content-type",
        },
    )


async def test_off_by_default_no_cors_header_anywhere(env: Env) -> None:
    app = env.app  # create_app without cors_origins
    for origin in (OPS, EVIL, "null"):
        for method, path, token in [
            ("GET", "/api/alerts", TOKEN),
            ("GET", "/api/alerts", None),
            ("GET", "/healthz", None),
            ("GET", "/openapi.json", None),
        ]:
            answer = await asgi_call(app, method, path, token=token, headers={"Origin": origin})
            assert answer.status in (200, 401)
            assert cors_headers(answer) == {}, (origin, path)
            assert "origin" not in answer.headers.get("vary", "").lower()
        answer = await preflight(app, origin)
        assert answer.status == 401  # an ordinary request without a token: not a preflight
        assert cors_headers(answer) == {}


async def test_configured_origins_and_only_those(env: Env) -> None:
    app = create_app(env.store, token=TOKEN, clock=env.clock, cors_origins=[OPS])

    answer = await asgi_call(app, "GET", "/api/alerts", token=TOKEN, headers={"Origin": OPS})
    assert answer.status == 200
    assert answer.headers["access-control-allow-origin"] == OPS
    assert answer.headers["access-control-expose-headers"] == "Retry-After"
    assert "access-control-allow-credentials" not in answer.headers  # bearer tokens, no cookies
    assert "Origin" in answer.headers["vary"]

    # a browser can read why it was refused
    answer = await asgi_call(app, "GET", "/api/alerts", headers={"Origin": OPS})
    assert answer.status == 401
    assert answer.headers["access-control-allow-origin"] == OPS

    answer = await preflight(app, OPS)
    assert answer.status == 200
    assert answer.headers["access-control-allow-origin"] == OPS
    assert set(answer.headers["access-control-allow-methods"].split(", ")) == {
        "GET",
        "POST",
        "PUT",  # the registry's entries
        "DELETE",
    }
    allowed_headers = answer.headers["access-control-allow-headers"].lower()
    assert "authorization" in allowed_headers
    assert "content-type" in allowed_headers
    assert answer.headers["x-content-type-options"] == "nosniff"  # preflights too
    assert env.store.silences() == []  # a preflight runs nothing

    for other in (EVIL, "https://ops.example.com.evil.example", "http://ops.example.com", "null"):
        answer = await asgi_call(app, "GET", "/api/alerts", token=TOKEN, headers={"Origin": other})
        assert answer.status == 200  # the request itself is not the browser's business to block
        assert "access-control-allow-origin" not in answer.headers, other
        answer = await preflight(app, other)
        assert answer.status == 400, other
        assert "access-control-allow-origin" not in answer.headers, other


async def test_a_method_outside_the_api_is_not_preflighted(env: Env) -> None:
    app = create_app(env.store, token=TOKEN, clock=env.clock, cors_origins=[OPS])
    answer = await preflight(app, OPS, method="PATCH")
    assert (answer.status, answer.body) == (400, b"Disallowed CORS method")
    assert "PATCH" not in answer.headers["access-control-allow-methods"]
