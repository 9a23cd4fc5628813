"""A real 3-node NATS JetStream cluster for the tests (Debian's ``nats-server``).

Each node listens on free ports of 127.0.0.1 (clients, routes, monitoring), keeps its JetStream
files in the test's temporary directory, and can be killed (SIGKILL), frozen (SIGSTOP) and started
again on the same ports with its files, as a machine of a production cluster would.
:meth:`NatsCluster.start` returns once every node answers ``/healthz`` and the cluster has
elected its JetStream meta leader; :meth:`NatsCluster.stop` ends every node, also after a
failed test (the ``nats_cluster`` fixture calls it in ``finally``).
"""

from __future__ import annotations

import contextlib
import json
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from tests.integration.conftest import Reaper

NATS_SERVER = Path("/usr/sbin/nats-server")


class NatsNode:
    """One ``nats-server`` of the cluster.

    Args:
        name: Its ``server_name``.
        workdir: Config, JetStream store and log go here.
        port: Client port; ``cluster_port``: route port; ``http_port``: monitoring.
        routes: ``host:port`` of every node's routes (its own included, which nats-server
            ignores).
        host: The address it listens on.
        netns: A network namespace to run it in (:class:`NetworkSplit`).
    """

    def __init__(
        self,
        name: str,
        workdir: Path,
        *,
        port: int,
        cluster_port: int,
        http_port: int,
        routes: list[str],
        host: str = "127.0.0.1",
        netns: str | None = None,
    ) -> None:
        self.name = name
        self.workdir = workdir
        self.port = port
        self.cluster_port = cluster_port
        self.http_port = http_port
        self.host = host
        self.netns = netns
        self.config = workdir / "nats.conf"
        self.log = workdir / "nats.log"
        store = workdir / "jetstream"
        route_urls = ", ".join(f'"nats-route://{r}"' for r in routes)
        self.config.write_text(
            f'server_name: "{name}"\n'
            f'listen: "{self.host}:{port}"\n'
            f'http: "{self.host}:{http_port}"\n'
            f'jetstream {{ store_dir: "{store}", max_memory_store: 64MB, max_file_store: 2GB }}\n'
            f'cluster {{ name: "boltwatch-test", listen: "{self.host}:{cluster_port}", '
            f"routes: [{route_urls}] }}\n"
            f'log_file: "{self.log}"\n'
        )
        self._proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        """``nats://127.0.0.1:PORT``."""
        return f"nats://{self.host}:{self.port}"

    @property
    def running(self) -> bool:
        """Whether the process is alive (a frozen one counts as alive)."""
        return self._proc is not None and self._proc.poll() is None

    def start(self) -> None:
        """Start the process (readiness: :meth:`healthy`)."""
        if self.running:
            return
        prefix = ["ip", "netns", "exec", self.netns] if self.netns else []
        self._proc = subprocess.Popen(
            [*prefix, str(NATS_SERVER), "-c", str(self.config)],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )

    def healthy(self) -> bool:
        """``/healthz`` answers ``ok`` (JetStream enabled and current with the cluster)."""
        try:
            with urllib.request.urlopen(
                f"http://{self.host}:{self.http_port}/healthz", timeout=1.0
            ) as r:
                return bool(json.loads(r.read()).get("status") == "ok")
        except (OSError, ValueError, urllib.error.URLError):
            return False

    def jsz(self) -> dict[str, object]:
        """The monitoring endpoint ``/jsz`` (JetStream state, meta leader)."""
        with urllib.request.urlopen(f"http://{self.host}:{self.http_port}/jsz", timeout=2.0) as r:
            data: dict[str, object] = json.loads(r.read())
            return data

    def kill(self) -> None:
        """SIGKILL, as a machine that loses power."""
        proc, self._proc = self._proc, None
        if proc is None:
            return
        if proc.poll() is None:
            proc.send_signal(signal.SIGCONT)  # a frozen process dies too, but reap it promptly
            proc.kill()
        proc.wait()

    def stop(self, timeout: float = 10.0) -> None:
        """SIGTERM, then SIGKILL past ``timeout``."""
        proc, self._proc = self._proc, None
        if proc is None:
            return
        if proc.poll() is None:
            proc.send_signal(signal.SIGCONT)
            proc.terminate()
            try:
                proc.wait(timeout)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()

    def freeze(self) -> None:
        """SIGSTOP: connections stay open and nothing is answered (a hung machine)."""
        if self._proc is not None:
            self._proc.send_signal(signal.SIGSTOP)

    def thaw(self) -> None:
        """SIGCONT."""
        if self._proc is not None:
            self._proc.send_signal(signal.SIGCONT)

    def log_text(self) -> str:
        """The node's log so far (for failure messages)."""
        return self.log.read_text(errors="replace") if self.log.exists() else ""


