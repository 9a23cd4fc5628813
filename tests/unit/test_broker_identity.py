"""`boltwatch broker`: password lines, ACL, listener snippet and the files, without a broker.

The broker itself enforcing them is tests/integration/test_broker_identity.py.
"""

from __future__ import annotations

import base64
import re
import shutil
import stat
import subprocess
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner

from boltwatch.broker_identity import (
    ACL_FILE,
    CONF_FILE,
    PASSWORD_FILE,
    SECRETS_FILE,
    SERVICE_PASSWORD_FILE,
    AclRule,
    BrokerIdentityError,
    FileChange,
    Identity,
    ListenerOptions,
    Role,
    acl_rules,
    acl_text,
    conf_text,
    direct_edge_node,
    identities,
    load_device_credentials,
    password_hash,
    password_text,
    read_secrets,
    rotate_credential,
    verify_password,
    write_broker_files,
)
from boltwatch.cli import app
from boltwatch.simulate import build_scenario_fleet
from firmware_sim.firmware import FirmwareConfigError
from firmware_sim.scenario import load_scenario, run_scenario
from sensors.registry import Registry, parse_registry
from sensors.schema import DeviceKind

runner = CliRunner()
SECRET_FILES = (PASSWORD_FILE, ACL_FILE, SECRETS_FILE, SERVICE_PASSWORD_FILE)


def registry_data(*, printer: bool = True, extra_gateway: str | None = None) -> dict[str, Any]:
    """Two sites: bolts and a gateway on site-a, a printer on site-b."""
    data: dict[str, Any] = {
        "sites": [{"id": "site-a", "name": "A"}, {"id": "site-b", "name": "B"}],
        "structures": [{"id": "deck", "site": "site-a", "name": "Deck", "type": "bridge"}],
        "bolt_profiles": [
            {
                "id": "M16",
                "thread": "M16",
                "nominal_diameter_mm": 16.0,
                "grade": "8.8",
                "proof_load_kn": 94.2,
                "nominal_preload_kn": 62.5,
            }
        ],
        "joints": [
            {
                "id": "splice",
                "structure": "deck",
                "name": "Splice",
                "pattern": "linear",
                "bolt_count": 4,
                "material": "steel",
                "bolt_profile": "M16",
                "bolts": [
                    {"position": 1, "device_id": "bolt-1"},
                    {"position": 2, "device_id": "bolt-2"},
                ],
            }
        ],
        "machines": [],
        "gateways": [{"device_id": "gw-1", "site": "site-a", "name": "Gateway"}],
    }
    if printer:
        data["machines"].append(
            {
                "device_id": "printer-1",
                "site": "site-b",
                "kind": "printer3d",
                "model": "MK4",
                "name": "Printer",
            }
        )
    if extra_gateway is not None:
        data["gateways"].append({"device_id": extra_gateway, "site": "site-a", "name": "G2"})
    return data


def registry(**kwargs: Any) -> Registry:
    return parse_registry(registry_data(**kwargs))


def matches(topic_filter: str, topic: str) -> bool:
    """MQTT topic-filter matching (``+`` one level, ``#`` the rest)."""
    f, t = topic_filter.split("/"), topic.split("/")
    for i, part in enumerate(f):
        if part == "#":
            return True
        if i >= len(t) or (part not in ("+", t[i])):
            return False
    return len(f) == len(t)


def may(rules: list[AclRule], access: str, topic: str) -> bool:
    return any(r.access == access and matches(r.topic, topic) for r in rules)


def by_name(reg: Registry) -> dict[str, Identity]:
    return {i.username: i for i in identities(reg)}


# -- password hashes ---------------------------------------------------------------------------


def test_password_hash_is_mosquittos_pbkdf2_sha512_format() -> None:
    hashed = password_hash("s3cret")
    m = re.fullmatch(r"\$7\$101\$(?P<salt>[A-Za-z0-9+/=]+)\$(?P<hash>[A-Za-z0-9+/=]+)", hashed)
    assert m is not None, hashed
    assert len(base64.b64decode(m["salt"])) == 12
    assert len(base64.b64decode(m["hash"])) == 64  # SHA-512
    assert verify_password("s3cret", hashed)
    assert not verify_password("s3cret!", hashed)
    assert password_hash("x", salt=b"0" * 12) == password_hash("x", salt=b"0" * 12)
    assert password_hash("x") != password_hash("x"), "a fresh salt every time"


