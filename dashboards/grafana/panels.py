"""What every dashboard module uses: panels, variables, links, annotations, and the final JSON.

Panels are the SDK's builders with boltwatch's conventions: a query without ``refId`` gets the
next letter, a panel whose queries go to several datasources uses Grafana's ``-- Mixed --``,
series of several devices are named by their ``device_id`` label. :func:`finish` turns a
dashboard builder into its JSON model: panel ids numbered in order, and the variable keys the
SDK always writes but only interval variables have (``auto``, ``auto_min``, ``auto_count``,
absent from Grafana's own types) left out, so the JSON validates against Grafana's schema.
"""

from __future__ import annotations

import json
import string
from collections.abc import Sequence
from typing import Any, Final, TypeVar

from grafana_foundation_sdk.builders import common, dashboard, stat, table, timeseries
from grafana_foundation_sdk.cog import builder as cogbuilder
from grafana_foundation_sdk.cog.encoder import JSONEncoder
from grafana_foundation_sdk.models.common import (
    DataSourceRef,
    LegendDisplayMode,
    LegendPlacement,
    SortOrder,
    TooltipDisplayMode,
    VisibilityMode,
)
from grafana_foundation_sdk.models.dashboard import (
    DashboardCursorSync,
    DataTransformerConfig,
    DynamicConfigValue,
    Threshold,
    ThresholdsMode,
    VariableModel,
    VariableOption,
    VariableRefresh,
    VariableSort,
)

from dashboards.grafana.series import DEVICE_VAR, JOINT_VAR, SITE_VAR, Query, Series
from dashboards.grafana.sources import MIXED
from sensors.registry import Registry
from sensors.schema import FIELD_INFO, DeviceKind

__all__ = [
    "TAGS",
    "annotation",
    "dashed",
    "device_link",
    "device_variable",
    "finish",
    "joint_variable",
    "new_dashboard",
    "query_variable",
    "right_axis",
    "site_variable",
    "stat_panel",
    "table_panel",
    "thresholds",
    "timeseries_panel",
    "unit_of",
]

TAGS: Final = ["boltwatch"]
_GRAFANA_UNITS: Final = {
    "kN": "forcekN",
    "N·m": "forceNm",
    "°C": "celsius",
    "V": "volt",
    "dBm": "dBm",
    "%": "percent",
    "A": "amp",
    "mA": "mamp",
    "L/min": "flowlpm",
    "1/min": "rotrpm",
    "Hz": "hertz",
    "g": "massg",
    "s": "s",
    "count": "short",
}
_INTERVAL_ONLY: Final = ("auto", "auto_min", "auto_count")


def unit_of(kind: DeviceKind, name: str) -> str:
    """Grafana's unit id for a reading field, from the unit the telemetry contract gives it
    (a unit Grafana has no id for becomes a suffix: ``suffix: mm/s``)."""
    unit = next((f.unit for f in FIELD_INFO[kind] if f.name == name), "")
    if not unit:
        return "short"
    return _GRAFANA_UNITS.get(unit, f"suffix: {unit}")


def new_dashboard(uid: str, title: str, description: str) -> dashboard.Dashboard:
    """A dashboard with boltwatch's tags, a day's range, and a minute's refresh."""
    return (
        dashboard.Dashboard(title)
        .uid(uid)
        .description(description)
        .tags(TAGS)
        .timezone("browser")
        .time("now-24h", "now")
        .refresh("1m")
        .tooltip(DashboardCursorSync.CROSSHAIR)
        .editable()
    )


_P = TypeVar("_P", timeseries.Panel, table.Panel, stat.Panel)


