"""Atheris harness of the alerts API's body parsers (``alerts.api_input.parse_body``, the silence
and ack/comment field readers).

Input: one request body, as raw bytes; the properties are :func:`fuzz.common.check_api_body`.
Run through ``make fuzz``.
"""

from __future__ import annotations

import sys

import atheris

with atheris.instrument_imports(
    include=["alerts.api", "alerts.api_input", "alerts.rules", "sensors.codec"]
):
    # imported here to be instrumented
    import alerts.api
    import alerts.api_input  # noqa: F401

from fuzz.common import check_api_body
from fuzz.harness import fuzz


def one_input(data: bytes) -> None:
    """Parse and validate one body; a broken property raises."""
    check_api_body(data)


if __name__ == "__main__":
    fuzz("api", one_input, sys.argv)
