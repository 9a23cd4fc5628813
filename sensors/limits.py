"""Limits every decoder enforces on untrusted input, in one place.

A message comes from any client that reaches the broker, so each decoder (JSON in
:mod:`sensors.codec`, Sparkplug B in :mod:`sensors.sparkplug`) checks these bounds *before* a value
reaches numpy, :mod:`datetime` or SQLite, and rejects a message that breaks one with a
:class:`~sensors.errors.PayloadError` naming the field. The physical range of each reading field
(per unit) is declared with its schema in :mod:`sensors.schema`; ``docs/telemetry.md`` lists both.
"""

from __future__ import annotations

from typing import Final

__all__ = [
    "MAX_FUTURE_MS",
    "MAX_NESTING_DEPTH",
    "MAX_PAYLOAD_BYTES",
    "MAX_SEQ",
    "MAX_TS_MS",
    "MIN_TS_MS",
]

MAX_PAYLOAD_BYTES: Final = 256 * 1024
"""Largest payload accepted (bytes); a larger one is rejected without being parsed."""

MAX_NESTING_DEPTH: Final = 32
"""Deepest nesting of JSON arrays and objects accepted (levels), checked before parsing.

The deepest valid message, a gateway batch carrying a waveform (``{"readings": [{"vib_ms2":
[...]}]}``), is 3 levels; the bound only keeps a hostile payload from exhausting the parser's
recursion (msgspec skips unknown values recursively while it looks for a union's tag).
"""

MIN_TS_MS: Final = 946_684_800_000
"""2000-01-01T00:00:00Z (epoch ms): earlier timestamps are rejected (usually seconds sent as
milliseconds)."""

MAX_FUTURE_MS: Final = 86_400_000
"""A timestamp more than this far ahead of the receiver's clock is rejected (ms: one day)."""

MAX_TS_MS: Final = 253_402_300_799_999
"""9999-12-31T23:59:59.999Z (epoch ms), the latest time an RFC 3339 string can say: an integer
timestamp above it is rejected while decoding, so every timestamp fits int64 (and a datetime)
before the plausibility window ``[MIN_TS_MS, now + MAX_FUTURE_MS]`` is checked."""

MAX_SEQ: Final = 2**63 - 1
"""Largest ``seq`` (a reading's per-device counter, unsigned, stored as int64)."""
