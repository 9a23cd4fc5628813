"""Retightening campaigns on the console, over HTTP (a real server, the composed app of
``boltwatch run``): opened from a joint's page, a retightening recorded by hand, cancelled; the
forms' errors name their field; readers and requests without the CSRF token are refused."""

from __future__ import annotations

import math
import re
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Iterator, Sequence
from pathlib import Path

import pytest

from alerts.campaign_tracker import CampaignTracker
from alerts.campaigns import CampaignStore
from detection.preload import Outlook
from tests.api_server import ApiServer
from tests.unit.test_console import BOLT, OTHER, READER, T0, TOKEN, Browserless, Env, _field

JOINT = "T1-flange-top"
ELSEWHERE = "cb-oa12-g2-p1"  # a bolt of another joint


def _outlook(ids: Sequence[str]) -> dict[str, Outlook]:
    level = {BOLT: 186.0, OTHER: 290.0}
    return {
        d: Outlook(level[d], 300.0, True, 0.0, 20.0, T0 / 1000 + 1800, math.nan, 210.0, math.inf)
        for d in ids
        if d in level
    }


@pytest.fixture
def env(tmp_path: Path) -> Iterator[tuple[Env, str, CampaignTracker]]:
    e = Env(tmp_path)
    assert e.web.source is not None
    e.web.source.outlook = _outlook
    tracker = CampaignTracker(
        CampaignStore(tmp_path / "campaigns.db"), e.pipe, _outlook, clock=lambda: e.now
    )
    e.web.source.campaigns = tracker
    try:
        with ApiServer(e.web.app) as server:
            yield e, server.url, tracker
    finally:
        tracker.store.close()
        e.close()


def _open_form(page: str, **change: object) -> dict[str, str]:
    form = {
        "csrf": _field(page, "csrf"),
        "scope": f"joint:{JOINT}",
        "title": "Retighten the top flange",
        "reason": "two bolts low",
        "assignee": "kim",
        "due": "2026-03-09",
    }
    form.update({k: str(v) for k, v in change.items()})
    return form


def _post_bolts(b: Browserless, form: dict[str, str], bolts: list[str]) -> tuple[int, str, str]:
    """POST /console/campaigns with one ``bolt`` field per bolt (Browserless posts a dict: the
    repeated fields go through its opener here)."""
    body = urllib.parse.urlencode([*form.items(), *(("bolt", d) for d in bolts)])
    req = urllib.request.Request(b.base + "/console/campaigns", data=body.encode(), method="POST")  # noqa: S310
    req.add_header("Content-Type", "application/x-www-form-urlencoded")
    req.add_header("Cookie", "; ".join(f"{k}={v}" for k, v in b.cookies.items()))
    try:
        with b._opener.open(req, timeout=10) as r:
            return r.status, r.headers.get("location", ""), r.read().decode()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.headers.get("location", ""), exc.read().decode()


def test_a_campaign_opened_from_the_joint_page_and_recorded_by_hand(
    env: tuple[Env, str, CampaignTracker],
) -> None:
    e, url, tracker = env
    b = Browserless(url)
    b.login(TOKEN)
    status, _, page = b.request("GET", f"/console/joints/{JOINT}")
    assert status == 200
    assert 'id="open-campaign"' in page
    # The bolt with an alert is ticked already; the others are offered.
    assert re.search(rf'value="{BOLT}" checked', page)
    assert re.search(r'value="cb-wtg07-t1-p07">', page)

    status, where, body = _post_bolts(b, _open_form(page), [BOLT, OTHER])
    assert status == 303, body
    assert where == "/console/campaigns/1"
    made = tracker.store.get(1)
    assert made is not None
    assert (made.title, made.scope, made.assignee, made.opened_by) == (
        "Retighten the top flange",
        f"joint:{JOINT}",
        "kim",
        "admin",
    )
    assert [(t.device_id, t.before_kn) for t in made.tasks] == [(BOLT, 186.0), (OTHER, 290.0)]
    assert set(made.alert_ids) == {e.ids[BOLT], e.ids[OTHER]}
    assert made.due_ms == 1_773_100_799_000  # 2026-03-09T23:59:59Z

    status, _, page = b.request("GET", "/console/campaigns/1")
    assert status == 200
    assert f'data-device="{BOLT}" data-state="open"' in page
    assert "186.0 kN" in page
    status, headers, _ = b.request(
        "POST",
        f"/console/campaigns/1/tasks/{BOLT}",
        {
            "csrf": _field(page, "csrf"),
            "torque_nm": "410",
            "preload_kn": "301.5",
            "operator": "kim",
        },
    )
    assert (status, headers.get("location")) == (303, "/console/campaigns/1")
    task = tracker.store.task(1, BOLT)
    assert task is not None
    assert (task.state, task.retightened_by, task.torque_nm, task.preload_kn) == (
        "retightened",
        "kim",
        410.0,
        301.5,
    )
    alert = e.alerts.get(e.ids[BOLT])
    assert alert is not None
    assert alert.alert.ack_by == "campaign #1 (admin)"
    _, _, page = b.request("GET", "/console/campaigns")
    assert 'data-campaign="1" data-state="open"' in page
    _, _, page = b.request("GET", f"/console/joints/{JOINT}")
    assert "#1 Retighten the top flange</a>: open, 0 / 2 bolts done" in page

    _, _, page = b.request("GET", "/console/campaigns/1")
    status, _, _ = b.request(
        "POST", "/console/campaigns/1/cancel", {"csrf": _field(page, "csrf"), "reason": "storm"}
    )
    assert status == 303
    done = tracker.store.get(1)
    assert done is not None
    assert done.state == "cancelled"
    assert tracker.store.log(1)[-1][1:] == ("admin", "cancelled: storm")


