"""Data queries the Grafana foundation SDK has no builder for: InfluxDB (InfluxQL and SQL) and
the ``frser-sqlite-datasource`` plugin.

Each query is a model (a :class:`~grafana_foundation_sdk.cog.variants.Dataquery`: ``to_json``
gives the target's JSON, ``from_json`` reads it back) and a builder (a
:class:`~grafana_foundation_sdk.cog.builder.Builder` of that model, what panels'
``with_target`` take), the same protocol as the SDK's own ``prometheus.Dataquery``.
:func:`register_variants` teaches the SDK's runtime to decode them (``dataquery_from_json``).

The JSON is what each datasource's query editor saves:

* InfluxDB, InfluxQL: ``query`` (raw, ``rawQuery: true``), ``resultFormat`` (``time_series`` or
  ``table``), ``alias`` (``$tag_device_id`` names a series by its tag).
* InfluxDB, SQL (InfluxDB 3 through Flight SQL): ``rawSql``, ``format``, ``editorMode: code``.
* SQLite: ``rawQueryText`` (what the editor shows; Grafana interpolates the template variables
  into ``queryText`` before sending), ``queryType`` (``time series`` or ``table``) and
  ``timeColumns``, the columns read as times. A time column holds epoch **seconds** (a float
  keeps the milliseconds): the store's ``ts_ms / 1000.0 AS time``.
"""

from __future__ import annotations

from typing import Any, Final, Generic, Literal, Self, TypeVar

from grafana_foundation_sdk.cog import builder as cogbuilder
from grafana_foundation_sdk.cog import runtime as cogruntime
from grafana_foundation_sdk.cog import variants as cogvariants
from grafana_foundation_sdk.models.common import DataSourceRef

__all__ = [
    "INFLUXDB",
    "SQLITE",
    "InfluxQLBuilder",
    "InfluxQLQuery",
    "InfluxSQLBuilder",
    "InfluxSQLQuery",
    "SQLiteBuilder",
    "SQLiteQuery",
    "register_variants",
]

INFLUXDB: Final = "influxdb"
"""Plugin id of Grafana's InfluxDB datasource (InfluxQL, Flux and SQL are its modes)."""
SQLITE: Final = "frser-sqlite-datasource"
"""Plugin id of the SQLite datasource plugin."""

InfluxResult = Literal["time_series", "table"]
SQLiteResult = Literal["time series", "table"]


def _ref(data: dict[str, Any]) -> DataSourceRef | None:
    raw = data.get("datasource")
    return DataSourceRef.from_json(raw) if isinstance(raw, dict) else None


class _Target(cogvariants.Dataquery):
    """What every query class here shares: its letter in the panel and its datasource."""

    ref_id: str
    datasource: DataSourceRef | None

    def _targeted(self, out: dict[str, object]) -> dict[str, object]:
        """``out`` with ``refId`` and ``datasource`` added when set."""
        if self.ref_id:
            out["refId"] = self.ref_id
        if self.datasource is not None:
            out["datasource"] = self.datasource
        return out


class InfluxQLQuery(_Target):
    """A raw InfluxQL query of Grafana's InfluxDB datasource.

    Attributes:
        query: The InfluxQL text, with Grafana's ``$timeFilter``, ``$__interval`` and variables.
        result_format: ``time_series`` (a series per ``GROUP BY`` tag set) or ``table``.
        alias: Series name pattern (``$tag_device_id``, ``$col``); empty for the default.
        ref_id: The query's letter in its panel.
        datasource: The datasource it runs on.
    """

    def __init__(
        self,
        query: str = "",
        result_format: InfluxResult = "time_series",
        alias: str = "",
        ref_id: str = "",
        datasource: DataSourceRef | None = None,
    ) -> None:
        self.query = query
        self.result_format: InfluxResult = result_format
        self.alias = alias
        self.ref_id = ref_id
        self.datasource = datasource

    def to_json(self) -> dict[str, object]:
        """The target's JSON."""
        out: dict[str, object] = {
            "query": self.query,
            "rawQuery": True,
            "resultFormat": self.result_format,
        }
        if self.alias:
            out["alias"] = self.alias
        return self._targeted(out)

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> Self:
        """Read a target back."""
        return cls(
            query=str(data.get("query", "")),
            result_format="table" if data.get("resultFormat") == "table" else "time_series",
            alias=str(data.get("alias", "")),
            ref_id=str(data.get("refId", "")),
            datasource=_ref(data),
        )


