"""The Grafana dashboards as code (``dashboards/grafana``), without a Grafana.

Grafana cannot be installed here, so the dashboards are checked three ways:

* every dashboard of every datasource flavour validates against the JSON Schema of Grafana's
  dashboard model, generated from ``@grafana/schema`` by ``scripts/grafana_schema.py``;
* every SQLite query (panels, annotations, variables) runs, its variables substituted as
  Grafana would, against a real store and a real alert store filled by boltwatch's own writers,
  and returns rows;
* every measurement, field, tag and VictoriaMetrics series the InfluxQL, SQL and MetricsQL
  queries name is in the line protocol ingest's InfluxDB writer makes of the same readings
  (the queries are parsed; nothing is compared with a list written by hand).

Plus: uids stable and JSON byte-identical across builds, the queries' JSON read back through the
SDK's runtime, provisioning consistent with the dashboards, and ``dashboards export``.
"""

from __future__ import annotations

import json
import re
import sqlite3
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import jsonschema
import msgspec
import pytest
import yaml
from grafana_foundation_sdk.cog import plugins as cogplugins
from grafana_foundation_sdk.cog import runtime as cogruntime
from typer.testing import CliRunner

from alerts.model import AlertState, Silence, Transition
from alerts.store import AlertStore
from boltwatch.dashboards_cli import Datasource, dashboards_app
from dashboards.grafana import (
    FLAVOURS,
    SCHEMA_VERSION,
    Servers,
    all_dashboards,
    provisioning,
    to_yaml,
)
from dashboards.grafana.queries import register_variants
from dashboards.grafana.sources import INFLUX_SQL, INFLUXQL, MIXED, VICTORIAMETRICS
from detection.cnc import ISO_10816_3_MMS, iso_zone
from ingest.influx import line_protocol
from ingest.store import DB_FILE, DeadLetter, Store
from sensors.codec import DecodedBatch, TelemetryDecoder
from sensors.registry import load_registry
from sensors.schema import FIELD_INFO, DeviceKind

ROOT = Path(__file__).resolve().parents[2]
SCHEMA = ROOT / "dashboards" / "grafana" / "schema" / f"dashboard-{SCHEMA_VERSION}.schema.json"
REGISTRY = ROOT / "sensors" / "samples" / "registry.toml"
T0 = 1_772_323_500_000  # 2026-03-01T00:05:00Z
TO_MS = T0 + 30 * 60_000  # the dashboards' range ends half an hour after the readings
DAY_MS = 86_400_000
SITE = "site-a"
# Two bolts of the sample registry's first joint (so its joint variable finds them), one device
# of every other kind.
BOLTS = ("cb-wtg07-t1-p01", "cb-wtg07-t1-p04")
DEVICES = {
    DeviceKind.PRINTER3D: "printer-1",
    DeviceKind.LASER_CUTTER: "laser-1",
    DeviceKind.CNC_MILL: "cnc-1",
    DeviceKind.VINYL_CUTTER: "vinyl-1",
    DeviceKind.EMBROIDERY: "embroidery-1",
    DeviceKind.GATEWAY: "gw-1",
}
_json = msgspec.json.Encoder()


# -- the stores, filled by boltwatch's writers -----------------------------------------------------


def _topic(kind: DeviceKind, device: str, channel: str = "telemetry") -> str:
    return f"boltwatch/v1/{SITE}/{kind.value}/{device}/{channel}"


def _full(kind: DeviceKind, ts: int, seq: int) -> bytes:
    """A reading with every field of the kind set, each inside its range."""
    fields: dict[str, Any] = {"ts": ts, "seq": seq}
    for j, info in enumerate(FIELD_INFO[kind]):
        if info.name == "vib_ms2":
            fields[info.name] = [0.5, -1.25, 3.0, 1e-3]
        else:
            fields[info.name] = min(max(info.lo, 0.0) + 1.5 + j, info.hi)
    return _json.encode(fields)


