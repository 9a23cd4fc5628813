"""The ``boltwatch`` command line.

Only commands that work are listed. Heavy modules load inside the commands so that ``--help``
stays instant. Every expected failure (bad config, bad registry, bad payload) prints one line
naming the key or field and exits with status 2; a traceback means a bug.
"""

from __future__ import annotations

import json
import math
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer
from rich.console import Console
from rich.markup import escape
from rich.table import Table

from boltwatch import __version__
from boltwatch.alerts_cli import alerts_app
from boltwatch.cluster_cli import cluster_app
from boltwatch.dashboards_cli import dashboards_app
from boltwatch.registry_cli import registry_export, registry_history, registry_import
from boltwatch.report_cli import report_app
from boltwatch.store_cli import store_app

if TYPE_CHECKING:
    from detection.engine import SnapshotFaults
    from ingest.store import Store
    from sensors.codec import DecodedBatch

__all__ = ["app", "main"]

app = typer.Typer(
    name="boltwatch",
    help="Monitoring for connected bolts and fablab machines.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)
config_app = typer.Typer(help="Check and show the configuration.", no_args_is_help=True)
registry_app = typer.Typer(
    help="Check the device registry and look devices up.", no_args_is_help=True
)
contract_app = typer.Typer(
    help="The telemetry contract: fields, units, ranges; check a message.", no_args_is_help=True
)
app.add_typer(config_app, name="config")
app.add_typer(registry_app, name="registry")
app.add_typer(contract_app, name="contract")
app.add_typer(alerts_app, name="alerts")
app.add_typer(report_app, name="report")
app.add_typer(cluster_app, name="cluster")
app.add_typer(store_app, name="store")

out = Console(highlight=False, soft_wrap=True)
err = Console(stderr=True, highlight=False, soft_wrap=True)

ConfigOption = Annotated[
    Path | None,
    typer.Option(
        "--config",
        "-c",
        help="TOML config file (default: $BOLTWATCH_CONFIG, else built-in defaults).",
        envvar="BOLTWATCH_CONFIG",
    ),
]


@contextmanager
def _user_errors() -> Iterator[None]:
    """Turn the project's typed errors into one clear line and exit status 2.

    Also when a service's task group reports them (``boltwatch run``: the API's port in use is
    raised by its task, inside an ExceptionGroup); a group holding anything else is a bug and
    goes on as it is. A store that cannot be opened, or is locked by another ``boltwatch run``
    (:class:`~ingest.store.StoreError`), is one of them too.
    """
    from alerts.errors import ListenError, RuleError
    from detection.base import DetectionError
    from ingest.settings import SettingsError  # ConfigError and BrokerConnectError
    from ingest.store import StoreError
    from sensors.errors import SensorsError

    user_errors = (SettingsError, SensorsError, RuleError, DetectionError, ListenError, StoreError)
    try:
        yield
    except user_errors as exc:
        # escape(): paths such as metrics[preload_kn] or $.readings[3] are not rich markup.
        err.print(f"[bold red]error:[/] {escape(str(exc))}", markup=True)
        raise typer.Exit(2) from exc
    except BaseExceptionGroup as group:
        rest = group.split(user_errors)[1]
        if rest is not None:
            raise
        for leaf in _leaves(group):
            err.print(f"[bold red]error:[/] {escape(str(leaf))}", markup=True)
        raise typer.Exit(2) from group


def _leaves(group: BaseExceptionGroup[BaseException]) -> list[BaseException]:
    """The exceptions of a (nested) exception group, in order."""
    out: list[BaseException] = []
    for exc in group.exceptions:
        out.extend(_leaves(exc) if isinstance(exc, BaseExceptionGroup) else [exc])
    return out


@app.command()
def version() -> None:
    """Print the boltwatch version."""
    out.print(f"boltwatch {__version__}")


@config_app.command("check")
def config_check(config: ConfigOption = None) -> None:
    """Validate the config file and environment overrides; say what is wrong, by key."""
    from boltwatch.config import load_config

    with _user_errors():
        load_config(config)
    out.print(f"config ok ({config if config else 'built-in defaults'})")


@config_app.command("show")
def config_show(config: ConfigOption = None) -> None:
    """Print the effective configuration as JSON (file + environment), secrets redacted."""
    from boltwatch.config import load_config, redacted

    with _user_errors():
        cfg = load_config(config)
    out.print_json(json.dumps(redacted(cfg)))


@config_app.command("detection")
def config_detection(
    names: Annotated[
        list[str] | None,
        typer.Argument(help="Detectors to show (default: every one with parameters)."),
    ] = None,
) -> None:
    """Print each detector's ``[detection.NAME]`` table, every key commented out at its default
    with its meaning: paste into the config file and uncomment what you change."""
    from boltwatch.detection_config import sample_toml

    with _user_errors():
        text = sample_toml(names or None)
    sys.stdout.write(text)


@registry_app.command("check")
def registry_check(
    path: Annotated[Path, typer.Argument(help="Registry TOML file.")],
) -> None:
    """Validate a registry file and summarise it: sites, joints, bolts, machines."""
    from sensors.registry import load_registry

    with _user_errors():
        reg = load_registry(path)
    table = Table(title=f"registry {path}")
    table.add_column("site")
    table.add_column("structures", justify="right")
    table.add_column("joints", justify="right")
    table.add_column("bolts", justify="right")
    table.add_column("machines", justify="right")
    for site in reg.sites:
        structures = [s for s in reg.structures if s.site == site.id]
        sids = {s.id for s in structures}
        joints = [j for j in reg.joints if j.structure in sids]
        table.add_row(
            site.id,
            str(len(structures)),
            str(len(joints)),
            str(sum(len(j.bolts) for j in joints)),
            str(sum(1 for m in reg.machines if m.site == site.id)),
        )
    out.print(table)
    out.print("registry ok")


registry_app.command("import")(registry_import)
registry_app.command("export")(registry_export)
registry_app.command("history")(registry_history)


@registry_app.command("locate")
def registry_locate(
    path: Annotated[Path, typer.Argument(help="Registry TOML file.")],
    device_id: Annotated[str, typer.Argument(help="Device id to place.")],
) -> None:
    """Where a device sits: site → structure → joint → bolt position, and its history."""
    from sensors.registry import load_registry

    with _user_errors():
        reg = load_registry(path)
    loc = reg.locate(device_id)
    if loc is None:
        err.print(f"error: {device_id!r} is not in the registry {path}")
        raise typer.Exit(1)
    out.print(
        " → ".join(
            str(x)
            for x in (
                loc.site,
                loc.structure,
                loc.joint,
                loc.position and f"position {loc.position}",
            )
            if x
        )
        + f"  ({loc.kind.value})"
    )
    for rec in reg.history(device_id):
        k = reg.nut_factor(rec)
        out.print(
            f"  {rec.ts.isoformat()}  pass {rec.tightening_pass}  {rec.torque_nm:g} N·m  "
            f"{rec.preload_kn:g} kN  K={k:.3f}  {rec.tool} by {rec.operator}"
        )


@contract_app.command("fields")
def contract_fields(
    kind: Annotated[
        str | None, typer.Option(help="Only this device kind (cbolt, printer3d, ...).")
    ] = None,
    markdown: Annotated[
        bool, typer.Option("--markdown", help="All kinds as Markdown tables (for docs).")
    ] = False,
) -> None:
    """Reading fields of every device kind with unit, valid range and whether required."""
    from sensors.schema import FIELD_INFO, DeviceKind, fields_markdown

    if markdown:
        sys.stdout.write(fields_markdown())
        return

    kinds = list(DeviceKind)
    if kind is not None:
        try:
            kinds = [DeviceKind(kind)]
        except ValueError:
            err.print(f"error: --kind: unknown kind {kind!r}; known: {', '.join(kinds)}")
            raise typer.Exit(2) from None
    for k in kinds:
        table = Table(title=f"{k.value} telemetry")
        table.add_column("field")
        table.add_column("unit")
        table.add_column("min", justify="right")
        table.add_column("max", justify="right")
        table.add_column("required")
        for f in FIELD_INFO[k]:
            table.add_row(f.name, f.unit, f"{f.lo:g}", f"{f.hi:g}", "yes" if f.required else "")
        out.print(table)


@contract_app.command("check")
def contract_check(
    topic: Annotated[str, typer.Argument(help="MQTT topic the message is published on.")],
    payload: Annotated[
        Path | None, typer.Argument(help="Payload file; '-' or nothing reads standard input.")
    ] = None,
) -> None:
    """Check one message against the contract, as ingest would: print what it decodes to, or why
    it would be dead-lettered (exit status 2)."""
    from sensors.codec import TelemetryDecoder

    data = (
        sys.stdin.buffer.read() if payload is None or str(payload) == "-" else payload.read_bytes()
    )
    if topic.startswith("spBv1.0/"):
        from sensors.sparkplug import SparkplugDecoder

        with _user_errors():
            batch = SparkplugDecoder().decode(topic, data)
    else:
        with _user_errors():
            batch = TelemetryDecoder().decode(topic, data)
    _print_batch(batch)


def _print_batch(batch: DecodedBatch) -> None:
    for kind, cols in batch.telemetry.items():
        for i in range(len(cols)):
            fields: dict[str, object] = {
                name: float(v[i]) for name, v in cols.values.items() if not math.isnan(v[i])
            }
            for name, arrays in cols.arrays.items():
                wave = arrays[i]
                if wave is not None:
                    fields[name] = f"<{len(wave)} samples>"
            out.print(
                f"reading  {cols.site[i]}/{kind.value}/{cols.device_id[i]}  "
                f"ts={int(cols.ts_ms[i])} seq={int(cols.seq[i])}  "
                + " ".join(f"{k}={v}" for k, v in fields.items())
            )
    for ev in batch.events:
        out.print(
            f"event    {ev.site}/{ev.kind.value}/{ev.device_id}  ts={ev.ts_ms}  "
            f"{type(ev.event).__struct_config__.tag}"
        )
    for st in batch.statuses:
        out.print(f"status   {st.site}/{st.kind.value}/{st.device_id}  {st.status.state}")
    if batch.commands:
        out.print("command  (boltwatch's own channel; ingest ignores it)")


@app.command()
def simulate(
    scenario: Annotated[
        str | None,
        typer.Option("--scenario", "-s", help="Library scenario name or a scenario TOML file."),
    ] = None,
    seed: Annotated[int, typer.Option(help="Random seed: the same seed gives the same run.")] = 1,
    duration: Annotated[
        str | None, typer.Option(help="Override the scenario's duration (30d, 12h, 90m).")
    ] = None,
    out_dir: Annotated[
        Path | None, typer.Option("--out", help="Offline: write CSVs and ground truth here.")
    ] = None,
    broker: Annotated[
        str | None,
        typer.Option(help="Online: publish to this broker (mqtt://HOST:PORT) instead of CSV."),
    ] = None,
    devices: Annotated[
        int | None,
        typer.Option(min=1, help="Online: this many bolts (the scenario's, multiplied)."),
    ] = None,
    speed: Annotated[
        float, typer.Option(min=0.001, help="Online: simulated seconds per real second.")
    ] = 60.0,
    gateway_size: Annotated[
        int, typer.Option(min=1, help="Online: bolts behind each gateway.")
    ] = 100,
    sparkplug: Annotated[
        bool, typer.Option(help="Online: machines speak Sparkplug B instead of JSON.")
    ] = False,
    credentials: Annotated[
        Path | None,
        typer.Option(
            help="Online: each gateway and machine logs in with its own secret from this "
            "device-secrets.toml (or its folder), written by `boltwatch broker config`."
        ),
    ] = None,
    list_: Annotated[bool, typer.Option("--list", help="List the scenario library.")] = False,
) -> None:
    """Simulate smart bolts and fablab machines with labelled faults: offline to CSV files with
    ground truth (--out), or online to an MQTT broker (--broker) with the firmware's behaviour."""
    from boltwatch.simulate import print_library, run_offline, run_online
    from firmware_sim.firmware import FirmwareConfigError
    from firmware_sim.scenario import ScenarioError

    if list_:
        print_library(out)
        return
    if scenario is None:
        err.print("error: --scenario: give a library name or a file (see --list)")
        raise typer.Exit(2)
    if (out_dir is None) == (broker is None):
        err.print("error: give --out DIR (offline, CSV) or --broker URL (online), one of them")
        raise typer.Exit(2)
    try:
        if broker is not None:
            run_online(
                scenario,
                seed,
                duration,
                broker,
                devices=devices,
                speed=speed,
                gateway_size=gateway_size,
                sparkplug=sparkplug,
                out=out,
                credentials=credentials,
            )
        else:
            assert out_dir is not None  # noqa: S101 - checked above
            run_offline(scenario, seed, duration, out_dir, out)
    except (ScenarioError, FirmwareConfigError) as exc:
        err.print(f"[bold red]error:[/] {escape(str(exc))}", markup=True)
        raise typer.Exit(2) from exc


def _parse_time(value: str | None, option: str) -> int | None:
    """Epoch ms of an RFC 3339 time or of epoch seconds; None stays None."""
    if value is None:
        return None
    from datetime import UTC, datetime

    try:
        return int(float(value) * 1000)
    except ValueError:
        pass
    try:
        dt = datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        err.print(f"error: {option}: {value!r} is neither RFC 3339 nor epoch seconds")
        raise typer.Exit(2) from None
    return int((dt if dt.tzinfo else dt.replace(tzinfo=UTC)).timestamp() * 1000)


StoreOption = Annotated[Path, typer.Option("--store", help="Folder of the embedded store.")]


def _open_store(path: Path) -> Store:
    from ingest.store import Store, StoreError

    if not path.is_dir():
        err.print(f"error: --store: {path} is not a boltwatch store (no such folder)")
        raise typer.Exit(2)
    try:
        return Store(path)
    except StoreError as exc:
        err.print(f"error: --store: {escape(str(exc))}")
        raise typer.Exit(2) from exc


@app.command()
def run(
    config: ConfigOption = None,
    broker: Annotated[
        str | None, typer.Option(help="Broker URL (mqtt://HOST:PORT); overrides the config.")
    ] = None,
    store: Annotated[
        Path | None, typer.Option("--store", help="Store folder; overrides the config.")
    ] = None,
    mqtt311: Annotated[
        bool,
        typer.Option("--mqtt311", help="Speak MQTT 3.1.1 (no ack-after-store: see the docs)."),
    ] = False,
    role: Annotated[
        str | None,
        typer.Option(
            "--role",
            help="Cluster role of this process (ingest, detect, store, alerts, all); overrides "
            "cluster.role. Needs [cluster] urls (docs/scaling.md).",
        ),
    ] = None,
) -> None:
    """Run the ingest service against a broker: store every reading, dead-letter bad messages,
    acknowledge after the commit (MQTT 5). SIGTERM or Ctrl-C flushes and stops. With
    [cluster] urls, run one role of a cluster on NATS JetStream instead."""
    import asyncio

    import msgspec

    from boltwatch.config import load_config
    from boltwatch.run import run_service, setup_logging

    with _user_errors():
        cfg = load_config(config)
        if broker is not None:
            cfg = msgspec.structs.replace(
                cfg, broker=msgspec.structs.replace(cfg.broker, url=broker)
            )
        if store is not None:
            cfg = msgspec.structs.replace(
                cfg, store=msgspec.structs.replace(cfg.store, path=str(store))
            )
        from boltwatch.config import ConfigError, parse_config

        data = msgspec.to_builtins(cfg)
        if role is not None:
            data["cluster"]["role"] = role
        cfg = parse_config(data, environ={})
        if role is not None and not cfg.cluster.enabled:
            raise ConfigError("cluster.urls", "--role runs a cluster member: give [cluster] urls")
    setup_logging(cfg)
    with _user_errors():
        if cfg.cluster.enabled:
            from boltwatch.cluster_run import run_cluster_member

            asyncio.run(run_cluster_member(cfg, out))
        else:
            asyncio.run(run_service(cfg, out, mqtt_version=4 if mqtt311 else 5))


_FAULTED_SHOWN = 20
"""``boltwatch stats`` names at most this many faulted devices per kind (and counts them all)."""


def _detector_faults(store: Path) -> SnapshotFaults | None:
    """The faulted devices the detection snapshot of ``store`` records (None: no snapshot, or
    one that cannot be read, which is said on stderr)."""
    from detection.base import DetectionError
    from detection.engine import SNAPSHOT_FILE, snapshot_faults

    path = store / SNAPSHOT_FILE
    if not path.is_file():
        return None
    try:
        return snapshot_faults(path)
    except DetectionError as exc:
        err.print(f"warning: detector faults unknown: {escape(str(exc))}")
        return None


@app.command()
def stats(
    store: StoreOption = Path("./boltwatch-data"),
    as_json: Annotated[bool, typer.Option("--json", help="JSON for scripts.")] = False,
) -> None:
    """Readings stored, devices, dead letters by reason, and devices whose detector faulted
    (as of the detection state's last snapshot)."""
    with _open_store(store) as db:
        s = db.stats()
    faults = _detector_faults(store)
    faulted = faults.faulted if faults is not None else {}
    data = {
        "readings": s.readings,
        "readings_by_kind": dict(s.readings_by_kind),
        "devices": s.devices,
        "events": s.events,
        "dead_letters": dict(s.dead_letters_by_reason),
        "detector_faults": {
            kind: {"count": len(devices), "devices": devices[:_FAULTED_SHOWN]}
            for kind, devices in faulted.items()
        },
        "detector_faults_as_of_ms": faults.saved_ms if faults is not None else None,
    }
    if as_json:
        sys.stdout.write(json.dumps(data, sort_keys=True) + "\n")
        return
    out.print(f"readings {s.readings:,}  devices {s.devices}  events {s.events:,}")
    for kind, n in sorted(s.readings_by_kind.items()):
        out.print(f"  {kind:<14} {n:>12,}")
    total = sum(s.dead_letters_by_reason.values())
    out.print(f"dead letters {total:,}")
    for reason, n in sorted(s.dead_letters_by_reason.items(), key=lambda kv: -kv[1]):
        out.print(f"  {n:>8,}  {reason}")
    _print_faults(faults)


def _print_faults(faults: SnapshotFaults | None) -> None:
    if faults is None:
        out.print("detector faults unknown (no detection snapshot in the store)", markup=False)
        return
    from firmware_sim.offline import iso

    when = f"snapshot of {iso(faults.saved_ms)}" if faults.saved_ms is not None else "snapshot"
    total = sum(len(devices) for devices in faults.faulted.values())
    out.print(f"detector faults {total:,}  ({when})", markup=False)
    for kind, devices in faults.faulted.items():
        named = ", ".join(devices[:_FAULTED_SHOWN])
        more = len(devices) - _FAULTED_SHOWN
        if more > 0:
            named += f", … (+{more:,})"
        out.print(f"  {kind:<14} {len(devices):>12,}  {named}", markup=False)


@app.command()
def export(
    out_file: Annotated[Path, typer.Option("--out", help="CSV file to write ('-' = stdout).")],
    store: StoreOption = Path("./boltwatch-data"),
    kind: Annotated[str, typer.Option(help="Device kind to export.")] = "cbolt",
    device: Annotated[str | None, typer.Option(help="Only this device.")] = None,
    since: Annotated[str | None, typer.Option(help="From this time (RFC 3339 or epoch s).")] = None,
    until: Annotated[str | None, typer.Option(help="Until this time (exclusive).")] = None,
) -> None:
    """Stored readings as CSV in the `boltwatch replay` input format."""
    from sensors.schema import DeviceKind

    try:
        k = DeviceKind(kind)
    except ValueError:
        err.print(f"error: --kind: unknown kind {kind!r}")
        raise typer.Exit(2) from None
    since_ms, until_ms = _parse_time(since, "--since"), _parse_time(until, "--until")
    with _open_store(store) as db:
        if str(out_file) == "-":
            n = db.export_csv(sys.stdout, k, device_id=device, since_ms=since_ms, until_ms=until_ms)
        else:
            with out_file.open("w", newline="", encoding="utf-8") as fh:
                n = db.export_csv(fh, k, device_id=device, since_ms=since_ms, until_ms=until_ms)
    err.print(f"{n:,} rows exported")


deadletters_app = typer.Typer(help="List and re-process rejected messages.", no_args_is_help=True)
app.add_typer(deadletters_app, name="deadletters")


@deadletters_app.command("list")
def deadletters_list(
    store: StoreOption = Path("./boltwatch-data"),
    limit: Annotated[int, typer.Option(min=1, help="At most this many.")] = 50,
    reason: Annotated[str | None, typer.Option(help="Only those whose field starts so.")] = None,
    all_: Annotated[bool, typer.Option("--all", help="Include replayed ones.")] = False,
) -> None:
    """The newest dead letters: when, topic, field, reason, payload size."""
    from firmware_sim.offline import iso

    with _open_store(store) as db:
        letters = db.dead_letters(limit=limit, reason=reason, include_replayed=all_)
    table = Table(title=f"dead letters ({len(letters)})")
    for col in ("id", "received", "topic", "field", "reason", "bytes"):
        table.add_column(col, overflow="fold")
    for d in letters:
        table.add_row(
            str(d.id), iso(d.received_ms), d.topic, d.field, d.reason, str(len(d.payload))
        )
    out.print(table)


@deadletters_app.command("replay")
def deadletters_replay(store: StoreOption = Path("./boltwatch-data")) -> None:
    """Decode every dead letter again (after a fix of the contract or the registry): those that
    are valid now are stored and marked replayed; the others stay."""
    from sensors.codec import TelemetryDecoder

    decoder = TelemetryDecoder()
    with _open_store(store) as db:
        letters = db.dead_letters(limit=1_000_000)
        batch = decoder.decode_batch((d.topic, d.payload) for d in letters)
        still_bad = {i for i, _ in batch.errors}
        now_ms = int(time.time() * 1000)
        result = db.write(batch, (), received_ms=now_ms)
        fixed = [d.id for i, d in enumerate(letters) if i not in still_bad and d.id is not None]
        db.mark_replayed(fixed, at_ms=now_ms)
    out.print(
        f"{len(letters)} dead letters: {len(fixed)} now valid ({result.stored} readings stored, "
        f"{result.duplicates} already there), {len(still_bad)} still rejected"
    )


@app.command()
def replay(
    src: Annotated[Path, typer.Argument(help="Recorded data (CSV with a header row).")],
    kind: Annotated[
        str,
        typer.Option(
            "--kind",
            "-k",
            help="cbolt, univariate, multivariate, or a machine kind (printer3d, laser_cutter, "
            "cnc_mill, vinyl_cutter, embroidery).",
        ),
    ],
    out_path: Annotated[Path, typer.Option("--out", "-o", help="Scored CSV to write.")],
) -> None:
    """Score recorded data offline and causally: every input row and column, plus
    anomaly_score (0..1) and alert (empty, or the event kind active at that row)."""
    from rich.progress import BarColumn, Progress, TextColumn

    from detection.base import DetectionError
    from detection.registry import make_detector
    from detection.replay import replay_csv

    try:
        detector = make_detector(kind)
    except DetectionError as exc:
        err.print(f"[bold red]error:[/] --kind: {escape(exc.reason)}", markup=True)
        raise typer.Exit(2) from exc
    if not src.is_file():
        err.print(f"[bold red]error:[/] {escape(str(src))}: no such file", markup=True)
        raise typer.Exit(2)
    size = src.stat().st_size
    with Progress(
        TextColumn("[progress.description]{task.description}"),
        BarColumn(),
        TextColumn("{task.fields[rows]:,} rows"),
        console=err,
        transient=True,
    ) as progress:
        task = progress.add_task(f"scoring {src.name}", total=size, rows=0)

        def advance(rows: int) -> None:
            # Bytes are not tracked per row: the bar moves by the average row size so far.
            progress.update(task, completed=min(size, rows * (size // max(rows, 1))), rows=rows)

        try:
            summary = replay_csv(src, out_path, detector, kind, progress=advance)
        except DetectionError as exc:
            err.print(f"[bold red]error:[/] {escape(str(exc))}", markup=True)
            raise typer.Exit(2) from exc
    alerts = ", ".join(f"{k} {v:,}" for k, v in sorted(summary.alerts.items())) or "none"
    out.print(
        f"{summary.rows:,} rows of {summary.devices} device(s) scored into {out_path}; "
        f"{len(summary.events)} alert(s) raised; rows under alert: {alerts}"
    )


@app.command()
def evaluate(
    seeds: Annotated[int, typer.Option(min=1, help="Simulated realisations of each scenario.")] = 3,
    skab: Annotated[
        Path | None,
        typer.Option(
            help="SKAB data folder (default: $BOLTWATCH_SKAB_DIR or ../shared/data/skab)."
        ),
    ] = None,
    scenario: Annotated[
        list[str] | None,
        typer.Option("--scenario", "-s", help="Only this library scenario (repeatable)."),
    ] = None,
    as_json: Annotated[bool, typer.Option("--json", help="JSON for scripts.")] = False,
    field: Annotated[
        str | None,
        typer.Option(
            help="Instead: field fleets across DOMAIN.md's full ranges, 60 bolts per seed, on "
            "the held-out seeds (heldout: 20 seeds, under a minute) or the tuning seeds (tuning)."
        ),
    ] = None,
) -> None:
    """Measure the detectors on labelled data: the simulator's bolt and machine scenarios
    (against the Grafana-style rule) and SKAB (against its published leaderboard)."""
    from boltwatch.evaluation.scenarios import BOLT_SCENARIOS, MACHINE_SCENARIOS, run_evaluation

    if field is not None:
        _evaluate_field(field, as_json=as_json)
        return

    known = (*BOLT_SCENARIOS, *MACHINE_SCENARIOS)
    for name in scenario or []:
        if name not in known:
            err.print(
                f"[bold red]error:[/] --scenario: {escape(name)!r} is not one of "
                f"{', '.join(known)}",
                markup=True,
            )
            raise typer.Exit(2)
    report = run_evaluation(seeds=seeds, skab_root=skab, console=err, scenarios=scenario)
    if as_json:
        print(json.dumps(report.as_dict(), indent=1))
        return
    report.print(out)


def _evaluate_field(name: str, *, as_json: bool) -> None:
    from boltwatch.evaluation.field import (
        FIELD_SETS,
        evaluate_field,
        field_table,
        summarise_field,
    )

    if name not in FIELD_SETS:
        err.print(
            f"[bold red]error:[/] --field: {escape(name)!r} is not one of {', '.join(FIELD_SETS)}",
            markup=True,
        )
        raise typer.Exit(2)
    seeds = FIELD_SETS[name]
    started = time.monotonic()
    outcomes = evaluate_field(
        seeds=seeds,
        progress=lambda line: err.print(f"{line} ({time.monotonic() - started:,.0f} s)"),
    )
    rows = summarise_field(outcomes)
    if as_json:
        print(json.dumps({"seeds": list(seeds), "rows": rows}, indent=1))
        return
    title = f"Field fleets, {name} seeds {seeds[0]}-{seeds[-1]} x 60 bolts (rule: Grafana-style)"
    out.print(field_table(rows, title))


@app.command()
def demo(
    duration: Annotated[
        float | None,
        typer.Option(min=1.0, help="Stop after this many real seconds (default: the whole run)."),
    ] = None,
    hours: Annotated[
        float | None,
        typer.Option(
            min=0.1, max=48.0, help="Simulate this many hours, however long it takes (default: 48)."
        ),
    ] = None,
    speed: Annotated[
        float, typer.Option(min=1.0, help="Simulated seconds per real second.")
    ] = 3600.0,
    seed: Annotated[int, typer.Option(help="The simulator's seed.")] = 1,
    tour: Annotated[
        bool, typer.Option("--tour", help="Only the tour of the telemetry contract.")
    ] = False,
    keep: Annotated[
        bool,
        typer.Option("--keep", help="Keep the API and the web console up after the story."),
    ] = False,
) -> None:
    """Everything embedded, no setup: broker, a simulated installation with faults, ingest,
    detection, alerts printed as they happen and served on the HTTP API and the web console
    (a one-time login link is printed). Ctrl-C stops."""
    import asyncio

    if tour:
        from boltwatch.tour import run_tour

        with _user_errors():
            run_tour(out)
        return
    from boltwatch.demo import run_demo

    with _user_errors():
        summary = asyncio.run(
            run_demo(out, duration_s=duration, speed=speed, seed=seed, hours=hours, keep=keep)
        )
    alerts = sum(v for k, v in summary.alerts.items() if k.startswith("alerts_"))
    out.print(
        f"demo over: {summary.readings:,} readings stored, {summary.events} detection events, "
        f"{alerts} alerts"
    )


broker_app = typer.Typer(
    help="Device identity on the broker: Mosquitto password, ACL and TLS listener files.",
    no_args_is_help=True,
)
app.add_typer(broker_app, name="broker")
app.add_typer(dashboards_app, name="dashboards")

_RELOAD_HINT = (
    "Mosquitto reads the password and ACL files again on SIGHUP: `systemctl reload mosquitto` "
    "(or `kill -HUP <pid>`); it then also disconnects clients whose credentials no longer hold."
)


def _names(users: tuple[str, ...], limit: int = 8) -> str:
    shown = ", ".join(users[:limit])
    return f"{shown}, … (+{len(users) - limit})" if len(users) > limit else shown


@broker_app.command("config")
def broker_config(
    registry: Annotated[
        Path, typer.Option("--registry", help="Registry TOML file: one credential per device.")
    ],
    out_dir: Annotated[
        Path, typer.Option("--out", help="Folder of the broker files (created, mode 0700).")
    ],
    tls_cert: Annotated[
        Path | None,
        typer.Option("--tls-cert", help="Broker certificate chain, PEM (default: a placeholder)."),
    ] = None,
    tls_key: Annotated[
        Path | None,
        typer.Option("--tls-key", help="Its private key, PEM (default: a placeholder)."),
    ] = None,
    tls_ca: Annotated[
        Path | None,
        typer.Option("--tls-ca", help="CA of client certificates (cafile; default: none)."),
    ] = None,
    port: Annotated[int, typer.Option(min=1, max=65_535, help="TLS listener port.")] = 8883,
    bind: Annotated[
        str | None, typer.Option(help="Address of the TLS listener (default: every interface).")
    ] = None,
    local_port: Annotated[
        int | None,
        typer.Option(
            min=1, max=65_535, help="Also plain MQTT on 127.0.0.1:PORT (boltwatch on the host)."
        ),
    ] = None,
    service_user: Annotated[
        str, typer.Option(help="MQTT user name of the boltwatch service.")
    ] = "boltwatch",
    rotate_all: Annotated[
        bool, typer.Option("--rotate-all", help="New secrets for every device and the service.")
    ] = False,
) -> None:
    """Write what Mosquitto needs so that each device of the registry can only speak as itself:
    password file, ACL, listener snippet (TLS, no anonymous clients) and the devices' secrets.
    Re-running keeps existing secrets and drops devices no longer in the registry."""
    from boltwatch.broker_identity import (
        CONF_FILE,
        SECRETS_FILE,
        SERVICE_PASSWORD_FILE,
        BrokerIdentityError,
        FileChange,
        ListenerOptions,
        write_broker_files,
    )
    from sensors.registry import load_registry

    with _user_errors():
        if (tls_cert is None) != (tls_key is None):
            raise BrokerIdentityError("--tls-key", "give --tls-cert and --tls-key together")
        options = ListenerOptions(
            port=port,
            bind=bind,
            tls_cert=tls_cert.resolve() if tls_cert else None,
            tls_key=tls_key.resolve() if tls_key else None,
            tls_ca=tls_ca.resolve() if tls_ca else None,
            local_port=local_port,
        )
        reg = load_registry(registry)
        report = write_broker_files(
            reg, out_dir, options=options, service_user=service_user, rotate_all=rotate_all
        )
    out.print(
        f"broker files in {out_dir}: {report.users} users (the devices and {service_user})",
        markup=False,
    )
    for label, users in (
        ("added", report.added),
        ("removed", report.removed),
        ("rotated", report.rotated),
    ):
        out.print(f"  {label:<8} {len(users):>5}  {_names(users)}".rstrip())
    out.print(f"  {'kept':<8} {len(report.kept):>5}")
    for name, change in report.files.items():
        secret = " (secrets, 0600)" if name in (SECRETS_FILE, SERVICE_PASSWORD_FILE) else ""
        out.print(f"  {name:<22} {change.value}{secret}")
    if not report.changed:
        out.print("nothing changed")
        return
    out.print(_RELOAD_HINT)
    if report.files.get(CONF_FILE, FileChange.UNCHANGED) is not FileChange.UNCHANGED:
        out.print(f"{CONF_FILE} changed: a new listener or certificate needs a Mosquitto restart")
    out.print(
        f'boltwatch run: [broker] username = "{service_user}", '
        f'password_file = "{(out_dir / SERVICE_PASSWORD_FILE).resolve()}"',
        markup=False,
    )


@broker_app.command("credentials")
def broker_credentials(
    device: Annotated[str, typer.Argument(help="Device id (or the service user name).")],
    out_dir: Annotated[
        Path, typer.Option("--out", help="Folder written by `boltwatch broker config`.")
    ],
) -> None:
    """Issue a new secret for one device in the broker files and print it once, alone on the
    last line of standard output (the old secret works until Mosquitto is reloaded)."""
    from boltwatch.broker_identity import SERVICE_PASSWORD_FILE, FileChange, rotate_credential

    with _user_errors():
        report = rotate_credential(out_dir, device)
    changed = ", ".join(f"{name} {c.value}" for name, c in report.files.items())
    err.print(f"new secret for {device} in {out_dir} ({changed})", markup=False)
    err.print(_RELOAD_HINT)
    if report.files.get(SERVICE_PASSWORD_FILE, FileChange.UNCHANGED) is not FileChange.UNCHANGED:
        err.print("the service's password changed: restart `boltwatch run` after the reload")
    sys.stdout.write(report.secret + "\n")


def main() -> None:
    """Console entry point."""
    app()
