"""``boltwatch report joint|fleet``: audit reports as PDF, made offline from the store folder.

* ``joint JOINT --from --to --out report.pdf``: one joint's audit report
  (:func:`dashboards.report.joint_report`).
* ``fleet (--site S | --structure S) --from --to --out report.pdf``: a site's or a
  structure's (:func:`dashboards.report.fleet_report`).

Both read what ``boltwatch run`` keeps in the config's store folder (``store.path``): the
readings, the alert store (``alerts.store``, default ``<store.path>/alerts.db``), the registry
(``registry.path``, else the one in force in the store) and the detector's snapshot for the
settled baselines. They can run beside the service (SQLite's WAL lets them read while it
writes) and change nothing there. ``--to`` defaults to now, ``--from`` to 30 days before it;
times are RFC 3339 or ISO 8601 dates (UTC when they carry no offset). Every expected failure is
one line on stderr and exit status 2.
"""

from __future__ import annotations

import re
import time
from collections.abc import Callable, Iterator, Mapping
from contextlib import ExitStack, contextmanager
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Final, NoReturn

import typer
from rich.console import Console
from rich.markup import escape

if TYPE_CHECKING:
    from boltwatch.config import Config
    from dashboards.console import BoltLevel, ConsoleSource
    from dashboards.report import CampaignSummary
    from sensors.registry import Registry

__all__ = ["DEFAULT_DAYS", "report_app"]

DEFAULT_DAYS: Final = 30
"""The period when ``--from`` is not given: this many days before ``--to``."""
_PAGE: Final = re.compile(rb"/Type\s*/Page\b(?!s)")

report_app = typer.Typer(
    help="Audit reports as PDF: a joint's, or a site's or structure's, over a period.",
    no_args_is_help=True,
)

ConfigOption = Annotated[
    Path | None,
    typer.Option(
        "--config",
        "-c",
        help="TOML config file (default: $BOLTWATCH_CONFIG, else built-in defaults).",
        envvar="BOLTWATCH_CONFIG",
    ),
]
FromOption = Annotated[
    str | None,
    typer.Option("--from", help="Start (RFC 3339 or ISO date; default: 30 days before --to)."),
]
ToOption = Annotated[
    str | None, typer.Option("--to", help="End, excluded (RFC 3339 or ISO date; default: now).")
]
OutOption = Annotated[Path, typer.Option("--out", help="PDF file to write.")]


def _fail(message: str) -> NoReturn:
    Console(stderr=True, highlight=False, soft_wrap=True).print(
        f"[bold red]error:[/] {escape(message)}", markup=True
    )
    raise typer.Exit(2)


def parse_time(value: str, option: str) -> int:
    """Epoch ms of an RFC 3339 time or an ISO 8601 date (UTC without an offset)."""
    try:
        dt = datetime.fromisoformat(value.strip().replace("Z", "+00:00"))
    except ValueError:
        _fail(f"{option}: {value!r} is not an RFC 3339 time or an ISO date (2026-03-01)")
    return round((dt if dt.tzinfo else dt.replace(tzinfo=UTC)).timestamp() * 1000)


def _period(from_: str | None, to: str | None) -> tuple[int, int]:
    to_ms = parse_time(to, "--to") if to is not None else round(time.time() * 1000)
    if from_ is None:
        return to_ms - DEFAULT_DAYS * 86_400_000, to_ms
    return parse_time(from_, "--from"), to_ms


@contextmanager
def _errors() -> Iterator[None]:
    """The expected failures as one line and exit status 2."""
    from dashboards.report import ReportError
    from ingest.settings import SettingsError
    from ingest.store import StoreError
    from sensors.errors import SensorsError

    try:
        yield
    except ReportError as exc:
        _fail(f"--{exc.key}: {exc.reason}" if exc.key in {"from", "to"} else str(exc))
    except (SettingsError, SensorsError, StoreError) as exc:
        _fail(str(exc))


def _registry(config: Config) -> Registry | None:
    """The config's registry file; else the registry in force in the store; else none."""
    from sensors.registry import load_registry
    from sensors.registry_store import REGISTRY_DB, RegistryStore

    if config.registry.path is not None:
        return load_registry(config.registry.path)
    if not (Path(config.store.path) / REGISTRY_DB).is_file():
        return None
    with RegistryStore(config.store.path) as db:
        return db.current()


