"""Channel options: the registry, every shipped sample, errors that name the key, secrets kept out
of messages and reprs, and the pure parts of the channels (signatures, Retry-After, Alertmanager's
body)."""

from __future__ import annotations

import tomllib
from importlib.resources import files
from pathlib import Path
from typing import Any

import pytest

from alerts.channels import CHANNELS, make_channel, verify_signature
from alerts.channels._http import parse_retry_after
from alerts.channels.alertmanager import AlertmanagerChannel, AlertmanagerOptions, rfc3339
from alerts.channels.mqtt import alert_topic
from alerts.channels.webhook import sign
from alerts.errors import RuleError
from alerts.model import Alert, AlertState, Notification

SECRET = "s3cr3t-value-that-must-not-leak"  # a throwaway value, only for these tests
SAMPLES = files("alerts.channels").joinpath("samples")

# What the samples' *_env placeholders hold during the test (no real secret is in the repo).
SAMPLE_ENV = {
    "BOLTWATCH_WEBHOOK_SECRET": SECRET,
    "BOLTWATCH_SMTP_PASSWORD": SECRET,
    "BOLTWATCH_MQTT_PASSWORD": SECRET,
    "BOLTWATCH_APPRISE_URLS": "ntfy://ntfy.example.org/boltwatch-alerts json://127.0.0.1:9/x",
    "BOLTWATCH_ALERTMANAGER_PASSWORD": SECRET,
}


def raises_rule(kind: str, options: dict[str, Any], key: str) -> RuleError:
    with pytest.raises(RuleError) as info:
        make_channel(kind, options, "receivers[2]")
    assert info.value.key == key, info.value
    assert SECRET not in str(info.value)
    return info.value


# -- registry and samples -----------------------------------------------------------------------


def test_registry_lists_every_channel() -> None:
    assert set(CHANNELS) == {"webhook", "email", "mqtt", "apprise", "alertmanager", "console"}
    for kind, cls in CHANNELS.items():
        assert cls.kind == kind


@pytest.mark.parametrize("kind", sorted(CHANNELS))
def test_sample_builds(kind: str, monkeypatch: pytest.MonkeyPatch) -> None:
    for name, value in SAMPLE_ENV.items():
        monkeypatch.setenv(name, value)
    text = SAMPLES.joinpath(f"{kind}.toml").read_text(encoding="utf-8")
    assert SECRET not in text
    receivers = tomllib.loads(text)["receivers"]
    assert receivers, f"{kind}.toml has no [[receivers]]"
    for i, receiver in enumerate(receivers):
        assert receiver["channel"] == kind
        assert receiver["name"]
        channel = make_channel(receiver["channel"], receiver, f"receivers[{i}]")
        assert channel.kind == kind
        assert SECRET not in repr(getattr(channel, "options", None))


def test_every_sample_is_a_known_channel() -> None:
    names = {Path(str(p)).stem for p in SAMPLES.iterdir() if str(p).endswith(".toml")}
    assert names == set(CHANNELS)


# -- errors name the key ------------------------------------------------------------------------


def test_unknown_kind_lists_the_known_ones() -> None:
    error = raises_rule("pager", {}, "receivers[2].channel")
    assert "webhook" in error.reason
    assert "alertmanager" in error.reason


def test_unknown_option() -> None:
    error = raises_rule("webhook", {"url": "http://h/", "timeout": 3}, "receivers[2].timeout")
    assert "timeout_s" in error.reason  # the known options are listed


@pytest.mark.parametrize("kind", ["webhook", "mqtt", "alertmanager"])
def test_missing_url(kind: str) -> None:
    raises_rule(kind, {}, "receivers[2].url")


