"""Device identity on a real Mosquitto started with the files of ``boltwatch broker config``.

The broker refuses a device publishing under another device's topic (with MQTT 3.1.1 it drops
the message silently: the service user never receives it, and ingest stores nothing), refuses
anonymous clients and wrong passwords at CONNECT, serves TLS with a certificate made here, takes
a rotated secret (``boltwatch broker credentials``) or a revoked device on SIGHUP, and the
simulator logs every gateway and machine in with its own secret.
"""

from __future__ import annotations

import asyncio
import io
import json
import os
import pwd
import secrets
import signal
import socket
import ssl
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Callable, Iterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import gmqtt
import pytest
from gmqtt.mqtt.constants import MQTTv50, MQTTv311
from gmqtt.mqtt.handler import MQTTConnectError

from boltwatch.broker_identity import (
    CONF_FILE,
    SECRETS_FILE,
    SERVICE_PASSWORD_FILE,
    Secrets,
    read_secrets,
)
from boltwatch.config import parse_config
from boltwatch.simulate import build_scenario_fleet
from firmware_sim.scenario import load_scenario, run_scenario
from ingest.service import IngestService
from ingest.store import Store
from sensors.schema import DeviceKind
from tests.integration.conftest import (
    MOSQUITTO,
    Collector,
    MosquittoServer,
    Received,
    TlsFiles,
    client_tls_context,
    free_port,
)

pytestmark = pytest.mark.integration

BOLTWATCH = Path(sys.executable).parent / "boltwatch"
HOST = "127.0.0.1"
T0 = int(time.time() * 1000) - 86_400_000  # yesterday: every test reading is plausible
# Generous bounds: the machine is shared; every wait polls a condition and ends as soon as it holds.
DEADLINE_S = 30.0
EVERYTHING = ("boltwatch/v1/#", "spBv1.0/#")

# Two bolts and a gateway on site-a; the simulator's demo installation (gw-000, printer-1,
# laser-1) on demo-site.
REGISTRY = """
[[sites]]
id = "site-a"
name = "Site A"
[[sites]]
id = "demo-site"
name = "Demo site"

[[structures]]
id = "deck"
site = "site-a"
name = "Deck"
type = "bridge"

[[bolt_profiles]]
id = "M16"
thread = "M16"
nominal_diameter_mm = 16.0
grade = "8.8"
proof_load_kn = 94.2
nominal_preload_kn = 62.5

[[joints]]
id = "splice"
structure = "deck"
name = "Splice"
pattern = "linear"
bolt_count = 4
material = "steel"
bolt_profile = "M16"
[[joints.bolts]]
position = 1
device_id = "bolt-1"
[[joints.bolts]]
position = 2
device_id = "bolt-2"

[[gateways]]
device_id = "gw-1"
site = "site-a"
name = "Gateway of site A"
[[gateways]]
device_id = "gw-000"
site = "demo-site"
name = "Simulated gateway"
"""
MACHINES = """
[[machines]]
device_id = "printer-1"
site = "demo-site"
kind = "printer3d"
model = "Prusa MK4"
name = "Printer"
[[machines]]
device_id = "laser-1"
site = "demo-site"
kind = "laser_cutter"
model = "CO2"
name = "Laser"
"""


def topic(device: str, channel: str = "telemetry", *, site: str = "site-a") -> str:
    kind = "gateway" if device.startswith("gw-") else "cbolt"
    return f"boltwatch/v1/{site}/{kind}/{device}/{channel}"


def reading(seq: int, **extra: Any) -> bytes:
    return json.dumps({"ts": T0 + seq * 1000, "seq": seq, "preload_kn": 61.5, **extra}).encode()


def cli(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(BOLTWATCH), *args],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
        env={**os.environ, **(env or {})},
    )


