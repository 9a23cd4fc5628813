"""Decode benchmark: cbolt readings into column arrays, next to plain ``json.loads``.

Measures, in one run and on the same messages:
  * single-reading JSON messages (one per MQTT message, a bolt publishing on its own topic);
  * 100-reading gateway batches (``{"readings": [...]}``, each reading with ``kind``/``device_id``).
For each: ``TelemetryDecoder.decode_batch`` (topic check, schema and range validation, spoof and
timestamp checks, columns) against the reference, ``json.loads`` of every payload into dicts (no
validation, no columns). Prints readings/s, messages/s and the ratio.

Usage: python bench/decode.py [--readings N] [--repeat R]
"""

from __future__ import annotations

import argparse
import gc
import json
import random
import sys
import time
from collections.abc import Callable

from rich.console import Console
from rich.table import Table

from sensors import DeviceKind, TelemetryDecoder

T0_MS = 1_772_323_500_000


def _single_messages(n: int, rng: random.Random) -> list[tuple[str, bytes]]:
    msgs = []
    for i in range(n):
        dev = f"bolt-{i % 1000:04d}"
        payload = json.dumps(
            {
                "ts": T0_MS + i * 100,
                "seq": i // 1000,
                "preload_kn": round(60.0 + rng.gauss(0, 0.4), 2),
                "temp_c": round(12.0 + rng.gauss(0, 1), 1),
                "battery_v": 3.6,
                "rssi_dbm": -90,
            }
        ).encode()
        msgs.append((f"boltwatch/v1/bridge-a/cbolt/{dev}/telemetry", payload))
    return msgs


def _gateway_batches(n: int, rng: random.Random, size: int = 100) -> list[tuple[str, bytes]]:
    msgs = []
    for b in range(n // size):
        readings = [
            {
                "kind": "cbolt",
                "device_id": f"bolt-{(b * size + j) % 1000:04d}",
                "ts": T0_MS + (b * size + j) * 100,
                "seq": b,
                "preload_kn": round(60.0 + rng.gauss(0, 0.4), 2),
                "temp_c": round(12.0 + rng.gauss(0, 1), 1),
                "battery_v": 3.6,
                "rssi_dbm": -90,
            }
            for j in range(size)
        ]
        gw = f"gw-{b % 10:02d}"
        msgs.append(
            (
                f"boltwatch/v1/bridge-a/gateway/{gw}/telemetry",
                json.dumps({"readings": readings}).encode(),
            )
        )
    return msgs


def _best_of(repeat: int, fn: Callable[[], int]) -> tuple[float, int]:
    """Best wall time of ``repeat`` runs (GC off while timing, as ingest's hot loop sees it)."""
    best = float("inf")
    count = 0
    for _ in range(repeat):
        gc.collect()
        gc.disable()
        t = time.perf_counter()
        count = fn()
        best = min(best, time.perf_counter() - t)
        gc.enable()
    return best, count


def main(argv: list[str] | None = None) -> int:
    """Run the benchmark and print the table."""
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--readings", type=int, default=1_000_000, help="readings per case")
    ap.add_argument("--repeat", type=int, default=3, help="runs per case; the best is reported")
    args = ap.parse_args(argv)
    rng = random.Random(7)
    console = Console(width=max(Console().width, 110))
    console.print(f"building {args.readings:,} readings per case ...")
    cases = {
        "single-reading messages": _single_messages(args.readings, rng),
        "100-reading gateway batches": _gateway_batches(args.readings, rng),
    }
    # The receiver's clock: an hour after the last reading (readings are 100 ms apart).
    decoder = TelemetryDecoder(clock=lambda: T0_MS / 1000 + args.readings / 10 + 3600)
    table = Table(
        title=f"decode {args.readings:,} cbolt readings into columns (best of {args.repeat})"
    )
    for col in ("case", "decoder", "messages/s", "readings/s", "ratio to json.loads", "target"):
        table.add_column(col, justify="left" if col in ("case", "decoder") else "right")
    targets = {
        "single-reading messages": (1_000_000, "msg"),
        "100-reading gateway batches": (2_000_000, "rd"),
    }
    for name, msgs in cases.items():
        payloads = [p for _, p in msgs]

        def reference(payloads: list[bytes] = payloads) -> int:
            return len([json.loads(p) for p in payloads])

        ref_s, _ = _best_of(args.repeat, reference)

        def run(msgs: list[tuple[str, bytes]] = msgs) -> int:
            out = decoder.decode_batch(msgs)
            if out.errors:
                raise SystemExit(f"benchmark data rejected: {out.errors[0][1]}")
            return len(out.telemetry[DeviceKind.CBOLT])

        ours_s, readings = _best_of(args.repeat, run)
        if readings != args.readings // (100 if "batch" in name else 1) * (
            100 if "batch" in name else 1
        ):
            raise SystemExit(f"expected {args.readings} readings, decoded {readings}")
        target, unit = targets[name]
        ours_rate = len(msgs) / ours_s if unit == "msg" else readings / ours_s
        table.add_row(
            name,
            "json.loads (reference)",
            f"{len(msgs) / ref_s:,.0f}",
            f"{readings / ref_s:,.0f}",
            "1.00",
            "",
        )
        table.add_row(
            "",
            "boltwatch TelemetryDecoder",
            f"{len(msgs) / ours_s:,.0f}",
            f"{readings / ours_s:,.0f}",
            f"{ref_s / ours_s:.2f}",
            f"{target:,} {'msg' if unit == 'msg' else 'readings'}/s: "
            + ("met" if ours_rate >= target else f"{ours_rate / target:.0%}"),
        )
    console.print(table)
    console.print(f"python {sys.version.split()[0]}; one process, one thread")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