@pytest.mark.parametrize(
    ("kind", "options", "key"),
    [
        ("webhook", {"url": "ftp://h/x"}, "receivers[2].url"),
        ("webhook", {"url": "http:///x"}, "receivers[2].url"),
        ("webhook", {"url": "http://h/", "timeout_s": "10"}, "receivers[2].timeout_s"),
        ("webhook", {"url": "http://h/", "timeout_s": 0}, "receivers[2].timeout_s"),
        ("mqtt", {"url": "http://h"}, "receivers[2].url"),
        ("mqtt", {"url": "mqtt://h", "qos": 3}, "receivers[2].qos"),
        ("mqtt", {"url": "mqtt://h", "qos": True}, "receivers[2].qos"),
        ("mqtt", {"url": "mqtt://h", "retain": "yes"}, "receivers[2].retain"),
        ("mqtt", {"url": "mqtt://h", "mqtt_version": 3}, "receivers[2].mqtt_version"),
        ("mqtt", {"url": "mqtt://h", "topic_prefix": "a/#"}, "receivers[2].topic_prefix"),
        ("mqtt", {"url": "mqtt://h", "ca_file": "/ca.pem"}, "receivers[2].ca_file"),
        ("email", {"host": "h", "sender": "a@b.c"}, "receivers[2].to"),
        ("email", {"host": "h", "sender": "a@b.c", "to": []}, "receivers[2].to"),
        ("email", {"host": "h", "sender": "a@b.c", "to": ["x@y.z", "nope"]}, "receivers[2].to[1]"),
        ("email", {"host": "h", "sender": "a@b.c", "to": "x@y.z"}, "receivers[2].to"),
        ("email", {"host": "h", "sender": "a@b.c", "to": ["x@y.z", 3]}, "receivers[2].to[1]"),
        ("email", {"host": "h", "sender": "me", "to": ["x@y.z"]}, "receivers[2].sender"),
        ("apprise", {}, "receivers[2].urls"),
        ("apprise", {"urls": ["nosuchscheme://x"]}, "receivers[2].urls[0]"),
        ("console", {"stream": "stdlog"}, "receivers[2].stream"),
        ("alertmanager", {"url": "http://h", "firing_ttl_s": -1}, "receivers[2].firing_ttl_s"),
    ],
)
def test_bad_options_name_their_key(kind: str, options: dict[str, Any], key: str) -> None:
    raises_rule(kind, options, key)


# -- secrets ------------------------------------------------------------------------------------

EMAIL = {"host": "smtp.example.org", "sender": "a@example.org", "to": ["b@example.org"]}


