"""HTTP POST for the webhook and Alertmanager channels (standard library, run in a daemon thread).

The answer is classified as Alertmanager's notifiers do: 2xx delivered; 429, 5xx, connection
errors and timeouts are worth retrying (with the server's ``Retry-After`` when it gave one);
any other status (4xx, a redirect) is not.
"""

from __future__ import annotations

import email.utils
import http.client
import time
import urllib.error
import urllib.request
from collections.abc import Mapping
from datetime import datetime

from alerts.channels._options import redact_url
from alerts.channels._thread import run_detached
from alerts.model import ChannelError

__all__ = ["HttpChannelError", "parse_retry_after", "post"]

_MAX_ERROR_BODY = 200  # characters of the server's answer kept in an error message


class HttpChannelError(ChannelError):
    """An HTTP channel could not deliver.

    Attributes:
        retryable: Whether trying again later may succeed.
        status: The HTTP status, or None when there was no answer (connection error, timeout).
        retry_after_s: How long the server asked to wait before retrying (``Retry-After``), in
            seconds, or None.
    """

    def __init__(
        self,
        message: str,
        *,
        retryable: bool,
        status: int | None = None,
        retry_after_s: float | None = None,
    ) -> None:
        super().__init__(message, retryable=retryable)
        self.status = status
        self.retry_after_s = retry_after_s


def parse_retry_after(value: str | None, now_s: float | None = None) -> float | None:
    """A ``Retry-After`` header as a delay in seconds (it is either seconds or an HTTP date).

    Args:
        value: The header, or None.
        now_s: Current time (epoch seconds) for the date form; default the wall clock.

    Returns:
        The delay (seconds, at least 0), or None when absent or unreadable.
    """
    if value is None or not value.strip():
        return None
    text = value.strip()
    if text.isdigit():
        return float(text)
    try:
        when: datetime = email.utils.parsedate_to_datetime(text)
    except (TypeError, ValueError):
        return None
    now = time.time() if now_s is None else now_s
    return max(0.0, when.timestamp() - now)


def _retryable_status(status: int) -> bool:
    return status == 429 or status >= 500


class _NoRedirect(urllib.request.HTTPRedirectHandler):
    """Refuse redirects: urllib would follow a 301/302/303 with a GET without the body, and
    that GET's 200 would look like a delivery. A redirect becomes an error (not retryable)."""

    def redirect_request(  # noqa: PLR0917 - urllib's signature
        self,
        req: urllib.request.Request,
        fp: object,
        code: int,
        msg: str,
        headers: object,
        newurl: str,
    ) -> None:
        return None


# Proxies from the environment (http_proxy, no_proxy) still apply, as for any urllib client.
_OPENER = urllib.request.build_opener(_NoRedirect())


def _post_sync(url: str, body: bytes, headers: Mapping[str, str], timeout_s: float) -> int:
    # The scheme is checked (http or https) when the channel is built.
    request = urllib.request.Request(url, data=body, headers=dict(headers), method="POST")  # noqa: S310
    where = redact_url(url)
    try:
        with _OPENER.open(request, timeout=timeout_s) as response:
            response.read()
            return int(response.status)
    except urllib.error.HTTPError as exc:
        status = exc.code
        detail = exc.read(_MAX_ERROR_BODY).decode("utf-8", "replace").strip()
        exc.close()
        retry_after = parse_retry_after(exc.headers.get("Retry-After"))
        wait = f"; retry after {retry_after:g} s" if retry_after is not None else ""
        raise HttpChannelError(
            f"POST {where}: HTTP {status} {exc.reason}{wait}" + (f": {detail}" if detail else ""),
            retryable=_retryable_status(status),
            status=status,
            retry_after_s=retry_after,
        ) from exc
    except urllib.error.URLError as exc:
        raise HttpChannelError(f"POST {where}: {exc.reason}", retryable=True) from exc
    except TimeoutError as exc:
        raise HttpChannelError(
            f"POST {where}: no answer within {timeout_s:g} s", retryable=True
        ) from exc
    except (OSError, http.client.HTTPException) as exc:
        raise HttpChannelError(
            f"POST {where}: connection failed ({type(exc).__name__}: {exc})", retryable=True
        ) from exc


async def post(url: str, body: bytes, headers: Mapping[str, str], timeout_s: float) -> int:
    """POST ``body`` to ``url`` (in a daemon thread: a stop never waits for it) and return the
    2xx status.

    Args:
        url: ``http://`` or ``https://`` URL (checked by the caller).
        body: The request body, sent as is.
        headers: Request headers.
        timeout_s: Connect and read timeout, seconds.

    Raises:
        HttpChannelError: Not delivered; ``retryable`` for 429, 5xx, connection errors and
            timeouts. The message names the server as ``scheme://host:port`` only (paths and
            queries may hold tokens).
    """
    return await run_detached(_post_sync, url, body, headers, timeout_s)
