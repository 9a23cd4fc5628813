"""Fixtures of the integration tests: real servers on free ports, and an MQTT collector.

``mosquitto`` starts a real Mosquitto (the Debian package; ``make test`` installs it) on a free
port of 127.0.0.1 with persistence in the test's temporary directory, so a ``restart()`` keeps
retained messages, persistent sessions and their queued messages, as a production broker does.
``secure_mosquitto`` is the same broker behind a TLS listener that requires a client certificate
(mutual TLS, certificates from the session-scoped ``tls_files``: a throwaway CA made with the
``openssl`` CLI) and a password file (``allow_anonymous false``).
:class:`Collector` subscribes with gmqtt and records every message (topic, payload, retain, qos).
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import pwd
import secrets
import shutil
import signal
import socket
import ssl
import subprocess
import sys
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import Any, TypeVar

import gmqtt
import pytest
from gmqtt.mqtt.constants import MQTTv311

# The hash helper lives in product code (`boltwatch broker config` writes password files).
from boltwatch.broker_identity import password_hash as mosquitto_password_hash
from tests.integration.natscluster import NATS_SERVER, NatsCluster, NetworkSplit

MOSQUITTO = Path("/usr/sbin/mosquitto")
MOSQUITTO_PASSWD = Path("/usr/bin/mosquitto_passwd")
# The user ``secure_mosquitto`` knows (a throwaway password, only for the tests' brokers).
BROKER_USER = "ingest"
BROKER_PASSWORD = "s3cret-Tr0ub4dor-&-3"


def free_port() -> int:
    """A TCP port of 127.0.0.1 that nothing listens on (now)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@dataclass(frozen=True, slots=True)
class TlsFiles:
    """A throwaway PKI (PEM files): a CA, a broker certificate and a client certificate.

    Attributes:
        ca_cert: The CA that signed ``server_cert`` and ``client_cert``.
        server_cert: For 127.0.0.1 and localhost (subjectAltName ``IP:127.0.0.1, DNS:localhost``).
        server_key: Its key.
        client_cert: A client certificate (CN ``boltwatch-ingest``) for mutual TLS.
        client_key: Its key.
        other_ca_cert: An unrelated CA: the broker's certificate does not verify against it.
        other_client_cert: A client certificate signed by the unrelated CA.
        other_client_key: Its key.
    """

    ca_cert: Path
    server_cert: Path
    server_key: Path
    client_cert: Path
    client_key: Path
    other_ca_cert: Path
    other_client_cert: Path
    other_client_key: Path


def _openssl(*args: str | Path) -> None:
    subprocess.run(
        ["openssl", *map(str, args)], check=True, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE
    )


def _new_key(path: Path) -> None:
    _openssl("genpkey", "-algorithm", "EC", "-pkeyopt", "ec_paramgen_curve:P-256", "-out", path)


def _new_ca(folder: Path, name: str) -> tuple[Path, Path]:
    key, cert = folder / f"{name}.key", folder / f"{name}.crt"
    _new_key(key)
    _openssl(
        "req", "-x509", "-new", "-key", key, "-out", cert, "-days", "2", "-sha256",
        "-subj", f"/CN={name}",
        "-addext", "basicConstraints=critical,CA:TRUE",
        "-addext", "keyUsage=critical,keyCertSign,cRLSign",
    )  # fmt: skip
    return cert, key


def _new_leaf(folder: Path, name: str, ca: tuple[Path, Path], extensions: str) -> tuple[Path, Path]:
    key, csr, cert = folder / f"{name}.key", folder / f"{name}.csr", folder / f"{name}.crt"
    ext = folder / f"{name}.ext"
    ext.write_text(
        "basicConstraints=critical,CA:FALSE\n"
        "keyUsage=critical,digitalSignature,keyEncipherment\n"
        "subjectKeyIdentifier=hash\nauthorityKeyIdentifier=keyid\n" + extensions
    )
    _new_key(key)
    _openssl("req", "-new", "-key", key, "-out", csr, "-subj", f"/CN={name}")
    _openssl(
        "x509", "-req", "-in", csr, "-CA", ca[0], "-CAkey", ca[1], "-set_serial",
        str(secrets.randbits(63)), "-days", "2", "-sha256", "-extfile", ext, "-out", cert,
    )  # fmt: skip
    return cert, key


