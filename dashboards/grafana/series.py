"""Queries of readings, one class per series datasource: the same panel in four languages.

A reading is written by ingest as measurement = kind, tags ``device_id`` and ``site``, one
field per reported numeric field plus ``seq`` (``ingest/influx.py``); VictoriaMetrics names each
field ``{kind}_{field}`` with the tags as labels; the store keeps one table ``readings_{kind}``
with one column per field (``ingest/store``). A :class:`Series` turns "field F of kind K, for
these devices" into its datasource's query:

* :meth:`Series.over_time`: one series per device (or, for one device, per field);
* :meth:`Series.latest`: a table of each device's last values;
* :meth:`Series.sites` and :meth:`Series.devices`: the queries of the template variables.

Which devices is a :class:`Scope`: the selected device (``$device``), the selected joint's bolts
(``${joint:pipe}``: device ids joined by ``|``), or every device of the selected site
(``${site:regex}``; the site variable's "All" expands to every site).
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Sequence
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Final

from grafana_foundation_sdk.builders import prometheus
from grafana_foundation_sdk.cog import builder as cogbuilder
from grafana_foundation_sdk.cog import variants as cogvariants
from grafana_foundation_sdk.models.common import DataSourceRef
from grafana_foundation_sdk.models.dashboard import DataTransformerConfig
from grafana_foundation_sdk.models.prometheus import PromQueryFormat

from dashboards.grafana.queries import InfluxQLBuilder, InfluxSQLBuilder
from dashboards.grafana.sources import INFLUX_SQL, INFLUXQL, VICTORIAMETRICS
from sensors.schema import DeviceKind

__all__ = [
    "DEVICE_VAR",
    "JOINT_VAR",
    "SITE_VAR",
    "InfluxQLSeries",
    "InfluxSQLSeries",
    "Latest",
    "Query",
    "Scope",
    "Series",
    "VictoriaMetricsSeries",
]

Query = cogbuilder.Builder[cogvariants.Dataquery]
"""A target builder, what a panel's ``targets`` take."""

SITE_VAR: Final = "site"
DEVICE_VAR: Final = "device"
JOINT_VAR: Final = "joint"


class Scope(StrEnum):
    """Which devices a query covers."""

    DEVICE = "device"
    """The device selected in ``$device``: its series are named by field."""
    JOINT = "joint"
    """The bolts of the joint selected in ``$joint`` (device ids joined by ``|``)."""
    SITE = "site"
    """Every device of the kind at the site(s) selected in ``$site``."""


@dataclass(slots=True)
class Latest:
    """The queries of a table of each device's last values, and the transformations that make
    their frames one table."""

    targets: list[Query]
    transformations: list[DataTransformerConfig] = field(default_factory=list)


class Series(ABC):
    """Queries of readings in one datasource's language."""

    ref: DataSourceRef
    """The datasource the queries run on."""

    @abstractmethod
    def over_time(self, kind: DeviceKind, name: str, scope: Scope) -> Query:
        """Field ``name`` of ``kind`` over the dashboard's time range, a series per device
        (named by the field for :attr:`Scope.DEVICE`)."""

    @abstractmethod
    def latest(self, kind: DeviceKind, names: Sequence[str], scope: Scope) -> Latest:
        """A table: one row per device, its last value of each field in ``names`` within the
        dashboard's time range."""

    @abstractmethod
    def sites(self, kind: DeviceKind | None) -> str:
        """Query of the site variable: the sites with devices of ``kind`` (any kind: None)."""

    @abstractmethod
    def devices(self, kind: DeviceKind) -> str:
        """Query of the device variable: the devices of ``kind`` at the selected site(s)."""


# -- InfluxQL ----------------------------------------------------------------------------------


def _influxql_where(scope: Scope) -> str:
    if scope is Scope.DEVICE:
        return f"\"device_id\" = '${DEVICE_VAR}'"
    if scope is Scope.JOINT:
        return f'"device_id" =~ /^(${{{JOINT_VAR}:pipe}})$/'
    return f'"site" =~ /^${{{SITE_VAR}:regex}}$/'


class InfluxQLSeries(Series):
    """InfluxQL on InfluxDB 2.x (1.x-compatible API, bucket mapped with ``influx v1 dbrp``) or
    InfluxDB 3."""

    ref = INFLUXQL

    def over_time(self, kind: DeviceKind, name: str, scope: Scope) -> Query:
        """``mean`` per ``$__interval``, grouped by device."""
        query = (
            f'SELECT mean("{name}") AS "{name}" FROM "{kind.value}" '
            f"WHERE $timeFilter AND {_influxql_where(scope)} "
            'GROUP BY time($__interval), "device_id" fill(none)'
        )
        alias = name if scope is Scope.DEVICE else "$tag_device_id"
        return InfluxQLBuilder(query).alias(alias).datasource(self.ref)

    def latest(self, kind: DeviceKind, names: Sequence[str], scope: Scope) -> Latest:
        """``last`` of each field, grouped by device."""
        selected = ", ".join(f'last("{n}") AS "{n}"' for n in names)
        query = (
            f'SELECT {selected} FROM "{kind.value}" '
            f'WHERE $timeFilter AND {_influxql_where(scope)} GROUP BY "device_id"'
        )
        return Latest([InfluxQLBuilder(query).table().datasource(self.ref)])

    def sites(self, kind: DeviceKind | None) -> str:
        """``SHOW TAG VALUES`` of ``site``."""
        source = "" if kind is None else f'FROM "{kind.value}" '
        return f'SHOW TAG VALUES {source}WITH KEY = "site"'

    def devices(self, kind: DeviceKind) -> str:
        """``SHOW TAG VALUES`` of ``device_id`` at the selected site(s)."""
        return (
            f'SHOW TAG VALUES FROM "{kind.value}" WITH KEY = "device_id" '
            f'WHERE "site" =~ /^${{{SITE_VAR}:regex}}$/'
        )