@dataclass(frozen=True, slots=True)
class BrokerFiles:
    """What ``boltwatch broker config`` wrote, and how it was called."""

    folder: Path
    registry: Path
    args: tuple[str, ...]
    plain_port: int
    tls_port: int

    def secrets(self) -> Secrets:
        return read_secrets(self.folder / SECRETS_FILE)

    def regenerate(self, registry_text: str) -> subprocess.CompletedProcess[str]:
        self.registry.write_text(registry_text)
        return cli(*self.args)


class IdentityBroker(MosquittoServer):
    """Mosquitto run with the generated ``boltwatch.conf``, included after the global options
    a Debian ``mosquitto.conf`` holds (persistence, log, user), as ``conf.d/`` is.

    Its :attr:`port` is the plain listener on 127.0.0.1 (``--local-port``); :attr:`tls_port`
    the TLS one.
    """

    def __init__(self, workdir: Path, files: BrokerFiles) -> None:
        super().__init__(workdir, files.plain_port)
        self.tls_port = files.tls_port
        user = pwd.getpwuid(os.geteuid()).pw_name
        # `log_type all`: denied publications are logged at debug level.
        self.config.write_text(
            f"persistence true\npersistence_location {workdir}/\n"
            f"log_dest file {self.log}\nlog_type all\nuser {user}\n\n"
            + (files.folder / CONF_FILE).read_text()
        )

    def reload(self) -> None:
        """SIGHUP: Mosquitto reads its password and ACL files again."""
        proc = self._proc
        assert proc is not None, "the broker is not running"
        proc.send_signal(signal.SIGHUP)

    def denied(self) -> list[str]:
        """The broker's log lines about refused publications."""
        return [line for line in self.log_text().splitlines() if "Denied PUBLISH" in line]


@pytest.fixture
def broker_files(tmp_path: Path, tls_files: TlsFiles) -> BrokerFiles:
    registry = tmp_path / "registry.toml"
    registry.write_text(REGISTRY + MACHINES)
    folder = tmp_path / "broker"
    plain_port, tls_port = free_port(), free_port()
    args = (
        *("broker", "config", "--registry", str(registry), "--out", str(folder)),
        *("--port", str(tls_port), "--bind", HOST, "--local-port", str(plain_port)),
        *("--tls-cert", str(tls_files.server_cert), "--tls-key", str(tls_files.server_key)),
        *("--tls-ca", str(tls_files.ca_cert)),
    )
    done = cli(*args)
    assert done.returncode == 0, done.stderr
    return BrokerFiles(folder, registry, args, plain_port, tls_port)


@pytest.fixture
def broker(tmp_path: Path, broker_files: BrokerFiles) -> Iterator[IdentityBroker]:
    if not MOSQUITTO.exists():
        pytest.skip(f"{MOSQUITTO} is not installed (`make test` installs the mosquitto package)")
    workdir = tmp_path / "mosquitto"
    workdir.mkdir()
    server = IdentityBroker(workdir, broker_files)
    server.start()
    try:
        yield server
    finally:
        server.stop()


def as_user(
    broker: IdentityBroker, user: str, password: str, topics: tuple[str, ...] = ("unused/x",)
) -> Collector:
    """A client logged in as ``user`` on the plain listener, subscribed to ``topics``."""
    return Collector(broker.url, topics, username=user, password=password)


async def wait_until(predicate: Callable[[], bool], what: str, timeout: float = DEADLINE_S) -> None:  # noqa: ASYNC109
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout} s waiting for {what}")
        await asyncio.sleep(0.05)


async def login(
    port: int,
    user: str | None,
    password: str | None,
    *,
    version: int = MQTTv311,
    tls: ssl.SSLContext | None = None,
    client_id: str | None = None,
) -> Any:
    """A connected gmqtt client (no automatic reconnection); raises MQTTConnectError if refused."""
    client: Any = gmqtt.Client(client_id or f"t-{secrets.token_hex(4)}")
    client.reconnect_retries = 0
    if user is not None:
        client.set_auth_credentials(user, password)
    async with asyncio.timeout(DEADLINE_S):
        await client.connect(HOST, port, ssl=tls or False, version=version, keepalive=30)
    return client