@pytest.mark.parametrize(
    "bad", ["", "$6$abc$def", "$7$x$AAAA$AAAA", "$7$101$!!!$AAAA", "$7$0$AAAA$AAAA", "plain"]
)
def test_verify_password_refuses_other_or_malformed_hashes(bad: str) -> None:
    assert not verify_password("anything", bad)


@pytest.mark.skipif(shutil.which("mosquitto_passwd") is None, reason="mosquitto_passwd missing")
def test_hashes_agree_with_mosquitto_passwd(tmp_path: Path) -> None:
    pw = tmp_path / "pw"
    subprocess.run(
        ["mosquitto_passwd", "-c", "-b", str(pw), "dev", "the-secret"],
        check=True,
        capture_output=True,
    )
    user, _, hashed = pw.read_text().strip().partition(":")
    assert user == "dev"
    assert verify_password("the-secret", hashed)
    assert not verify_password("the-secreT", hashed)


def test_password_text_keeps_a_hash_that_still_matches() -> None:
    first = password_text({"a": "pa", "b": "pb"})
    previous = dict(line.split(":", 1) for line in first.splitlines())
    assert password_text({"a": "pa", "b": "pb"}, previous) == first
    changed = password_text({"a": "pa", "b": "new"}, previous).splitlines()
    assert changed[0] == first.splitlines()[0]
    assert changed[1] != first.splitlines()[1]
    assert verify_password("new", changed[1].split(":", 1)[1])


# -- the ACL -------------------------------------------------------------------------------------


def test_identities_come_from_every_table_of_the_registry() -> None:
    users = by_name(registry())
    assert set(users) == {"bolt-1", "bolt-2", "gw-1", "printer-1"}
    assert users["bolt-1"] == Identity("bolt-1", Role.DEVICE, "site-a", DeviceKind.CBOLT)
    assert users["gw-1"].role is Role.GATEWAY
    assert users["printer-1"].site == "site-b"
    assert users["printer-1"].kind is DeviceKind.PRINTER3D


def test_a_device_publishes_only_under_its_own_topics() -> None:
    rules = acl_rules(by_name(registry())["bolt-1"])
    own = "boltwatch/v1/site-a/cbolt/bolt-1"
    for channel in ("telemetry", "event", "status"):
        assert may(rules, "write", f"{own}/{channel}")
    assert not may(rules, "write", f"{own}/cmd"), "commands are boltwatch's"
    assert may(rules, "read", f"{own}/cmd")
    for forged in (
        "boltwatch/v1/site-a/cbolt/bolt-2/telemetry",  # another bolt
        "boltwatch/v1/site-b/cbolt/bolt-1/telemetry",  # another site
        "boltwatch/v1/site-a/printer3d/bolt-1/telemetry",  # another kind
        "boltwatch/v1/site-a/gateway/gw-1/telemetry",  # its gateway
        "boltwatch/v1/site-a/alerts/bolt-1/loosening",
        "spBv1.0/site-a/DDATA/gw-1/bolt-1",  # as a child of a gateway
        "spBv1.0/site-a/NCMD/bolt-1-edge",
    ):
        assert not may(rules, "write", forged), forged
    for other in (
        "boltwatch/v1/site-a/cbolt/bolt-2/cmd",
        "boltwatch/v1/site-a/cbolt/bolt-2/status",
    ):
        assert not may(rules, "read", other), other
    # Sparkplug B on its own connection: its own edge node, carrying only itself.
    edge = direct_edge_node("bolt-1")
    assert edge == "bolt-1-edge"
    assert may(rules, "write", f"spBv1.0/site-a/NBIRTH/{edge}")
    assert may(rules, "write", f"spBv1.0/site-a/DDATA/{edge}/bolt-1")
    assert not may(rules, "write", f"spBv1.0/site-a/DDATA/{edge}/bolt-2")
    assert may(rules, "read", f"spBv1.0/site-a/DCMD/{edge}/bolt-1")


