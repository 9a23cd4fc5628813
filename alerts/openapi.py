"""The OpenAPI 3.1 description of the alerts API (served at ``/openapi.json``): what clients and
``tests/unit/test_api_schema.py`` (Schemathesis) read."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, Final

from alerts.api_input import (
    MATCHERS,
    MAX_BODY_BYTES,
    MAX_ID,
    MAX_LIMIT,
    MAX_NAME_CHARS,
    MAX_TEXT_CHARS,
    OPENAPI_PATH,
)
from alerts.model import AlertState
from detection.events import Severity
from sensors.limits import MAX_TS_MS
from sensors.registry_store import TABLES as REGISTRY_TABLES

__all__ = ["OPENAPI", "SPACE_CLASS", "openapi_document"]


def _ref(name: str) -> dict[str, Any]:
    return {"$ref": f"#/components/schemas/{name}"}


def _json(schema: dict[str, Any]) -> dict[str, Any]:
    return {"application/json": {"schema": schema}}


def _object(properties: dict[str, Any], required: Sequence[str] = ()) -> dict[str, Any]:
    """A closed object: what the API sends has exactly these fields."""
    out: dict[str, Any] = {"type": "object", "properties": properties}
    if required:
        out["required"] = list(required)
    out["additionalProperties"] = False
    return out


def _error(description: str, headers: dict[str, Any] | None = None) -> dict[str, Any]:
    out: dict[str, Any] = {"description": description, "content": _json(_ref("Error"))}
    if headers:
        out["headers"] = headers
    return out


def _ok(description: str, schema: dict[str, Any]) -> dict[str, Any]:
    return {"description": description, "content": _json(schema)}


def _nullable(schema: dict[str, Any], description: str) -> dict[str, Any]:
    """An optional request field: null is the same as leaving it out."""
    return {"anyOf": [schema, {"type": "null"}], "description": description}


_MS_SCHEMA: Final = {"type": "integer", "minimum": 0, "description": "epoch milliseconds, UTC"}
# What str.strip() removes (str.isspace()); JSON Schema's \s is another set (it lacks
# U+001C..U+001F and has U+FEFF), so "not blank" is spelt out.
SPACE_CLASS: Final = (
    r"\t\n\x0b\x0c\r\x1c-\x1f \x85\xa0\u1680\u2000-\u200a\u2028\u2029\u202f\u205f\u3000"
)
"""Regex character class (without brackets) of the characters ``str.strip()`` removes."""
_WHO_SCHEMA: Final = {
    "type": "string",
    "minLength": 1,
    "maxLength": MAX_NAME_CHARS,
    "pattern": f"[^{SPACE_CLASS}]",
    "description": "who (at least one non-space character)",
}
_TIME_SCHEMA: Final = {
    "anyOf": [
        {"type": "string", "format": "date-time", "description": "RFC 3339 with an offset"},
        {"type": "number", "minimum": 0, "maximum": MAX_TS_MS, "description": "epoch ms"},
    ]
}
_DURATION_SCHEMA: Final = {
    "anyOf": [
        {
            "type": "string",
            "pattern": (
                f"^[{SPACE_CLASS}]*[0-9]+([.][0-9]+)?[{SPACE_CLASS}]*(ms|s|m|h|d)?[{SPACE_CLASS}]*$"
            ),
        },
        {"type": "number", "minimum": 0},
    ]
}
_ERRORS: Final = {
    "400": _error("Malformed: a query parameter, or a body that is not a JSON object"),
    "401": _error(
        "No or wrong bearer token",
        {"WWW-Authenticate": {"schema": {"type": "string", "enum": ["Bearer"]}}},
    ),
    "404": _error("No such alert, silence, registry table or entry (or route)"),
    "413": _error(f"The body is larger than {MAX_BODY_BYTES} bytes"),
    "422": _error("A field fails validation; the message starts with its name"),
    "429": _error(
        "Rate limited (per client address, per token, or after failed authentications)",
        {"Retry-After": {"required": True, "schema": {"type": "integer", "minimum": 1}}},
    ),
    "503": _error("The alert store is closed (the service is stopping)"),
}


def _responses(ok_status: str, ok: dict[str, Any], *errors: str) -> dict[str, Any]:
    return {ok_status: ok, **{code: _ERRORS[code] for code in errors}}


def _id_param(name: str, what: str) -> dict[str, Any]:
    return {
        "name": name,
        "in": "path",
        "required": True,
        "description": f"The {what}'s id",
        "schema": {"type": "integer", "minimum": 0, "maximum": MAX_ID},
        "example": 1,
    }


def _query(name: str, schema: dict[str, Any], description: str) -> dict[str, Any]:
    return {
        "name": name,
        "in": "query",
        "required": False,
        "description": description,
        "schema": schema,
    }


def _body(schema: dict[str, Any], example: dict[str, Any]) -> dict[str, Any]:
    return {
        "required": True,
        "content": {"application/json": {"schema": schema, "example": example}},
    }


def _schemas() -> dict[str, Any]:
    text = {"type": "string"}
    alert_fields: dict[str, Any] = {
        "id": {"type": "integer", "minimum": 1},
        "device_id": text,
        "kind": {**text, "description": "event kind (loosening, preload_low, no_data, ...)"},
        "site": text,
        "group": {**text, "description": "notification group key (joint or site)"},
        "severity": {"type": "string", "enum": [str(s) for s in Severity]},
        "state": {"type": "string", "enum": [s.value for s in AlertState]},
        "first_ms": _MS_SCHEMA,
        "last_event_ms": _MS_SCHEMA,
        "active_ms": {**_MS_SCHEMA, "description": "0 while pending"},
        "cleared_ms": {**_MS_SCHEMA, "description": "0 while not cleared"},
        "explanation": text,
        "data": {
            "type": "object",
            "additionalProperties": {"type": ["number", "null"]},
            "description": "the latest event's numbers (null: infinite, e.g. never)",
        },
        "acknowledged": {"type": "boolean"},
        "ack_by": text,
        "ack_ms": _MS_SCHEMA,
        "comments": {"type": "array", "items": _ref("Comment")},
        "flapping": {"type": "boolean"},
        "late": {"type": "boolean", "description": "the latest event came from late readings"},
    }
    history = {
        "type": "array",
        "items": _object(
            {"ms": _MS_SCHEMA, "what": text, "detail": text}, ["ms", "what", "detail"]
        ),
        "description": "oldest first",
    }
    silence_fields: dict[str, Any] = {
        "id": {"type": "integer", "minimum": 1},
        "starts_ms": _MS_SCHEMA,
        "ends_ms": _MS_SCHEMA,
        "author": text,
        "reason": text,
        "device_id": {**text, "description": '"" matches every device'},
        "site": {**text, "description": '"" matches every site'},
        "kind": {**text, "description": '"" matches every kind'},
    }
    matcher = {"type": "string", "maxLength": MAX_NAME_CHARS}
    return {
        "Error": _object({"error": text}, ["error"]),
        "Comment": _object(
            {"author": text, "ms": _MS_SCHEMA, "text": text}, ["author", "ms", "text"]
        ),
        "Alert": _object(alert_fields, list(alert_fields)),
        "AlertWithHistory": _object(
            {**alert_fields, "history": history}, [*alert_fields, "history"]
        ),
        "Alerts": _object({"alerts": {"type": "array", "items": _ref("Alert")}}, ["alerts"]),
        "Silence": _object(silence_fields, list(silence_fields)),
        "Silences": _object(
            {"silences": {"type": "array", "items": _ref("Silence")}}, ["silences"]
        ),
        "Registry": _object(
            {
                "version": {"type": "integer", "minimum": 0, "description": "0: none yet"},
                "registry": {"type": "object", "description": "the registry file's tables"},
            },
            ["version", "registry"],
        ),
        "RegistryChange": _object(
            {
                "version": {"type": "integer", "minimum": 1},
                "ms": _MS_SCHEMA,
                "author": {"type": "string"},
                "what": {"type": "string", "enum": ["added", "changed", "removed"]},
                "table": {"type": "string", "enum": list(REGISTRY_TABLES)},
                "key": {"type": "string"},
                "before": {"type": ["string", "null"], "description": "JSON of the entry"},
                "after": {"type": ["string", "null"], "description": "JSON of the entry"},
            },
            ["version", "ms", "author", "what", "table", "key", "before", "after"],
        ),
        "RegistryChanges": _object(
            {"changes": {"type": "array", "items": _ref("RegistryChange")}}, ["changes"]
        ),
        "RegistryEdit": _object(
            {
                "version": {"type": "integer", "minimum": 0},
                "changes": {"type": "array", "items": _ref("RegistryChange")},
                "applies": {"type": "string"},
            },
            ["version", "changes", "applies"],
        ),
        "AckRequest": _object(
            {
                "by": _WHO_SCHEMA,
                "comment": _nullable(
                    {"type": "string", "maxLength": MAX_TEXT_CHARS}, "also added as a comment"
                ),
            },
            ["by"],
        ),
        "UnackRequest": _object({"by": _WHO_SCHEMA}, ["by"]),
        "CommentRequest": _object(
            {
                "by": _WHO_SCHEMA,
                "text": {**_WHO_SCHEMA, "maxLength": MAX_TEXT_CHARS, "description": "the comment"},
            },
            ["by", "text"],
        ),
        "SilenceRequest": {
            **_object(
                {
                    "author": _WHO_SCHEMA,
                    "reason": {**_WHO_SCHEMA, "maxLength": MAX_TEXT_CHARS, "description": "why"},
                    "device_id": _nullable(matcher, "only this device"),
                    "site": _nullable(matcher, "only this site"),
                    "kind": _nullable(matcher, "only this alert kind"),
                    "starts": _nullable(_TIME_SCHEMA, "default: now"),
                    "ends": _nullable(_TIME_SCHEMA, "after starts"),
                    "duration": _nullable(
                        _DURATION_SCHEMA, "90s, 5m, 2h, 1d or seconds (instead of ends)"
                    ),
                },
                ["author", "reason"],
            ),
            "allOf": [
                {"anyOf": [{"required": [m], "properties": {m: _WHO_SCHEMA}} for m in MATCHERS]},
                {
                    "anyOf": [
                        {"required": ["ends"], "properties": {"ends": _TIME_SCHEMA}},
                        {"required": ["duration"], "properties": {"duration": _DURATION_SCHEMA}},
                    ]
                },
                {
                    "not": {
                        "required": ["ends", "duration"],
                        "properties": {"ends": _TIME_SCHEMA, "duration": _DURATION_SCHEMA},
                    }
                },
            ],
            "description": (
                "At least one non-empty matcher (device_id, site, kind); ends or duration, not "
                "both; ends after starts and before 10000-01-01 (422 naming the field otherwise: "
                "the last rule is one a schema cannot state)."
            ),
        },
        "Health": _object({"status": {"type": "string", "enum": ["ok"]}}, ["status"]),
    }


def openapi_document() -> dict[str, Any]:
    """The OpenAPI 3.1 description of the API, as served at :data:`OPENAPI_PATH`.

    Every operation lists its request (parameters, body) and every status it can answer with its
    body schema; the property tests (``tests/unit/test_api_schema.py``) hold the API to it.
    """
    alert_id = _id_param("alert_id", "alert")
    alert_post: list[str] = ["400", "401", "404", "413", "422", "429", "503"]

    def alert_action(summary: str, action: str, example: dict[str, Any]) -> dict[str, Any]:
        return {
            "post": {
                "summary": summary,
                "operationId": f"{action}Alert",
                "parameters": [alert_id],
                "requestBody": _body(_ref(f"{action.capitalize()}Request"), example),
                "responses": _responses(
                    "200", _ok("The updated alert", _ref("Alert")), *alert_post
                ),
            }
        }

    return {
        "openapi": "3.1.0",
        "info": {
            "title": "boltwatch alerts API",
            "version": "1",
            "description": (
                "Alerts and silences of boltwatch. Every /api route needs "
                '`Authorization: Bearer <token>`. Errors are `{"error": "..."}`.'
            ),
        },
        "security": [{"bearer": []}],
        "paths": {
            "/api/alerts": {
                "get": {
                    "summary": "List alerts, newest activity first",
                    "operationId": "listAlerts",
                    "parameters": [
                        _query(
                            "state",
                            {"type": "string", "enum": ["", *(s.value for s in AlertState)]},
                            "only this state (empty: any)",
                        ),
                        _query("site", {"type": "string"}, "only this site"),
                        _query("kind", {"type": "string"}, "only this kind"),
                        _query("device_id", {"type": "string"}, "only this device"),
                        _query(
                            "limit",
                            {"type": "integer", "minimum": 1, "maximum": MAX_LIMIT, "default": 500},
                            "at most this many",
                        ),
                    ],
                    "responses": _responses(
                        "200", _ok("The alerts", _ref("Alerts")), "400", "401", "429", "503"
                    ),
                }
            },
            "/api/alerts/{alert_id}": {
                "get": {
                    "summary": "One alert and its history",
                    "operationId": "showAlert",
                    "parameters": [alert_id],
                    "responses": _responses(
                        "200",
                        _ok("The alert", _ref("AlertWithHistory")),
                        *("401", "404", "429", "503"),
                    ),
                }
            },
            "/api/alerts/{alert_id}/ack": alert_action(
                "Acknowledge an alert", "ack", {"by": "alice", "comment": "crew on site tomorrow"}
            ),
            "/api/alerts/{alert_id}/unack": alert_action(
                "Take an acknowledgement back", "unack", {"by": "alice"}
            ),
            "/api/alerts/{alert_id}/comment": alert_action(
                "Comment an alert", "comment", {"by": "bob", "text": "retightened, watching"}
            ),
            "/api/silences": {
                "get": {
                    "summary": "List silences",
                    "operationId": "listSilences",
                    "parameters": [
                        _query(
                            "active",
                            {
                                "type": "string",
                                "enum": ["", "true", "false", "1", "0", "yes", "no"],
                            },
                            "true: in force now; false: ended or not started yet; empty: all",
                        )
                    ],
                    "responses": _responses(
                        "200", _ok("The silences", _ref("Silences")), "400", "401", "429", "503"
                    ),
                },
                "post": {
                    "summary": "Create a silence",
                    "operationId": "addSilence",
                    "requestBody": _body(
                        _ref("SilenceRequest"),
                        {
                            "author": "ops",
                            "reason": "retightening campaign",
                            "site": "bridge-b",
                            "duration": "8h",
                        },
                    ),
                    "responses": _responses(
                        "201",
                        _ok("The stored silence", _ref("Silence")),
                        *("400", "401", "413", "422", "429", "503"),
                    ),
                },
            },
            "/api/silences/{silence_id}": {
                "delete": {
                    "summary": "End a silence now (it is kept for the record)",
                    "operationId": "endSilence",
                    "parameters": [_id_param("silence_id", "silence")],
                    "responses": _responses(
                        "200", _ok("The ended silence", _ref("Silence")), "401", "404", "429", "503"
                    ),
                }
            },
            "/api/registry": {
                "get": {
                    "summary": "The registry in force (sites, joints, bolts, machines...)",
                    "operationId": "showRegistry",
                    "responses": _responses(
                        "200",
                        _ok("Its version and document", _ref("Registry")),
                        "400",
                        "401",
                        "404",
                        "429",
                        "503",
                    ),
                }
            },
            "/api/registry/history": {
                "get": {
                    "summary": "Who changed what in the registry, and when (oldest first)",
                    "operationId": "registryHistory",
                    "parameters": [
                        _query(
                            "table",
                            {"type": "string", "enum": ["", *REGISTRY_TABLES]},
                            "Only this table (empty: all)",
                        ),
                        _query(
                            "key",
                            {"type": "string", "maxLength": MAX_NAME_CHARS * 4},
                            "Only this entry (its key)",
                        ),
                    ],
                    "responses": _responses(
                        "200",
                        _ok("Audit lines", _ref("RegistryChanges")),
                        "400",
                        "401",
                        "404",
                        "422",
                        "429",
                        "503",
                    ),
                }
            },
            "/api/registry/{table}/{key}": {
                "parameters": [
                    {
                        "name": "table",
                        "in": "path",
                        "required": True,
                        "description": "The registry table",
                        "schema": {"type": "string", "enum": list(REGISTRY_TABLES)},
                    },
                    {
                        "name": "key",
                        "in": "path",
                        "required": True,
                        "description": "The entry's key (id, or a machine's device_id)",
                        "schema": {
                            "type": "string",
                            "minLength": 1,
                            "maxLength": MAX_NAME_CHARS * 4,
                        },
                        "example": "splice-1",
                    },
                ],
                "put": {
                    "summary": "Add or replace one entry; the whole registry is validated",
                    "operationId": "putRegistryEntry",
                    "requestBody": _body(
                        {"type": "object"},
                        {
                            "device_id": "printer-2",
                            "site": "demo-site",
                            "kind": "printer3d",
                            "model": "Prusa MK4",
                            "name": "Printer 2",
                        },
                    ),
                    "responses": _responses(
                        "200",
                        _ok("The version in force and the changes", _ref("RegistryEdit")),
                        *("400", "401", "404", "413", "422", "429", "503"),
                    ),
                },
                "delete": {
                    "summary": "Remove one entry (refused while something refers to it)",
                    "operationId": "deleteRegistryEntry",
                    "responses": _responses(
                        "200",
                        _ok("The version in force and the changes", _ref("RegistryEdit")),
                        *("400", "401", "404", "422", "429", "503"),
                    ),
                },
            },
            "/metrics": {
                "get": {
                    "summary": "Prometheus metrics",
                    "operationId": "metrics",
                    "security": [],
                    "responses": _responses(
                        "200",
                        {
                            "description": "Prometheus text exposition",
                            "content": {"text/plain": {"schema": {"type": "string"}}},
                        },
                        "429",
                    ),
                }
            },
            "/healthz": {
                "get": {
                    "summary": "Liveness: the store answers",
                    "operationId": "healthz",
                    "security": [],
                    "responses": _responses("200", _ok("Alive", _ref("Health")), "429", "503"),
                }
            },
            OPENAPI_PATH: {
                "get": {
                    "summary": "This description",
                    "operationId": "openapi",
                    "security": [],
                    "responses": _responses(
                        "200", _ok("OpenAPI 3.1 document", {"type": "object"}), "429"
                    ),
                }
            },
        },
        "components": {
            "securitySchemes": {"bearer": {"type": "http", "scheme": "bearer"}},
            "schemas": _schemas(),
        },
    }


OPENAPI: Final = openapi_document()
"""The document, built once at import."""