class InfluxSQLQuery(_Target):
    """A SQL query of Grafana's InfluxDB datasource in SQL mode (InfluxDB 3).

    Attributes:
        raw_sql: The SQL, with Grafana's ``$__timeFilter(time)``, ``$__dateBin(time)`` macros.
        format: ``time_series`` (long frames are widened by their string columns) or ``table``.
        ref_id: The query's letter in its panel.
        datasource: The datasource it runs on.
    """

    def __init__(
        self,
        raw_sql: str = "",
        format: InfluxResult = "time_series",
        ref_id: str = "",
        datasource: DataSourceRef | None = None,
    ) -> None:
        self.raw_sql = raw_sql
        self.format: InfluxResult = format
        self.ref_id = ref_id
        self.datasource = datasource

    def to_json(self) -> dict[str, object]:
        """The target's JSON."""
        out: dict[str, object] = {
            "rawSql": self.raw_sql,
            "rawQuery": True,
            "editorMode": "code",
            "format": self.format,
        }
        return self._targeted(out)

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> Self:
        """Read a target back."""
        return cls(
            raw_sql=str(data.get("rawSql", "")),
            format="table" if data.get("format") == "table" else "time_series",
            ref_id=str(data.get("refId", "")),
            datasource=_ref(data),
        )


class SQLiteQuery(_Target):
    """A query of the ``frser-sqlite-datasource`` plugin.

    Attributes:
        sql: The SQL (``rawQueryText``), with Grafana variables (``$__from`` and ``$__to`` are
            epoch milliseconds, the store's own unit).
        query_type: ``time series`` (long frames are widened by their string columns) or
            ``table``.
        time_columns: Columns holding times, in epoch seconds.
        ref_id: The query's letter in its panel.
        datasource: The datasource it runs on.
    """

    def __init__(
        self,
        sql: str = "",
        query_type: SQLiteResult = "table",
        time_columns: tuple[str, ...] = ("time",),
        ref_id: str = "",
        datasource: DataSourceRef | None = None,
    ) -> None:
        self.sql = sql
        self.query_type: SQLiteResult = query_type
        self.time_columns = time_columns
        self.ref_id = ref_id
        self.datasource = datasource

    def to_json(self) -> dict[str, object]:
        """The target's JSON (``queryText`` holds the same text until Grafana interpolates)."""
        out: dict[str, object] = {
            "rawQueryText": self.sql,
            "queryText": self.sql,
            "queryType": self.query_type,
            "timeColumns": list(self.time_columns),
        }
        return self._targeted(out)

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> Self:
        """Read a target back."""
        return cls(
            sql=str(data.get("rawQueryText", data.get("queryText", ""))),
            query_type="time series" if data.get("queryType") == "time series" else "table",
            time_columns=tuple(str(c) for c in data.get("timeColumns", ())),
            ref_id=str(data.get("refId", "")),
            datasource=_ref(data),
        )


_Q = TypeVar("_Q", "InfluxQLQuery", "InfluxSQLQuery", "SQLiteQuery")


class _Builder(cogbuilder.Builder[_Q], Generic[_Q]):
    """What the three builders share: the model, its ``refId`` and datasource."""

    _internal: _Q

    def build(self) -> _Q:
        """The query."""
        return self._internal

    def ref_id(self, ref_id: str) -> Self:
        """The query's letter in its panel."""
        self._internal.ref_id = ref_id
        return self

    def datasource(self, ref: DataSourceRef) -> Self:
        """The datasource the query runs on."""
        self._internal.datasource = ref
        return self


class InfluxQLBuilder(_Builder[InfluxQLQuery]):
    """Builder of an :class:`InfluxQLQuery`."""

    def __init__(self, query: str) -> None:
        self._internal = InfluxQLQuery(query)

    def table(self) -> Self:
        """Return a table (``resultFormat: table``)."""
        self._internal.result_format = "table"
        return self

    def alias(self, alias: str) -> Self:
        """Series name pattern (``$tag_device_id``)."""
        self._internal.alias = alias
        return self


class InfluxSQLBuilder(_Builder[InfluxSQLQuery]):
    """Builder of an :class:`InfluxSQLQuery`."""

    def __init__(self, raw_sql: str) -> None:
        self._internal = InfluxSQLQuery(raw_sql)

    def table(self) -> Self:
        """Return a table (``format: table``)."""
        self._internal.format = "table"
        return self


class SQLiteBuilder(_Builder[SQLiteQuery]):
    """Builder of a :class:`SQLiteQuery` (a table unless :meth:`time_series`)."""

    def __init__(self, sql: str) -> None:
        self._internal = SQLiteQuery(sql)

    def time_series(self) -> Self:
        """Return time series (``queryType: time series``)."""
        self._internal.query_type = "time series"
        return self

    def time_columns(self, *columns: str) -> Self:
        """Columns read as times (epoch seconds)."""
        self._internal.time_columns = columns
        return self


def _influx_from_json(data: dict[str, Any]) -> cogvariants.Dataquery:
    """One datasource type, two query languages: SQL targets carry ``rawSql``."""
    if "rawSql" in data:
        return InfluxSQLQuery.from_json(data)
    return InfluxQLQuery.from_json(data)


def register_variants() -> None:
    """Let the SDK decode these queries (``cog.runtime.dataquery_from_json``): idempotent."""
    cogruntime.register_dataquery_variant(
        cogruntime.DataqueryConfig(identifier=INFLUXDB, from_json_hook=_influx_from_json)
    )
    cogruntime.register_dataquery_variant(
        cogruntime.DataqueryConfig(identifier=SQLITE, from_json_hook=SQLiteQuery.from_json)
    )