async def refused(port: int, user: str | None, password: str | None, **kwargs: Any) -> bool:
    """Whether the broker refuses this login at CONNECT (a CONNACK with a refusal code)."""
    try:
        client = await login(port, user, password, **kwargs)
    except MQTTConnectError:
        return True
    await client.disconnect()
    return False


@asynccontextmanager
async def connected(port: int, user: str, password: str, **kwargs: Any) -> AsyncIterator[Any]:
    client = await login(port, user, password, **kwargs)
    try:
        yield client
    finally:
        await client.disconnect()


def handled(path: Path) -> bool:
    """Whether bolt-1's two readings and one dead letter are stored (read as another process
    would): bolt-1's last message is then handled, and so is everything sent before it."""
    with Store(path) as reader:
        mine = reader.export_csv(io.StringIO(), DeviceKind.CBOLT, device_id="bolt-1")
        return mine >= 2 and reader.stats().dead_letters >= 1


def topics_of(messages: list[Received]) -> list[str]:
    return [m.topic for m in messages]


# -- (1) a device publishes only as itself ---------------------------------------------------------


async def test_a_device_cannot_publish_or_read_as_another_device(
    broker: IdentityBroker, broker_files: BrokerFiles
) -> None:
    cred = broker_files.secrets()
    service = as_user(broker, cred.service_user, cred.service_password, EVERYTHING)
    # bolt-1 subscribes to everything: the broker delivers it only its own commands.
    bolt = as_user(broker, "bolt-1", cred.devices["bolt-1"], ("#",))
    gateway = as_user(broker, "gw-1", cred.devices["gw-1"])
    async with asyncio.timeout(90), service, bolt, gateway:
        bolt.publish(topic("bolt-1"), reading(1))
        forged = [
            topic("bolt-2"),  # another bolt of its site
            topic("bolt-1", site="demo-site"),  # itself on another site
            topic("gw-1"),  # its gateway
            topic("bolt-1", "cmd"),  # a command to itself: boltwatch's to send
            "boltwatch/v1/site-a/alerts/bolt-2/loosening",  # a fake alert
            "spBv1.0/site-a/DDATA/gw-1/bolt-2",  # Sparkplug, as the gateway's child
        ]
        for t in forged:
            bolt.publish(t, reading(2))
        # A gateway: births and wills of its site's bolts, nothing of another site.
        gateway.publish(topic("bolt-2", "status"), b'{"state": "online"}', retain=True)
        gateway.publish(topic("gw-000", "telemetry", site="demo-site"), reading(3))
        gateway.publish("boltwatch/v1/demo-site/printer3d/printer-1/status", b"offline")
        # Messages of one connection arrive in order: the last ones mark the end.
        gateway.publish(topic("gw-1"), b'{"readings": []}')
        bolt.publish(topic("bolt-1"), reading(9))
        await service.wait_for(
            lambda m: (
                {"boltwatch/v1/site-a/cbolt/bolt-1/telemetry", topic("gw-1")} <= set(topics_of(m))
                and topics_of(m).count(topic("bolt-1")) == 2
            ),
            timeout=DEADLINE_S,
            what="the allowed messages",
        )
        assert sorted(topics_of(service.messages)) == sorted(
            [topic("bolt-1"), topic("bolt-1"), topic("bolt-2", "status"), topic("gw-1")]
        )
        assert [json.loads(m.payload)["seq"] for m in service.on("bolt-1/telemetry")] == [1, 9]
        # Commands: bolt-1 receives its own, not bolt-2's, whatever it subscribed to.
        service.publish(topic("bolt-2", "cmd"), b'{"cmd": "set_interval", "id": "a"}')
        service.publish(topic("bolt-1", "cmd"), b'{"cmd": "set_interval", "id": "b"}')
        await bolt.wait_for(lambda m: len(m) >= 1, timeout=DEADLINE_S, what="its command")
        await asyncio.sleep(0.3)  # a wrongly delivered message would be right behind
        assert topics_of(bolt.messages) == [topic("bolt-1", "cmd")]
    denied = "\n".join(broker.denied())
    other_site = [
        topic("gw-000", site="demo-site"),
        "boltwatch/v1/demo-site/printer3d/printer-1/status",
    ]
    for t in [*forged, *other_site]:
        assert f"'{t}'" in denied, f"the broker did not log refusing {t}"