def _levels(config: Config, registry: Registry | None) -> Mapping[str, BoltLevel]:
    """The settled baselines of the detector's last snapshot in the store (none without one)."""
    from boltwatch.run import build_engine
    from boltwatch.web import bolt_levels
    from detection.base import DetectionError
    from detection.engine import SNAPSHOT_FILE

    path = Path(config.store.path) / SNAPSHOT_FILE
    if not path.is_file():
        return {}
    engine = build_engine(config, registry)
    try:
        engine.load(path)
    except DetectionError as exc:
        Console(stderr=True, highlight=False).print(
            f"warning: no settled baselines: {escape(str(exc))}"
        )
        return {}
    return bolt_levels(engine)()


@contextmanager
def _source(config_file: Path | None) -> Iterator[ConsoleSource]:
    """The console's source over the config's store folder, opened for reading."""
    from alerts.store import AlertStore
    from boltwatch.config import load_config
    from dashboards.console import ConsoleSource
    from ingest.store import DB_FILE, Store

    config = load_config(config_file)
    folder = Path(config.store.path)
    if not (folder / DB_FILE).is_file():
        _fail(f"store.path: {folder} is not a boltwatch store (no {DB_FILE} in it)")
    registry = _registry(config)
    levels = _levels(config, registry)
    alerts_file = Path(config.alerts.store or folder / "alerts.db")
    with ExitStack() as stack:
        readings = stack.enter_context(Store(folder))
        # No alert store yet: an empty one in memory, rather than a file left in the folder.
        alerts = stack.enter_context(
            AlertStore(alerts_file if alerts_file.is_file() else ":memory:")
        )
        yield ConsoleSource(
            readings,
            alerts,
            registry,
            clock=lambda: round(time.time() * 1000),
            levels=lambda: levels,
        )


def _campaigns(config_file: Path | None) -> list[CampaignSummary]:
    """The campaigns kept beside the alert store (none when there is no such file)."""
    from alerts.campaigns import CAMPAIGNS_DB, CampaignStore
    from boltwatch.config import load_config
    from dashboards.report import summaries

    config = load_config(config_file)
    alerts_file = Path(config.alerts.store or Path(config.store.path) / "alerts.db")
    path = alerts_file.parent / CAMPAIGNS_DB
    if not path.is_file():
        return []
    with CampaignStore(path) as store:
        return summaries(store.campaigns())


def _write(out_file: Path, make: Callable[[], bytes]) -> None:
    pdf = make()
    try:
        out_file.write_bytes(pdf)
    except OSError as exc:
        _fail(f"--out: cannot write {out_file}: {exc.strerror or exc}")
    pages = len(_PAGE.findall(pdf))
    typer.echo(f"{out_file}: {pages} page{'s' if pages != 1 else ''}, {len(pdf):,} bytes")


@report_app.command("joint")
def report_joint(
    joint: Annotated[str, typer.Argument(help="The joint's registry id.")],
    out_file: OutOption,
    from_: FromOption = None,
    to: ToOption = None,
    config: ConfigOption = None,
) -> None:
    """One joint's audit report as PDF.

    The joint drawing, each bolt's preload history, installation records, alerts and who
    acknowledged them, campaigns, data-quality gaps.
    """
    from dashboards.report import joint_report

    from_ms, to_ms = _period(from_, to)
    with _errors(), _source(config) as source:
        campaigns = _campaigns(config)
        _write(out_file, lambda: joint_report(source, joint, from_ms, to_ms, campaigns))


@report_app.command("fleet")
def report_fleet(  # noqa: PLR0917 - typer passes every option as a parameter
    out_file: OutOption,
    site: Annotated[str | None, typer.Option("--site", help="A site's registry id.")] = None,
    structure: Annotated[
        str | None, typer.Option("--structure", help="A structure's registry id.")
    ] = None,
    from_: FromOption = None,
    to: ToOption = None,
    config: ConfigOption = None,
) -> None:
    """A site's or a structure's report as PDF.

    The share of instrumented bolts reporting, bolts below each line, campaigns done and
    overdue, its joints with their worst state.
    """
    from dashboards.report import Scope, fleet_report

    if (site is None) == (structure is None):
        _fail("--site or --structure: give exactly one")
    scope = Scope("site", site) if site is not None else Scope("structure", str(structure))
    from_ms, to_ms = _period(from_, to)
    with _errors(), _source(config) as source:
        campaigns = _campaigns(config)
        _write(out_file, lambda: fleet_report(source, scope, from_ms, to_ms, campaigns))