def _messages() -> list[tuple[str, bytes]]:
    out: list[tuple[str, bytes]] = []
    devices = [(DeviceKind.CBOLT, b) for b in BOLTS] + list(DEVICES.items())
    for kind, device in devices:
        for seq, ts in enumerate((T0, T0 + 60_000), start=1):
            out.append((_topic(kind, device), _full(kind, ts, seq)))
        event = (
            {"type": "tightened", "torque_nm": 250, "preload_kn": 61.5, "operator": "ana"}
            if kind is DeviceKind.CBOLT
            else {"type": "job_start", "job_id": "j-1"}
        )
        out.append((_topic(kind, device, "event"), _json.encode({**event, "ts": T0, "seq": 3})))
    return out


def _batch() -> DecodedBatch:
    batch = TelemetryDecoder(clock=lambda: T0 / 1000 + 3_600.0).decode_batch(_messages())
    assert batch.errors == []
    return batch


@dataclass(frozen=True)
class Files:
    """The two SQLite files Grafana reads, by datasource uid."""

    by_uid: dict[str, Path]


@pytest.fixture(scope="module")
def files(tmp_path_factory: pytest.TempPathFactory) -> Files:
    folder = tmp_path_factory.mktemp("store")
    with Store(folder) as store:
        bad = (_topic(DeviceKind.CBOLT, BOLTS[0]), b"\xff not json")
        decoded = TelemetryDecoder(clock=lambda: T0 / 1000).decode_batch([bad])
        dead = [
            DeadLetter(*bad, field=e.field, reason=e.reason, received_ms=T0)
            for _, e in decoded.errors
        ]
        store.write(_batch(), dead, received_ms=T0 + 90_000)
        store.rollup(now_ms=T0 + 120_000)
    alerts = AlertStore(str(folder / "alerts.db"))
    rows: list[dict[str, Any]] = [
        {
            "device_id": BOLTS[0],
            "kind": "loosening",
            "device_kind": "cbolt",
            "site": SITE,
            "grp": "T1-flange-top",
            "severity": 2,
            "ms": T0,
            "explanation": "preload 43.0 kN = 89 % of settled 48.2 kN",
            "data": {
                "baseline_kn": 48.2,
                "ratio": 0.89,
                "slope_pct_per_day": -19.4,
                "hours_to_alarm_line": 24.0,
                "level_kn": 43.0,
            },
            "late": False,
            "inactive": 0,
        },
        *(
            {
                "device_id": device,
                "kind": "sensor_fault",
                "device_kind": kind.value,
                "site": SITE,
                "grp": "",
                "severity": 1,
                "ms": T0,
                "explanation": "stuck sensor",
                "data": {},
                "late": False,
                "inactive": 0,
            }
            for kind, device in DEVICES.items()
        ),
    ]
    ids = alerts.upsert(rows)
    active = []
    for stored in alerts.load(ids):
        a = stored.alert
        a.state, a.active_ms = AlertState.ACTIVE, T0 + 1_000
        active.append(a)
    alerts.record([], active, [(i, T0 + 1_000, Transition.ACTIVATED, "") for i in ids])
    alerts.acknowledge(ids[0], "ana", T0 + 2_000, comment="checking it")
    alerts.add_silence(Silence(0, T0, T0 + DAY_MS, "ana", "maintenance", BOLTS[1], "", ""))
    alerts.close()
    return Files({"boltwatch-store": folder / DB_FILE, "boltwatch-alerts": folder / "alerts.db"})


# -- walking a dashboard ----------------------------------------------------------------------


def _targets(board: dict[str, Any]) -> Iterator[tuple[str, dict[str, Any]]]:
    """Every query of a dashboard, with where it is: panels (rows included), annotations."""
    stack = list(board.get("panels", []))
    while stack:
        panel = stack.pop(0)
        stack.extend(panel.get("panels", []))
        for t in panel.get("targets", []):
            yield f"panel {panel.get('title')!r}", t
    for a in board.get("annotations", {}).get("list", []):
        if "target" in a:
            yield f"annotation {a['name']!r}", {**a["target"], "datasource": a["datasource"]}