def make_tls_files(folder: Path) -> TlsFiles:
    """Generate :class:`TlsFiles` in ``folder`` with the ``openssl`` CLI."""
    ca = _new_ca(folder, "boltwatch-test-ca")
    server = _new_leaf(
        folder, "localhost", ca, "subjectAltName=IP:127.0.0.1,DNS:localhost\n"
        "extendedKeyUsage=serverAuth\n"
    )  # fmt: skip
    client = _new_leaf(folder, "boltwatch-ingest", ca, "extendedKeyUsage=clientAuth\n")
    other = _new_ca(folder, "unrelated-ca")
    other_client = _new_leaf(folder, "stranger", other, "extendedKeyUsage=clientAuth\n")
    return TlsFiles(
        ca_cert=ca[0],
        server_cert=server[0],
        server_key=server[1],
        client_cert=client[0],
        client_key=client[1],
        other_ca_cert=other[0],
        other_client_cert=other_client[0],
        other_client_key=other_client[1],
    )


@pytest.fixture(scope="session")
def tls_files(tmp_path_factory: pytest.TempPathFactory) -> TlsFiles:
    """A throwaway CA with a broker and a client certificate, made once per test session."""
    if shutil.which("openssl") is None:
        pytest.skip("the openssl CLI is not installed (it makes the test certificates)")
    return make_tls_files(tmp_path_factory.mktemp("pki"))


def write_password_file(path: Path, users: Mapping[str, str]) -> None:
    """A Mosquitto ``password_file`` (with ``mosquitto_passwd -b`` when it is installed)."""
    if not MOSQUITTO_PASSWD.exists():
        path.write_text("".join(f"{u}:{mosquitto_password_hash(p)}\n" for u, p in users.items()))
        return
    path.unlink(missing_ok=True)
    for user, password in users.items():
        create = ["-c"] if not path.exists() else []
        subprocess.run(
            [str(MOSQUITTO_PASSWD), *create, "-b", str(path), user, password],
            check=True,
            capture_output=True,
        )


@dataclass(frozen=True, slots=True)
class TlsListener:
    """The TLS side of a :class:`MosquittoServer` listener.

    Attributes:
        cafile: CA of the client certificates.
        certfile: The broker's certificate.
        keyfile: Its key.
        require_certificate: Mutual TLS: a client without a certificate signed by ``cafile``
            is refused during the handshake.
    """

    cafile: Path
    certfile: Path
    keyfile: Path
    require_certificate: bool = True


class MosquittoServer:
    """A Mosquitto process on a fixed port, which can be stopped and started again on it.

    Args:
        workdir: Directory for the config, the persistence database and the log.
        port: Port to listen on (127.0.0.1); default a free one.
        tls: Make the listener a TLS one (``mqtts://``).
        users: User names and passwords: a ``password_file`` and ``allow_anonymous false``.
    """

    host = "127.0.0.1"

    def __init__(
        self,
        workdir: Path,
        port: int | None = None,
        *,
        tls: TlsListener | None = None,
        users: Mapping[str, str] | None = None,
    ) -> None:
        self.workdir = workdir
        self.port = port or free_port()
        self.tls = tls
        self.config = workdir / "mosquitto.conf"
        self.log = workdir / "mosquitto.log"
        user = pwd.getpwuid(os.geteuid()).pw_name
        listener = f"listener {self.port} {self.host}\n"
        if tls is not None:
            listener += (
                f"cafile {tls.cafile}\ncertfile {tls.certfile}\nkeyfile {tls.keyfile}\n"
                f"require_certificate {str(tls.require_certificate).lower()}\n"
            )
        auth = "allow_anonymous true\n"
        if users is not None:
            write_password_file(workdir / "passwords", users)
            auth = f"allow_anonymous false\npassword_file {workdir / 'passwords'}\n"
        # `user`: started as root, Mosquitto would switch to the `mosquitto` user, which cannot
        # write into the test's temporary directory.
        self.config.write_text(
            listener + auth + "persistence true\n"
            f"persistence_location {workdir}/\n"
            f"log_dest file {self.log}\n"
            "log_type error\nlog_type warning\nlog_type notice\nlog_type information\n"
            "max_queued_messages 1000000\n"
            f"user {user}\n"
        )
        self._proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        """``mqtt://127.0.0.1:PORT`` (``mqtts://`` with a TLS listener)."""
        return f"{'mqtts' if self.tls is not None else 'mqtt'}://{self.host}:{self.port}"

    @property
    def running(self) -> bool:
        """Whether the process is alive."""
        return self._proc is not None and self._proc.poll() is None

    def start(self, timeout: float = 10.0) -> None:
        """Start the broker and wait until it accepts connections."""
        if self.running:
            return
        self._proc = subprocess.Popen(
            [str(MOSQUITTO), "-c", str(self.config)],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
        )
        deadline = time.monotonic() + timeout
        while True:
            if self._proc.poll() is not None:
                err = self._proc.stderr.read().decode() if self._proc.stderr else ""
                raise RuntimeError(f"mosquitto exited at start: {err}\n{self.log_text()}")
            try:
                with socket.create_connection((self.host, self.port), timeout=0.2):
                    return
            except OSError:
                if time.monotonic() > deadline:
                    self.kill()
                    raise RuntimeError(f"mosquitto did not listen on {self.port}") from None
                time.sleep(0.02)

    def stop(self, timeout: float = 10.0) -> None:
        """Stop the broker with SIGTERM (it saves its database) and wait for it to exit."""
        proc, self._proc = self._proc, None
        if proc is None:
            return
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(timeout)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
        if proc.stderr is not None:
            proc.stderr.close()

    def kill(self) -> None:
        """Kill the broker (SIGKILL: nothing saved since the last autosave)."""
        proc, self._proc = self._proc, None
        if proc is None:
            return
        if proc.poll() is None:
            proc.kill()
        proc.wait()
        if proc.stderr is not None:
            proc.stderr.close()

    def pause(self) -> None:
        """Freeze the broker (SIGSTOP): connections stay open, nothing is answered."""
        if self._proc is not None:
            self._proc.send_signal(signal.SIGSTOP)

    def resume(self) -> None:
        """Unfreeze the broker (SIGCONT)."""
        if self._proc is not None:
            self._proc.send_signal(signal.SIGCONT)

    def restart(self) -> None:
        """Stop, then start again on the same port."""
        self.stop()
        self.start()

    async def astop(self) -> None:
        """:meth:`stop` without blocking the event loop."""
        await asyncio.to_thread(self.stop)

    async def astart(self) -> None:
        """:meth:`start` without blocking the event loop."""
        await asyncio.to_thread(self.start)

    def log_text(self) -> str:
        """The broker's log so far (for failure messages)."""
        return self.log.read_text() if self.log.exists() else ""


