"""``boltwatch dashboards ...``: the Grafana dashboards as files, or uploaded to a Grafana.

* ``export --out DIR`` writes every dashboard's JSON model (``DIR/dashboards/<uid>.json``) and
  Grafana provisioning files for the datasources and a dashboard provider
  (``DIR/provisioning/datasources/boltwatch.yaml``, ``DIR/provisioning/dashboards/boltwatch.yaml``).
* ``push --url --token`` uploads the dashboards through Grafana's HTTP API (``grafana-client``):
  the folder is created if missing, each dashboard is posted by its uid, so pushing again
  replaces the same dashboards (``--no-overwrite``: Grafana refuses to replace one instead).

The dashboards themselves are built by :mod:`dashboards.grafana` (``docs/dashboards.md``). Every
expected failure prints one line (for ``push``: what Grafana refused, its status and message)
and exits with status 2, like the other commands.
"""

from __future__ import annotations

import functools
import json
import re
import urllib.parse
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from enum import StrEnum
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, Final, NoReturn

import typer
from rich.console import Console
from rich.markup import escape

if TYPE_CHECKING:
    from dashboards.grafana import Servers
    from sensors.registry import Registry

__all__ = ["dashboards_app"]


class Datasource(StrEnum):
    """``--datasource`` choices: ``dashboards.grafana.FLAVOURS``, repeated so that ``--help``
    does not import the SDK (a test keeps the two equal)."""

    INFLUXDB = "influxdb"
    INFLUXDB_SQL = "influxdb-sql"
    VICTORIAMETRICS = "victoriametrics"
    SQLITE = "sqlite"


TIMEOUT_S: Final = 10.0
"""How long one request to Grafana may take."""
PUSH_MESSAGE: Final = "boltwatch dashboards push"
"""The version message Grafana records with each pushed dashboard."""

dashboards_app = typer.Typer(
    help="Grafana dashboards: export them with provisioning files, or push them to a Grafana.",
    no_args_is_help=True,
)


def _out() -> Console:
    return Console(highlight=False, soft_wrap=True)


def _fail(message: str) -> NoReturn:
    Console(stderr=True, highlight=False, soft_wrap=True).print(
        f"[bold red]error:[/] {escape(message)}", markup=True
    )
    raise typer.Exit(2)


@contextmanager
def _user_errors() -> Iterator[None]:
    """A bad config or registry file, or a folder that cannot be written: one line, status 2."""
    from ingest.settings import SettingsError
    from sensors.errors import SensorsError

    try:
        yield
    except (SettingsError, SensorsError) as exc:
        _fail(str(exc))
    except OSError as exc:
        _fail(f"{exc.filename or ''}: {exc.strerror or exc}".lstrip(": "))


DatasourceOption = Annotated[
    Datasource,
    typer.Option(
        "--datasource",
        help="Where the dashboards read readings: InfluxDB (InfluxQL), InfluxDB 3 (SQL), "
        "VictoriaMetrics, or the store's SQLite file. Alerts and events always come from the "
        "SQLite files.",
    ),
]
RegistryOption = Annotated[
    Path | None,
    typer.Option(
        "--registry", help="Registry TOML file: the joint dashboard lists its joints by name."
    ),
]


def _registry(path: Path | None) -> Registry | None:
    if path is None:
        return None
    from sensors.registry import load_registry

    return load_registry(path)


def _servers(config: Path | None, overrides: dict[str, str | None]) -> Servers:
    """Where the datasources point: the config file's store and InfluxDB (when given), then the
    options given on the command line."""
    from dashboards.grafana import Servers

    values: dict[str, str] = {}
    if config is not None:
        from boltwatch.config import load_config

        cfg = load_config(config)
        store = Path(cfg.store.path).resolve()
        values["store_path"] = str(store)
        values["alerts_db"] = str(Path(cfg.alerts.store).resolve()) if cfg.alerts.store else ""
        if cfg.influx.url:
            values["influx_url"] = cfg.influx.url
        values["influx_org"] = cfg.influx.org
        values["influx_bucket"] = cfg.influx.bucket
    values.update({k: v for k, v in overrides.items() if v is not None})
    alerts_db = values.pop("alerts_db", "") or None
    return Servers(alerts_db=alerts_db, **values)


