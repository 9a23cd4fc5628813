"""The ``webhook`` channel: POST the notification as JSON to a URL, optionally signed.

The body is :meth:`Notification.as_dict` as compact UTF-8 JSON. Headers:

- ``Content-Type: application/json``
- ``X-Boltwatch-Notification-Id: <id>``: the same on every retry; receivers deduplicate on it.
- ``X-Boltwatch-Signature: sha256=<hex>`` when a ``secret`` is configured: the HMAC-SHA256 of the
  exact body bytes, keyed with the secret (UTF-8).

How a receiver verifies a signature: read the raw body **before** parsing it (re-serialised JSON
would not match), compute ``hmac.new(secret.encode(), body, hashlib.sha256).hexdigest()``, and
compare it with the header's hex part in constant time (``hmac.compare_digest``); or simply call
:func:`verify_signature`. The signature covers the body, not the time: a replayed request carries
an id the receiver has already seen.

Answers: 2xx delivered; 429, 5xx, connection errors and timeouts retryable (``Retry-After`` lands in
:attr:`HttpChannelError.retry_after_s` and the message); other statuses not retryable.
"""

from __future__ import annotations

import hashlib
import hmac
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, ClassVar, Final, Self

import msgspec

from alerts.channels._http import HttpChannelError, post
from alerts.channels._options import check_url, parse_options, resolve_secret
from alerts.errors import RuleError
from alerts.model import Notification

__all__ = [
    "ID_HEADER",
    "SIGNATURE_HEADER",
    "HttpChannelError",
    "WebhookChannel",
    "WebhookOptions",
    "sign",
    "verify_signature",
]

ID_HEADER: Final = "X-Boltwatch-Notification-Id"
SIGNATURE_HEADER: Final = "X-Boltwatch-Signature"
_PREFIX: Final = "sha256="


def sign(body: bytes, secret: str) -> str:
    """The :data:`SIGNATURE_HEADER` value for ``body``: ``sha256=<hex HMAC-SHA256>``."""
    return _PREFIX + hmac.new(secret.encode(), body, hashlib.sha256).hexdigest()


def verify_signature(body: bytes, header: str, secret: str) -> bool:
    """Whether ``header`` (an ``X-Boltwatch-Signature`` value) signs ``body`` with ``secret``.

    For receivers: pass the raw request body, exactly as received. The comparison takes constant
    time.

    Args:
        body: The request body (bytes, not re-serialised JSON).
        header: The ``X-Boltwatch-Signature`` header (``sha256=<hex>``).
        secret: The shared secret.

    Returns:
        True when the signature matches.
    """
    if not header.startswith(_PREFIX):
        return False
    return hmac.compare_digest(sign(body, secret).encode(), header.strip().encode())


@dataclass(frozen=True, slots=True)
class WebhookOptions:
    """Options of a ``webhook`` receiver.

    Attributes:
        url: Where to POST (``http://`` or ``https://``).
        secret: HMAC key for ``X-Boltwatch-Signature`` (inline; prefer the two forms below).
        secret_file: File holding the secret.
        secret_env: Environment variable holding the secret.
        timeout_s: Connect and read timeout, seconds.
    """

    url: str
    secret: str | None = field(default=None, repr=False)
    secret_file: str | None = None
    secret_env: str | None = None
    timeout_s: float = 10.0


class WebhookChannel:
    """POST notifications as JSON to a URL (see the module's docstring for the wire format).

    Args:
        options: Validated options.
        secret: The resolved HMAC secret (None: requests are not signed).
    """

    kind: ClassVar[str] = "webhook"

    def __init__(self, options: WebhookOptions, secret: str | None = None) -> None:
        self.options = options
        self._secret = secret

    @classmethod
    def from_options(cls, options: Mapping[str, Any], key: str) -> Self:
        """Validate a receiver's options and build the channel.

        Raises:
            RuleError: A bad option, named ``{key}.{option}``.
        """
        opts = parse_options(WebhookOptions, options, key)
        check_url(opts.url, ("http", "https"), f"{key}.url")
        if opts.timeout_s <= 0:
            raise RuleError(f"{key}.timeout_s", "must be > 0 seconds")
        secret = resolve_secret(
            "secret", inline=opts.secret, file=opts.secret_file, env=opts.secret_env, key=key
        )
        return cls(opts, secret)

    def body(self, notification: Notification) -> bytes:
        """The request body: :meth:`Notification.as_dict` as compact JSON (NaN becomes null)."""
        return msgspec.json.encode(notification.as_dict())

    async def send(self, notification: Notification) -> None:
        """POST the notification.

        Raises:
            HttpChannelError: Not delivered (a :class:`ChannelError` with ``status`` and
                ``retry_after_s``).
        """
        body = self.body(notification)
        headers = {"Content-Type": "application/json", ID_HEADER: notification.id}
        if self._secret is not None:
            headers[SIGNATURE_HEADER] = sign(body, self._secret)
        await post(self.options.url, body, headers, self.options.timeout_s)

    async def aclose(self) -> None:
        """Nothing to release (one connection per request)."""
