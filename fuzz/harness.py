"""Running one atheris harness: crashes are recorded and the search goes on.

libFuzzer stops at the first crash; here a harness's exception is written to
``fuzz/crashes/<harness>/`` (the first input per exception type and place, with its traceback on
stderr) and counted in ``summary.json`` there, so one run reports every distinct crash and how
many inputs crashed. ``fuzz/run.py`` reads the summary; an input that once crashed belongs in
``fuzz/regressions/<harness>/`` once fixed, where ``make test`` replays it.
"""

from __future__ import annotations

import hashlib
import json
import sys
import traceback
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Final

import atheris

__all__ = ["CRASHES", "fuzz"]

CRASHES: Final = Path(__file__).parent / "crashes"
"""Crashing inputs found by ``make fuzz``, per harness (not kept in git)."""


def fuzz(name: str, one_input: Callable[[bytes], None], argv: Sequence[str]) -> None:
    """Fuzz ``one_input`` with libFuzzer's command line ``argv``; never returns.

    Args:
        name: The harness (``json``, ``sparkplug``, ``api``): its crash folder.
        one_input: Checks the properties on one input; raising is a crash.
        argv: ``sys.argv``: libFuzzer options and corpus folders.
    """
    folder = CRASHES / name
    folder.mkdir(parents=True, exist_ok=True)
    summary = folder / "summary.json"
    unique: dict[str, str] = {}
    crashing = 0

    def guarded(data: bytes) -> None:
        nonlocal crashing
        try:
            one_input(data)
        except Exception as exc:  # noqa: BLE001 - a crash: recorded, and the search goes on
            crashing += 1
            frames = traceback.extract_tb(exc.__traceback__)
            where = f"{Path(frames[-1].filename).name}:{frames[-1].lineno}" if frames else "?"
            key = f"{type(exc).__name__} at {where}"
            if key not in unique:
                path = folder / f"crash-{hashlib.sha256(data).hexdigest()[:16]}"
                path.write_bytes(data)
                unique[key] = str(path)
                sys.stderr.write(f"\n== new crash: {key} -> {path}\n")
                traceback.print_exception(exc, file=sys.stderr)
            summary.write_text(
                json.dumps({"crashing_inputs": crashing, "unique": unique}, indent=1),
                encoding="utf-8",
            )

    atheris.Setup(list(argv), guarded)
    atheris.Fuzz()
