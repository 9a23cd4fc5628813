"""The ``alertmanager`` channel: push alerts to Prometheus Alertmanager's v2 API.

``POST {url}/api/v2/alerts`` with a JSON list, one entry per alert of the notification:

- labels: ``alertname`` (the alert kind), ``device_id``, ``site``, ``severity``, ``group``,
  ``boltwatch_id`` (the alert's id); labels with an empty value are left out, as Alertmanager
  treats them as absent anyway;
- annotations: ``summary`` (the notification's title), ``description`` (the alert's explanation);
- ``startsAt``: when the alert became active (else its first event), RFC 3339 UTC;
- ``endsAt``: when it cleared, for a cleared alert (Alertmanager then resolves it); for a firing
  alert only with ``firing_ttl_s`` (now + that many seconds);
- ``generatorURL``: the ``generator_url`` option, when given.

Alertmanager resolves a firing alert by itself when it is not pushed again within its
``resolve_timeout`` (5 minutes by default): route this receiver with a repeat interval shorter
than that, or raise ``resolve_timeout`` in Alertmanager's config.

Answers: 2xx delivered; 429, 5xx, connection errors and timeouts retryable; other 4xx (a rejected
alert) not retryable.
"""

from __future__ import annotations

import base64
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, ClassVar, Self

import msgspec

from alerts.channels._http import HttpChannelError, post
from alerts.channels._options import check_url, parse_options, resolve_secret
from alerts.errors import RuleError
from alerts.model import Notification

__all__ = ["AlertmanagerChannel", "AlertmanagerOptions", "HttpChannelError", "rfc3339"]


def rfc3339(ms: int) -> str:
    """Epoch milliseconds as RFC 3339 UTC (``2026-03-01T12:03:07.250Z``)."""
    when = datetime.fromtimestamp(ms / 1000.0, UTC)
    return when.isoformat(timespec="milliseconds").replace("+00:00", "Z")


@dataclass(frozen=True, slots=True)
class AlertmanagerOptions:
    """Options of an ``alertmanager`` receiver.

    Attributes:
        url: Alertmanager's base URL (``http://alertmanager:9093``); ``/api/v2/alerts`` is
            appended.
        generator_url: Link back to boltwatch (``generatorURL`` of every alert), e.g. its web
            console.
        firing_ttl_s: Give firing alerts ``endsAt`` = now + this many seconds (default: no
            ``endsAt``, Alertmanager's ``resolve_timeout`` applies).
        username: HTTP basic-auth user (Alertmanager behind a proxy, or its web config).
        password: Its password (inline; prefer the two forms below).
        password_file: File holding the password.
        password_env: Environment variable holding the password.
        timeout_s: Connect and read timeout, seconds.
    """

    url: str
    generator_url: str | None = None
    firing_ttl_s: float | None = None
    username: str | None = None
    password: str | None = field(default=None, repr=False)
    password_file: str | None = None
    password_env: str | None = None
    timeout_s: float = 10.0


class AlertmanagerChannel:
    """Push notifications' alerts to Alertmanager's v2 API.

    Args:
        options: Validated options.
        password: The resolved basic-auth password (None: no authentication).
        clock_ms: Current time in epoch milliseconds (for ``firing_ttl_s``); default the wall
            clock.
    """

    kind: ClassVar[str] = "alertmanager"

    def __init__(
        self,
        options: AlertmanagerOptions,
        password: str | None = None,
        clock_ms: Callable[[], int] | None = None,
    ) -> None:
        self.options = options
        self._password = password
        self._clock_ms = clock_ms or (lambda: time.time_ns() // 1_000_000)
        self.endpoint = options.url.rstrip("/") + "/api/v2/alerts"

    @classmethod
    def from_options(cls, options: Mapping[str, Any], key: str) -> Self:
        """Validate a receiver's options and build the channel.

        Raises:
            RuleError: A bad option, named ``{key}.{option}``.
        """
        opts = parse_options(AlertmanagerOptions, options, key)
        check_url(opts.url, ("http", "https"), f"{key}.url")
        if opts.generator_url is not None:
            check_url(opts.generator_url, ("http", "https"), f"{key}.generator_url")
        if opts.firing_ttl_s is not None and opts.firing_ttl_s <= 0:
            raise RuleError(f"{key}.firing_ttl_s", "must be > 0 seconds")
        if opts.timeout_s <= 0:
            raise RuleError(f"{key}.timeout_s", "must be > 0 seconds")
        password = resolve_secret(
            "password",
            inline=opts.password,
            file=opts.password_file,
            env=opts.password_env,
            key=key,
        )
        if (opts.username is None) != (password is None):
            missing = "username" if opts.username is None else "password"
            raise RuleError(f"{key}.{missing}", "basic auth needs both username and password")
        return cls(opts, password)

    def alerts(self, notification: Notification) -> list[dict[str, Any]]:
        """The request body: Alertmanager's ``postableAlerts`` for the notification."""
        now_ms = self._clock_ms()
        out = []
        for a in notification.alerts:
            labels = {
                "alertname": str(a.get("kind", "")),
                "device_id": str(a.get("device_id", "")),
                "site": str(a.get("site", "")),
                "severity": str(a.get("severity", "")),
                "group": str(a.get("group", "") or notification.group),
                "boltwatch_id": str(a.get("id", "")),
            }
            item: dict[str, Any] = {
                "labels": {k: v for k, v in labels.items() if v},
                "annotations": {
                    "summary": notification.title,
                    "description": str(a.get("explanation", "")),
                },
            }
            starts_ms = int(a.get("active_ms") or a.get("first_ms") or notification.created_ms)
            item["startsAt"] = rfc3339(starts_ms)
            cleared_ms = int(a.get("cleared_ms") or 0)
            if a.get("state") == "cleared" or notification.status == "resolved":
                item["endsAt"] = rfc3339(max(cleared_ms or now_ms, starts_ms))
            elif self.options.firing_ttl_s is not None:
                item["endsAt"] = rfc3339(now_ms + round(self.options.firing_ttl_s * 1000))
            if self.options.generator_url:
                item["generatorURL"] = self.options.generator_url
            out.append(item)
        return out

    async def send(self, notification: Notification) -> None:
        """POST the alerts.

        Raises:
            HttpChannelError: Not delivered (a :class:`ChannelError` with ``status`` and
                ``retry_after_s``).
        """
        body = msgspec.json.encode(self.alerts(notification))
        headers = {"Content-Type": "application/json"}
        if self.options.username is not None and self._password is not None:
            token = base64.b64encode(f"{self.options.username}:{self._password}".encode())
            headers["Authorization"] = f"Basic {token.decode()}"
        await post(self.endpoint, body, headers, self.options.timeout_s)

    async def aclose(self) -> None:
        """Nothing to release (one connection per request)."""
