"""Atheris harness of the JSON decoder (``sensors.codec.TelemetryDecoder``).

Input: MQTT messages framed as in :mod:`fuzz.common`; the properties are
:func:`fuzz.common.check_json`. Run through ``make fuzz`` (or ``python -m fuzz.fuzz_json DIR``).
"""

from __future__ import annotations

import sys

import atheris

with atheris.instrument_imports(include=["sensors"]):
    from sensors.codec import TelemetryDecoder

from fuzz.common import NOW_S, check_json, unframe
from fuzz.harness import fuzz

DECODER = TelemetryDecoder(clock=lambda: NOW_S)


def one_input(data: bytes) -> None:
    """Decode the framed messages; a broken property raises."""
    check_json(DECODER, unframe(data))


if __name__ == "__main__":
    fuzz("json", one_input, sys.argv)