@pytest.fixture
def mosquitto(tmp_path: Path) -> Iterator[MosquittoServer]:
    """A real Mosquitto on a free port, persistent, stopped after the test."""
    if not MOSQUITTO.exists():
        pytest.skip(f"{MOSQUITTO} is not installed (`make test` installs the mosquitto package)")
    workdir = tmp_path / "mosquitto"
    workdir.mkdir()
    server = MosquittoServer(workdir)
    server.start()
    try:
        yield server
    finally:
        server.stop()


_Proc = TypeVar("_Proc", subprocess.Popen[bytes], asyncio.subprocess.Process)


class Reaper:
    """The processes a test started; :func:`reaper` kills those still running when it ends.

    A test that fails half-way (an assertion, a timeout) must not leave a ``boltwatch run``
    behind: the ``reaper`` fixture SIGKILLs whatever is still alive at teardown.
    """

    def __init__(self) -> None:
        self._procs: list[subprocess.Popen[bytes] | asyncio.subprocess.Process] = []

    def track(self, proc: _Proc) -> _Proc:
        """Kill ``proc`` at teardown if it is still running then."""
        self._procs.append(proc)
        return proc

    def popen(self, args: Sequence[str], **kwargs: Any) -> subprocess.Popen[bytes]:
        """``subprocess.Popen(args, **kwargs)``, tracked."""
        proc: subprocess.Popen[bytes] = subprocess.Popen(args, **kwargs)
        self._procs.append(proc)
        return proc

    def kill_all(self) -> None:
        """SIGKILL every tracked process still running, and reap it."""
        for proc in self._procs:
            if isinstance(proc, subprocess.Popen):
                if proc.poll() is None:
                    proc.kill()
                    with contextlib.suppress(subprocess.TimeoutExpired):
                        proc.wait(10)
            elif proc.returncode is None:
                # An asyncio child: its loop may be gone, so signal and reap it by pid.
                with contextlib.suppress(ProcessLookupError):
                    os.kill(proc.pid, signal.SIGKILL)
                with contextlib.suppress(ChildProcessError):
                    os.waitpid(proc.pid, 0)


def wait_for(predicate: Callable[[], bool], timeout: float, what: str) -> None:
    """Poll ``predicate`` every 0.1 s until it holds; fail naming ``what`` after ``timeout`` s
    (generous deadlines: a loaded machine is slow, never wrong)."""
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout} s waiting for {what}")
        time.sleep(0.1)