def _with_targets(panel: _P, queries: Sequence[Query]) -> _P:
    """Give queries without a ``refId`` the next free letter; the panel's datasource is theirs,
    or ``-- Mixed --`` when they use several."""
    letters = iter(string.ascii_uppercase)
    refs: dict[str, DataSourceRef] = {}
    for q in queries:
        model = q.build()
        if not getattr(model, "ref_id", None):
            q.ref_id(next(letters))  # type: ignore[attr-defined]
        ref = getattr(model, "datasource", None)
        if isinstance(ref, DataSourceRef):
            refs[f"{ref.type_val}/{ref.uid}"] = ref
    panel.targets(list(queries))
    if len(refs) == 1:
        panel.datasource(next(iter(refs.values())))
    elif refs:
        panel.datasource(MIXED)
    return panel


def timeseries_panel(
    title: str,
    description: str,
    queries: Sequence[Query],
    *,
    unit: str = "short",
    by_device: bool = False,
    span: int = 12,
    height: int = 9,
) -> timeseries.Panel:
    """A time series panel; ``by_device`` names each series by its ``device_id`` label."""
    panel = (
        timeseries.Panel()
        .title(title)
        .description(description)
        .unit(unit)
        .span(span)
        .height(height)
        .span_nulls(True)
        .show_points(VisibilityMode.AUTO)
        .legend(
            common.VizLegendOptions()
            .show_legend(True)
            .display_mode(LegendDisplayMode.LIST)
            .placement(LegendPlacement.BOTTOM)
        )
        .tooltip(
            common.VizTooltipOptions().mode(TooltipDisplayMode.MULTI).sort(SortOrder.DESCENDING)
        )
    )
    if by_device:
        panel.display_name("${__field.labels.device_id}")
    return _with_targets(panel, queries)


def table_panel(
    title: str,
    description: str,
    queries: Sequence[Query],
    *,
    transformations: Sequence[DataTransformerConfig] = (),
    links: dict[str, str] | None = None,
    span: int = 12,
    height: int = 9,
) -> table.Panel:
    """A table panel; ``links`` maps a column to the URL its cells open (data links)."""
    panel = table.Panel().title(title).description(description).span(span).height(height)
    if transformations:
        panel.transformations(list(transformations))
    for column, url in (links or {}).items():
        panel.override_by_name(
            column, [DynamicConfigValue(id_val="links", value=[{"title": column, "url": url}])]
        )
    return _with_targets(panel, queries)


def stat_panel(
    title: str,
    description: str,
    queries: Sequence[Query],
    *,
    unit: str = "short",
    span: int = 6,
    height: int = 5,
) -> stat.Panel:
    """A stat panel: the last value of each numeric column."""
    panel = stat.Panel().title(title).description(description).unit(unit)
    return _with_targets(panel.span(span).height(height), queries)


def thresholds(base: str, *steps: tuple[float, str]) -> dashboard.ThresholdsConfig:
    """Absolute thresholds: ``base`` colour below the first step, then each step's colour."""
    return (
        dashboard.ThresholdsConfig()
        .mode(ThresholdsMode.ABSOLUTE)
        .steps(
            [Threshold(value=None, color=base), *(Threshold(value=v, color=c) for v, c in steps)]
        )
    )


def right_axis(panel: timeseries.Panel, ref_ids: Sequence[str], unit: str) -> timeseries.Panel:
    """Draw the series of the queries ``ref_ids`` on a right axis in ``unit``."""
    for ref_id in ref_ids:
        panel.override_by_query(
            ref_id,
            [
                DynamicConfigValue(id_val="unit", value=unit),
                DynamicConfigValue(id_val="custom.axisPlacement", value="right"),
            ],
        )
    return panel


def dashed(panel: timeseries.Panel, colors: dict[str, str]) -> timeseries.Panel:
    """Draw the fields named in ``colors`` as dashed reference lines of that colour."""
    for name, color in colors.items():
        panel.override_by_name(
            name,
            [
                DynamicConfigValue(
                    id_val="custom.lineStyle", value={"fill": "dash", "dash": [10, 10]}
                ),
                DynamicConfigValue(id_val="color", value={"mode": "fixed", "fixedColor": color}),
                DynamicConfigValue(id_val="custom.showPoints", value="never"),
            ],
        )
    return panel


