"""The decoder-isolation boundary: no message can crash ingest, whatever a decoder does with it.

Decoders are total by contract (:mod:`sensors.codec`, :mod:`sensors.sparkplug`): bad input is
reported as a :class:`~sensors.errors.PayloadError`, never raised. If a decoder still raises, that
is a bug in boltwatch — but the message that triggered it would be redelivered by the broker after
every restart and take the service down each time. So here, and only here, any exception from a
decoder is caught: the group is decoded again one message at a time, so the good messages of the
group are still stored, and each message the decoder raises on becomes a :class:`DecoderError`
(a dead letter with field ``decoder_error``, its payload kept for replay once the bug is fixed).
The traceback is logged once per exception type, so the bug is visible without flooding the log.
"""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import Callable, Sequence

import numpy as np

from sensors.codec import DecodedBatch, ReadingColumns
from sensors.errors import PayloadError
from sensors.schema import DeviceKind

__all__ = ["DECODER_ERROR", "DecoderError", "DecoderGuard"]

DECODER_ERROR = "decoder_error"
"""Field of the dead letter (and label of ``rejected_total``) of a message a decoder raised on."""

_log = logging.getLogger("boltwatch.ingest")

Decode = Callable[[Sequence[tuple[str, bytes]]], DecodedBatch]
"""A decoder's ``decode_batch``: (topic, payload) pairs in, a batch out."""


class DecoderError(PayloadError):
    """A decoder raised on this message instead of reporting a PayloadError (a bug).

    Attributes:
        error_type: Name of the exception the decoder raised (``OverflowError``...).
        detail: Its message.
    """

    def __init__(self, error_type: str, detail: str) -> None:
        super().__init__(
            DECODER_ERROR,
            f"the decoder raised {error_type} ({detail[:300]}); a bug in boltwatch, the message "
            "is kept to be replayed once it is fixed",
        )
        self.error_type = error_type
        self.detail = detail

    def __reduce__(self) -> tuple[type[DecoderError], tuple[str, str]]:
        return (type(self), (self.error_type, self.detail))


class DecoderGuard:
    """Runs a decoder on a group of messages so that no exception escapes (see the module).

    Attributes:
        failures: Messages turned into :class:`DecoderError` since start.
    """

    def __init__(self) -> None:
        self.failures = 0
        self._logged: set[type[BaseException]] = set()

    def decode(self, decode: Decode, messages: Sequence[tuple[str, bytes]]) -> DecodedBatch:
        """``decode(messages)``; if it raises, the messages one by one (see the module).

        Args:
            decode: The decoder's ``decode_batch``.
            messages: ``(topic, payload)`` pairs, in arrival order.

        Returns:
            The batch, message indexes as in ``messages``; messages the decoder raised on are in
            its ``errors`` as :class:`DecoderError`.
        """
        try:
            return decode(messages)
        except Exception as exc:  # noqa: BLE001 - the documented decoder-isolation boundary
            self._log_once(exc, len(messages))
        parts: list[DecodedBatch] = []
        failed: list[tuple[int, PayloadError]] = []
        for i, message in enumerate(messages):
            try:
                parts.append(_renumber(decode([message]), i))
            except Exception as exc:  # noqa: BLE001 - the same boundary, per message
                self._log_once(exc, 1)
                self.failures += 1
                failed.append((i, DecoderError(type(exc).__name__, str(exc))))
        out = _merge(parts, len(messages))
        out.errors = sorted([*out.errors, *failed], key=lambda e: e[0])
        return out

    def _log_once(self, exc: Exception, messages: int) -> None:
        kind = type(exc)
        if kind in self._logged:
            return
        self._logged.add(kind)
        _log.error(
            "the decoder raised %s on a group of %d message(s) (a bug: messages it raises on are "
            "dead-lettered as %s; this traceback is logged once per exception type)",
            kind.__name__,
            messages,
            DECODER_ERROR,
            exc_info=exc,
        )


def _renumber(batch: DecodedBatch, index: int) -> DecodedBatch:
    """A one-message batch with its message index set to ``index``."""
    for cols in batch.telemetry.values():
        cols.message = np.full(len(cols), index, np.int64)
    batch.events = [dataclasses.replace(e, message=index) for e in batch.events]
    batch.statuses = [dataclasses.replace(s, message=index) for s in batch.statuses]
    batch.errors = [(index, e) for _, e in batch.errors]
    batch.commands = [index for _ in batch.commands]
    return batch


def _merge(parts: Sequence[DecodedBatch], count: int) -> DecodedBatch:
    """One batch of one-message batches (already renumbered, in message order)."""
    out = DecodedBatch(count=count)
    columns: dict[DeviceKind, list[ReadingColumns]] = {}
    for part in parts:
        for kind, cols in part.telemetry.items():
            columns.setdefault(kind, []).append(cols)
        out.events.extend(part.events)
        out.statuses.extend(part.statuses)
        out.errors.extend(part.errors)
        out.commands.extend(part.commands)
    out.telemetry = {kind: ReadingColumns.concat(cols) for kind, cols in columns.items()}
    return out