def test_campaign_forms_name_the_wrong_field_and_change_nothing(
    env: tuple[Env, str, CampaignTracker],
) -> None:
    _e, url, tracker = env
    b = Browserless(url)
    b.login(TOKEN)
    _, _, page = b.request("GET", f"/console/joints/{JOINT}")
    cases = [
        (_open_form(page, title=""), [BOLT], "title: required"),
        (_open_form(page), [], "devices: choose at least one bolt"),
        (
            _open_form(page),
            ["no-such-bolt"],
            "bolt: &#39;no-such-bolt&#39; is not a registered bolt",
        ),
        (_open_form(page), [BOLT, ELSEWHERE], f"bolt: every bolt must be of joint {JOINT}"),
        (_open_form(page, due="9 March"), [BOLT], "due: a date as YYYY-MM-DD"),
        (_open_form(page, due="2020-01-01"), [BOLT], "due_ms: the due date is already past"),
    ]
    for form, bolts, message in cases:
        status, _, body = _post_bolts(b, form, bolts)
        assert status == 422, (message, body)
        assert message in body
    assert tracker.store.campaigns() == []
    status, _, _ = _post_bolts(
        b, {k: v for k, v in _open_form(page).items() if k != "csrf"}, [BOLT]
    )
    assert status == 403
    assert tracker.store.campaigns() == []

    status, _, _ = _post_bolts(b, _open_form(page), [BOLT])
    assert status == 303
    _, _, page = b.request("GET", "/console/campaigns/1")
    for torque, message in (("", "torque_nm: required"), ("-1", "torque_nm: must be above 0")):
        status, _, body = b.request(
            "POST",
            f"/console/campaigns/1/tasks/{BOLT}",
            {"csrf": _field(page, "csrf"), "torque_nm": torque},
        )
        assert status == 422
        assert message in body
    status, _, body = b.request(
        "POST",
        f"/console/campaigns/1/tasks/{OTHER}",
        {"csrf": _field(page, "csrf"), "torque_nm": "5"},
    )
    assert status == 404
    assert "no open task" in body
    task = tracker.store.task(1, BOLT)
    assert task is not None
    assert task.state == "open"


def test_a_reader_sees_campaigns_but_cannot_open_one(env: tuple[Env, str, CampaignTracker]) -> None:
    _e, url, tracker = env
    tracker.store.open(title="Retighten", devices=[BOLT], before={}, by="ana", ms=T0)
    b = Browserless(url)
    b.login(READER)
    status, _, page = b.request("GET", f"/console/joints/{JOINT}")
    assert status == 200
    assert 'id="open-campaign"' not in page
    _, _, page = b.request("GET", "/console/campaigns/1")
    assert "Record a retightening" not in page
    status, _, _ = _post_bolts(b, _open_form(page), [BOLT])
    assert status == 403
    status, _, _ = b.request("GET", "/console/campaigns/2")
    assert status == 404
