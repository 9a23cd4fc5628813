"""The ``email`` channel: a plain-text e-mail over SMTP (smtplib, run in a worker thread).

Subject: ``subject_prefix`` + the notification's title. Body: :meth:`Notification.text`.
``Message-ID`` is derived from the notification id (``<id@boltwatch>``) and the id is also in
``X-Boltwatch-Notification-Id``, so a mail system (or a person's filter) can spot a retry.

Security: with ``starttls = true`` the connection is upgraded before authenticating, and the
server's certificate is verified (against the system CAs, or ``ca_file``); ``ssl = true`` speaks
TLS from the start (SMTPS, port 465). A password is refused without one of them, since it would
cross the network in clear.

Failures: authentication refused, sender or recipients refused, a 5xx answer, a certificate that
does not verify, STARTTLS not offered -> not retryable (the configuration must change); connection
errors, timeouts and 4xx answers -> retryable.
"""

from __future__ import annotations

import re
import smtplib
import ssl
from collections.abc import Mapping
from dataclasses import dataclass, field
from email.message import EmailMessage
from email.utils import formatdate, parseaddr
from typing import Any, ClassVar, Final, Self

from alerts.channels._options import parse_options, resolve_secret
from alerts.channels._thread import run_detached
from alerts.errors import RuleError
from alerts.model import ChannelError, Notification

__all__ = ["EmailChannel", "EmailOptions"]

_ADDRESS: Final = re.compile(r"^[^@\s<>]+@[^@\s<>]+$")
_ID_SAFE: Final = re.compile(r"[^A-Za-z0-9._-]")


def _address(text: str) -> str | None:
    """The bare address of ``user@domain`` or ``Name <user@domain>``; None if it is not one."""
    address = parseaddr(text)[1]
    return address if _ADDRESS.match(address) else None


@dataclass(frozen=True, slots=True)
class EmailOptions:
    """Options of an ``email`` receiver.

    Attributes:
        host: SMTP server.
        sender: ``From`` address (``alerts@example.org`` or ``boltwatch <alerts@example.org>``).
        to: Recipient addresses (at least one; with or without a display name).
        port: SMTP port (25; 587 for submission with STARTTLS; 465 with ``ssl``).
        starttls: Upgrade the connection with STARTTLS before anything else.
        ssl: Implicit TLS (SMTPS) instead.
        ca_file: CA bundle (PEM) to verify the server's certificate; default the system's.
        username: Login, if the server wants one.
        password: Its password (inline; prefer the two forms below).
        password_file: File holding the password.
        password_env: Environment variable holding the password.
        subject_prefix: Put before the title in the subject.
        timeout_s: Connect and command timeout, seconds.
    """

    host: str
    sender: str
    to: tuple[str, ...]
    port: int = 25
    starttls: bool = False
    ssl: bool = False
    ca_file: str | None = None
    username: str | None = None
    password: str | None = field(default=None, repr=False)
    password_file: str | None = None
    password_env: str | None = None
    subject_prefix: str = "[boltwatch] "
    timeout_s: float = 30.0