async def test_ingest_stores_nothing_published_under_another_devices_topic(
    broker: IdentityBroker, broker_files: BrokerFiles, tmp_path: Path
) -> None:
    """`boltwatch run`'s ingest, logged in as the service user (password file), over MQTT 5."""
    cred = broker_files.secrets()
    store_dir = tmp_path / "store"
    config = parse_config(
        {
            "broker": {
                "url": broker.url,
                "client_id": "ingest-identity",
                "username": cred.service_user,
                "password_file": str(broker_files.folder / SERVICE_PASSWORD_FILE),
            },
            "ingest": {"metrics_listen": "", "batch_max_ms": 20},
            "store": {"path": str(store_dir)},
        },
        environ={},
    )
    async with asyncio.timeout(90):
        with Store(store_dir) as store:
            async with (
                IngestService(config, store) as svc,
                as_user(broker, "bolt-1", cred.devices["bolt-1"]) as bolt,
            ):
                await svc.wait_subscribed()
                bolt.publish(topic("bolt-1"), reading(1))
                bolt.publish(topic("bolt-2"), reading(2))  # refused by the broker
                bolt.publish(topic("bolt-2", site="demo-site"), reading(3))  # refused
                # Accepted by the broker (its own topic) but spoofed in the payload: the
                # decoder's check, behind the broker's, dead-letters it.
                bolt.publish(topic("bolt-1"), reading(4, device_id="bolt-2"))
                bolt.publish(topic("bolt-1"), reading(5))
                await wait_until(
                    lambda: handled(store_dir), "bolt-1's two readings and the spoofed dead letter"
                )
            assert store.export_csv(io.StringIO(), DeviceKind.CBOLT, device_id="bolt-2") == 0
            assert store.export_csv(io.StringIO(), DeviceKind.CBOLT, device_id="bolt-1") == 2
            stats = store.stats()
    assert stats.readings == 2
    assert list(stats.dead_letters_by_reason) == ["$.device_id"]
    assert len(broker.denied()) == 2


# -- (2) who may connect ---------------------------------------------------------------------------


@pytest.mark.parametrize("version", [MQTTv311, MQTTv50], ids=["mqtt311", "mqtt5"])
async def test_anonymous_and_wrong_passwords_are_refused_at_connect(
    broker: IdentityBroker, broker_files: BrokerFiles, tls_files: TlsFiles, version: int
) -> None:
    cred = broker_files.secrets()
    port = broker.port
    async with asyncio.timeout(90):
        assert await refused(port, None, None, version=version), "anonymous"
        assert await refused(port, "bolt-1", cred.devices["bolt-1"] + "x", version=version)
        assert await refused(port, "bolt-1", cred.devices["bolt-2"], version=version), (
            "another device's secret"
        )
        assert await refused(port, "bolt-9", cred.devices["bolt-1"], version=version), "unknown"
        assert await refused(port, cred.service_user, "", version=version)
        assert not await refused(port, "bolt-1", cred.devices["bolt-1"], version=version)
        assert not await refused(port, cred.service_user, cred.service_password, version=version)
        # The TLS listener too.
        tls = client_tls_context(tls_files.ca_cert)
        assert await refused(broker.tls_port, None, None, version=version, tls=tls)
        assert not await refused(
            broker.tls_port, "gw-1", cred.devices["gw-1"], version=version, tls=tls
        )
    assert "not authorised" in broker.log_text()


