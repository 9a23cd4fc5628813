"""What the alerts API accepts: its limits, its error type, and the readers of bodies, paths and
query strings that turn a request into checked values or an :class:`ApiError` naming the field.

Every reader is total: it returns a value inside the documented bounds or raises
:class:`ApiError` (400, 404 or 422), never anything else, so no request answers 500
(``fuzz/fuzz_api.py`` and ``tests/unit/test_api_schema.py`` hold it to that).
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping, Sequence
from datetime import datetime
from typing import Any, Final

from starlette.requests import Request

from alerts.errors import AlertsError, RuleError
from alerts.model import Alert, Silence
from alerts.rules import parse_duration_s
from sensors.codec import nesting_depth
from sensors.limits import MAX_TS_MS

__all__ = [
    "MATCHERS",
    "MAX_BODY_BYTES",
    "MAX_BODY_DEPTH",
    "MAX_ID",
    "MAX_LIMIT",
    "MAX_NAME_CHARS",
    "MAX_TEXT_CHARS",
    "OPENAPI_PATH",
    "SECURITY_HEADERS",
    "SILENCE_FIELDS",
    "TEXT_FIELDS",
    "ApiError",
    "alert_json",
    "invalid_field",
    "json_body",
    "only_fields",
    "only_query",
    "parse_body",
    "path_id",
    "query_bool",
    "query_str",
    "silence_from",
    "str_field",
    "time_ms",
]

MAX_BODY_BYTES: Final = 64 * 1024
"""Requests are a few fields; anything bigger is refused (413) before it is read."""
MAX_BODY_DEPTH: Final = 8
"""Deepest nesting of arrays and objects in a request body (levels); bodies are flat objects."""
MAX_LIMIT: Final = 10_000
"""Upper bound of ``limit`` on ``GET /api/alerts``."""
MAX_ID: Final = 2**63 - 1
"""Largest alert or silence id (SQLite's integer); a larger one in a path is refused (404)."""
MAX_TEXT_CHARS: Final = 4_000
"""Longest comment or silence reason (characters)."""
MAX_NAME_CHARS: Final = 256
"""Longest ``by``, ``author``, ``device_id``, ``site`` or ``kind`` (characters)."""
SECURITY_HEADERS: Final = (
    (b"content-security-policy", b"default-src 'self'"),
    (b"x-content-type-options", b"nosniff"),
    (b"referrer-policy", b"no-referrer"),
)
"""Sent with every response (errors included)."""
OPENAPI_PATH: Final = "/openapi.json"
"""Where the OpenAPI description (:func:`openapi_document`) is served, without a token."""
MATCHERS: Final = ("device_id", "site", "kind")
TEXT_FIELDS: Final = frozenset({"comment", "text", "reason"})
SILENCE_FIELDS: Final = ("author", "reason", *MATCHERS, "starts", "ends", "duration")


class ApiError(AlertsError):
    """A request the API refuses: sent as ``{"error": message}`` with ``status``.

    Attributes:
        status: HTTP status (400, 404, 422).
        field: The offending field or query parameter ("" when none).
    """

    def __init__(self, status: int, message: str, field: str = "") -> None:
        super().__init__(f"{field}: {message}" if field else message)
        self.status = status
        self.field = field


def invalid_field(field: str, message: str) -> ApiError:
    return ApiError(422, message, field)


def str_field(body: Mapping[str, Any], name: str, *, required: bool) -> str:
    value = body.get(name)
    if value is None:
        if required:
            raise invalid_field(name, "required")
        return ""
    if not isinstance(value, str):
        raise invalid_field(name, "must be a string")
    # Measured before stripping: the limit is on what is sent (as the OpenAPI maxLength says).
    limit = MAX_TEXT_CHARS if name in TEXT_FIELDS else MAX_NAME_CHARS
    if len(value) > limit:
        raise invalid_field(name, f"{len(value)} characters; at most {limit}")
    value = value.strip()
    if required and not value:
        raise invalid_field(name, "required (must not be empty)")
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:  # a lone surrogate ("\ud800" in the JSON): not storable text
        raise invalid_field(name, "not valid Unicode (lone surrogate)") from None
    return value


def time_ms(value: object, name: str) -> int:
    """Epoch ms of an RFC 3339 string or of a number of epoch milliseconds (1970..9999)."""
    what = "must be an RFC 3339 time or epoch milliseconds"
    if isinstance(value, bool):
        raise invalid_field(name, what)
    if isinstance(value, int | float):
        # Bounded before int(): NaN, infinity and 1e300 would fail there or overflow SQLite.
        if not (isinstance(value, int) or math.isfinite(value)) or not 0 <= value <= MAX_TS_MS:
            raise invalid_field(
                name, f"epoch milliseconds must be between 0 and {MAX_TS_MS} (9999)"
            )
        return int(value)
    if isinstance(value, str):
        try:
            dt = datetime.fromisoformat(value.strip())
        except ValueError:
            raise invalid_field(name, f"{value[:64]!r} is not an RFC 3339 time") from None
        if dt.tzinfo is None:
            raise invalid_field(name, f"{value[:64]!r} has no UTC offset (add Z or +01:00)")
        ms = round(dt.timestamp() * 1000)
        if not 0 <= ms <= MAX_TS_MS:
            raise invalid_field(name, f"{value[:64]!r} is not between 1970 and 9999 (UTC)")
        return ms
    raise invalid_field(name, what)


def only_fields(body: Mapping[str, Any], known: Sequence[str]) -> None:
    """422 naming the first field of ``body`` that is not in ``known``: a misspelt matcher
    (``devce_id``) must not silently widen a silence."""
    for name in body:
        if name not in known:
            raise invalid_field(name[:64] or '""', f"unknown field; fields are {', '.join(known)}")


def silence_from(body: Mapping[str, Any], now_ms: int) -> Silence:
    """Validate a ``POST /api/silences`` body into a silence (id 0, not stored yet).

    Args:
        body: The parsed body (see :func:`parse_body`).
        now_ms: Current time, epoch milliseconds (the default ``starts``).

    Raises:
        ApiError: A field is missing or invalid (422, naming it).
    """
    only_fields(body, SILENCE_FIELDS)
    author = str_field(body, "author", required=True)
    reason = str_field(body, "reason", required=True)
    matchers = {m: str_field(body, m, required=False) for m in MATCHERS}
    if not any(matchers.values()):
        raise invalid_field("device_id", "give at least one matcher: device_id, site or kind")
    starts_ms = now_ms if body.get("starts") is None else time_ms(body["starts"], "starts")
    ends, duration = body.get("ends"), body.get("duration")
    if ends is not None and duration is not None:
        raise invalid_field("duration", "give ends or duration, not both")
    if ends is not None:
        ends_ms = time_ms(ends, "ends")
    elif duration is not None:
        try:
            duration_s = parse_duration_s(duration, "duration")
        except RuleError as exc:
            raise invalid_field("duration", exc.reason) from exc
        if duration_s * 1000 > MAX_TS_MS - starts_ms:
            raise invalid_field("duration", "ends after 9999-12-31")
        ends_ms = starts_ms + round(duration_s * 1000)
    else:
        raise invalid_field("ends", "give ends (a time) or duration (like 2h)")
    if ends_ms <= starts_ms:
        raise invalid_field("ends", "must be after starts")
    return Silence(0, starts_ms, ends_ms, author, reason, **matchers)


def parse_body(raw: bytes) -> dict[str, Any]:
    """A request body as a JSON object (``{}`` when empty).

    Raises:
        ApiError: 400 when the body is not a JSON object, nests deeper than
            :data:`MAX_BODY_DEPTH`, or holds a number Python refuses to parse (over 4300 digits).
    """
    if not raw.strip():
        return {}
    # Bounded before parsing: json's recursion would end in RecursionError (a 500) first.
    if nesting_depth(raw, MAX_BODY_DEPTH) > MAX_BODY_DEPTH:
        raise ApiError(400, f"the body nests arrays and objects deeper than {MAX_BODY_DEPTH}")
    try:
        body = json.loads(raw)
    except (ValueError, RecursionError) as exc:  # JSONDecodeError, not UTF-8, huge int
        raise ApiError(400, f"the body is not JSON ({str(exc)[:200]})") from exc
    if not isinstance(body, dict):
        raise ApiError(400, "the body must be a JSON object")
    return body


async def json_body(request: Request) -> dict[str, Any]:
    return parse_body(await request.body())


def path_id(request: Request, name: str, what: str) -> int:
    """An id from the path; beyond SQLite's integers it cannot exist (404, naming the field)."""
    value: int = request.path_params[name]
    if value > MAX_ID:
        raise ApiError(404, f"no {what} {value} (ids are at most {MAX_ID})", name)
    return value


def alert_json(alert: Alert) -> dict[str, Any]:
    """``alert.as_dict()`` with non-finite numbers in ``data`` as null.

    Detectors report "never" as infinity (``hours_to_alarm_line`` of a bolt that is not losing
    preload); JSON has no infinity, and json.dumps(allow_nan=False) would fail with a 500.
    """
    body = alert.as_dict()
    data: Mapping[str, Any] = body["data"]
    body["data"] = {
        k: None if isinstance(v, float) and not math.isfinite(v) else v for k, v in data.items()
    }
    return body


def only_query(request: Request, *known: str) -> None:
    """400 naming the first query parameter that is not in ``known`` (``limt=5`` is a typo, not
    a request for the default)."""
    for name in request.query_params:
        if name not in known:
            raise ApiError(
                400,
                f"unknown query parameter; known: {', '.join(known) or 'none'}",
                name[:64] or '""',
            )


def query_str(request: Request, name: str) -> str | None:
    value = request.query_params.get(name)
    if value is None:
        return None
    return value.strip() or None


def query_bool(request: Request, name: str) -> bool | None:
    value = query_str(request, name)
    if value is None:
        return None
    lowered = value.lower()
    if lowered in {"true", "1", "yes"}:
        return True
    if lowered in {"false", "0", "no"}:
        return False
    raise ApiError(400, f"{value!r} is not true or false", name)