def _write(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text, encoding="utf-8")
    _out().print(f"wrote {escape(str(path))}")


@dashboards_app.command("export")
def export(
    *,
    out: Annotated[Path, typer.Option("--out", help="Folder to write into (created).")],
    datasource: DatasourceOption = Datasource.INFLUXDB,
    registry: RegistryOption = None,
    config: Annotated[
        Path | None,
        typer.Option(
            "--config", "-c", help="boltwatch.toml: the store's path and InfluxDB to point at."
        ),
    ] = None,
    store_path: Annotated[
        str | None, typer.Option(help="The store's folder as Grafana's host sees it.")
    ] = None,
    alerts_db: Annotated[
        str | None, typer.Option(help="The alert store's file (default: STORE_PATH/alerts.db).")
    ] = None,
    influx_url: Annotated[str | None, typer.Option(help="InfluxDB's URL.")] = None,
    influx_org: Annotated[str | None, typer.Option(help="InfluxDB 2.x organisation.")] = None,
    influx_bucket: Annotated[
        str | None, typer.Option(help="InfluxDB bucket (2.x) or database (3.x).")
    ] = None,
    vm_url: Annotated[str | None, typer.Option(help="VictoriaMetrics's URL.")] = None,
    dashboards_dir: Annotated[
        str | None,
        typer.Option(help="Where Grafana reads the dashboards' JSON (default: OUT/dashboards)."),
    ] = None,
    folder: Annotated[str, typer.Option(help="Grafana folder of the dashboards.")] = "boltwatch",
) -> None:
    """Write the dashboards' JSON and Grafana provisioning files (datasources, a provider)."""
    from dashboards.grafana import all_dashboards, provisioning, to_yaml

    with _user_errors():
        boards = all_dashboards(datasource.value, registry=_registry(registry))
        servers = _servers(
            config,
            {
                "store_path": store_path,
                "alerts_db": alerts_db,
                "influx_url": influx_url,
                "influx_org": influx_org,
                "influx_bucket": influx_bucket,
                "vm_url": vm_url,
                "dashboards_dir": dashboards_dir or str((out / "dashboards").resolve()),
                "folder": folder,
            },
        )
        for uid, model in boards.items():
            text = json.dumps(model, indent=2, sort_keys=True, ensure_ascii=False) + "\n"
            _write(out / "dashboards" / f"{uid}.json", text)
        files = provisioning(datasource.value, servers)
        for name, content in files.items():
            _write(out / "provisioning" / name / "boltwatch.yaml", to_yaml(content))


# -- push --------------------------------------------------------------------------------------


def _shown(url: str) -> str:
    """The URL without user:password@ (messages must not leak credentials)."""
    parts = urllib.parse.urlsplit(url)
    host = parts.hostname or ""
    netloc = f"{host}:{parts.port}" if parts.port else host
    return urllib.parse.urlunsplit((parts.scheme, netloc, parts.path, "", ""))


def _refusal(exc: Exception, what: str, url: str) -> str:
    """One line naming what Grafana refused, with its status and message."""
    status = int(getattr(exc, "status_code", 0) or 0)
    response = getattr(exc, "response", None)
    if not status:
        return f"cannot reach Grafana at {_shown(url)} to {what} ({exc})"
    detail = ""
    if isinstance(response, dict):
        detail = str(response.get("message") or "")
        if response.get("status"):
            detail = f"{response['status']}: {detail}" if detail else str(response["status"])
    elif isinstance(response, str):
        detail = response.strip()[:200]
    detail = detail or str(getattr(exc, "message", "")) or "no message"
    return f"Grafana at {_shown(url)} refused to {what} ({status}): {detail}"


