"""``boltwatch demo`` for this release: a tour of the telemetry contract with the real decoders.

Every example message of :mod:`sensors.examples` (valid and broken, every device kind) and a
Sparkplug B birth + data pair go through the same decoders ingest uses; accepted readings are shown
as the columns detection will consume, rejected ones with the reason their dead-letter record
would carry; the sample registry then places each bolt at site → structure → joint → position.
"""

from __future__ import annotations

from datetime import UTC, datetime

import numpy as np
from rich.console import Console
from rich.table import Table

from sensors.codec import DecodedBatch, TelemetryDecoder
from sensors.examples import EXAMPLES
from sensors.registry import SAMPLE_REGISTRY_PATH, load_registry
from sensors.schema import DeviceKind
from sensors.sparkplug import SparkplugDecoder, encode_dbirth, encode_ddata

__all__ = ["run_tour", "sample_registry_path"]

_T0_MS = 1_772_323_500_000


def _utc(ts_ms: int) -> str:
    return datetime.fromtimestamp(ts_ms / 1000, UTC).strftime("%m-%d %H:%M:%S")


def sample_registry_path() -> str:
    """Path of the registry shipped with the package (``sensors/samples/registry.toml``)."""
    return str(SAMPLE_REGISTRY_PATH)


def run_tour(out: Console) -> DecodedBatch:
    """Decode the examples and print what ingest would store and dead-letter.

    Returns:
        The decoded JSON batch (for tests).
    """
    if not out.is_terminal and out.width < 120:
        # Piped or logged (make demo in CI): wide enough that tables keep their columns.
        out = Console(width=120, highlight=False, file=out.file)
    out.rule("[bold]boltwatch demo — the telemetry contract, through the real decoders")
    decoder = TelemetryDecoder()
    batch = decoder.decode_batch((e.topic, e.payload) for e in EXAMPLES)
    out.print(
        f"{batch.count} example messages: {batch.readings} readings, {len(batch.events)} events, "
        f"{len(batch.statuses)} status messages accepted; {len(batch.errors)} rejected\n"
    )
    for kind, cols in batch.telemetry.items():
        shown = [n for n, v in cols.values.items() if not np.isnan(v).all()]
        table = Table(title=f"{kind.value}: {len(cols)} readings as columns")
        table.add_column("device_id")
        table.add_column("time (UTC)")
        table.add_column("seq", justify="right")
        for name in shown:
            table.add_column(name, justify="right", overflow="fold")
        for i in range(len(cols)):
            table.add_row(
                str(cols.device_id[i]),
                _utc(int(cols.ts_ms[i])),
                str(int(cols.seq[i])),
                *("" if np.isnan(v := cols.values[n][i]) else f"{v:g}" for n in shown),
            )
        out.print(table)
    for ev in batch.events:
        tag = type(ev.event).__struct_config__.tag
        out.print(f"event   {ev.site}/{ev.device_id}: {tag}")
    for st in batch.statuses:
        out.print(f"status  {st.site}/{st.device_id}: {st.status.state}")

    dead = Table(title="rejected → dead-letter store (reason as recorded)")
    dead.add_column("example")
    dead.add_column("field")
    dead.add_column("reason")
    for index, error in batch.errors:
        dead.add_row(EXAMPLES[index].title, error.field, error.reason)
    out.print(dead)

    out.rule("Sparkplug B: the same readings from an industrial edge node")
    sp = SparkplugDecoder()
    birth = sp.decode(
        "spBv1.0/fablab/DBIRTH/edge-1/prusa-xl-1",
        encode_dbirth(DeviceKind.PRINTER3D, {"hotend_c": 24.0, "bed_c": 23.5}, _T0_MS),
    )
    data = sp.decode(
        "spBv1.0/fablab/DDATA/edge-1/prusa-xl-1",
        encode_ddata({"hotend_c": 181.2, "hotend_target_c": 215.0}, _T0_MS + 1_000, 1),
    )
    for b in (birth, data):
        for kind, cols in b.telemetry.items():
            values = " ".join(f"{n}={v[0]:g}" for n, v in cols.values.items() if not np.isnan(v[0]))
            out.print(f"{kind.value} {cols.device_id[0]} {_utc(int(cols.ts_ms[0]))}  {values}")

    out.rule("The registry places every bolt in its joint")
    reg = load_registry(sample_registry_path())
    places = Table(title="sample registry (sensors/samples/registry.toml)")
    for col in ("device", "site", "structure", "joint", "position", "angle °", "installations"):
        places.add_column(col)
    for device_id in reg.devices():
        loc = reg.locate(device_id)
        if loc is None or loc.kind is not DeviceKind.CBOLT:
            continue
        places.add_row(
            device_id,
            loc.site,
            loc.structure or "",
            loc.joint or "",
            str(loc.position or ""),
            "" if loc.angle_deg is None else f"{loc.angle_deg:g}",
            str(len(reg.history(device_id))),
        )
    out.print(places)
    out.print(
        "\nNext releases add the simulated fleet, MQTT ingest, detection and alerts to this demo."
    )
    return batch
