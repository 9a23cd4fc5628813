"""The datasources the dashboards query, by the uids provisioning gives them.

boltwatch's readings reach Grafana through one *series* datasource, chosen per export
(:data:`FLAVOURS`): InfluxDB with InfluxQL (``influxdb``: 2.x through its 1.x-compatible API,
or 3.x), InfluxDB 3 with SQL (``influxdb-sql``), VictoriaMetrics through Grafana's Prometheus
datasource (``victoriametrics``), or the embedded store itself through the SQLite plugin
(``sqlite``). What only the SQLite files hold (alerts and their history, device events, device
state, dead letters) is always read through the SQLite plugin: :data:`STORE` is the store's
``boltwatch.sqlite3``, :data:`ALERTS` the alert store's ``alerts.db``.
"""

from __future__ import annotations

from typing import Final, Literal, get_args

from grafana_foundation_sdk.models.common import DataSourceRef

from dashboards.grafana.queries import INFLUXDB, SQLITE

__all__ = [
    "ALERTS",
    "FLAVOURS",
    "FLUX",
    "INFLUXQL",
    "INFLUX_SQL",
    "MIXED",
    "STORE",
    "VICTORIAMETRICS",
    "Flavour",
    "flavour",
    "ref_json",
]

Flavour = Literal["influxdb", "influxdb-sql", "victoriametrics", "sqlite"]
FLAVOURS: Final[tuple[Flavour, ...]] = get_args(Flavour)
"""Where the dashboards read readings from (``boltwatch dashboards export --datasource``)."""

INFLUXQL: Final = DataSourceRef(type_val=INFLUXDB, uid="boltwatch-influxdb")
"""InfluxDB (2.x or 3.x) queried with InfluxQL: what ``influxdb`` dashboards use."""
FLUX: Final = DataSourceRef(type_val=INFLUXDB, uid="boltwatch-influxdb-flux")
"""InfluxDB 2.x queried with Flux: provisioned for Explore and hand-made panels."""
INFLUX_SQL: Final = DataSourceRef(type_val=INFLUXDB, uid="boltwatch-influxdb-sql")
"""InfluxDB 3 queried with SQL: what ``influxdb-sql`` dashboards use."""
VICTORIAMETRICS: Final = DataSourceRef(type_val="prometheus", uid="boltwatch-victoriametrics")
"""VictoriaMetrics through Grafana's Prometheus datasource (MetricsQL)."""
STORE: Final = DataSourceRef(type_val=SQLITE, uid="boltwatch-store")
"""The ingest store's SQLite file (``{store.path}/boltwatch.sqlite3``)."""
ALERTS: Final = DataSourceRef(type_val=SQLITE, uid="boltwatch-alerts")
"""The alert store's SQLite file (``alerts.store``, default ``{store.path}/alerts.db``)."""
MIXED: Final = DataSourceRef(type_val="datasource", uid="-- Mixed --")
"""Grafana's pseudo-datasource of a panel whose queries go to several datasources."""


def ref_json(ref: DataSourceRef) -> dict[str, str]:
    """A datasource reference as JSON (``{"type": ..., "uid": ...}``)."""
    return {"type": str(ref.type_val), "uid": str(ref.uid)}


def flavour(name: str) -> Flavour:
    """``name`` as a :data:`Flavour`.

    Raises:
        ValueError: Not one of :data:`FLAVOURS` (the message lists them).
    """
    if name not in FLAVOURS:
        raise ValueError(f"unknown datasource {name!r} (one of: {', '.join(FLAVOURS)})")
    return name