def device_link(uid: str, variable: str = DEVICE_VAR) -> str:
    """URL of dashboard ``uid`` for the clicked cell's device, keeping the time range."""
    return f"/d/{uid}?var-{variable}=${{__value.raw}}&${{__url_time_range}}"


def query_variable(
    name: str, label: str, ref: DataSourceRef, query: str
) -> dashboard.QueryVariable:
    """A variable of the values ``query`` returns on ``ref``, refreshed with the time range."""
    return (
        dashboard.QueryVariable(name)
        .label(label)
        .datasource(ref)
        .query(query)
        .refresh(VariableRefresh.ON_TIME_RANGE_CHANGED)
        .sort(VariableSort.ALPHABETICAL_ASC)
    )


def site_variable(series: Series, kind: DeviceKind | None) -> dashboard.QueryVariable:
    """``$site``: the sites with devices of ``kind``; "All" (the default) is every site."""
    return (
        query_variable(SITE_VAR, "site", series.ref, series.sites(kind))
        .include_all(True)
        .current(VariableOption(selected=True, text="All", value="$__all"))
    )


def device_variable(series: Series, kind: DeviceKind, label: str) -> dashboard.QueryVariable:
    """``$device``: one device of ``kind`` at the selected site(s)."""
    return query_variable(DEVICE_VAR, label, series.ref, series.devices(kind))


def joint_variable(series: Series, registry: Registry | None) -> cogbuilder.Builder[VariableModel]:
    """``$joint``: the bolts of one joint, as device ids joined by ``|`` (``${joint:pipe}``).

    With a registry, a custom variable listing its joints (text: the joint's name, value: its
    bolts). Without one, the bolts to compare are picked by hand among the site's.
    """
    if registry is None:
        return (
            query_variable(JOINT_VAR, "bolts", series.ref, series.devices(DeviceKind.CBOLT))
            .multi(True)
            .include_all(True)
            .current(VariableOption(selected=True, text="All", value="$__all"))
        )
    options: list[VariableOption] = []
    for joint in registry.joints:
        devices = "|".join(b.device_id for b in registry.joint_bolts(joint.id))
        if not devices:
            continue
        text = f"{joint.name} ({joint.id})".replace(",", " ").replace(" : ", ": ")
        options.append(VariableOption(selected=not options, text=text, value=devices))
    variable = dashboard.CustomVariable(JOINT_VAR).label("joint")
    variable.values(", ".join(f"{o.text} : {o.value}" for o in options))
    variable.options(options)
    if options:
        variable.current(options[0])
    return variable


def annotation(name: str, query: Query, color: str) -> dashboard.AnnotationQuery:
    """An annotation drawn from a query (columns ``time``, optional ``timeEnd``, ``text``,
    ``tags``) on every panel of the dashboard."""
    model = query.build()
    ref = getattr(model, "datasource", None)
    if not getattr(model, "ref_id", None):
        query.ref_id("Anno")  # type: ignore[attr-defined]
    out = dashboard.AnnotationQuery().name(name).enable(True).icon_color(color).target(query)
    if isinstance(ref, DataSourceRef):
        out.datasource(ref)
    return out


def _renumber(panels: list[dict[str, Any]], start: int = 1) -> int:
    next_id = start
    for p in panels:
        p["id"] = next_id
        next_id += 1
        next_id = _renumber(p.get("panels", []), next_id)
    return next_id


def finish(board: dashboard.Dashboard) -> dict[str, Any]:
    """The dashboard's JSON model (see the module docstring)."""
    model: dict[str, Any] = json.loads(json.dumps(board.build(), cls=JSONEncoder))
    _renumber(model.get("panels", []))
    for variable in model.get("templating", {}).get("list", []):
        if variable.get("type") != "interval":
            for key in _INTERVAL_ONLY:
                variable.pop(key, None)
    return model