class NatsCluster:
    """Three JetStream nodes routed to each other, on free ports.

    Args:
        workdir: One sub-folder per node.
        ports: Nine free ports (clients, routes, monitoring for each node).
        split: Run node ``n2`` in this network namespace (the others on its link's host side),
            so that :meth:`NetworkSplit.cut` partitions it from the rest.
    """

    def __init__(self, workdir: Path, ports: list[int], split: NetworkSplit | None = None) -> None:
        if len(ports) != 9:
            raise ValueError("a 3-node cluster needs 9 ports")
        hosts = ["127.0.0.1"] * 3 if split is None else [split.host_ip, split.host_ip, split.ns_ip]
        routes = [f"{hosts[i]}:{ports[3 + i]}" for i in range(3)]
        self.nodes: list[NatsNode] = []
        for i in range(3):
            folder = workdir / f"n{i}"
            folder.mkdir(parents=True, exist_ok=True)
            self.nodes.append(
                NatsNode(
                    f"n{i}",
                    folder,
                    port=ports[i],
                    cluster_port=ports[3 + i],
                    http_port=ports[6 + i],
                    routes=routes,
                    host=hosts[i],
                    netns=split.netns if split is not None and i == 2 else None,
                )
            )

    @property
    def urls(self) -> list[str]:
        """Every node's client URL."""
        return [n.url for n in self.nodes]

    def start(self, timeout: float = 60.0) -> None:
        """Start the nodes not running; wait until each is healthy and a meta leader is elected."""
        for node in self.nodes:
            node.start()
        deadline = time.monotonic() + timeout
        while not (all(n.healthy() for n in self.nodes if n.running) and self.meta_leader()):
            if time.monotonic() > deadline:
                logs = "\n".join(f"--- {n.name}\n{n.log_text()[-3000:]}" for n in self.nodes)
                self.stop()
                raise RuntimeError(
                    f"the NATS cluster did not become healthy in {timeout} s\n{logs}"
                )
            for node in self.nodes:
                if node._proc is not None and node._proc.poll() is not None:
                    self.stop()
                    raise RuntimeError(f"nats-server {node.name} exited:\n{node.log_text()}")
            time.sleep(0.1)

    def meta_leader(self) -> str | None:
        """The JetStream meta leader's server name, as a running node sees it (None: none yet)."""
        for node in self.nodes:
            if not node.running:
                continue
            with contextlib.suppress(OSError, ValueError):
                meta = node.jsz().get("meta_cluster")
                if isinstance(meta, dict) and meta.get("leader"):
                    return str(meta["leader"])
        return None

    def node(self, name: str) -> NatsNode:
        """The node called ``name``."""
        return next(n for n in self.nodes if n.name == name)

    def stop(self) -> None:
        """Stop every node (SIGTERM, then SIGKILL)."""
        for node in self.nodes:
            node.stop()


class NetworkSplit:
    """A network namespace joined to this host by one veth link: a node inside it can be cut off
    from everything outside (both directions, every port) and joined back, as a network
    partition does. Needs root (``ip netns``, from Debian's iproute2).

    Args:
        tag: A short unique tag (the namespace and links are named after it).
        subnet: The third byte of the link's ``10.231.X.0/30``.
    """

    def __init__(self, tag: str, subnet: int) -> None:
        self.netns = f"bw-{tag}"
        self.host_if = f"bwh{tag}"[:15]
        self.ns_if = f"bwn{tag}"[:15]
        self.host_ip = f"10.231.{subnet}.1"
        self.ns_ip = f"10.231.{subnet}.2"

    @staticmethod
    def _ip(*args: str) -> None:
        subprocess.run(["ip", *args], check=True, capture_output=True, timeout=30)

    def create(self) -> None:
        """The namespace, the link and its addresses (a leftover of the same name is replaced)."""
        self.close()
        self._ip("netns", "add", self.netns)
        self._ip("link", "add", self.host_if, "type", "veth", "peer", "name", self.ns_if)
        self._ip("link", "set", self.ns_if, "netns", self.netns)
        self._ip("addr", "add", f"{self.host_ip}/30", "dev", self.host_if)
        self._ip("link", "set", self.host_if, "up")
        inside = ("netns", "exec", self.netns, "ip")
        self._ip(*inside, "addr", "add", f"{self.ns_ip}/30", "dev", self.ns_if)
        self._ip(*inside, "link", "set", self.ns_if, "up")
        self._ip(*inside, "link", "set", "lo", "up")

    def cut(self) -> None:
        """Partition: the link goes down (nothing crosses, in either direction)."""
        self._ip("link", "set", self.host_if, "down")

    def heal(self) -> None:
        """The link comes back up."""
        self._ip("link", "set", self.host_if, "up")

    def close(self) -> None:
        """Remove the namespace (and with it the link); nothing if it is not there."""
        subprocess.run(["ip", "link", "del", self.host_if], capture_output=True, check=False)
        subprocess.run(["ip", "netns", "del", self.netns], capture_output=True, check=False)


def start_member(
    reaper: Reaper, config: Path, log: Path, ready: str, *args: str
) -> subprocess.Popen[bytes]:
    """``boltwatch run --config CONFIG ARGS`` (output appended to ``log``), tracked by
    ``reaper``; returns once ``ready`` appears in the log one more time than before."""
    from tests.integration.conftest import wait_for  # conftest imports this module

    boltwatch = Path(sys.executable).parent / "boltwatch"
    before = log.read_text().count(ready) if log.exists() else 0
    with log.open("ab") as out:
        proc = reaper.popen(
            [str(boltwatch), "run", "--config", str(config), *args],
            stdout=out,
            stderr=subprocess.STDOUT,
        )
    wait_for(lambda: log.read_text().count(ready) > before, 90, f"{config.stem} to start")
    return proc
