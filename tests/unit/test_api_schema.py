"""The alerts API held to the OpenAPI description it serves: schemathesis property tests.

In process (the ASGI app, no network), against a real SQLite store filled by the real pipeline
(the ``Env`` of ``test_alerts_api``). For every operation of the document, schemathesis sends its
examples, boundary cases and generated requests (valid and invalid), and each answer must be no
500, a documented status with a documented content type, headers and body. Bounded and
repeatable: a fixed number of examples per operation, derandomized.

Requests go through schemathesis' in-process ASGI client directly rather than
``case.call_and_validate``: its requests transport counts pooled connections through urllib3
internals that urllib3-future (installed here by grafana-client's niquests) does not have.
"""

from __future__ import annotations

import math
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any, cast

import pytest
import schemathesis
from hypothesis import HealthCheck, settings
from schemathesis import Case, Response
from schemathesis.checks import CheckFunction, not_a_server_error
from schemathesis.python.asgi import ASGIClient
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    negative_data_rejection,
    positive_data_acceptance,
    response_headers_conformance,
    response_schema_conformance,
    status_code_conformance,
)
from starlette.applications import Starlette
from starlette.types import ASGIApp

from alerts.api import OPENAPI_PATH, SPACE_CLASS, create_app, openapi_document
from alerts.ratelimit import RateLimits
from detection.base import DetectionEvent, EventKind, Severity
from detection.events import BatchOutcome
from tests.unit.test_alerts_api import T0, TOKEN, Env

AUTH = {"Authorization": f"Bearer {TOKEN}"}
# Per operation; the coverage phase adds its boundary cases on top.
EXAMPLES = 25
BOUNDED = settings(
    max_examples=EXAMPLES,
    derandomize=True,
    deadline=None,
    database=None,
    suppress_health_check=list(HealthCheck),
)

CHECKS: list[CheckFunction] = [
    not_a_server_error,
    status_code_conformance,
    content_type_conformance,
    response_headers_conformance,
    response_schema_conformance,
    negative_data_rejection,
    positive_data_acceptance,
]

# Rules a JSON schema cannot state (ends after starts, at least one matcher, ends or duration):
# a schema-valid body may still be a 422 here, so only "valid data is accepted" is not checked.
SEMANTIC = frozenset(
    {
        "POST /api/silences",
        # A registry entry is checked against the whole registry (references, one declaration
        # per device): the body's schema is an object, so a valid one may still be a 422, and
        # an entry to remove may not exist (404).
        "PUT /api/registry/{table}/{key}",
        "DELETE /api/registry/{table}/{key}",
    }
)

schema = schemathesis.openapi.from_dict(openapi_document())


def call_and_validate(case: Case[Any], app: ASGIApp, headers: dict[str, str]) -> Response:
    """Send ``case`` to ``app`` in process and run :data:`CHECKS` on the answer."""
    with ASGIClient(cast("Any", app)) as client:  # its ASGIApp alias takes dicts only
        answer = client.request(**case.as_transport_kwargs(headers=headers))
    checks = CHECKS
    if case.operation.label in SEMANTIC:
        checks = [c for c in CHECKS if c is not positive_data_acceptance]
    case.validate_response(answer, checks=checks, headers=headers)
    return Response.from_any(answer)


@pytest.fixture
def env(tmp_path: Path) -> Iterator[Env]:
    e = Env(tmp_path)
    # A bolt whose preload is low but not falling: "never" reaches the alarm line (infinity).
    e.pipe.take(
        BatchOutcome(
            events=[
                DetectionEvent(
                    device_id="b4",
                    kind=EventKind.PRELOAD_LOW,
                    severity=Severity.WARNING,
                    ts_ms=T0,
                    score=0.7,
                    explanation="preload low, steady",
                    detector="test",
                    site="s1",
                    data={"hours_to_alarm_line": math.inf, "slope_pct_per_day": -math.inf},
                    device_kind="cbolt",
                )
            ]
        )
    )
    yield e
    e.store.close()


def test_the_tested_document_is_the_served_one(env: Env) -> None:
    with ASGIClient(cast("Any", env.app)) as client:
        answer = client.get(OPENAPI_PATH)
    assert answer.status_code == 200
    assert answer.json() == openapi_document()
    assert "/api/alerts/{alert_id}/ack" in answer.json()["paths"]


@schema.parametrize()
@BOUNDED
def test_every_operation_conforms_with_the_token(case: Case[Any], env: Env) -> None:
    call_and_validate(case, env.app, AUTH)


@schema.parametrize()
@BOUNDED
def test_every_operation_conforms_without_a_token(case: Case[Any], env: Env) -> None:
    response = call_and_validate(case, env.app, {"Authorization": "Bearer wrong"})
    if case.path.startswith("/api/"):
        assert response.status_code == 401


class FrozenClock:
    """Monotonic time that never moves: buckets drain and never refill."""

    def __call__(self) -> float:
        return 100.0


BURST = 10


@pytest.fixture
def limited_app(env: Env) -> tuple[Starlette, list[int]]:
    """An app whose buckets never refill, and the statuses it answered (one app per operation)."""
    app = create_app(
        env.store,
        token=TOKEN,
        clock=env.clock,
        rate_limits=RateLimits(rate_per_s=1.0, burst=BURST, auth_failures_per_min=2),
        monotonic=FrozenClock(),
    )
    return app, []


@schema.parametrize()
@BOUNDED
def test_rate_limited_answers_conform(
    case: Case[Any], limited_app: tuple[Starlette, list[int]]
) -> None:
    """Past the burst every answer is a 429 with Retry-After, which the document describes too."""
    app, statuses = limited_app
    statuses.append(call_and_validate(case, app, AUTH).status_code)
    if len(statuses) > BURST:  # one client ("testclient"), its bucket drained
        assert statuses[-1] == 429, statuses


def test_the_documented_blank_class_is_what_strip_removes() -> None:
    """The "not blank" pattern of the document names exactly the characters str.strip() drops."""
    blank = re.compile(f"[{SPACE_CLASS}]")
    chars = map(chr, range(0x110000))
    assert {c for c in chars if blank.fullmatch(c)} == {
        c for c in map(chr, range(0x110000)) if c.isspace()
    }