def stored_readings(store_dir: Path, kind: str = "cbolt") -> int:
    """Readings of ``kind`` a running service's store holds (read-only; 0 before it exists)."""
    import sqlite3

    file = store_dir / "boltwatch.sqlite3"
    if not file.exists():
        return 0
    conn = sqlite3.connect(f"file:{file}?mode=ro", uri=True, timeout=10)
    try:
        row = conn.execute("SELECT n FROM reading_counts WHERE kind = ?", (kind,)).fetchone()
    except sqlite3.OperationalError:
        return 0
    finally:
        conn.close()
    return int(row[0]) if row else 0


@contextlib.contextmanager
def boltwatch_run(reaper: Reaper, config: Path, log: Path) -> Iterator[subprocess.Popen[bytes]]:
    """``boltwatch run --config CONFIG`` (output to ``log``) until the block ends, once it has
    subscribed; then SIGTERM, and it must end with status 0 and no traceback."""
    boltwatch = Path(sys.executable).parent / "boltwatch"
    with log.open("wb") as out:
        run = reaper.popen(
            [str(boltwatch), "run", "--config", str(config)], stdout=out, stderr=subprocess.STDOUT
        )
    try:
        wait_for(lambda: "ingesting " in log.read_text(), 60, "boltwatch run to subscribe")
        yield run
    finally:
        run.send_signal(signal.SIGTERM)
    run.wait(timeout=30)  # the reaper kills it if this fails
    assert run.returncode == 0, log.read_text()
    assert "Traceback" not in log.read_text()


@pytest.fixture
def reaper() -> Iterator[Reaper]:
    """Tracks the processes a test starts; kills the survivors, whether the test passed or not."""
    procs = Reaper()
    try:
        yield procs
    finally:
        procs.kill_all()


@pytest.fixture
def secure_mosquitto(tmp_path: Path, tls_files: TlsFiles) -> Iterator[MosquittoServer]:
    """Mosquitto with mutual TLS (``tls_files``) and a password file: user
    :data:`BROKER_USER`, password :data:`BROKER_PASSWORD`; anonymous clients are refused."""
    if not MOSQUITTO.exists():
        pytest.skip(f"{MOSQUITTO} is not installed (`make test` installs the mosquitto package)")
    workdir = tmp_path / "mosquitto-tls"
    workdir.mkdir()
    tls = TlsListener(tls_files.ca_cert, tls_files.server_cert, tls_files.server_key)
    server = MosquittoServer(workdir, tls=tls, users={BROKER_USER: BROKER_PASSWORD})
    server.start()
    try:
        yield server
    finally:
        server.stop()


def client_tls_context(
    cafile: Path, certfile: Path | None = None, keyfile: Path | None = None
) -> ssl.SSLContext:
    """A client-side TLS context: verify the broker with ``cafile``, present a certificate."""
    context = ssl.create_default_context(cafile=str(cafile))
    if certfile is not None:
        context.load_cert_chain(str(certfile), None if keyfile is None else str(keyfile))
    return context


@dataclass(frozen=True, slots=True)
class Received:
    """One message a :class:`Collector` got."""

    topic: str
    payload: bytes
    retain: bool
    qos: int


