"""Which codec reads a message, by the topic it arrived on: a registry of decoders by prefix.

``boltwatch/v1/...`` is the JSON contract (:class:`~sensors.codec.TelemetryDecoder`),
``spBv1.0/...`` is Sparkplug B (:class:`~sensors.sparkplug.SparkplugDecoder`). Both decode into
the same :class:`~sensors.codec.DecodedBatch` columns, so everything after decoding (dead
letters, the store's dedup key, device status, detection) is the same for both. A message on a
topic no decoder is registered for is rejected (a :class:`~sensors.errors.TopicError`, so a dead
letter), never dropped.
"""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Callable, Iterable, Mapping
from typing import Final, Protocol

import numpy as np
import numpy.typing as npt

from sensors.codec import MAX_PAYLOAD_BYTES, DecodedBatch, ReadingColumns, TelemetryDecoder
from sensors.errors import PayloadError, TopicError
from sensors.schema import DeviceKind
from sensors.sparkplug import NAMESPACE, SparkplugDecoder
from sensors.topics import PREFIX

__all__ = [
    "DEFAULT_TOPICS",
    "JSON_PREFIX",
    "SPARKPLUG_PREFIX",
    "Decoder",
    "DecoderRegistry",
    "default_decoders",
]

JSON_PREFIX: Final = f"{PREFIX}/"
"""Topics of the JSON contract: ``boltwatch/v1/{site}/{kind}/{device_id}/{channel}``."""
SPARKPLUG_PREFIX: Final = f"{NAMESPACE}/"
"""Topics of Sparkplug B: ``spBv1.0/{group}/{type}/{edge_node}[/{device}]``."""
DEFAULT_TOPICS: Final = (f"{PREFIX}/+/+/+/+", f"{NAMESPACE}/#")
"""What ingest subscribes to by default: every device topic of both codecs."""


class Decoder(Protocol):
    """A codec ingest can use: many ``(topic, payload)`` pairs in, one batch of columns out."""

    def decode_batch(self, messages: Iterable[tuple[str, bytes]]) -> DecodedBatch:
        """Decode messages in arrival order; bad ones are reported in ``errors``, never raised."""
        ...