def _folder_uid(title: str) -> str:
    """A stable folder uid for a folder title (Grafana allows letters, digits, ``-``, ``_``)."""
    slug = re.sub(r"[^a-z0-9_-]+", "-", title.lower()).strip("-")
    return (slug or "boltwatch")[:40]


class _Grafana:
    """The calls ``push`` makes, through ``grafana-client``; failures become one line."""

    def __init__(self, url: str, token: str) -> None:
        from grafana_client.api import GrafanaApi

        parts = urllib.parse.urlsplit(url)
        if parts.scheme not in {"http", "https"} or not parts.hostname:
            _fail(f"--url: {url!r} is not an http:// or https:// URL")
        if not token.strip():
            _fail("--token: empty (set it or GRAFANA_TOKEN)")
        # grafana-client appends "api" to the path as it is: a sub-path needs its slash.
        base = url if not parts.path or parts.path.endswith("/") else url + "/"
        self.url = url
        self.api: Any = GrafanaApi.from_url(base, credential=token, timeout=TIMEOUT_S)

    def call(self, what: str, request: Callable[[], Any]) -> Any:  # noqa: ANN401 - JSON
        """``request()``'s decoded answer; a refusal or an unreachable Grafana ends the command
        with one line naming ``what`` was refused."""
        from grafana_client.client import GrafanaException

        try:
            return request()
        except (GrafanaException, OSError) as exc:
            _fail(_refusal(exc, what, self.url))

    def folder_uid(self, title: str) -> str:
        """The uid of the folder titled ``title``, created if there is none."""
        folders = self.call("list its folders", self.api.folder.get_all_folders) or []
        for f in folders:
            if isinstance(f, dict) and f.get("title") == title:
                return str(f["uid"])
        created = self.call(
            f"create the folder {title!r}",
            lambda: self.api.folder.create_folder(title, uid=_folder_uid(title)),
        )
        _out().print(f"created folder {escape(title)}")
        return str(created["uid"])


@dashboards_app.command("push")
def push(
    *,
    url: Annotated[
        str, typer.Option("--url", envvar="GRAFANA_URL", help="Grafana's URL.", show_envvar=True)
    ],
    token: Annotated[
        str,
        typer.Option(
            "--token",
            envvar="GRAFANA_TOKEN",
            help="A service account token with the Editor role.",
            show_envvar=True,
            show_default=False,
        ),
    ],
    folder: Annotated[
        str, typer.Option(help="Folder to put them in (created if missing; '' for General).")
    ] = "boltwatch",
    overwrite: Annotated[
        bool,
        typer.Option(
            "--overwrite/--no-overwrite",
            help="Replace dashboards of the same uid (--no-overwrite: Grafana refuses instead).",
        ),
    ] = True,
    datasource: DatasourceOption = Datasource.INFLUXDB,
    registry: RegistryOption = None,
) -> None:
    """Upload the dashboards to a Grafana, by uid: pushing again replaces the same ones."""
    from dashboards.grafana import all_dashboards

    with _user_errors():
        boards = all_dashboards(datasource.value, registry=_registry(registry))
    grafana = _Grafana(url, token)
    folder_uid = grafana.folder_uid(folder) if folder else ""
    for uid, model in boards.items():
        body = {
            "dashboard": {**model, "id": None},
            "folderUid": folder_uid,
            "overwrite": overwrite,
            "message": PUSH_MESSAGE,
        }
        answer = grafana.call(
            f"save dashboard {uid}", functools.partial(grafana.api.dashboard.update_dashboard, body)
        )
        where = answer.get("url", "") if isinstance(answer, dict) else ""
        version = answer.get("version", "?") if isinstance(answer, dict) else "?"
        _out().print(f"pushed {escape(uid)} (version {version}) {escape(str(where))}")