class Collector:
    """A gmqtt subscriber that records what it receives; ``async with`` connects it.

    With ``clean_session=False`` (and a fixed ``client_id``) the broker keeps its subscription
    and queues QoS 1 messages for it while it is disconnected, broker restarts included; it
    reconnects by itself (gmqtt's loop, short delay).

    Args:
        url: ``mqtt://host:port`` (or ``mqtts://``, with ``tls``).
        topics: Topic filters to subscribe to.
        client_id: MQTT client id (default random).
        clean_session: False for a persistent session.
        qos: Subscription QoS.
        version: MQTT protocol version.
        tls: TLS context (see :func:`client_tls_context`); required for ``mqtts://``.
        username: User name, if the broker wants one.
        password: Its password.
    """

    def __init__(
        self,
        url: str,
        topics: Sequence[str] = ("#",),
        *,
        client_id: str | None = None,
        clean_session: bool = True,
        qos: int = 1,
        version: int = MQTTv311,
        tls: ssl.SSLContext | None = None,
        username: str | None = None,
        password: str | None = None,
    ) -> None:
        if url.startswith("mqtts://") and tls is None:
            raise ValueError(f"{url} is a TLS listener: pass tls=client_tls_context(...)")
        host, _, port = url.removeprefix("mqtt://").removeprefix("mqtts://").partition(":")
        self.host = host
        self.port = int(port or 1883)
        self.tls = tls
        self.topics = list(topics)
        self.qos = qos
        self.version = version
        self.messages: list[Received] = []
        self._subscribed = asyncio.Event()
        self._client: Any = gmqtt.Client(client_id, clean_session=clean_session)
        self._client.reconnect_delay = 0.1
        self._client.on_message = self._on_message
        self._client.on_subscribe = self._on_subscribe
        if username is not None:
            self._client.set_auth_credentials(username, password)

    def _on_message(
        self, client: object, topic: str, payload: bytes, qos: int, properties: dict[str, Any]
    ) -> int:
        self.messages.append(Received(topic, bytes(payload), bool(properties.get("retain")), qos))
        return 0

    def _on_subscribe(self, client: object, mid: int, qos: object, properties: object) -> None:
        self._subscribed.set()

    async def __aenter__(self) -> Collector:
        await self._client.connect(
            self.host,
            self.port,
            ssl=self.tls if self.tls is not None else False,
            version=self.version,
            keepalive=30,
        )
        self._client.subscribe([gmqtt.Subscription(t, qos=self.qos) for t in self.topics])
        await asyncio.wait_for(self._subscribed.wait(), 5.0)
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self._client.disconnect()

    def publish(self, topic: str, payload: bytes, *, qos: int = 1, retain: bool = False) -> None:
        """Publish a message (e.g. a command to a device)."""
        self._client.publish(topic, payload, qos=qos, retain=retain)

    def on(self, suffix: str) -> list[Received]:
        """Messages whose topic ends with ``suffix``."""
        return [m for m in self.messages if m.topic.endswith(suffix)]

    async def wait_for(
        self,
        predicate: Callable[[list[Received]], bool],
        timeout: float = 10.0,  # noqa: ASYNC109 - a polling bound, not a cancellation scope
        what: str = "the expected messages",
    ) -> None:
        """Wait until ``predicate(messages)`` holds.

        Raises:
            AssertionError: Not within ``timeout`` seconds (says how many messages came).
        """
        deadline = asyncio.get_running_loop().time() + timeout
        while not predicate(self.messages):
            if asyncio.get_running_loop().time() > deadline:
                raise AssertionError(
                    f"timed out after {timeout} s waiting for {what} "
                    f"({len(self.messages)} messages received)"
                )
            await asyncio.sleep(0.02)


# The VictoriaMetrics fixture lives with its server class; registered here for every test module.
from tests.integration.pg import pg_dsn, postgres  # noqa: E402, F401
from tests.integration.vm import victoria  # noqa: E402, F401


@pytest.fixture
def nats_cluster(tmp_path: Path) -> Iterator[NatsCluster]:
    """A real 3-node NATS JetStream cluster (Debian's nats-server) on free ports, stopped after
    the test whether it passed or not."""
    if not NATS_SERVER.exists():
        pytest.skip(
            f"{NATS_SERVER} is not installed (`make test` installs the nats-server package)"
        )
    # A port found free can be taken by another process before nats-server binds it: then the
    # cluster is started again on other ports (its files are new each time).
    for attempt in range(3):
        ports: set[int] = set()
        while len(ports) < 9:
            ports.add(free_port())
        cluster = NatsCluster(tmp_path / f"nats-{attempt}", sorted(ports))
        try:
            cluster.start()
            break
        except RuntimeError as exc:
            if "address already in use" not in str(exc) or attempt == 2:
                raise
    try:
        yield cluster
    finally:
        cluster.stop()


@pytest.fixture
def nats_split_cluster(tmp_path: Path) -> Iterator[tuple[NatsCluster, NetworkSplit]]:
    """A 3-node cluster whose node ``n2`` runs in a network namespace of its own, so that the
    test can partition it (``split.cut()``) and heal it; namespace and nodes are removed after
    the test whether it passed or not. Needs root (``ip netns``)."""
    if not NATS_SERVER.exists():
        pytest.skip(
            f"{NATS_SERVER} is not installed (`make test` installs the nats-server package)"
        )
    if os.geteuid() != 0 or shutil.which("ip") is None:
        pytest.skip("a network partition needs root and `ip` (iproute2) for a network namespace")
    tag = f"{os.getpid() % 100_000}"
    split = NetworkSplit(tag, subnet=os.getpid() % 250 + 1)
    split.create()
    cluster: NatsCluster | None = None
    try:
        for attempt in range(3):
            ports: set[int] = set()
            while len(ports) < 9:
                ports.add(free_port())
            cluster = NatsCluster(tmp_path / f"nats-{attempt}", sorted(ports), split)
            try:
                cluster.start()
                break
            except RuntimeError as exc:
                if "address already in use" not in str(exc) or attempt == 2:
                    raise
        assert cluster is not None
        yield cluster, split
    finally:
        if cluster is not None:
            cluster.stop()
        split.close()
