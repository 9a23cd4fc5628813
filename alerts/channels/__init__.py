"""Notification channels: one small module per kind, registered in :data:`CHANNELS`.

A receiver in the alert rules names its channel and gives that channel's options::

    [[receivers]]
    name = "maintenance-webhook"
    channel = "webhook"
    url = "https://maintenance.example.org/hooks/boltwatch"
    secret_env = "BOLTWATCH_WEBHOOK_SECRET"

:func:`make_channel` validates the options and builds the channel; every error is a
:class:`~alerts.errors.RuleError` naming the offending key (``receivers[0].url``). Each kind ships a
commented sample receiver in ``alerts/channels/samples/<kind>.toml``.

Secrets (passwords, tokens, HMAC secrets, Apprise URLs) may be given inline, as ``<name>_file`` (a
file read when the channel is built) or as ``<name>_env`` (an environment variable); they never
appear in error messages or logs.

A channel (:class:`~alerts.model.Channel`) has a ``kind``, ``from_options(options, key)``,
``async send(notification)`` raising :class:`~alerts.model.ChannelError` (``retryable`` says
whether the outbox should try again; HTTP channels raise :class:`HttpChannelError`, which adds
``status`` and ``retry_after_s``) and ``async aclose()``. A new channel is one new module here,
added to :data:`CHANNELS` below, with its sample.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Final, Protocol, Self

from alerts.channels._http import HttpChannelError
from alerts.channels._options import RECEIVER_KEYS
from alerts.channels.alertmanager import AlertmanagerChannel
from alerts.channels.apprise import AppriseChannel
from alerts.channels.console import ConsoleChannel
from alerts.channels.email import EmailChannel
from alerts.channels.mqtt import MqttChannel
from alerts.channels.webhook import WebhookChannel, verify_signature
from alerts.errors import RuleError
from alerts.model import Channel

__all__ = [
    "CHANNELS",
    "RECEIVER_KEYS",
    "AlertmanagerChannel",
    "AppriseChannel",
    "ChannelClass",
    "ConsoleChannel",
    "EmailChannel",
    "HttpChannelError",
    "MqttChannel",
    "WebhookChannel",
    "make_channel",
    "verify_signature",
]


class ChannelClass(Channel, Protocol):
    """What :data:`CHANNELS` holds: a channel class that builds itself from options."""

    @classmethod
    def from_options(cls, options: Mapping[str, Any], key: str) -> Self:
        """Validate options and build the channel (raises RuleError naming the key)."""
        ...


CHANNELS: Final[dict[str, type[ChannelClass]]] = {
    cls.kind: cls
    for cls in (
        WebhookChannel,
        EmailChannel,
        MqttChannel,
        AppriseChannel,
        AlertmanagerChannel,
        ConsoleChannel,
    )
}
"""Channel kind (the receiver's ``channel``) -> class."""


def make_channel(kind: str, options: Mapping[str, Any], key: str) -> Channel:
    """Build a notification channel from a receiver's options.

    Args:
        kind: The channel kind (``webhook``, ``email``, ``mqtt``, ``apprise``, ``alertmanager``,
            ``console``).
        options: The channel's options. A whole ``[[receivers]]`` table may be passed: its
            ``name`` and ``channel`` keys are ignored. Any other unknown key is an error.
        key: The receiver's key path for errors (``receivers[2]``).

    Returns:
        The channel, not yet connected (network channels connect when they first send).

    Raises:
        RuleError: Unknown kind (``{key}.channel``, listing the known ones) or a bad option
            (``{key}.{option}``).
    """
    cls = CHANNELS.get(kind)
    if cls is None:
        known = ", ".join(sorted(CHANNELS))
        raise RuleError(f"{key}.channel", f"unknown channel {kind!r} (known: {known})")
    return cls.from_options(options, key)
