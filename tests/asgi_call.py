"""One HTTP request straight into an ASGI app, from a chosen client address (API tests).

The real server (``tests/api_server.py``) only ever sees 127.0.0.1; per-address behaviour (rate
limits, lockouts) needs the address in the ASGI scope, which this sets. Nothing else is faked:
the app, its middleware and its store run as in production.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from starlette.types import ASGIApp, Message

__all__ = ["Answer", "asgi_call"]


@dataclass(frozen=True)
class Answer:
    """A response: status, headers (lower-case names; repeated ones joined by ", ") and body."""

    status: int
    headers: dict[str, str]
    body: bytes

    def json(self) -> Any:
        return json.loads(self.body)


async def asgi_call(
    app: ASGIApp,
    method: str,
    path: str,
    *,
    token: str | None = None,
    client: str = "10.0.0.1",
    headers: Mapping[str, str] | None = None,
    body: bytes = b"",
    query: str = "",
) -> Answer:
    """Send one request to ``app`` as if from ``client`` and collect the answer."""
    raw_headers = [(k.lower().encode(), v.encode()) for k, v in (headers or {}).items()]
    if token is not None:
        raw_headers.append((b"authorization", f"Bearer {token}".encode()))
    if body:
        raw_headers.append((b"content-length", str(len(body)).encode()))
    scope = {
        "type": "http",
        "asgi": {"version": "3.0"},
        "http_version": "1.1",
        "method": method,
        "scheme": "http",
        "path": path,
        "raw_path": path.encode(),
        "query_string": query.encode(),
        "root_path": "",
        "headers": raw_headers,
        "client": (client, 50_000),
        "server": ("testserver", 80),
    }
    sent: list[Message] = []
    body_sent = False

    async def receive() -> Message:
        nonlocal body_sent
        if body_sent:
            return {"type": "http.disconnect"}
        body_sent = True
        return {"type": "http.request", "body": body, "more_body": False}

    async def send(message: Message) -> None:
        sent.append(message)

    await app(scope, receive, send)
    start = next(m for m in sent if m["type"] == "http.response.start")
    names: dict[str, str] = {}
    for k, v in start.get("headers", []):
        name = k.decode("latin-1").lower()
        value = v.decode("latin-1")
        names[name] = f"{names[name]}, {value}" if name in names else value
    content = b"".join(m.get("body", b"") for m in sent if m["type"] == "http.response.body")
    return Answer(start["status"], names, content)