# -- InfluxDB 3, SQL ---------------------------------------------------------------------------


def _sql_where(scope: Scope) -> str:
    if scope is Scope.DEVICE:
        return f"device_id = '${DEVICE_VAR}'"
    if scope is Scope.JOINT:
        return f"device_id ~ '^(${{{JOINT_VAR}:pipe}})$'"
    return f"site ~ '^${{{SITE_VAR}:regex}}$'"


class InfluxSQLSeries(Series):
    """SQL on InfluxDB 3 (Grafana's InfluxDB datasource in SQL mode, over Flight SQL)."""

    ref = INFLUX_SQL

    def over_time(self, kind: DeviceKind, name: str, scope: Scope) -> Query:
        """``avg`` per ``date_bin`` of the panel's interval, grouped by device."""
        device = "" if scope is Scope.DEVICE else "device_id, "
        sql = (
            f"SELECT $__dateBin(time) AS time, {device}avg({name}) AS {name} "
            f"FROM {kind.value} WHERE $__timeFilter(time) AND {_sql_where(scope)} "
            f"GROUP BY 1{', device_id' if device else ''} ORDER BY 1"
        )
        return InfluxSQLBuilder(sql).datasource(self.ref)

    def latest(self, kind: DeviceKind, names: Sequence[str], scope: Scope) -> Latest:
        """``last_value`` of each field by time, grouped by device."""
        selected = ", ".join(f"last_value({n} ORDER BY time) AS {n}" for n in names)
        sql = (
            f"SELECT device_id, max(time) AS time, {selected} FROM {kind.value} "
            f"WHERE $__timeFilter(time) AND {_sql_where(scope)} "
            "GROUP BY device_id ORDER BY device_id"
        )
        return Latest([InfluxSQLBuilder(sql).table().datasource(self.ref)])

    def sites(self, kind: DeviceKind | None) -> str:
        """Distinct ``site`` of the kind's table (of every kind's: a union)."""
        kinds = list(DeviceKind) if kind is None else [kind]
        return " UNION ".join(
            f"SELECT DISTINCT site FROM {k.value} WHERE $__timeFilter(time)" for k in kinds
        )

    def devices(self, kind: DeviceKind) -> str:
        """Distinct ``device_id`` at the selected site(s)."""
        return (
            f"SELECT DISTINCT device_id FROM {kind.value} WHERE $__timeFilter(time) "
            f"AND site ~ '^${{{SITE_VAR}:regex}}$' ORDER BY device_id"
        )


# -- VictoriaMetrics (MetricsQL through the Prometheus datasource) ------------------------------


def _labels(scope: Scope) -> str:
    if scope is Scope.DEVICE:
        return f'device_id="${DEVICE_VAR}"'
    if scope is Scope.JOINT:
        return f'device_id=~"${{{JOINT_VAR}:pipe}}"'
    return f'site=~"${{{SITE_VAR}:regex}}"'


def vm_metric(kind: DeviceKind, name: str) -> str:
    """The series name VictoriaMetrics gives field ``name`` of ``kind``: ``{kind}_{field}``."""
    return f"{kind.value}_{name}"


class VictoriaMetricsSeries(Series):
    """MetricsQL on VictoriaMetrics, through Grafana's Prometheus datasource.

    Bare selectors: VictoriaMetrics looks back as far as a series' own sample spacing, so a bolt
    reporting hourly draws without gaps (Prometheus would need ``last_over_time``).
    """

    ref = VICTORIAMETRICS

    def over_time(self, kind: DeviceKind, name: str, scope: Scope) -> Query:
        """The field's series, named by device (or by field for one device)."""
        legend = name if scope is Scope.DEVICE else "{{device_id}}"
        return (
            prometheus.Dataquery()
            .expr(f"{vm_metric(kind, name)}{{{_labels(scope)}}}")
            .legend_format(legend)
            .range()
            .datasource(self.ref)
        )

    def latest(self, kind: DeviceKind, names: Sequence[str], scope: Scope) -> Latest:
        """One instant ``last_over_time`` per field over the range, merged into one table."""
        targets: list[Query] = [
            prometheus.Dataquery()
            .expr(f"last_over_time({vm_metric(kind, n)}{{{_labels(scope)}}}[$__range])")
            .format(PromQueryFormat.TABLE)
            .instant()
            .ref_id(n)
            .datasource(self.ref)
            for n in names
        ]
        organize = DataTransformerConfig(
            id_val="organize",
            options={
                "excludeByName": {"Time": True, "__name__": True},
                "renameByName": {f"Value #{n}": n for n in names},
            },
        )
        return Latest(targets, [DataTransformerConfig(id_val="merge", options={}), organize])

    def sites(self, kind: DeviceKind | None) -> str:
        """``label_values`` of ``site`` (of the kind's ``seq`` series, written per reading)."""
        if kind is None:
            return "label_values(site)"
        return f"label_values({vm_metric(kind, 'seq')}, site)"

    def devices(self, kind: DeviceKind) -> str:
        """``label_values`` of ``device_id`` at the selected site(s)."""
        return f'label_values({vm_metric(kind, "seq")}{{site=~"${{{SITE_VAR}:regex}}"}}, device_id)'
