"""Grafana provisioning files: the datasources the dashboards use, and a dashboard provider.

Grafana reads ``provisioning/datasources/*.yaml`` and ``provisioning/dashboards/*.yaml`` at
start (``[paths] provisioning`` of ``grafana.ini``). :func:`provisioning` returns both files'
content for one flavour; :func:`to_yaml` writes them. The datasources keep the uids the
dashboards name (``dashboards.grafana.sources``):

* ``influxdb``: InfluxDB 2.x with InfluxQL (the bucket mapped to a database with
  ``influx v1 dbrp create``), plus the same server with Flux for Explore;
* ``influxdb-sql``: InfluxDB 3 with SQL;
* ``victoriametrics``: VictoriaMetrics through the Prometheus datasource;
* always: the store's and the alert store's SQLite files through ``frser-sqlite-datasource``,
  opened read-only (``mode=ro``): a dashboard's SQL cannot change them. SQLite still needs to
  write the ``-shm`` file next to a WAL database, so Grafana's user needs write access to the
  store's folder (see ``docs/dashboards.md``).

Secrets are never written: the InfluxDB token is ``${BOLTWATCH_INFLUX_TOKEN}``, which Grafana
takes from its environment when it reads the file.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import PurePosixPath
from typing import Any, Final

from grafana_foundation_sdk.models.common import DataSourceRef

from dashboards.grafana.sources import (
    ALERTS,
    FLUX,
    INFLUX_SQL,
    INFLUXQL,
    STORE,
    VICTORIAMETRICS,
    Flavour,
)
from dashboards.grafana.sources import flavour as checked
from ingest.store import DB_FILE

__all__ = ["TOKEN_ENV", "Servers", "provisioning", "to_yaml"]

TOKEN_ENV: Final = "BOLTWATCH_INFLUX_TOKEN"  # noqa: S105 - a variable name, not a secret
"""Environment variable of Grafana holding the InfluxDB token."""


@dataclass(frozen=True, slots=True)
class Servers:
    """Where the datasources point, as Grafana's host sees them.

    Attributes:
        store_path: The store's folder (``store.path``): the database is ``DB_FILE`` in it.
        alerts_db: The alert store's file (``alerts.store``); default ``{store_path}/alerts.db``.
        influx_url: InfluxDB's address (``influx.url``).
        influx_org: InfluxDB organisation (2.x).
        influx_bucket: Bucket (2.x; InfluxQL's database after ``dbrp`` mapping) or database (3.x).
        vm_url: VictoriaMetrics's address.
        dashboards_dir: Where Grafana finds the dashboards' JSON files.
        folder: The Grafana folder they go in.
    """

    store_path: str = "/var/lib/boltwatch"
    alerts_db: str | None = None
    influx_url: str = "http://localhost:8086"
    influx_org: str = "boltwatch"
    influx_bucket: str = "boltwatch"
    vm_url: str = "http://localhost:8428"
    dashboards_dir: str = "/var/lib/grafana/dashboards/boltwatch"
    folder: str = "boltwatch"


def _source(ref_name: str, ref: DataSourceRef, url: str, **more: object) -> dict[str, Any]:
    out: dict[str, Any] = {
        "name": ref_name,
        "type": ref.type_val,
        "uid": ref.uid,
        "access": "proxy",
        "editable": False,
    }
    if url:
        out["url"] = url
    out.update(more)
    return out


def _series_sources(flavour: Flavour, s: Servers) -> list[dict[str, Any]]:
    token = f"${{{TOKEN_ENV}}}"
    if flavour == "influxdb":
        return [
            _source(
                "boltwatch InfluxDB (InfluxQL)",
                INFLUXQL,
                s.influx_url,
                jsonData={
                    "dbName": s.influx_bucket,
                    "httpMode": "POST",
                    "httpHeaderName1": "Authorization",
                },
                secureJsonData={"httpHeaderValue1": f"Token {token}"},
            ),
            _source(
                "boltwatch InfluxDB (Flux)",
                FLUX,
                s.influx_url,
                jsonData={
                    "version": "Flux",
                    "organization": s.influx_org,
                    "defaultBucket": s.influx_bucket,
                },
                secureJsonData={"token": token},
            ),
        ]
    if flavour == "influxdb-sql":
        return [
            _source(
                "boltwatch InfluxDB 3 (SQL)",
                INFLUX_SQL,
                s.influx_url,
                jsonData={"version": "SQL", "dbName": s.influx_bucket, "insecureGrpc": False},
                secureJsonData={"token": token},
            )
        ]
    if flavour == "victoriametrics":
        return [
            _source(
                "boltwatch VictoriaMetrics",
                VICTORIAMETRICS,
                s.vm_url,
                jsonData={"httpMethod": "POST", "timeInterval": "1m"},
            )
        ]
    return []


def _sqlite(name: str, ref: DataSourceRef, path: str) -> dict[str, Any]:
    return _source(
        name, ref, "", jsonData={"path": path, "pathPrefix": "file:", "pathOptions": "mode=ro"}
    )


def provisioning(flavour: str, servers: Servers | None = None) -> dict[str, dict[str, Any]]:
    """The two provisioning files for dashboards of ``flavour``.

    Args:
        flavour: One of :data:`~dashboards.grafana.sources.FLAVOURS`.
        servers: Where the datasources point (defaults: a single host).

    Returns:
        ``{"datasources": ..., "dashboards": ...}``: each file's content.

    Raises:
        ValueError: An unknown flavour.
    """
    kind = checked(flavour)
    s = servers or Servers()
    store = str(PurePosixPath(s.store_path) / DB_FILE)
    alerts = s.alerts_db or str(PurePosixPath(s.store_path) / "alerts.db")
    sources = [
        *_series_sources(kind, s),
        _sqlite("boltwatch store (SQLite)", STORE, store),
        _sqlite("boltwatch alerts (SQLite)", ALERTS, alerts),
    ]
    datasources = {"apiVersion": 1, "datasources": sources}
    dashboards = {
        "apiVersion": 1,
        "providers": [
            {
                "name": "boltwatch",
                "orgId": 1,
                "folder": s.folder,
                "type": "file",
                "disableDeletion": False,
                "allowUiUpdates": False,
                "updateIntervalSeconds": 60,
                "options": {"path": s.dashboards_dir, "foldersFromFilesStructure": False},
            }
        ],
    }
    return {"datasources": datasources, "dashboards": dashboards}


def _scalar(value: object) -> str:
    if isinstance(value, bool) or value is None or isinstance(value, int | float):
        return json.dumps(value)
    return json.dumps(str(value), ensure_ascii=False)


def _lines(value: object, indent: int) -> list[str]:
    pad = " " * indent
    if isinstance(value, dict):
        if not value:
            return [pad + "{}"]
        out: list[str] = []
        for key, item in value.items():
            if isinstance(item, dict | list) and item:
                out.append(f"{pad}{key}:")
                out.extend(_lines(item, indent + 2))
            else:
                out.append(f"{pad}{key}: {_lines(item, 0)[0]}")
        return out
    if isinstance(value, list):
        if not value:
            return [pad + "[]"]
        out = []
        for item in value:
            inner = _lines(item, indent + 2)
            out.append(f"{pad}- {inner[0].lstrip()}")
            out.extend(inner[1:])
        return out
    return [pad + _scalar(value)]


def to_yaml(data: dict[str, Any]) -> str:
    """``data`` as YAML (block style; strings double-quoted, which YAML reads as JSON's)."""
    return "\n".join(_lines(data, 0)) + "\n"