class EmailChannel:
    """Send notifications as plain-text e-mails over SMTP.

    Args:
        options: Validated options.
        password: The resolved password (None: no login).
    """

    kind: ClassVar[str] = "email"

    def __init__(self, options: EmailOptions, password: str | None = None) -> None:
        self.options = options
        self._password = password

    @classmethod
    def from_options(cls, options: Mapping[str, Any], key: str) -> Self:
        """Validate a receiver's options and build the channel.

        Raises:
            RuleError: A bad option, named ``{key}.{option}``.
        """
        opts = parse_options(EmailOptions, options, key)
        if not opts.host:
            raise RuleError(f"{key}.host", "must not be empty")
        if not 0 < opts.port < 65536:
            raise RuleError(f"{key}.port", "must be a TCP port, 1..65535")
        if _address(opts.sender) is None:
            raise RuleError(f"{key}.sender", "not an e-mail address (user@domain)")
        if not opts.to:
            raise RuleError(f"{key}.to", "give at least one recipient")
        for i, address in enumerate(opts.to):
            if _address(address) is None:
                raise RuleError(f"{key}.to[{i}]", "not an e-mail address (user@domain)")
        if opts.starttls and opts.ssl:
            raise RuleError(f"{key}.ssl", "give either starttls or ssl, not both")
        if opts.timeout_s <= 0:
            raise RuleError(f"{key}.timeout_s", "must be > 0 seconds")
        password = resolve_secret(
            "password",
            inline=opts.password,
            file=opts.password_file,
            env=opts.password_env,
            key=key,
        )
        if password is not None and opts.username is None:
            raise RuleError(f"{key}.username", "a password is given but no username")
        if opts.username is not None and password is None:
            raise RuleError(f"{key}.password", "a username is given but no password")
        if password is not None and not (opts.starttls or opts.ssl):
            raise RuleError(
                f"{key}.starttls", "set starttls = true (or ssl = true): the password would be "
                "sent in clear"
            )  # fmt: skip
        return cls(opts, password)

    def message(self, notification: Notification) -> EmailMessage:
        """The e-mail for a notification."""
        o = self.options
        msg = EmailMessage()
        msg["Subject"] = f"{o.subject_prefix}{notification.title}"
        msg["From"] = o.sender
        msg["To"] = ", ".join(o.to)
        msg["Date"] = formatdate(notification.created_ms / 1000.0, localtime=False)
        msg["Message-ID"] = f"<{_ID_SAFE.sub('_', notification.id)}@boltwatch>"
        msg["X-Boltwatch-Notification-Id"] = notification.id
        msg.set_content(notification.text())
        return msg

    def _context(self) -> ssl.SSLContext:
        return ssl.create_default_context(cafile=self.options.ca_file)

    def _send_sync(self, msg: EmailMessage) -> None:
        o = self.options
        smtp: smtplib.SMTP
        if o.ssl:
            smtp = smtplib.SMTP_SSL(o.host, o.port, timeout=o.timeout_s, context=self._context())
        else:
            smtp = smtplib.SMTP(o.host, o.port, timeout=o.timeout_s)
        with smtp:
            if o.starttls:
                smtp.starttls(context=self._context())
            if o.username is not None and self._password is not None:
                smtp.login(o.username, self._password)
            refused = smtp.send_message(
                msg, from_addr=_address(o.sender), to_addrs=[_address(a) or a for a in o.to]
            )
        if refused:
            # Some recipients got it: retrying would send it to them again.
            who = ", ".join(f"{a} ({code})" for a, (code, _) in refused.items())
            raise ChannelError(f"SMTP {o.host}: recipients refused: {who}", retryable=False)

    async def send(self, notification: Notification) -> None:
        """Send the e-mail.

        Raises:
            ChannelError: Not delivered (see the module's docstring for what is retryable).
        """
        msg = self.message(notification)
        where = f"SMTP {self.options.host}:{self.options.port}"
        try:
            await run_detached(self._send_sync, msg)
        except smtplib.SMTPAuthenticationError as exc:
            raise ChannelError(
                f"{where}: authentication refused for user {self.options.username!r} "
                f"({exc.smtp_code})",
                retryable=False,
            ) from exc
        except smtplib.SMTPRecipientsRefused as exc:
            who = ", ".join(f"{a} ({code})" for a, (code, _) in exc.recipients.items())
            raise ChannelError(f"{where}: recipients refused: {who}", retryable=False) from exc
        except smtplib.SMTPSenderRefused as exc:
            raise ChannelError(
                f"{where}: sender {exc.sender} refused ({exc.smtp_code})", retryable=False
            ) from exc
        except smtplib.SMTPNotSupportedError as exc:
            raise ChannelError(f"{where}: {exc}", retryable=False) from exc
        except smtplib.SMTPResponseException as exc:
            error = exc.smtp_error
            text = error.decode("utf-8", "replace") if isinstance(error, bytes) else str(error)
            raise ChannelError(
                f"{where}: {exc.smtp_code} {text}".rstrip(), retryable=exc.smtp_code < 500
            ) from exc
        except ssl.SSLCertVerificationError as exc:
            raise ChannelError(
                f"{where}: the server's certificate did not verify ({exc.verify_message}); "
                "check ca_file and host",
                retryable=False,
            ) from exc
        except (smtplib.SMTPException, OSError) as exc:  # disconnects, refusals, timeouts, TLS
            raise ChannelError(f"{where}: {type(exc).__name__}: {exc}", retryable=True) from exc

    async def aclose(self) -> None:
        """Nothing to release (one connection per e-mail)."""
