"""A registry edited through the API while ``boltwatch run`` runs is in force in that service
within seconds: a site and a machine put through ``/api/registry`` show on the console's fleet
page by their names, with no restart (the registry in the store: no ``registry.path``)."""

from __future__ import annotations

import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.integration.conftest import MosquittoServer, Reaper, boltwatch_run, free_port, wait_for
from tests.unit.test_alerts_api import http
from tests.unit.test_console import Browserless

pytestmark = pytest.mark.integration

BOLTWATCH = Path(sys.executable).parent / "boltwatch"
TOKEN = "registry-follow-token-3e1c"


@pytest.fixture
def service(mosquitto: MosquittoServer, reaper: Reaper, tmp_path: Path) -> Iterator[str]:
    port = free_port()
    config = tmp_path / "boltwatch.toml"
    config.write_text(
        f"""
[broker]
url = "{mosquitto.url}"
client_id = "registry-follow"
[ingest]
metrics_listen = ""
[store]
path = "{tmp_path / "data"}"
[alerts]
api_listen = "127.0.0.1:{port}"
api_token = "{TOKEN}"
"""
    )
    with boltwatch_run(reaper, config, tmp_path / "run.log"):
        yield f"http://127.0.0.1:{port}"


def test_an_api_edit_is_in_force_in_the_running_service(service: str) -> None:
    base = f"{service}/api/registry"
    status, body = http("PUT", f"{base}/sites/lab", {"id": "lab", "name": "The lab"}, token=TOKEN)
    assert status == 200, body
    assert body["applies"].startswith("in this service within")
    machine = {
        "device_id": "m-1",
        "site": "lab",
        "kind": "printer3d",
        "model": "Prusa MK4",
        "name": "Printer One",
    }
    status, body = http("PUT", f"{base}/machines/m-1", machine, token=TOKEN)
    assert status == 200, body
    assert body["version"] == 2
    browser = Browserless(service)
    assert browser.login(TOKEN) == 303

    def shown() -> bool:
        _, _, page = browser.request("GET", "/console/fleet/part")
        return "Printer One" in page and "The lab" in page

    wait_for(shown, 30, "the console to show the machine put through the API")
