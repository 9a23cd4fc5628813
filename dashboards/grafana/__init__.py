"""Grafana dashboards as code, for sites that already run Grafana.

Built with the Grafana foundation SDK (``grafana-foundation-sdk``), one module per dashboard,
each with a stable uid:

========================  =========================================================
``boltwatch-fleet``       fleet overview (:mod:`~dashboards.grafana.fleet`)
``boltwatch-joint``       one joint's bolts (:mod:`~dashboards.grafana.joint`)
``boltwatch-cbolt``       bolt detail (:mod:`~dashboards.grafana.bolt`)
``boltwatch-{kind}``      machine (and gateway) detail (:mod:`~dashboards.grafana.machine`)
``boltwatch-alerts``      alerts, history, silences (:mod:`~dashboards.grafana.alerts`)
``boltwatch-quality``     data quality (:mod:`~dashboards.grafana.quality`)
========================  =========================================================

Readings come from the datasource flavour chosen (:data:`FLAVOURS`); alerts, events, device
state and dead letters from the SQLite files (:mod:`~dashboards.grafana.sources`).
:func:`all_dashboards` builds every dashboard's JSON model; :func:`provisioning` the Grafana
provisioning files. ``docs/dashboards.md`` tells how to point a Grafana at them.
"""

from __future__ import annotations

from typing import Any, Final

from dashboards.grafana import _sdk, alerts, bolt, fleet, joint, machine, quality  # noqa: F401 - _sdk first
from dashboards.grafana.provisioning import Servers, provisioning, to_yaml
from dashboards.grafana.queries import register_variants
from dashboards.grafana.series import InfluxQLSeries, InfluxSQLSeries, Series, VictoriaMetricsSeries
from dashboards.grafana.sources import FLAVOURS, Flavour, flavour
from dashboards.grafana.sqlite import SQLiteSeries
from sensors.registry import Registry

__all__ = [
    "FLAVOURS",
    "SCHEMA_VERSION",
    "Flavour",
    "Servers",
    "all_dashboards",
    "provisioning",
    "series_for",
    "to_yaml",
]

SCHEMA_VERSION: Final = "13.2.3"
"""The ``@grafana/schema`` release whose dashboard schema the dashboards are checked against
(``dashboards/grafana/schema/dashboard-{SCHEMA_VERSION}.schema.json``)."""


def series_for(name: str) -> Series:
    """The readings' queries of a flavour.

    Raises:
        ValueError: Not one of :data:`FLAVOURS`.
    """
    kind = flavour(name)
    if kind == "influxdb":
        return InfluxQLSeries()
    if kind == "influxdb-sql":
        return InfluxSQLSeries()
    if kind == "victoriametrics":
        return VictoriaMetricsSeries()
    return SQLiteSeries()


def all_dashboards(
    datasource: str, *, registry: Registry | None = None
) -> dict[str, dict[str, Any]]:
    """Every dashboard, by uid, as Grafana's JSON model.

    Args:
        datasource: Where readings are read from: one of :data:`FLAVOURS`.
        registry: The site registry: the joint dashboard then lists its joints by name.

    Raises:
        ValueError: An unknown datasource.
    """
    register_variants()
    series = series_for(datasource)
    boards = [
        fleet.build(series),
        joint.build(series, registry),
        bolt.build(series),
        *machine.build_all(series),
        alerts.build(),
        quality.build(series),
    ]
    return {str(b["uid"]): b for b in boards}