def _variables(board: dict[str, Any]) -> list[dict[str, Any]]:
    return list(board.get("templating", {}).get("list", []))


def _all_flavours() -> dict[str, dict[str, dict[str, Any]]]:
    return {f: all_dashboards(f) for f in FLAVOURS}


BOARDS = _all_flavours()


def _cases() -> list[tuple[str, str]]:
    return [(f, uid) for f, boards in BOARDS.items() for uid in boards]


# -- schema, uids, determinism --------------------------------------------------------------------


@pytest.fixture(scope="module")
def validator() -> jsonschema.Draft7Validator:
    schema = json.loads(SCHEMA.read_text())
    jsonschema.Draft7Validator.check_schema(schema)
    return jsonschema.Draft7Validator(schema)


def test_the_schema_names_its_source_package_and_version() -> None:
    schema = json.loads(SCHEMA.read_text())
    assert f"@grafana/schema@{SCHEMA_VERSION}" in schema["$comment"]
    readme = (SCHEMA.parent / "README.md").read_text()
    assert f"@grafana/schema@{SCHEMA_VERSION}" in readme
    assert schema["definitions"]["Panel"]["additionalProperties"] is False  # strict, not open


@pytest.mark.parametrize(("flavour", "uid"), _cases())
def test_every_dashboard_validates_against_grafanas_schema(
    validator: jsonschema.Draft7Validator, flavour: str, uid: str
) -> None:
    board = BOARDS[flavour][uid]
    errors = [f"{e.json_path}: {e.message[:300]}" for e in validator.iter_errors(board)]
    assert errors == []
    assert board["uid"] == uid
    assert board["panels"], uid
    ids = [p["id"] for p in _panels(board)]
    assert ids == list(range(1, len(ids) + 1))


def test_a_key_grafana_does_not_know_is_refused(validator: jsonschema.Draft7Validator) -> None:
    board = json.loads(json.dumps(BOARDS["sqlite"]["boltwatch-fleet"]))
    board["panels"][1]["colour"] = "red"
    assert list(validator.iter_errors(board))


def _panels(board: dict[str, Any]) -> list[dict[str, Any]]:
    out: list[dict[str, Any]] = []
    for p in board["panels"]:
        out.append(p)
        out.extend(p.get("panels", []))
    return out


def test_uids_are_stable_and_the_json_deterministic() -> None:
    again = _all_flavours()
    for flavour in FLAVOURS:
        assert list(again[flavour]) == list(BOARDS[flavour])
        for uid, board in BOARDS[flavour].items():
            first = json.dumps(board, sort_keys=True)
            assert json.dumps(again[flavour][uid], sort_keys=True) == first, uid
    uids = {f: list(b) for f, b in BOARDS.items()}
    assert all(u == uids["sqlite"] for u in uids.values())  # the flavour does not change them
    expected_devices = {f"boltwatch-{k.value}" for k in DeviceKind}
    assert expected_devices <= set(uids["sqlite"])
    for uid in uids["sqlite"]:
        assert re.fullmatch(r"[A-Za-z0-9_-]{1,40}", uid), uid


def test_every_query_reads_back_through_the_sdk_runtime() -> None:
    cogplugins.register_default_plugins()  # the SDK's own (prometheus)
    register_variants()
    seen = 0
    for boards in BOARDS.values():
        for board in boards.values():
            for _, target in _targets(board):
                hint = str(target["datasource"]["type"])
                decoded = cogruntime.dataquery_from_json(dict(target), hint)
                assert type(decoded).__name__ != "UnknownDataquery", target
                back = json.loads(json.dumps(decoded, default=_to_json))
                assert back == target
                seen += 1
    assert seen > 100


def _to_json(obj: Any) -> Any:
    return obj.to_json()


def test_iso_zones_are_the_detectors() -> None:
    for edge, zone in zip(ISO_10816_3_MMS, "BCD", strict=True):
        assert iso_zone(edge) == zone
        assert iso_zone(edge - 1e-6) == "ABC"["BCD".index(zone)]


