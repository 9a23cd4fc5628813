"""Atheris harness of the Sparkplug B decoder (``sensors.sparkplug.SparkplugDecoder``).

Input: MQTT messages framed as in :mod:`fuzz.common`, decoded together (births inside an input
carry over to its data messages, not to the next input); the properties are
:func:`fuzz.common.check_sparkplug`. pysparkplug is instrumented too, so coverage guides the
search into its payload parsing. Run through ``make fuzz``.
"""

from __future__ import annotations

import sys

import atheris

with atheris.instrument_imports(include=["sensors", "pysparkplug"]):
    from sensors.sparkplug import SparkplugDecoder

from fuzz.common import NOW_S, check_sparkplug, unframe
from fuzz.harness import fuzz

DECODER = SparkplugDecoder(clock=lambda: NOW_S)


def one_input(data: bytes) -> None:
    """Decode the framed messages (no births remembered from other inputs); a broken property
    raises."""
    check_sparkplug(DECODER, unframe(data))


if __name__ == "__main__":
    fuzz("sparkplug", one_input, sys.argv)
