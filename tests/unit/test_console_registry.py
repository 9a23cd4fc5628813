"""The registry on the console, over HTTP (a real server, the composed app of ``boltwatch run``):
entries edited and validated with the field named (nothing changed then), every change audited
under the user's name, a tightening done by hand recorded as an installation record, and a
registry that comes from a file shown read-only."""

from __future__ import annotations

import html
import json
import re
from collections.abc import Iterator
from pathlib import Path

import pytest

from alerts.campaign_tracker import CampaignTracker
from alerts.campaigns import CampaignStore
from sensors.registry import load_registry
from sensors.registry_store import RegistryStore
from tests.api_server import ApiServer
from tests.unit.test_console import (
    BOLT,
    READER,
    SAMPLE_REGISTRY,
    T0,
    TOKEN,
    Browserless,
    Env,
    _field,
)

JOINT = "T1-flange-top"


@pytest.fixture
def env(tmp_path: Path) -> Iterator[tuple[Env, str, RegistryStore]]:
    e = Env(tmp_path)
    assert e.web.source is not None
    store = RegistryStore(tmp_path / "registry")
    store.put(load_registry(SAMPLE_REGISTRY), author="setup", source="import sample")
    e.web.source.registry_store = store
    try:
        with ApiServer(e.web.app) as server:
            yield e, server.url, store
    finally:
        store.close()
        e.close()


def _entry(page: str) -> dict[str, object]:
    found = re.search(r'<textarea name="entry"[^>]*>(.*?)</textarea>', page, re.S)
    assert found, "no entry editor on the page"
    data = json.loads(html.unescape(found.group(1)))
    assert isinstance(data, dict)
    return data


def test_an_entry_edited_on_the_console_is_validated_and_audited(
    env: tuple[Env, str, RegistryStore],
) -> None:
    _e, url, store = env
    b = Browserless(url)
    b.login(TOKEN)
    status, _, page = b.request("GET", "/console/registry")
    assert status == 200
    assert f'href="/console/registry/joints/{JOINT}"' in page
    assert "registry-readonly" not in page
    status, _, page = b.request("GET", f"/console/registry/joints/{JOINT}")
    assert status == 200
    joint = _entry(page)
    assert joint["pattern"] == "circular"
    csrf = _field(page, "csrf")

    # Invalid edits: the field named, the text kept, nothing changed.
    for change, message in (
        ({"pattern": "hexagon"}, f"joints[{JOINT}].pattern"),
        ({"bolt_profile": "M99"}, "M99"),
        ({"bolts": [{"position": 40, "device_id": BOLT}]}, "position"),
    ):
        text = json.dumps({**joint, **change})
        status, _, body = b.request(
            "POST", f"/console/registry/joints/{JOINT}", {"csrf": csrf, "entry": text}
        )
        assert status == 422, body
        assert message in body
        assert "nothing was changed" in body
        assert store.version() == 1
    status, _, body = b.request(
        "POST", f"/console/registry/joints/{JOINT}", {"csrf": csrf, "entry": "{not json"}
    )
    assert status == 422
    assert "entry: not JSON" in body

    # A valid edit: a new version, audited under the user.
    renamed = json.dumps({**joint, "name": "Top flange, section 1"})
    status, headers, _ = b.request(
        "POST", f"/console/registry/joints/{JOINT}", {"csrf": csrf, "entry": renamed}
    )
    assert (status, headers["location"]) == (303, f"/console/registry/joints/{JOINT}")
    assert store.version() == 2
    (edited,) = [c for c in store.history("joints", JOINT) if c.version == 2]
    assert (edited.what, edited.author) == ("changed", "admin")
    current = store.current()
    assert current is not None
    assert next(j for j in current.joints if j.id == JOINT).name == "Top flange, section 1"
    _, _, page = b.request("GET", f"/console/joints/{JOINT}")
    assert "Top flange, section 1" in page  # the console shows the new registry at once

    # Add a gateway, remove it; removing a profile still in use is refused.
    gateway = {"device_id": "gw-new", "site": "windfarm-north", "name": "New gateway"}
    status, headers, body = b.request(
        "POST", "/console/registry/gateways", {"csrf": csrf, "entry": json.dumps(gateway)}
    )
    assert status == 303, body
    assert headers["location"] == "/console/registry/gateways/gw-new"
    status, _, _ = b.request(
        "POST", "/console/registry/gateways/gw-new", {"csrf": csrf, "remove": "1"}
    )
    assert status == 303
    status, _, body = b.request(
        "POST", "/console/registry/bolt_profiles/M36-10_9-HV", {"csrf": csrf, "remove": "1"}
    )
    assert status == 422
    assert "M36-10_9-HV" in body
    assert [c.what for c in store.history("gateways", "gw-new")] == ["added", "removed"]
    assert store.version() == 4