def test_a_gateway_speaks_for_the_bolts_of_its_site_only() -> None:
    rules = acl_rules(by_name(registry())["gw-1"])
    own = "boltwatch/v1/site-a/gateway/gw-1"
    assert may(rules, "write", f"{own}/telemetry")
    assert may(rules, "read", f"{own}/cmd")
    # Births and last wills of the bolts it carries, and their commands.
    assert may(rules, "write", "boltwatch/v1/site-a/cbolt/bolt-1/status")
    assert may(rules, "read", "boltwatch/v1/site-a/cbolt/bolt-1/cmd")
    assert not may(rules, "write", "boltwatch/v1/site-a/cbolt/bolt-1/telemetry"), "batches only"
    assert not may(rules, "write", "boltwatch/v1/site-b/cbolt/bolt-9/status"), "another site"
    assert not may(rules, "write", "boltwatch/v1/site-a/gateway/gw-2/telemetry")
    assert not may(rules, "write", "boltwatch/v1/site-b/printer3d/printer-1/status")
    # Sparkplug: its edge node and any device under it, on its own site.
    assert may(rules, "write", "spBv1.0/site-a/DDATA/gw-1/bolt-7")
    assert may(rules, "write", "spBv1.0/site-a/NDEATH/gw-1")
    assert not may(rules, "write", "spBv1.0/site-a/DDATA/gw-2/bolt-7")
    assert not may(rules, "write", "spBv1.0/site-b/DDATA/gw-1/bolt-7")
    assert not may(rules, "write", "spBv1.0/site-a/DCMD/gw-1/bolt-7")


def test_the_service_user_receives_everything_and_publishes_commands_and_alerts() -> None:
    rules = acl_rules(Identity("boltwatch", Role.SERVICE))
    for topic in (
        "boltwatch/v1/site-a/cbolt/bolt-1/telemetry",
        "spBv1.0/site-a/DDATA/gw-1/bolt-1",
        "boltwatch/v1/site-a/cbolt/bolt-1/status",
    ):
        assert may(rules, "read", topic)
    assert may(rules, "write", "boltwatch/v1/site-a/cbolt/bolt-1/cmd")
    assert may(rules, "write", "boltwatch/v1/site-a/alerts/bolt-1/loosening")
    assert may(rules, "write", "spBv1.0/site-a/DCMD/gw-1/bolt-1")
    assert not may(rules, "write", "boltwatch/v1/site-a/cbolt/bolt-1/telemetry"), "no forging"
    assert not may(rules, "write", "spBv1.0/site-a/DDATA/gw-1/bolt-1")


def test_acl_text_has_one_block_per_user_and_nothing_for_anonymous_clients() -> None:
    users = [Identity("boltwatch", Role.SERVICE), *identities(registry())]
    text = acl_text(users)
    assert "pattern" not in [line.split(" ")[0] for line in text.splitlines()]
    before_first_user = text.split("\nuser ", 1)[0]
    assert all(line.startswith("#") or not line for line in before_first_user.splitlines())
    blocks = re.findall(r"^user (\S+)$", text, re.MULTILINE)
    assert blocks == [u.username for u in users]
    for line in text.splitlines():
        assert re.fullmatch(r"(#.*|user [A-Za-z0-9_-]+|topic (read|write) \S+|)", line), line


# -- mosquitto.conf snippet ----------------------------------------------------------------------


def test_conf_has_per_listener_settings_tls_and_no_anonymous_clients(tmp_path: Path) -> None:
    cert, key, ca = tmp_path / "b.crt", tmp_path / "b.key", tmp_path / "ca.crt"
    text = conf_text(
        tmp_path,
        ListenerOptions(port=18883, bind="0.0.0.0", tls_cert=cert, tls_key=key, tls_ca=ca),  # noqa: S104
    )
    lines = [line for line in text.splitlines() if line and not line.startswith("#")]
    assert lines[0] == "per_listener_settings true"
    assert lines[1] == "listener 18883 0.0.0.0"
    assert f"certfile {cert}" in lines
    assert f"keyfile {key}" in lines
    assert f"cafile {ca}" in lines
    assert "allow_anonymous false" in lines
    assert f"password_file {tmp_path.resolve() / PASSWORD_FILE}" in lines
    assert f"acl_file {tmp_path.resolve() / ACL_FILE}" in lines
    assert "PLACEHOLDER" not in text