# -- (3) TLS ---------------------------------------------------------------------------------------


def tls_handshake(port: int, context: ssl.SSLContext) -> str:
    with (
        socket.create_connection((HOST, port), 5) as raw,
        context.wrap_socket(raw, server_hostname=HOST) as tls,
    ):
        return str(tls.version())


async def test_the_tls_listener_serves_the_certificate_made_here(
    broker: IdentityBroker, broker_files: BrokerFiles, tls_files: TlsFiles
) -> None:
    assert tls_handshake(broker.tls_port, client_tls_context(tls_files.ca_cert)) in (
        "TLSv1.2",
        "TLSv1.3",
    )
    with pytest.raises(ssl.SSLCertVerificationError):
        tls_handshake(broker.tls_port, client_tls_context(tls_files.other_ca_cert))
    cred = broker_files.secrets()
    url = f"mqtts://{HOST}:{broker.tls_port}"
    tls = client_tls_context(tls_files.ca_cert)
    service = Collector(
        url,
        EVERYTHING,
        tls=tls,
        username=cred.service_user,
        password=cred.service_password,
    )
    device = Collector(
        url, ["unused/x"], tls=tls, username="bolt-2", password=cred.devices["bolt-2"]
    )
    async with asyncio.timeout(90), service, device:
        device.publish(topic("bolt-2"), reading(1))
        device.publish(topic("bolt-1"), reading(2))  # refused over TLS as well
        device.publish(topic("bolt-2"), reading(3))
        await service.wait_for(lambda m: len(m) >= 2, timeout=DEADLINE_S, what="bolt-2's two")
        # Leave once the broker acknowledged all three: a PUBACK arriving after our TLS
        # close_notify would fail the shutdown.
        await wait_until(lambda: device._client._persistent_storage.is_empty, "the PUBACKs")
    assert topics_of(service.messages) == [topic("bolt-2"), topic("bolt-2")]
    assert f"on port {broker.tls_port}" in broker.log_text()


# -- (4) rotation and revocation -------------------------------------------------------------------


async def test_a_rotated_secret_takes_over_on_sighup(
    broker: IdentityBroker, broker_files: BrokerFiles
) -> None:
    old = broker_files.secrets().devices["bolt-1"]
    port = broker.port
    async with asyncio.timeout(120), connected(port, "bolt-1", old, client_id="bolt-1-old") as c:
        done = await asyncio.to_thread(
            cli, "broker", "credentials", "bolt-1", "--out", str(broker_files.folder)
        )
        assert done.returncode == 0, done.stderr
        new = done.stdout.splitlines()[-1]
        assert done.stdout == f"{new}\n", "the secret alone on standard output"
        assert new == broker_files.secrets().devices["bolt-1"] != old
        assert "SIGHUP" in done.stderr
        # Until the reload the broker knows the old secret only.
        assert not await refused(port, "bolt-1", old)
        assert await refused(port, "bolt-1", new)
        broker.reload()
        # After it: the new secret logs in, the old one is refused, and the client still
        # connected with it is disconnected.
        deadline = time.monotonic() + DEADLINE_S
        while not await refused(port, "bolt-1", old):
            assert time.monotonic() < deadline, "the old secret still works after SIGHUP"
            await asyncio.sleep(0.1)
        assert not await refused(port, "bolt-1", new)
        await wait_until(lambda: not c.is_connected, "the old session to be closed")
        # Others are untouched.
        assert not await refused(port, "bolt-2", broker_files.secrets().devices["bolt-2"])