class DecoderRegistry:
    """Decoders by topic prefix; :meth:`decode_batch` sends each message to its decoder.

    The longest registered prefix that a topic starts with wins. Each decoder sees its messages
    in arrival order (Sparkplug's births must come before their data), and the batch that comes
    back numbers messages as they were given (``message`` columns, ``errors``, ``commands``).

    Args:
        decoders: Decoder per topic prefix (e.g. ``{"boltwatch/v1/": TelemetryDecoder()}``).
    """

    def __init__(self, decoders: Mapping[str, Decoder] | None = None) -> None:
        self._decoders: dict[str, Decoder] = {}
        for prefix, decoder in (decoders or {}).items():
            self.register(prefix, decoder)

    def register(self, prefix: str, decoder: Decoder) -> None:
        """Decode topics starting with ``prefix`` with ``decoder`` (replaces a previous one).

        Raises:
            ValueError: ``prefix`` is empty.
        """
        if not prefix:
            raise ValueError("a decoder's topic prefix must not be empty")
        self._decoders[prefix] = decoder
        # Longest first: a more specific prefix wins.
        self._decoders = dict(sorted(self._decoders.items(), key=lambda kv: -len(kv[0])))

    @property
    def prefixes(self) -> tuple[str, ...]:
        """The registered prefixes, longest first."""
        return tuple(self._decoders)

    def decoder_for(self, topic: str) -> Decoder | None:
        """The decoder of a topic (None: no prefix matches)."""
        for prefix, decoder in self._decoders.items():
            if topic.startswith(prefix):
                return decoder
        return None

    def decode_batch(self, messages: Iterable[tuple[str, bytes]]) -> DecodedBatch:
        """Decode messages, each with its topic's decoder, into one batch.

        Args:
            messages: ``(topic, payload)`` pairs, in arrival order.

        Returns:
            One batch, messages numbered in the order given; a topic without a decoder is a
            rejected message (:class:`~sensors.errors.TopicError`).
        """
        items = messages if isinstance(messages, list | tuple) else list(messages)
        if items:
            # The common case, checked cheaply: the whole batch under one prefix that no longer
            # prefix narrows, so one decoder and nothing to renumber.
            first = items[0][0]
            prefix = next((p for p in self._decoders if first.startswith(p)), None)
            if (
                prefix is not None
                and not any(p != prefix and p.startswith(prefix) for p in self._decoders)
                and all(t.startswith(prefix) for t, _ in items)
            ):
                return self._decoders[prefix].decode_batch(items)
        parts: dict[int, tuple[Decoder, list[int]]] = {}
        unknown: list[int] = []
        for i, (topic, _) in enumerate(items):
            decoder = self.decoder_for(topic)
            if decoder is None:
                unknown.append(i)
            else:
                parts.setdefault(id(decoder), (decoder, []))[1].append(i)
        if not unknown and len(parts) == 1:
            return next(iter(parts.values()))[0].decode_batch(items)
        out = DecodedBatch(count=len(items))
        out.errors.extend((i, self._no_decoder(items[i][0])) for i in unknown)
        columns: dict[DeviceKind, list[ReadingColumns]] = {}
        for decoder, where in parts.values():
            sub = decoder.decode_batch([items[i] for i in where])
            _merge_into(out, sub, np.asarray(where, dtype=np.int64), columns)
        for kind, cols in columns.items():
            if len(cols) == 1:
                out.telemetry[kind] = cols[0]
            else:
                merged = ReadingColumns.concat(cols)
                out.telemetry[kind] = merged.select(np.argsort(merged.message, kind="stable"))
        out.events.sort(key=lambda e: e.message)
        out.statuses.sort(key=lambda s: s.message)
        out.errors.sort(key=lambda e: e[0])
        out.commands.sort()
        return out

    def _no_decoder(self, topic: str) -> PayloadError:
        known = " or ".join(f"{p}..." for p in self._decoders) or "none"
        shown = topic if len(topic) <= 80 else topic[:77] + "..."
        return TopicError(f"{shown!r}: no decoder for this topic (known: {known})")


def _merge_into(
    out: DecodedBatch,
    sub: DecodedBatch,
    index: npt.NDArray[np.int64],
    columns: dict[DeviceKind, list[ReadingColumns]],
) -> None:
    """Add a decoder's batch to ``out``, its message numbers mapped through ``index``."""
    for kind, cols in sub.telemetry.items():
        if len(cols):
            cols.message = index[cols.message]
            columns.setdefault(kind, []).append(cols)
    out.events.extend(dataclasses.replace(e, message=int(index[e.message])) for e in sub.events)
    out.statuses.extend(dataclasses.replace(s, message=int(index[s.message])) for s in sub.statuses)
    out.errors.extend((int(index[i]), error) for i, error in sub.errors)
    out.commands.extend(int(index[i]) for i in sub.commands)


def default_decoders(
    *, max_payload_bytes: int = MAX_PAYLOAD_BYTES, clock: Callable[[], float] = time.time
) -> DecoderRegistry:
    """The JSON contract under ``boltwatch/v1/`` and Sparkplug B under ``spBv1.0/``.

    Args:
        max_payload_bytes: Larger payloads are rejected without being parsed.
        clock: Seconds since the epoch: readings too far ahead of it are rejected.
    """
    return DecoderRegistry(
        {
            JSON_PREFIX: TelemetryDecoder(max_payload_bytes=max_payload_bytes, clock=clock),
            SPARKPLUG_PREFIX: SparkplugDecoder(max_payload_bytes=max_payload_bytes, clock=clock),
        }
    )
