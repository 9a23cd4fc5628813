"""``boltwatch dashboards push`` against a FAKE Grafana: NOT a live Grafana.

Grafana cannot be installed on these machines. :class:`FakeGrafana` is a small threading
``http.server`` on 127.0.0.1 standing in for Grafana's HTTP API: it serves only the calls
``push`` makes and checks them as Grafana's API documentation describes them
(https://grafana.com/docs/grafana/latest/developer-resources/api-reference/http-api/):

* every request carries ``Authorization: Bearer <service account token>`` (401 otherwise);
* ``GET /api/folders`` lists folders; ``POST /api/folders`` takes ``{"title", "uid"}`` and
  refuses a uid that exists (409);
* ``POST /api/dashboards/db`` takes ``{"dashboard": {...}, "folderUid": ..., "overwrite": ...,
  "message": ...}``, the dashboard with a ``uid``, a ``title`` and ``"id": null``; a uid already
  saved is refused without ``overwrite`` (412, ``version-mismatch``, as Grafana answers), and
  each save bumps the dashboard's version.

It also refuses on demand (a 400 for one uid) to check that a refusal ends the command with one
line naming it and exit status 2. What a real Grafana does with the dashboards (rendering,
running the queries) is not tested here: see ``tests/unit/test_grafana_dashboards.py`` for the
schema validation and the queries run against real stores.
"""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest
from typer.testing import CliRunner, Result

from boltwatch.dashboards_cli import PUSH_MESSAGE, dashboards_app
from dashboards.grafana import all_dashboards
from tests.integration.conftest import free_port

pytestmark = pytest.mark.integration

TOKEN = "glsa_fake_token_4f2a"
UIDS = list(all_dashboards("influxdb"))


@dataclass
class Request:
    method: str
    path: str
    headers: dict[str, str]
    body: Any


@dataclass
class FakeGrafana:
    """State of the FAKE Grafana: its folders, dashboards, requests seen, refusals to make."""

    url: str = ""
    folders: dict[str, dict[str, Any]] = field(default_factory=dict)
    dashboards: dict[str, dict[str, Any]] = field(default_factory=dict)
    requests: list[Request] = field(default_factory=list)
    refuse_uid: str = ""
    violations: list[str] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def posted(self) -> list[dict[str, Any]]:
        return [
            r.body for r in self.requests if (r.method, r.path) == ("POST", "/api/dashboards/db")
        ]


def _handler(grafana: FakeGrafana) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        def log_message(self, format: str, *args: Any) -> None:
            pass

        def _answer(self, status: int, body: Any) -> None:
            data = json.dumps(body).encode()
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        def _handle(self, method: str) -> None:
            length = int(self.headers.get("Content-Length") or 0)
            raw = self.rfile.read(length) if length else b""
            body = json.loads(raw) if raw else None
            with grafana.lock:
                grafana.requests.append(Request(method, self.path, dict(self.headers), body))
                if self.headers.get("Authorization") != f"Bearer {TOKEN}":
                    self._answer(401, {"message": "Unauthorized"})
                    return
                try:
                    self._route(method, body)
                except (AssertionError, KeyError) as exc:
                    # Not as Grafana documents it: recorded, and the test fails at teardown.
                    grafana.violations.append(f"{method} {self.path}: {exc!r}")
                    self._answer(400, {"message": f"FAKE Grafana: bad request {exc!r}"})

        def _route(self, method: str, body: Any) -> None:
            route = (method, self.path.split("?")[0])
            if route == ("GET", "/api/folders"):
                self._answer(200, list(grafana.folders.values()))
            elif route == ("POST", "/api/folders"):
                self._create_folder(body)
            elif route == ("POST", "/api/dashboards/db"):
                self._save_dashboard(body)
            else:
                self._answer(404, {"message": "Not found"})

        def _create_folder(self, body: Any) -> None:
            assert isinstance(body, dict), body
            assert set(body) <= {"title", "uid", "parentUid"}, body
            uid = str(body["uid"])
            if uid in grafana.folders:
                self._answer(409, {"message": "a folder with the same uid already exists"})
                return
            folder = {"id": len(grafana.folders) + 1, "uid": uid, "title": body["title"]}
            grafana.folders[uid] = folder
            self._answer(200, folder)

        def _save_dashboard(self, body: Any) -> None:
            assert isinstance(body, dict), body
            assert set(body) <= {"dashboard", "folderUid", "folderId", "overwrite", "message"}
            board = body["dashboard"]
            assert isinstance(board, dict), board
            assert board["id"] is None, "a dashboard is saved by uid, its id null"
            assert board["uid"], "no uid"
            assert board["title"], "no title"
            assert isinstance(board["panels"], list), "no panels"
            assert isinstance(body["overwrite"], bool)
            if body.get("folderUid") and body["folderUid"] not in grafana.folders:
                self._answer(400, {"message": "folder not found"})
                return
            uid = str(board["uid"])
            if uid == grafana.refuse_uid:
                self._answer(400, {"message": "Dashboard title cannot be empty"})
                return
            old = grafana.dashboards.get(uid)
            if old is not None and not body["overwrite"]:
                self._answer(
                    412,
                    {
                        "message": "The dashboard has been changed by someone else",
                        "status": "version-mismatch",
                    },
                )
                return
            version = 1 if old is None else int(old["version"]) + 1
            grafana.dashboards[uid] = {"dashboard": board, "version": version, **body}
            self._answer(
                200,
                {
                    "id": list(grafana.dashboards).index(uid) + 1,
                    "uid": uid,
                    "url": f"/d/{uid}/slug",
                    "status": "success",
                    "version": version,
                    "slug": "slug",
                },
            )

        def do_GET(self) -> None:
            self._handle("GET")

        def do_POST(self) -> None:
            self._handle("POST")

    return Handler


