"""``boltwatch alerts ...`` against the real alerts API served by uvicorn on a free port.

The alerts come from the real pipeline (detection events, injected clock) into a real SQLite
store; the API runs in a background thread with its own event loop; the commands run through
typer's CliRunner and talk HTTP to it. Nothing is faked.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from typer.testing import CliRunner, Result

from alerts.api import create_app
from alerts.pipeline import AlertPipeline
from alerts.rules import load_rules
from alerts.store import AlertStore
from boltwatch.cli import app
from detection.base import DetectionEvent, EventKind, Severity
from detection.events import BatchOutcome
from tests.api_server import ApiServer
from tests.integration.conftest import free_port

pytestmark = pytest.mark.integration

T0 = 1_772_323_200_000  # 2026-03-01T00:00:00Z
MIN = 60_000
TOKEN = "cli-test-token-8c1e"


class Clock:
    def __init__(self) -> None:
        self.ms = T0

    def __call__(self) -> int:
        return self.ms


@dataclass
class Service:
    url: str
    store: AlertStore
    clock: Clock
    ids: dict[str, int]


def _event(device: str, kind: EventKind, site: str, sev: Severity) -> DetectionEvent:
    return DetectionEvent(
        device_id=device,
        kind=kind,
        severity=sev,
        ts_ms=T0,
        score=0.9,
        explanation=f"{kind.value} on {device}",
        detector="test",
        site=site,
        device_kind="cbolt",
    )


@pytest.fixture
def service(tmp_path: Path) -> Iterator[Service]:
    clock = Clock()
    store = AlertStore(tmp_path / "alerts.db")
    pipe = AlertPipeline(load_rules(None), store, {}, clock=clock)
    pipe.take(
        BatchOutcome(
            events=[
                _event("b1", EventKind.LOOSENING, "s1", Severity.WARNING),
                _event("b2", EventKind.PRELOAD_LOW, "s2", Severity.CRITICAL),
            ]
        )
    )
    pipe.evaluate()
    ids = {a.device_id: a.id for a in store.alerts()}
    with ApiServer(create_app(store, token=TOKEN, clock=clock)) as server:
        yield Service(server.url, store, clock, ids)
    store.close()


def run(service: Service, *args: str, token: str = TOKEN) -> Result:
    """``boltwatch alerts ARGS`` with the URL and token from the environment, as an operator."""
    env = {"BOLTWATCH_API_URL": service.url, "BOLTWATCH_API_TOKEN": token, "COLUMNS": "160"}
    return CliRunner().invoke(app, ["alerts", *args], env=env)


def assert_one_line_error(result: Result, expected: str) -> None:
    assert result.exit_code == 2, result.output
    assert result.stdout == ""
    assert result.stderr == f"error: {expected}\n"
    assert isinstance(result.exception, SystemExit)  # no traceback, a clean exit


def test_list_table_and_json(service: Service) -> None:
    result = run(service, "list")
    assert result.exit_code == 0, result.output
    assert "alerts (2)" in result.stdout
    for text in ("b1", "b2", "loosening", "preload_low", "critical", "warning", "active"):
        assert text in result.stdout

    result = run(service, "list", "--json", "--site", "s2")
    assert result.exit_code == 0, result.output
    (alert,) = json.loads(result.stdout)["alerts"]
    assert (alert["device_id"], alert["severity"], alert["state"]) == ("b2", "critical", "active")

    result = run(service, "list", "--json", "--state", "pending")
    assert json.loads(result.stdout) == {"alerts": []}
    result = run(service, "list", "--state", "burning")
    assert_one_line_error(
        result, "state: 'burning' is not a state (pending, active, cleared) (400)"
    )


def test_show(service: Service) -> None:
    b1 = service.ids["b1"]
    result = run(service, "show", str(b1))
    assert result.exit_code == 0, result.output
    assert f"alert {b1}  warning  active  loosening on b1 (s1)" in result.stdout
    assert "history" in result.stdout
    assert "activated" in result.stdout

    result = run(service, "show", str(b1), "--json")
    shown = json.loads(result.stdout)
    assert [h["what"] for h in shown["history"]] == ["event", "activated"]
    assert shown["active_ms"] == T0

    assert_one_line_error(run(service, "show", "999"), "no alert 999")


def test_ack_unack_and_comment(service: Service) -> None:
    b1 = service.ids["b1"]
    service.clock.ms = T0 + 5 * MIN
    result = run(service, "ack", str(b1), "--by", "alice", "--comment", "on my way")
    assert result.exit_code == 0, result.output
    assert result.stdout == f"alert {b1} acknowledged by alice\n"
    found = service.store.get(b1)
    assert found is not None
    assert (found.alert.ack_by, found.alert.ack_ms) == ("alice", T0 + 5 * MIN)
    assert found.alert.comments == [("alice", T0 + 5 * MIN, "on my way")]

    result = run(service, "comment", str(b1), "--by", "bob", "--text", "retorqued to 300 N·m")
    assert result.exit_code == 0, result.output
    assert result.stdout == f"alert {b1}: 2 comment(s)\n"

    result = run(service, "unack", str(b1), "--by", "bob")
    assert result.exit_code == 0, result.output
    found = service.store.get(b1)
    assert found is not None
    assert not found.alert.acknowledged

    assert_one_line_error(run(service, "ack", "999", "--by", "alice"), "no alert 999")
    assert_one_line_error(
        run(service, "ack", str(b1), "--by", " "), "by: required (must not be empty) (422)"
    )


def test_silence_silences_unsilence(service: Service) -> None:
    result = run(
        service,
        "silence",
        "--site",
        "s1",
        "--duration",
        "2h",
        "--author",
        "ops",
        "--reason",
        "retightening campaign",
        "--json",
    )
    assert result.exit_code == 0, result.output
    silence = json.loads(result.stdout)
    assert (silence["starts_ms"], silence["ends_ms"]) == (T0, T0 + 120 * MIN)
    assert silence["site"] == "s1"
    sid = silence["id"]

    result = run(service, "silences")
    assert result.exit_code == 0, result.output
    assert "silences in force (1)" in result.stdout
    assert "retightening" in result.stdout
    assert [s["id"] for s in json.loads(run(service, "silences", "--json").stdout)["silences"]] == [
        sid
    ]

    service.clock.ms = T0 + 10 * MIN
    result = run(service, "unsilence", str(sid))
    assert result.exit_code == 0, result.output
    assert result.stdout == f"silence {sid} ended\n"
    assert json.loads(run(service, "silences", "--json").stdout) == {"silences": []}
    everything = json.loads(run(service, "silences", "--all", "--json").stdout)["silences"]
    assert [(s["id"], s["ends_ms"]) for s in everything] == [(sid, T0 + 10 * MIN)]

    assert_one_line_error(run(service, "unsilence", "999"), "no silence 999")


def test_silence_errors(service: Service) -> None:
    common = ["--author", "ops", "--reason", "r"]
    assert_one_line_error(
        run(service, "silence", "--duration", "2h", *common),
        "give --device, --site or --kind (what to silence)",
    )
    assert_one_line_error(
        run(service, "silence", "--device", "b1", "--duration", "soon", *common),
        "duration: 'soon' is not a duration like 90s, 5m, 2h, 1d (422)",
    )
    assert service.store.silences() == []


def test_wrong_token_is_one_line_and_never_echoed(service: Service) -> None:
    for args in (["list"], ["show", "1"], ["ack", "1", "--by", "x"], ["silences"]):
        result = run(service, *args, token="not-the-token-77")  # noqa: S106 - a wrong one
        assert_one_line_error(result, "the API refused the token (401)")
        assert "not-the-token-77" not in result.output
    found = service.store.get(service.ids["b1"])
    assert found is not None
    assert not found.alert.acknowledged


def test_missing_token_is_a_usage_error(service: Service) -> None:
    result = CliRunner().invoke(
        app, ["alerts", "list", "--url", service.url], env={"BOLTWATCH_API_TOKEN": None}
    )
    assert result.exit_code == 2
    assert "--token" in result.stderr


def test_unreachable_api(service: Service) -> None:
    url = f"http://127.0.0.1:{free_port()}"
    result = CliRunner().invoke(
        app, ["alerts", "list", "--url", url], env={"BOLTWATCH_API_TOKEN": TOKEN}
    )
    assert result.exit_code == 2
    assert result.stderr.startswith(f"error: cannot reach the alerts API at {url} (")
    assert result.stderr.count("\n") == 1
    assert TOKEN not in result.output

    result = CliRunner().invoke(
        app, ["alerts", "list", "--url", "ftp://example.org"], env={"BOLTWATCH_API_TOKEN": TOKEN}
    )
    assert_one_line_error(result, "--url: 'ftp://example.org' is not an http:// or https:// URL")
