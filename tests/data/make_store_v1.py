"""Writes tests/data/store_v1.sqlite3.gz: a store of schema version 1, as release 9af5364 wrote it.

Run from a checkout of that release (``git worktree add /tmp/rel 9af5364``)::

    PYTHONPATH=/tmp/rel python tests/data/make_store_v1.py /tmp/v1store
    gzip -9 -c /tmp/v1store/boltwatch.sqlite3 > tests/data/store_v1.sqlite3.gz

Two bolts every 15 minutes and a mill every hour (a waveform every other hour) over six days
from 2026-03-01, a tightening event, rolled up; ``boltwatch store migrate`` is tested on it.
"""

from __future__ import annotations

import random
import sys
from pathlib import Path
from typing import Any

import msgspec

from ingest.store import SCHEMA_VERSION, Store
from sensors.codec import TelemetryDecoder

T0 = 1_772_323_200_000
DAY = 86_400_000
NOW = T0 + 6 * DAY


def main(out: Path) -> None:
    enc = msgspec.json.Encoder()
    rng = random.Random(5)
    dec = TelemetryDecoder(clock=lambda: NOW / 1000)
    msgs: list[tuple[str, bytes]] = []
    for dev in ("b1", "b2"):
        for i, ts in enumerate(range(T0 + rng.randrange(1000), NOW, 900_000)):
            f: dict[str, Any] = {
                "ts": ts,
                "seq": i,
                "preload_kn": round(rng.gauss(60, 1), 2),
                "temp_c": round(rng.uniform(0, 20), 1),
            }
            msgs.append((f"boltwatch/v1/site-a/cbolt/{dev}/telemetry", enc.encode(f)))
    for i in range(6 * 24):
        f = {"ts": T0 + i * 3_600_000 + 7, "seq": i, "spindle_rpm": 9000.0 + i}
        if i % 2:
            f |= {"vib_ms2": [round(rng.gauss(0, 1), 3) for _ in range(16)], "fs_hz": 25600.0}
        msgs.append(("boltwatch/v1/site-a/cnc_mill/m1/telemetry", enc.encode(f)))
    event = {"type": "tightened", "ts": T0 + DAY, "seq": 99, "torque_nm": 250.5, "preload_kn": 62}
    msgs.append(("boltwatch/v1/site-a/cbolt/b1/event", enc.encode(event)))
    with Store(out) as s:
        for at in range(0, len(msgs), 300):
            batch = dec.decode_batch(msgs[at : at + 300])
            assert not batch.errors, batch.errors
            s.write(batch, received_ms=NOW)
        s.rollup(now_ms=NOW)
        print(SCHEMA_VERSION, s.stats().readings)


if __name__ == "__main__":
    main(Path(sys.argv[1]))