@pytest.fixture
def grafana() -> Iterator[FakeGrafana]:
    state = FakeGrafana()
    server = ThreadingHTTPServer(("127.0.0.1", 0), _handler(state))
    state.url = f"http://127.0.0.1:{server.server_address[1]}"
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield state
    finally:
        server.shutdown()
        server.server_close()
        thread.join(5)
    assert state.violations == []


def push(url: str, *args: str, token: str = TOKEN) -> Result:
    return CliRunner().invoke(dashboards_app, ["push", "--url", url, "--token", token, *args])


def test_push_creates_the_folder_and_saves_every_dashboard_by_uid(grafana: FakeGrafana) -> None:
    result = push(grafana.url)
    assert result.exit_code == 0, result.output
    assert list(grafana.folders) == ["boltwatch"]
    assert all(r.headers["Authorization"] == f"Bearer {TOKEN}" for r in grafana.requests)
    posted = grafana.posted()
    assert [p["dashboard"]["uid"] for p in posted] == UIDS
    for p in posted:
        assert (p["folderUid"], p["overwrite"], p["message"]) == ("boltwatch", True, PUSH_MESSAGE)
    assert sorted(grafana.dashboards) == sorted(UIDS)
    assert result.stdout.count("pushed ") == len(UIDS)
    assert "created folder boltwatch" in result.stdout
    assert TOKEN not in result.output


def test_pushing_twice_replaces_the_same_dashboards(grafana: FakeGrafana) -> None:
    assert push(grafana.url).exit_code == 0
    first = grafana.posted()
    grafana.requests.clear()
    result = push(grafana.url)
    assert result.exit_code == 0, result.output
    assert not [r for r in grafana.requests if (r.method, r.path) == ("POST", "/api/folders")]
    again = grafana.posted()
    assert [p["dashboard"]["uid"] for p in again] == [p["dashboard"]["uid"] for p in first]
    assert again == first  # the same bodies: the dashboards are deterministic
    assert {d["version"] for d in grafana.dashboards.values()} == {2}
    assert "(version 2)" in result.stdout


def test_an_existing_folder_is_reused_and_general_needs_none(grafana: FakeGrafana) -> None:
    grafana.folders["ops-7"] = {"id": 7, "uid": "ops-7", "title": "Ops"}
    assert push(grafana.url, "--folder", "Ops").exit_code == 0
    assert {p["folderUid"] for p in grafana.posted()} == {"ops-7"}
    assert list(grafana.folders) == ["ops-7"]
    grafana.requests.clear()
    assert push(grafana.url, "--folder", "").exit_code == 0
    assert {p["folderUid"] for p in grafana.posted()} == {""}
    assert not [r for r in grafana.requests if r.path.startswith("/api/folders")]


def test_no_overwrite_is_refused_in_one_line(grafana: FakeGrafana) -> None:
    assert push(grafana.url).exit_code == 0
    result = push(grafana.url, "--no-overwrite")
    assert result.exit_code == 2
    assert result.stderr == (
        f"error: Grafana at {grafana.url} refused to save dashboard {UIDS[0]} (412): "
        "version-mismatch: The dashboard has been changed by someone else\n"
    )
    assert grafana.posted()[-1]["overwrite"] is False
    assert isinstance(result.exception, SystemExit)  # no traceback


def test_a_bad_request_is_named_and_stops_the_push(grafana: FakeGrafana) -> None:
    grafana.refuse_uid = UIDS[2]
    result = push(grafana.url)
    assert result.exit_code == 2
    assert result.stderr == (
        f"error: Grafana at {grafana.url} refused to save dashboard {UIDS[2]} (400): "
        "Dashboard title cannot be empty\n"
    )
    assert sorted(grafana.dashboards) == sorted(UIDS[:2])
    assert result.stdout.count("pushed ") == 2


def test_a_wrong_token_is_refused_in_one_line(grafana: FakeGrafana) -> None:
    result = push(grafana.url, token="not-the-token")  # noqa: S106 - a wrong one
    assert result.exit_code == 2
    assert result.stderr == (
        f"error: Grafana at {grafana.url} refused to list its folders (401): Unauthorized\n"
    )
    assert "not-the-token" not in result.output
    assert grafana.dashboards == {}


def test_an_unreachable_grafana_is_one_line() -> None:
    url = f"http://127.0.0.1:{free_port()}"
    result = push(url)
    assert result.exit_code == 2
    assert result.stderr.startswith(f"error: cannot reach Grafana at {url} to list its folders (")
    assert result.stderr.count("\n") == 1
    assert TOKEN not in result.output


def test_a_bad_url_or_empty_token_is_refused_before_any_request() -> None:
    result = push("grafana.local:3000")
    assert result.exit_code == 2
    assert "--url" in result.stderr
    result = push("http://127.0.0.1:1", token=" ")  # noqa: S106 - an empty one
    assert result.exit_code == 2
    assert "--token" in result.stderr
