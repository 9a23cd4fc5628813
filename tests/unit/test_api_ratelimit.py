"""Rate limits of the alerts API: per client address, per token, and after failed logins.

Requests go into the real app (real store, real middleware) from chosen client addresses; the
monotonic clock is injected, so every refill is exact and nothing sleeps.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from pathlib import Path

import pytest
from starlette.applications import Starlette

from alerts.api import create_app
from alerts.ratelimit import RateLimits
from tests.asgi_call import Answer, asgi_call
from tests.unit.test_alerts_api import TOKEN, Env

WRONG = "not-the-token"


class Monotonic:
    def __init__(self) -> None:
        self.s = 500.0

    def __call__(self) -> float:
        return self.s


@pytest.fixture
def env(tmp_path: Path) -> Iterator[Env]:
    e = Env(tmp_path)
    yield e
    e.store.close()


def app_with(env: Env, limits: RateLimits | None, clock: Monotonic) -> Starlette:
    return create_app(
        env.store,
        token=TOKEN,
        clock=env.clock,
        metrics_registry=env.metrics.registry,
        rate_limits=limits,
        monotonic=clock,
    )


def assert_429(answer: Answer, retry_after: int, message: str) -> None:
    assert answer.status == 429, answer
    assert answer.headers["retry-after"] == str(retry_after)
    assert answer.headers["content-type"] == "application/json"
    assert answer.json() == {"error": f"{message}; retry after {retry_after} s"}
    assert answer.headers["x-content-type-options"] == "nosniff"


async def test_per_client_address(env: Env) -> None:
    clock = Monotonic()
    # A token bucket roomier than the client's, so only the address limit is exercised here.
    app = app_with(env, RateLimits(rate_per_s=0.5, burst=3, auth_failures_per_min=0), clock)
    for _ in range(3):
        assert (await asgi_call(app, "GET", "/healthz", client="10.0.0.1")).status == 200
    assert_429(
        await asgi_call(app, "GET", "/healthz", client="10.0.0.1"),
        2,  # one request every 2 s
        "too many requests from this address",
    )
    assert_429(
        await asgi_call(app, "GET", "/api/alerts", token=TOKEN, client="10.0.0.1"),
        2,
        "too many requests from this address",
    )
    # another address has its own bucket
    assert (await asgi_call(app, "GET", "/metrics", client="10.0.0.2")).status == 200
    clock.s += 1.9
    assert (await asgi_call(app, "GET", "/healthz", client="10.0.0.1")).status == 429
    clock.s += 0.1
    assert (await asgi_call(app, "GET", "/healthz", client="10.0.0.1")).status == 200


async def test_per_token_across_addresses(env: Env) -> None:
    clock = Monotonic()
    app = app_with(env, RateLimits(rate_per_s=4.0, burst=3, auth_failures_per_min=0), clock)
    for i in range(3):
        answer = await asgi_call(app, "GET", "/api/alerts", token=TOKEN, client=f"10.0.1.{i}")
        assert answer.status == 200
    # a fresh address, so its own bucket is full: the token's is the one that is empty
    assert_429(
        await asgi_call(app, "GET", "/api/alerts", token=TOKEN, client="10.0.1.9"),
        1,  # 0.25 s, rounded up to whole seconds
        "too many requests with this token",
    )
    clock.s += 0.25
    answer = await asgi_call(app, "GET", "/api/alerts", token=TOKEN, client="10.0.1.9")
    assert answer.status == 200


async def test_failed_authentications_lock_the_address_out(
    env: Env, caplog: pytest.LogCaptureFixture
) -> None:
    clock = Monotonic()
    app = app_with(env, RateLimits(rate_per_s=0, auth_failures_per_min=3), clock)
    caplog.set_level(logging.WARNING, "boltwatch.alerts.api")
    for token in ("guess-1", None, "guess-3"):
        answer = await asgi_call(app, "GET", "/api/alerts", token=token, client="10.0.0.66")
        assert (answer.status, answer.json()) == (401, {"error": "unauthorized"})
    assert [r.getMessage() for r in caplog.records] == [
        "alerts API: failed authentications from 10.0.0.66: slowed down"
    ]
    # Locked out: even the right token is refused, so guesses cannot be tested meanwhile.
    for token in (TOKEN, "guess-4"):
        assert_429(
            await asgi_call(app, "POST", "/api/alerts/1/ack", token=token, client="10.0.0.66"),
            20,  # 3 per minute: one every 20 s
            "too many failed authentications from this address",
        )
    assert not env.acknowledged("b1")
    # Not the other addresses, and not the open routes
    answer = await asgi_call(app, "GET", "/api/alerts", token=TOKEN, client="10.0.0.7")
    assert answer.status == 200
    assert (await asgi_call(app, "GET", "/healthz", client="10.0.0.66")).status == 200

    clock.s += 19.5
    answer = await asgi_call(app, "GET", "/api/alerts", token=TOKEN, client="10.0.0.66")
    assert answer.status == 429
    assert answer.headers["retry-after"] == "1"  # 0.5 s, rounded up
    clock.s += 0.5
    answer = await asgi_call(app, "GET", "/api/alerts", token=TOKEN, client="10.0.0.66")
    assert answer.status == 200
    # one failure drained: the next wrong guess is a 401 and locks the address again
    answer = await asgi_call(app, "GET", "/api/alerts", token=WRONG, client="10.0.0.66")
    assert answer.status == 401
    answer = await asgi_call(app, "GET", "/api/alerts", token=TOKEN, client="10.0.0.66")
    assert answer.status == 429


async def test_refusals_are_counted_on_metrics(env: Env) -> None:
    clock = Monotonic()
    app = app_with(env, RateLimits(rate_per_s=100, burst=100, auth_failures_per_min=1), clock)
    await asgi_call(app, "GET", "/api/alerts", token=WRONG, client="10.0.0.5")
    await asgi_call(app, "GET", "/api/alerts", token=TOKEN, client="10.0.0.5")
    text = (await asgi_call(app, "GET", "/metrics")).body.decode()
    assert 'boltwatch_api_refused_total{reason="unauthorized"} 1.0' in text
    assert 'boltwatch_api_refused_total{reason="auth_failures"} 1.0' in text
    # the registries given to create_app are still served next to it
    assert "boltwatch_detection_events_total" in text


async def test_no_limits_when_off(env: Env) -> None:
    clock = Monotonic()
    for limits in (None, RateLimits(rate_per_s=0, auth_failures_per_min=0)):
        app = app_with(env, limits, clock)
        for _ in range(60):
            answer = await asgi_call(app, "GET", "/api/alerts", token=WRONG)
            assert answer.status == 401
        for _ in range(200):
            assert (await asgi_call(app, "GET", "/api/alerts", token=TOKEN)).status == 200


async def test_the_default_limits(env: Env) -> None:
    """20 requests/s with a burst of 40 per client; 5 failed logins per minute."""
    clock = Monotonic()
    app = app_with(env, RateLimits(), clock)
    statuses = [(await asgi_call(app, "GET", "/healthz")).status for _ in range(41)]
    assert statuses == [200] * 40 + [429]
    statuses = [
        (await asgi_call(app, "GET", "/api/alerts", token=WRONG, client="10.9.9.9")).status
        for _ in range(6)
    ]
    assert statuses == [401] * 5 + [429]
    answer = await asgi_call(app, "GET", "/api/alerts", token=TOKEN, client="10.9.9.9")
    assert answer.headers["retry-after"] == "12"
