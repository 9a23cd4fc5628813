"""Waiting in the cluster workers' loops: always cancellable, always ending at a stop."""

from __future__ import annotations

import asyncio
import contextlib

__all__ = ["sleep_or_stop"]


async def sleep_or_stop(stop: asyncio.Event, seconds: float) -> None:
    """Wait ``seconds``, or less if ``stop`` is set meanwhile (``asyncio.timeout``, not
    ``wait_for``, which can swallow a cancellation on Python 3.11)."""
    with contextlib.suppress(TimeoutError):
        async with asyncio.timeout(seconds):
            await stop.wait()