# -- SQLite: every query runs against the writers' files ----------------------------------------


def _run(files: Files, uid: str, sql: str) -> list[tuple[Any, ...]]:
    path = files.by_uid[uid]
    conn = sqlite3.connect(f"file:{path}?mode=ro", uri=True)  # as provisioned: read-only
    try:
        return conn.execute(sql).fetchall()
    finally:
        conn.close()


def _values(files: Files, var: dict[str, Any], values: dict[str, list[str]]) -> list[str]:
    """What the variable holds on a fresh dashboard: its current value, "All" expanded."""
    if var["type"] == "custom":
        options = [str(o["value"]) for o in var.get("options", [])]
        current = var.get("current", {}).get("value")
        return options if current == "$__all" else [str(current)]
    assert var["type"] == "query", var
    rows = _run(files, var["datasource"]["uid"], _substitute(var["query"], values, DAY_MS))
    found = [str(r[0]) for r in rows]
    assert found, f"variable {var['name']}: {var['query']} returned nothing"
    if var.get("current", {}).get("value") == "$__all":
        return found
    return found[:1]


def _substitute(text: str, values: dict[str, list[str]], span_ms: int) -> str:
    """Grafana's interpolation of what the SQLite queries use: ``$__from``/``$__to`` (epoch
    ms), ``${var:pipe}``, ``${var:regex}``, ``${var}`` and ``$var``."""
    text = text.replace("$__from", str(TO_MS - span_ms)).replace("$__to", str(TO_MS))

    def one(m: re.Match[str]) -> str:
        name, fmt = m["name"] or m["bare"], m["fmt"]
        vals = values[name]
        if fmt == "pipe":
            return "|".join(vals)
        if fmt == "regex":
            escaped = [re.escape(v) for v in vals]
            return escaped[0] if len(escaped) == 1 else "(" + "|".join(escaped) + ")"
        assert len(vals) == 1, (name, vals)
        return vals[0]

    pattern = r"\$\{(?P<name>\w+)(?::(?P<fmt>\w+))?\}|\$(?P<bare>[A-Za-z]\w*)"
    out = re.sub(pattern, one, text)
    assert "$" not in out.replace("'$.", ""), out
    return out


SPANS = {
    "an hour (raw readings)": 3_600_000,
    "three days (1 m rollups)": 3 * DAY_MS,
    "a year (1 h rollups)": 365 * DAY_MS,
}


@pytest.mark.parametrize("uid", list(BOARDS["sqlite"]))
@pytest.mark.parametrize("span", list(SPANS))
def test_every_sqlite_query_runs_on_the_stores_and_returns_rows(
    files: Files, uid: str, span: str
) -> None:
    board = BOARDS["sqlite"][uid]
    if uid == "boltwatch-joint":
        board = all_dashboards("sqlite", registry=load_registry(REGISTRY))[uid]
    values: dict[str, list[str]] = {}
    for var in _variables(board):
        values[var["name"]] = _values(files, var, values)
    queries = [(where, t) for where, t in _targets(board) if t["datasource"]["uid"] in files.by_uid]
    assert queries
    for where, target in queries:
        assert target["rawQueryText"] == target["queryText"]
        assert set(target["timeColumns"]) <= {
            "time",
            "timeEnd",
            "last_seen",
            "last_time",
            "since",
            "last_event",
            "starts",
            "ends",
        }
        sql = _substitute(target["rawQueryText"], values, SPANS[span])
        rows = _run(files, target["datasource"]["uid"], sql)
        assert rows, f"{uid} {where} returned no row over {span}:\n{sql}"


def test_the_joint_without_a_registry_picks_bolts_by_hand(files: Files) -> None:
    board = BOARDS["sqlite"]["boltwatch-joint"]
    (joint,) = [v for v in _variables(board) if v["name"] == "joint"]
    assert (joint["type"], joint["multi"], joint["includeAll"]) == ("query", True, True)
    assert _values(files, joint, {"site": [SITE]}) == list(BOLTS)


