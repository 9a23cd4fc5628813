"""Fixtures of the chaos suite: those of the integration tests (real servers on free ports, the
``reaper`` that SIGKILLs what a test started), re-exported here, and the chaos sizes.

``make test`` runs the short sizes; ``make chaos`` (``CHAOS_FULL=1``) the full ones. Every test
of this folder is marked ``chaos`` and ``integration`` (``pytestmark``): ``-m "not chaos"``
leaves them out.
"""

from __future__ import annotations

from tests.chaos.harness import FULL, SEED
from tests.integration.conftest import mosquitto, reaper
from tests.integration.vm import victoria

__all__ = ["mosquitto", "reaper", "victoria"]


def pytest_report_header() -> str:
    """Which sizes run, and the seed."""
    return f"chaos: {'full' if FULL else 'short'} sizes (CHAOS_FULL), seed {SEED} (CHAOS_SEED)"