def test_conf_without_certificates_has_commented_placeholders_and_a_local_listener(
    tmp_path: Path,
) -> None:
    text = conf_text(tmp_path, ListenerOptions(local_port=1883))
    assert text.count("PLACEHOLDER") == 2
    assert "certfile /etc/mosquitto/certs/" in text
    assert "\ncafile" not in text
    listeners = re.findall(r"^listener .*$", text, re.MULTILINE)
    assert listeners == ["listener 8883", "listener 1883 127.0.0.1"]
    # Each listener refuses anonymous clients and has the files (per_listener_settings).
    assert text.count("allow_anonymous false") == 2
    assert text.count("password_file ") == 2
    assert text.count("acl_file ") == 2


def test_a_path_with_a_line_break_cannot_inject_config(tmp_path: Path) -> None:
    with pytest.raises(BrokerIdentityError, match="--tls-cert"):
        conf_text(tmp_path, ListenerOptions(tls_cert=Path("/x\nallow_anonymous true")))


# -- the files -------------------------------------------------------------------------------------


def mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def snapshot(folder: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in folder.iterdir() if not p.name.startswith(".")}


def test_config_writes_the_files_with_secret_modes(tmp_path: Path) -> None:
    out = tmp_path / "broker"
    report = write_broker_files(registry(), out)
    assert set(report.added) == {"boltwatch", "bolt-1", "bolt-2", "gw-1", "printer-1"}
    assert report.users == 5
    assert set(report.files.values()) == {FileChange.CREATED}
    assert mode(out) == 0o700
    for name in SECRET_FILES:
        assert mode(out / name) == 0o600, name
    assert mode(out / CONF_FILE) == 0o644
    data = read_secrets(out / SECRETS_FILE)
    assert data.service_user == "boltwatch"
    assert set(data.devices) == {"bolt-1", "bolt-2", "gw-1", "printer-1"}
    assert len(set(data.all().values())) == 5, "one secret each"
    assert all(len(s) >= 43 for s in data.all().values()), "256 bits"
    hashes = dict(line.split(":", 1) for line in (out / PASSWORD_FILE).read_text().splitlines())
    assert list(hashes) == ["boltwatch", "bolt-1", "bolt-2", "gw-1", "printer-1"]
    for user, secret in data.all().items():
        assert verify_password(secret, hashes[user])
    assert (out / SERVICE_PASSWORD_FILE).read_text() == f"{data.service_password}\n"
    assert load_device_credentials(out) == data.devices
    assert load_device_credentials(out / SECRETS_FILE) == data.devices


def test_config_is_idempotent(tmp_path: Path) -> None:
    write_broker_files(registry(), tmp_path)
    before = snapshot(tmp_path)
    (tmp_path / PASSWORD_FILE).chmod(0o644)  # someone loosened it: the re-run tightens it
    report = write_broker_files(registry(), tmp_path)
    assert snapshot(tmp_path) == before
    assert set(report.files.values()) == {FileChange.UNCHANGED}
    assert not report.changed
    assert report.added == report.removed == report.rotated == ()
    assert len(report.kept) == 5
    assert mode(tmp_path / PASSWORD_FILE) == 0o600


def test_config_follows_the_registry_keeping_existing_secrets(tmp_path: Path) -> None:
    write_broker_files(registry(), tmp_path)
    before = read_secrets(tmp_path / SECRETS_FILE)
    report = write_broker_files(registry(printer=False, extra_gateway="gw-2"), tmp_path)
    assert report.added == ("gw-2",)
    assert report.removed == ("printer-1",)
    after = read_secrets(tmp_path / SECRETS_FILE)
    assert "printer-1" not in after.devices
    assert after.devices["bolt-1"] == before.devices["bolt-1"]
    assert after.service_password == before.service_password
    assert "printer-1" not in (tmp_path / PASSWORD_FILE).read_text()
    assert "printer-1" not in (tmp_path / ACL_FILE).read_text()
    assert "user gw-2" in (tmp_path / ACL_FILE).read_text()
    assert report.files[CONF_FILE] is FileChange.UNCHANGED


