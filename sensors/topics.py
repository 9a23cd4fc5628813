"""The MQTT topic scheme: ``boltwatch/v1/{site}/{kind}/{device_id}/{channel}``.

``site`` and ``device_id`` are 1 to 64 characters of ``A-Z a-z 0-9 _ -``; ``kind`` is one of
:class:`~sensors.schema.DeviceKind`; ``channel`` one of :class:`~sensors.schema.Channel`.
Alerts are published by boltwatch under ``boltwatch/v1/{site}/alerts/...`` (not a device topic).
"""

from __future__ import annotations

import re
from typing import Final, NamedTuple

from sensors.errors import TopicError
from sensors.schema import Channel, DeviceKind

__all__ = ["PREFIX", "Topic", "parse_topic", "subscription"]

PREFIX: Final = "boltwatch/v1"
_ID = re.compile(r"[A-Za-z0-9_-]{1,64}")
_KINDS: Final = {k.value: k for k in DeviceKind}
_CHANNELS: Final = {c.value: c for c in Channel}
_MAX_TOPIC_LEN: Final = 256


class Topic(NamedTuple):
    """A parsed device topic."""

    site: str
    kind: DeviceKind
    device_id: str
    channel: Channel

    def __str__(self) -> str:
        return f"{PREFIX}/{self.site}/{self.kind.value}/{self.device_id}/{self.channel.value}"

    @classmethod
    def build(
        cls, site: str, kind: DeviceKind | str, device_id: str, channel: Channel | str
    ) -> Topic:
        """Build a topic, validating every segment.

        Raises:
            TopicError: A segment is not allowed (names the segment).
        """
        return parse_topic(f"{PREFIX}/{site}/{kind}/{device_id}/{channel}")


def parse_topic(topic: str) -> Topic:
    """Parse and validate a device topic.

    Args:
        topic: The MQTT topic name a message arrived on.

    Returns:
        The topic's parts.

    Raises:
        TopicError: The topic is not a boltwatch device topic; the reason names the bad segment.
    """
    if len(topic) > _MAX_TOPIC_LEN:
        raise TopicError(f"longer than {_MAX_TOPIC_LEN} characters")
    parts = topic.split("/")
    if len(parts) != 6 or parts[0] != "boltwatch" or parts[1] != "v1":
        raise TopicError(
            f"{topic!r} is not of the form {PREFIX}/{{site}}/{{kind}}/{{device_id}}/{{channel}}"
        )
    _, _, site, kind_s, device_id, channel_s = parts
    if not _ID.fullmatch(site):
        raise TopicError(f"site {site!r} must be 1-64 characters of A-Z a-z 0-9 _ -")
    kind = _KINDS.get(kind_s)
    if kind is None:
        raise TopicError(f"unknown device kind {kind_s!r}; known: {', '.join(_KINDS)}")
    if not _ID.fullmatch(device_id):
        raise TopicError(f"device_id {device_id!r} must be 1-64 characters of A-Z a-z 0-9 _ -")
    channel = _CHANNELS.get(channel_s)
    if channel is None:
        raise TopicError(f"unknown channel {channel_s!r}; known: {', '.join(_CHANNELS)}")
    return Topic(site, kind, device_id, channel)


def subscription(
    site: str = "+", kind: DeviceKind | str = "+", channel: Channel | str = "+"
) -> str:
    """A topic filter for ingest, e.g. every bolt's telemetry on one site.

    ``subscription()`` is ``boltwatch/v1/+/+/+/+``; ``subscription("bridge-a", "cbolt",
    "telemetry")`` is ``boltwatch/v1/bridge-a/cbolt/+/telemetry``.
    """
    for name, value in (("site", site), ("kind", str(kind)), ("channel", str(channel))):
        if value != "+" and not _ID.fullmatch(value):
            raise TopicError(f"{name} {value!r} is not a valid topic segment")
    return f"{PREFIX}/{site}/{kind}/+/{channel}"
