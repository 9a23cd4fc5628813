"""The ``apprise`` channel: chat and push services through Apprise URLs.

One receiver can notify several services at once: Slack (``slack://...``), Microsoft Teams
(``workflows://...``), Telegram (``tgram://bottoken/chat_id``), ntfy (``ntfy://host/topic``),
Discord, Matrix, Mattermost, e-mail, or a plain ``json://host:port/path`` POST
(see https://github.com/caronc/apprise/wiki for every URL form). Title: the notification's title;
body: :meth:`Notification.text`. The Apprise message type follows the notification: ``success``
when resolved, ``failure`` for a firing major/critical alert, ``warning`` or ``info`` otherwise.

Apprise URLs usually embed their service's token, so they are secrets: give them inline
(``urls``), or keep them out of the config with ``urls_file`` (a file, one URL per line, ``#``
comments) or ``urls_env`` (an environment variable, URLs separated by spaces or newlines).
Error messages never repeat a URL. (Apprise's own DEBUG log may print service URLs: keep the
``apprise`` logger at INFO or above in production.)

Any failed service makes the whole notification retryable (apprise does not say why it failed);
receivers that cannot deduplicate may then see a message twice.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar, Self

import apprise

from alerts.channels._options import parse_options, resolve_secret
from alerts.channels._thread import run_detached
from alerts.errors import RuleError
from alerts.model import ChannelError, Notification
from detection.events import Severity

__all__ = ["AppriseChannel", "AppriseOptions"]


@dataclass(frozen=True, slots=True)
class AppriseOptions:
    """Options of an ``apprise`` receiver (give ``urls``, ``urls_file`` or ``urls_env``).

    Attributes:
        urls: Apprise URLs.
        urls_file: File with Apprise URLs, one per line (``#`` starts a comment).
        urls_env: Environment variable with Apprise URLs, separated by white space.
        timeout_s: Deadline of one notification over all services, seconds.
    """

    urls: tuple[str, ...] = field(default=(), repr=False)
    urls_file: str | None = None
    urls_env: str | None = None
    timeout_s: float = 30.0


def _severity(alert: Mapping[str, Any]) -> Severity:
    try:
        return Severity.parse(str(alert.get("severity", "info")))
    except ValueError:  # not one of ours: the message still goes out, as info
        return Severity.INFO


def _notify_type(notification: Notification) -> apprise.NotifyType:
    if notification.status == "resolved":
        return apprise.NotifyType.SUCCESS
    worst = max((_severity(a) for a in notification.alerts), default=Severity.INFO)
    if worst >= Severity.MAJOR:
        return apprise.NotifyType.FAILURE
    return apprise.NotifyType.WARNING if worst == Severity.WARNING else apprise.NotifyType.INFO


class AppriseChannel:
    """Notify every service of a list of Apprise URLs.

    Args:
        options: Validated options.
        urls: The resolved URLs (from ``urls``, ``urls_file`` or ``urls_env``).
        where: The key naming the URLs in errors (``receivers[3].urls``).

    Raises:
        RuleError: Apprise does not recognise a URL (named by its index, not repeated).
    """

    kind: ClassVar[str] = "apprise"

    def __init__(
        self, options: AppriseOptions, urls: list[str], where: str = "apprise.urls"
    ) -> None:
        self.options = options
        self._apprise = apprise.Apprise()
        for i, url in enumerate(urls):
            if not self._apprise.add(url):
                scheme = url.partition("://")[0] if "://" in url else ""
                shown = f" (scheme {scheme}://)" if scheme.isalnum() else ""
                raise RuleError(f"{where}[{i}]", f"not a URL Apprise recognises{shown}")
        self.service_count = len(urls)

    @classmethod
    def from_options(cls, options: Mapping[str, Any], key: str) -> Self:
        """Validate a receiver's options and build the channel.

        Raises:
            RuleError: A bad option, named ``{key}.{option}``.
        """
        opts = parse_options(AppriseOptions, options, key)
        if opts.timeout_s <= 0:
            raise RuleError(f"{key}.timeout_s", "must be > 0 seconds")
        given = [n for n, v in (("urls", opts.urls), ("urls_file", opts.urls_file),
                                ("urls_env", opts.urls_env)) if v]  # fmt: skip
        if not given:
            raise RuleError(f"{key}.urls", "give at least one Apprise URL (or urls_file/urls_env)")
        if len(given) > 1:
            raise RuleError(f"{key}.{given[1]}", f"give only one of {', '.join(given)}")
        if opts.urls:
            return cls(opts, list(opts.urls), f"{key}.urls")
        if opts.urls_file:
            text = resolve_secret("urls", inline=None, file=opts.urls_file, env=None, key=key)
            lines = (line.split("#", 1)[0].strip() for line in (text or "").splitlines())
            urls = [line for line in lines if line]
            where = f"{key}.urls_file"
            if not urls:
                raise RuleError(where, f"{Path(opts.urls_file).name} holds no URL")
        else:
            text = resolve_secret("urls", inline=None, file=None, env=opts.urls_env, key=key)
            urls = (text or "").split()
            where = f"{key}.urls_env"
        return cls(opts, urls, where)

    async def send(self, notification: Notification) -> None:
        """Notify every service.

        Raises:
            ChannelError: A service failed or timed out (retryable).
        """
        result = await run_detached(
            self._apprise.notify,
            body=notification.text(),
            title=notification.title,
            notify_type=_notify_type(notification),
            timeout=self.options.timeout_s,
        )
        if not result:
            status = getattr(getattr(result, "status", None), "name", "FAILURE")
            failed = getattr(result, "failed_count", None)
            detail = f", {failed} of {self.service_count} services failed" if failed else ""
            raise ChannelError(f"apprise: {status}{detail}", retryable=True)

    async def aclose(self) -> None:
        """Nothing to release."""