def test_rotate_all_replaces_every_secret(tmp_path: Path) -> None:
    write_broker_files(registry(), tmp_path)
    before = read_secrets(tmp_path / SECRETS_FILE).all()
    report = write_broker_files(registry(), tmp_path, rotate_all=True)
    after = read_secrets(tmp_path / SECRETS_FILE).all()
    assert set(report.rotated) == set(before)
    assert all(after[u] != before[u] for u in before)
    assert report.files[PASSWORD_FILE] is FileChange.UPDATED
    assert report.files[ACL_FILE] is FileChange.UNCHANGED


def test_the_service_user_must_not_be_a_device(tmp_path: Path) -> None:
    with pytest.raises(BrokerIdentityError, match="--service-user"):
        write_broker_files(registry(), tmp_path, service_user="gw-1")
    with pytest.raises(BrokerIdentityError, match="--service-user"):
        write_broker_files(registry(), tmp_path, service_user="bolt watch")


def test_a_direct_edge_node_may_not_be_another_devices_id(tmp_path: Path) -> None:
    with pytest.raises(BrokerIdentityError, match="bolt-1: its Sparkplug edge node 'bolt-1-edge'"):
        write_broker_files(registry(extra_gateway="bolt-1-edge"), tmp_path)


def test_credentials_rotates_one_secret_and_one_password_line(tmp_path: Path) -> None:
    write_broker_files(registry(), tmp_path)
    before = read_secrets(tmp_path / SECRETS_FILE)
    lines = (tmp_path / PASSWORD_FILE).read_text().splitlines()
    report = rotate_credential(tmp_path, "bolt-2")
    after = read_secrets(tmp_path / SECRETS_FILE)
    assert report.secret == after.devices["bolt-2"] != before.devices["bolt-2"]
    assert {u: s for u, s in after.devices.items() if u != "bolt-2"} == {
        u: s for u, s in before.devices.items() if u != "bolt-2"
    }
    new_lines = (tmp_path / PASSWORD_FILE).read_text().splitlines()
    changed = [i for i, (a, b) in enumerate(zip(lines, new_lines, strict=True)) if a != b]
    assert [new_lines[i].split(":")[0] for i in changed] == ["bolt-2"]
    assert verify_password(report.secret, new_lines[changed[0]].split(":", 1)[1])
    assert report.files[SERVICE_PASSWORD_FILE] is FileChange.UNCHANGED
    assert mode(tmp_path / SECRETS_FILE) == 0o600


def test_credentials_of_the_service_user_update_its_password_file(tmp_path: Path) -> None:
    write_broker_files(registry(), tmp_path)
    report = rotate_credential(tmp_path, "boltwatch")
    assert (tmp_path / SERVICE_PASSWORD_FILE).read_text() == f"{report.secret}\n"
    assert report.files[SERVICE_PASSWORD_FILE] is FileChange.UPDATED


def test_credentials_of_an_unknown_device_or_without_files_fail(tmp_path: Path) -> None:
    with pytest.raises(BrokerIdentityError, match="broker config"):
        rotate_credential(tmp_path, "bolt-1")
    write_broker_files(registry(), tmp_path)
    before = snapshot(tmp_path)
    with pytest.raises(BrokerIdentityError, match="bolt-9: unknown device"):
        rotate_credential(tmp_path, "bolt-9")
    assert snapshot(tmp_path) == before


def test_a_malformed_secrets_file_is_one_clear_error(tmp_path: Path) -> None:
    (tmp_path / SECRETS_FILE).write_text("[devices]\nbolt-1 = 3\n")
    with pytest.raises(BrokerIdentityError, match=r"\[service\]"):
        read_secrets(tmp_path / SECRETS_FILE)
    (tmp_path / SECRETS_FILE).write_text(
        '[service]\nusername = "b"\npassword = "p"\n[devices]\nx = 3\n'
    )
    with pytest.raises(BrokerIdentityError, match=r"devices\.x"):
        read_secrets(tmp_path / SECRETS_FILE)
    (tmp_path / SECRETS_FILE).write_text("not = [toml")
    with pytest.raises(BrokerIdentityError, match="not valid TOML"):
        read_secrets(tmp_path / SECRETS_FILE)


# -- the command line ----------------------------------------------------------------------------