def test_sqlite_times_are_epoch_seconds(files: Files) -> None:
    board = BOARDS["sqlite"]["boltwatch-cbolt"]
    (preload,) = [
        t
        for w, t in _targets(board)
        if "preload_kn" in t.get("rawQueryText", "")
        and "Preload" in w
        and "readings_cbolt" in t["rawQueryText"]
    ]
    assert "ts_ms / 1000.0 AS time" in preload["rawQueryText"]
    values = {"site": [SITE], "device": [BOLTS[0]]}
    rows = _run(files, "boltwatch-store", _substitute(preload["rawQueryText"], values, 3_600_000))
    assert rows[0][0] == T0 / 1000


# -- InfluxDB and VictoriaMetrics: the queries name what the writer writes -----------------------


@dataclass(frozen=True)
class Written:
    """What ingest's InfluxDB writer wrote: fields and tag keys per measurement, and the series
    VictoriaMetrics makes of them."""

    fields: dict[str, set[str]]
    tags: set[str]

    @property
    def vm_series(self) -> set[str]:
        return {f"{m}_{f}" for m, fields in self.fields.items() for f in fields}


@pytest.fixture(scope="module")
def written() -> Written:
    fields: dict[str, set[str]] = {}
    tags: set[str] = set()
    for cols in _batch().telemetry.values():
        for line in line_protocol(cols).splitlines():
            head, body, _ts = line.split(" ")
            measurement, *tag_pairs = head.split(",")
            tags.update(p.split("=")[0] for p in tag_pairs)
            fields.setdefault(measurement, set()).update(p.split("=")[0] for p in body.split(","))
    assert set(fields) == {k.value for k in DeviceKind}
    return Written(fields, tags)


def _queries(flavour: str, uid: str) -> list[str]:
    """Every query text of a flavour's dashboards that runs on ``uid``'s datasource."""
    out: list[str] = []
    for board in BOARDS[flavour].values():
        for _, t in _targets(board):
            if t["datasource"]["uid"] == uid:
                out.append(str(t.get("query") or t.get("rawSql") or t.get("expr")))
        out.extend(
            str(v["query"]) for v in _variables(board) if v.get("datasource", {}).get("uid") == uid
        )
    assert out
    return out


def test_influxql_names_only_written_measurements_fields_and_tags(written: Written) -> None:
    named = 0
    for query in _queries("influxdb", str(INFLUXQL.uid)):
        measurements = re.findall(r'FROM "([^"]+)"', query)
        aliases = set(re.findall(r'AS "([^"]+)"', query))
        names = set(re.findall(r'"([^"]+)"', query)) - set(measurements) - aliases
        allowed = set(written.tags)
        for m in measurements:
            assert m in written.fields, query
            allowed |= written.fields[m]
        assert names <= allowed, (query, names - allowed)
        assert aliases <= allowed, query
        named += len(names)
    assert named > 50


# SQL's own words in the queries (keywords, functions) and InfluxDB 3's time column.
_SQL_WORDS = frozenset(
    {"select", "distinct", "from", "where", "and", "group", "by", "order", "as", "avg", "max"}
    | {"last_value", "union", "time"}
)


def test_influxdb3_sql_names_only_written_measurements_fields_and_tags(written: Written) -> None:
    named = 0
    for query in _queries("influxdb-sql", str(INFLUX_SQL.uid)):
        for part in query.split(" UNION "):
            text = re.sub(r"'[^']*'", "''", part)  # string literals
            text = re.sub(r"\$__\w+\([^)]*\)", "", text)  # Grafana's macros
            (measurement,) = re.findall(r"\bFROM (\w+)", text)
            assert measurement in written.fields, query
            aliases = set(re.findall(r"\bAS (\w+)", text))
            words = set(re.findall(r"\b[a-z_][a-z0-9_]*\b", text)) - _SQL_WORDS - {measurement}
            allowed = written.fields[measurement] | written.tags
            assert words - aliases <= allowed, (query, words - aliases - allowed)
            assert aliases - {"time"} <= allowed, query
            named += len(words)
    assert named > 50