def test_secret_inline_file_env(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    secret_file = tmp_path / "secret"
    secret_file.write_text(SECRET + "\n")
    monkeypatch.setenv("TEST_SECRET", SECRET)
    for given in (
        {"secret": SECRET},
        {"secret_file": str(secret_file)},
        {"secret_env": "TEST_SECRET"},
    ):
        channel = make_channel("webhook", {"url": "http://h/", **given}, "r")
        assert channel._secret == SECRET  # type: ignore[attr-defined]
        assert SECRET not in repr(channel.options)  # type: ignore[attr-defined]


def test_secret_errors_do_not_leak(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TEST_SECRET", SECRET)
    monkeypatch.delenv("TEST_UNSET", raising=False)
    error = raises_rule(
        "webhook",
        {"url": "http://h/", "secret": SECRET, "secret_env": "TEST_SECRET"},
        "receivers[2].secret_env",
    )
    assert "only one" in error.reason
    error = raises_rule(
        "webhook", {"url": "http://h/", "secret_env": "TEST_UNSET"}, "receivers[2].secret_env"
    )
    assert "TEST_UNSET" in error.reason
    raises_rule(
        "webhook",
        {"url": "http://h/", "secret_file": str(tmp_path / "missing")},
        "receivers[2].secret_file",
    )
    (tmp_path / "empty").write_text("\n")
    raises_rule(
        "webhook", {"url": "http://h/", "secret_file": str(tmp_path / "empty")},
        "receivers[2].secret_file",
    )  # fmt: skip
    # A secret of the wrong type: the message says the type, not the value.
    raises_rule("webhook", {"url": "http://h/", "secret": 12345}, "receivers[2].secret")
    # A password without TLS, or without a user.
    raises_rule("email", {**EMAIL, "username": "u", "password": SECRET}, "receivers[2].starttls")
    raises_rule("email", {**EMAIL, "password": SECRET, "starttls": True}, "receivers[2].username")
    raises_rule("mqtt", {"url": "mqtt://h", "password": SECRET}, "receivers[2].username")
    raises_rule("alertmanager", {"url": "http://h", "password": SECRET}, "receivers[2].username")


def test_urls_with_tokens_are_not_repeated() -> None:
    error = raises_rule(
        "apprise",
        {"urls": ["json://127.0.0.1/x", f"nosuchscheme://{SECRET}@host/"]},
        "receivers[2].urls[1]",
    )
    assert "nosuchscheme" in error.reason
    error = raises_rule("webhook", {"url": f"gopher://{SECRET}@h/"}, "receivers[2].url")
    assert "gopher://" in error.reason


def test_receiver_keys_are_ignored() -> None:
    channel = make_channel("console", {"name": "terminal", "channel": "console"}, "r")
    assert channel.kind == "console"


# -- pure parts of the channels -------------------------------------------------------------------


def test_signature_round_trip() -> None:
    body = b'{"id":"n-1"}'
    header = sign(body, SECRET)
    assert header.startswith("sha256=")
    assert len(header) == len("sha256=") + 64
    assert verify_signature(body, header, SECRET)
    assert not verify_signature(body + b" ", header, SECRET)
    assert not verify_signature(body, header.removeprefix("sha256="), SECRET)
    assert not verify_signature(body, "sha256=" + "0" * 64, SECRET)


def test_retry_after() -> None:
    assert parse_retry_after("120") == 120.0
    assert parse_retry_after(None) is None
    assert parse_retry_after("soon") is None
    now_s = 1_767_268_987.0  # 2026-01-01T12:03:07Z
    assert parse_retry_after("Thu, 01 Jan 2026 12:03:37 GMT", now_s) == 30.0
    assert parse_retry_after("Thu, 01 Jan 2026 12:00:00 GMT", now_s) == 0.0


def test_alert_topic() -> None:
    a = {"site": "windfarm-north", "device_id": "wtg03-f1-b004", "kind": "loosening"}
    assert (
        alert_topic("boltwatch/v1", a)
        == "boltwatch/v1/windfarm-north/alerts/wtg03-f1-b004/loosening"
    )
    odd = {"site": "", "device_id": "a/b+c#", "kind": "k"}
    assert alert_topic("p", odd) == "p/unknown/alerts/a_b_c_/k"


def test_alertmanager_body() -> None:
    now_ms = 1_767_268_987_000
    options = AlertmanagerOptions(url="http://am:9093/", firing_ttl_s=600.0)
    channel = AlertmanagerChannel(options, clock_ms=lambda: now_ms)
    assert channel.endpoint == "http://am:9093/api/v2/alerts"
    firing = Alert(id=3, device_id="d1", kind="no_data", site="", group="g", active_ms=now_ms - 5)
    cleared = Alert(
        id=4, device_id="d2", kind="loosening", state=AlertState.CLEARED,
        first_ms=now_ms - 10_000, cleared_ms=now_ms - 1_000,
    )  # fmt: skip
    n = Notification(
        "n-1", "am", "firing", "g", "title", [firing.as_dict(), cleared.as_dict()], now_ms
    )
    body = channel.alerts(n)
    assert body[0]["labels"] == {
        "alertname": "no_data", "device_id": "d1", "severity": "warning", "group": "g",
        "boltwatch_id": "3",
    }  # fmt: skip
    assert body[0]["startsAt"] == rfc3339(now_ms - 5)
    assert body[0]["endsAt"] == rfc3339(now_ms + 600_000)
    assert body[1]["endsAt"] == "2026-01-01T12:03:06.000Z"
    assert body[1]["startsAt"] == "2026-01-01T12:02:57.000Z"
    assert "generatorURL" not in body[0]