def write_registry(path: Path, **kwargs: Any) -> Path:
    """The test registry as TOML (arrays of tables)."""
    lines: list[str] = []

    def value(v: object) -> str:
        return f'"{v}"' if isinstance(v, str) else str(v)

    for table, rows in registry_data(**kwargs).items():
        for row in rows:
            lines.append(f"[[{table}]]")
            nested = {k: v for k, v in row.items() if isinstance(v, list)}
            lines += [f"{k} = {value(v)}" for k, v in row.items() if k not in nested]
            for key, items in nested.items():
                for item in items:
                    lines.append(f"[[{table}.{key}]]")
                    lines += [f"{k} = {value(v)}" for k, v in item.items()]
    path.write_text("\n".join(lines) + "\n")
    return path


def test_cli_config_then_credentials(tmp_path: Path) -> None:
    reg = write_registry(tmp_path / "registry.toml")
    out = tmp_path / "broker"
    args = ["broker", "config", "--registry", str(reg), "--out", str(out), "--local-port", "1883"]
    first = runner.invoke(app, args)
    assert first.exit_code == 0, first.output
    assert "added" in first.output
    assert "SIGHUP" in first.output
    assert f'password_file = "{out.resolve() / SERVICE_PASSWORD_FILE}"' in first.output
    again = runner.invoke(app, args)
    assert again.exit_code == 0, again.output
    assert "nothing changed" in again.output
    secrets_before = (out / SECRETS_FILE).read_text()
    assert not any(s in first.output for s in read_secrets(out / SECRETS_FILE).all().values())

    rotated = runner.invoke(app, ["broker", "credentials", "gw-1", "--out", str(out)])
    assert rotated.exit_code == 0, rotated.output
    assert rotated.stdout.splitlines()[-1] == read_secrets(out / SECRETS_FILE).devices["gw-1"]
    assert rotated.stdout.count("\n") == 1, "the secret alone on standard output"
    assert "SIGHUP" in rotated.stderr
    assert (out / SECRETS_FILE).read_text() != secrets_before


def test_cli_credentials_of_an_unknown_device_is_one_line_and_status_2(tmp_path: Path) -> None:
    reg = write_registry(tmp_path / "registry.toml")
    out = tmp_path / "broker"
    assert runner.invoke(app, ["broker", "config", "--registry", str(reg), "--out", str(out)])
    bad = runner.invoke(app, ["broker", "credentials", "nope", "--out", str(out)])
    assert bad.exit_code == 2
    assert bad.stdout == ""
    assert bad.stderr.count("\n") == 1
    assert bad.stderr.startswith("error: nope: unknown device")


def test_cli_config_errors_are_one_line_and_status_2(tmp_path: Path) -> None:
    reg = write_registry(tmp_path / "registry.toml")
    half = runner.invoke(
        app,
        [
            *("broker", "config", "--registry", str(reg), "--out", str(tmp_path / "o")),
            *("--tls-cert", str(tmp_path / "c.pem")),
        ],
    )
    assert half.exit_code == 2
    assert half.stderr.strip() == "error: --tls-key: give --tls-cert and --tls-key together"
    missing = runner.invoke(
        app, ["broker", "config", "--registry", str(tmp_path / "none.toml"), "--out", "o"]
    )
    assert missing.exit_code == 2
    assert "cannot read" in missing.stderr
    assert missing.stderr.count("\n") == 1


# -- the simulator logs in as each device ----------------------------------------------------------


def test_simulated_gateways_and_machines_log_in_with_their_own_secret() -> None:
    scenario = load_scenario("demo")
    result = run_scenario(scenario, seed=1, duration_s=3_600)
    logins = {"gw-000": "s-gw", "gw-001": "s-gw1", "printer-1": "s-p", "laser-1": "s-l"}
    fleet = build_scenario_fleet(
        scenario,
        result,
        "mqtt://127.0.0.1:1883",
        devices=None,
        speed=1.0,
        gateway_size=4,
        sparkplug=False,
        seed=1,
        credentials=logins,
    )
    seen = {(u.address.username, u.address.password) for u in fleet.uplinks}
    assert seen == set(logins.items())
    with pytest.raises(FirmwareConfigError, match="no secret for 'laser-1'"):
        build_scenario_fleet(
            scenario,
            result,
            "mqtt://127.0.0.1:1883",
            devices=None,
            speed=1.0,
            gateway_size=4,
            sparkplug=False,
            seed=1,
            credentials={k: v for k, v in logins.items() if k != "laser-1"},
        )