async def test_a_device_removed_from_the_registry_is_revoked_on_sighup(
    broker: IdentityBroker, broker_files: BrokerFiles
) -> None:
    before = broker_files.secrets()
    port = broker.port
    async with asyncio.timeout(120):
        assert not await refused(port, "printer-1", before.devices["printer-1"])
        done = await asyncio.to_thread(broker_files.regenerate, REGISTRY)  # no machines
        assert done.returncode == 0, done.stderr
        assert "removed      2  laser-1, printer-1" in done.stdout
        broker.reload()
        deadline = time.monotonic() + DEADLINE_S
        while not await refused(port, "printer-1", before.devices["printer-1"]):
            assert time.monotonic() < deadline, "the removed device still logs in after SIGHUP"
            await asyncio.sleep(0.1)
        assert not await refused(port, "bolt-1", before.devices["bolt-1"]), "secrets kept"
    assert "printer-1" not in (broker_files.folder / "acl").read_text()


# -- (5) the simulator logs in as each device ------------------------------------------------------


async def test_the_simulator_logs_each_gateway_and_machine_in_with_its_own_secret(
    broker: IdentityBroker, broker_files: BrokerFiles
) -> None:
    """In process, machines speaking Sparkplug B (their own edge node), over plain MQTT."""
    cred = broker_files.secrets()
    scenario = load_scenario("demo")
    result = run_scenario(scenario, seed=3, duration_s=6 * 3_600)
    fleet = build_scenario_fleet(
        scenario,
        result,
        broker.url,
        devices=None,
        speed=20_000,
        gateway_size=100,
        sparkplug=True,
        seed=3,
        credentials=cred.devices,
    )
    async with asyncio.timeout(120):
        async with as_user(broker, cred.service_user, cred.service_password, EVERYTHING) as sub:
            stats = await fleet.run(duration_s=6 * 3_600)
            expected = {
                "boltwatch/v1/demo-site/gateway/gw-000/telemetry",
                "boltwatch/v1/demo-site/cbolt/bridge-loose-b001/status",  # a birth by gw-000
                "spBv1.0/demo-site/NBIRTH/printer-1-edge",
                "spBv1.0/demo-site/DDATA/printer-1-edge/printer-1",
                "spBv1.0/demo-site/DDATA/laser-1-edge/laser-1",
            }
            await sub.wait_for(
                lambda m: expected <= set(topics_of(m)), timeout=DEADLINE_S, what=str(expected)
            )
    assert stats.published > 0
    assert [u.stats.connect_failures for u in fleet.uplinks] == [0, 0, 0]
    assert broker.denied() == []
    log = broker.log_text()
    for user in ("gw-000", "printer-1", "laser-1"):
        assert f"u'{user}'" in log, f"{user} did not log in as itself"


def test_simulate_cli_with_credentials_over_tls(
    broker: IdentityBroker, broker_files: BrokerFiles, tls_files: TlsFiles
) -> None:
    """``boltwatch simulate --credentials DIR`` against the TLS listener; the test CA is trusted
    through ``SSL_CERT_FILE`` (what docs/security.md tells for a private CA)."""
    done = cli(
        *("simulate", "--scenario", "demo", "--duration", "3h", "--speed", "5000"),
        *("--broker", f"mqtts://{HOST}:{broker.tls_port}"),
        *("--credentials", str(broker_files.folder)),
        env={"SSL_CERT_FILE": str(tls_files.ca_cert)},
    )
    assert done.returncode == 0, done.stderr + done.stdout
    assert " 0 reconnects" in done.stdout
    assert broker.denied() == []
    log = broker.log_text()
    for user in ("gw-000", "printer-1", "laser-1"):
        assert f"u'{user}'" in log, f"{user} did not log in as itself"
    assert f"on port {broker.tls_port}" in log

    missing = cli(
        *("simulate", "--scenario", "demo", "--duration", "1h"),
        *("--broker", broker.url, "--credentials", str(broker_files.folder / "nothing.toml")),
    )
    assert missing.returncode == 2
    assert "--credentials" in missing.stderr
    assert "no such file" in missing.stderr