def test_metricsql_names_only_series_victoriametrics_makes(written: Written) -> None:
    named = 0
    for query in _queries("victoriametrics", str(VICTORIAMETRICS.uid)):
        series = set(re.findall(r"([a-z_][a-z0-9_]*)\{", query))
        series |= set(re.findall(r"label_values\(([a-z_][a-z0-9_]*)[{,]", query))
        labels = set(re.findall(r"(\w+)=~?\"", query))
        labels |= set(re.findall(r", (\w+)\)$", query))
        assert series <= written.vm_series, (query, series - written.vm_series)
        assert labels <= written.tags, query
        named += len(series)
    assert named > 30


# -- provisioning and export ------------------------------------------------------------------


@pytest.mark.parametrize("flavour", FLAVOURS)
def test_provisioning_holds_every_datasource_the_dashboards_use(flavour: str) -> None:
    files = provisioning(flavour, Servers(store_path="/srv/boltwatch"))
    sources = files["datasources"]["datasources"]
    uids = {s["uid"] for s in sources}
    used = {t["datasource"]["uid"] for b in BOARDS[flavour].values() for _, t in _targets(b)} | {
        v["datasource"]["uid"]
        for b in BOARDS[flavour].values()
        for v in _variables(b)
        if "datasource" in v
    }
    assert used - {MIXED.uid} <= uids
    store = next(s for s in sources if s["uid"] == "boltwatch-store")
    assert store["jsonData"]["path"] == f"/srv/boltwatch/{DB_FILE}"
    assert store["jsonData"]["pathOptions"] == "mode=ro"
    for name, content in files.items():
        assert yaml.safe_load(to_yaml(content)) == content, name
    text = to_yaml(files["datasources"])
    assert "Token" not in text or "${BOLTWATCH_INFLUX_TOKEN}" in text


def test_the_cli_choices_are_the_flavours() -> None:
    assert tuple(d.value for d in Datasource) == FLAVOURS


def test_export_writes_dashboards_and_provisioning(tmp_path: Path) -> None:
    out = tmp_path / "grafana"
    result = CliRunner().invoke(
        dashboards_app,
        [
            "export",
            "--out",
            str(out),
            "--datasource",
            "sqlite",
            "--registry",
            str(REGISTRY),
            "--store-path",
            "/srv/bw",
        ],
    )
    assert result.exit_code == 0, result.output
    written = sorted(p.relative_to(out).as_posix() for p in out.rglob("*") if p.is_file())
    assert written == sorted(
        [f"dashboards/{uid}.json" for uid in BOARDS["sqlite"]]
        + ["provisioning/dashboards/boltwatch.yaml", "provisioning/datasources/boltwatch.yaml"]
    )
    assert result.stdout.count("wrote ") == len(written)
    for uid in BOARDS["sqlite"]:
        assert json.loads((out / "dashboards" / f"{uid}.json").read_text())["uid"] == uid
    providers = yaml.safe_load((out / "provisioning/dashboards/boltwatch.yaml").read_text())
    assert providers["providers"][0]["options"]["path"] == str((out / "dashboards").resolve())
    sources = yaml.safe_load((out / "provisioning/datasources/boltwatch.yaml").read_text())
    assert {s["jsonData"]["path"] for s in sources["datasources"]} == {
        f"/srv/bw/{DB_FILE}",
        "/srv/bw/alerts.db",
    }


def test_export_with_a_bad_registry_fails_in_one_line(tmp_path: Path) -> None:
    bad = tmp_path / "registry.toml"
    bad.write_text("[[sites]]\nid = 'x y'\n")
    result = CliRunner().invoke(
        dashboards_app, ["export", "--out", str(tmp_path / "o"), "--registry", str(bad)]
    )
    assert result.exit_code == 2
    assert result.stderr.startswith("error: ")
    assert result.stderr.count("\n") == 1
    assert not (tmp_path / "o").exists()