def test_a_tightening_recorded_by_hand_becomes_an_installation_record(
    env: tuple[Env, str, RegistryStore], tmp_path: Path
) -> None:
    e, url, store = env
    assert e.web.source is not None
    tracker = CampaignTracker(
        CampaignStore(tmp_path / "campaigns.db"), e.pipe, lambda _ids: {}, clock=lambda: e.now
    )
    e.web.source.campaigns = tracker
    tracker.store.open(title="Retighten", devices=[BOLT], before={}, by="ana", ms=T0)
    b = Browserless(url)
    b.login(TOKEN)
    _, _, page = b.request("GET", f"/console/devices/{BOLT}")
    assert 'id="record-tightening"' in page
    form = {
        "csrf": _field(page, "csrf"),
        "ts": "2026-03-01T02:30",
        "torque_nm": "2150",
        "preload_kn": "468",
        "tightening_pass": "3",
        "tool": "Plarad MX-EC 40",
        "tool_serial": "PX-1187",
        "tool_calibrated": "2026-01-15",
        "operator": "kim",
        "note": "after the storm",
    }
    for missing in ("tool", "tool_calibrated", "torque_nm"):
        status, _, body = b.request(
            "POST",
            f"/console/devices/{BOLT}/tightenings",
            {k: v for k, v in form.items() if k != missing},
        )
        assert status == 422
        assert f"{missing}: required" in body
    assert store.version() == 1
    status, headers, body = b.request("POST", f"/console/devices/{BOLT}/tightenings", form)
    assert status == 303, body
    assert headers["location"] == f"/console/devices/{BOLT}"
    current = store.current()
    assert current is not None
    (record,) = [i for i in current.history(BOLT) if i.tightening_pass == 3]
    assert (record.operator, record.tool_serial, record.torque_nm) == ("kim", "PX-1187", 2150.0)
    assert record.ts.isoformat() == "2026-03-01T02:30:00+00:00"
    (change,) = [c for c in store.history("installations") if c.version == 2]
    assert change.author == "admin"
    _, _, page = b.request("GET", f"/console/devices/{BOLT}")
    assert "Plarad MX-EC 40" in page  # in the bolt's history at once
    task = tracker.store.task(1, BOLT)
    assert task is not None
    assert (task.state, task.retightened_by, task.torque_nm) == ("retightened", "kim", 2150.0)
    tracker.store.close()


def test_readers_and_a_file_registry_cannot_edit(env: tuple[Env, str, RegistryStore]) -> None:
    e, url, store = env
    reader = Browserless(url)
    reader.login(READER)
    _, _, page = reader.request("GET", f"/console/registry/joints/{JOINT}")
    assert '<pre id="registry-entry">' in page
    status, _, _ = reader.request(
        "POST",
        f"/console/registry/joints/{JOINT}",
        {"csrf": _field(page, "csrf"), "entry": "{}"},
    )
    assert status == 403
    assert e.web.source is not None
    e.web.source.registry_store = None  # the service runs from registry.path
    admin = Browserless(url)
    admin.login(TOKEN)
    _, _, page = admin.request("GET", "/console/registry")
    assert 'id="registry-readonly"' in page
    _, _, page = admin.request("GET", f"/console/registry/joints/{JOINT}")
    status, _, body = admin.request(
        "POST",
        f"/console/registry/joints/{JOINT}",
        {"csrf": _field(page, "csrf"), "entry": "{}"},
    )
    assert status == 409
    assert "registry.path" in body
    _, _, page = admin.request("GET", f"/console/devices/{BOLT}")
    assert 'id="record-tightening"' not in page
    assert store.version() == 1
