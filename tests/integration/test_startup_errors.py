"""Start-up and configuration errors of ``boltwatch run``: one line naming what is wrong, exit
status 2, never a traceback.

Table-driven: each case prepares one fault (a port in use, a store that is a file or not SQLite, a
store another ``boltwatch run`` holds, a config key unknown or out of range), then runs the real
command line against a real Mosquitto, bounded by :data:`BOUND_S` and killed in a ``finally`` if
it outlives the test. Broker connection failures are covered in ``test_connect_errors.py``.
"""

from __future__ import annotations

import contextlib
import os
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from tests.integration.conftest import MosquittoServer, Reaper

pytestmark = pytest.mark.integration

BOLTWATCH = Path(sys.executable).parent / "boltwatch"
BOUND_S = 60.0
"""A start-up error that turns into a hang fails the test after this long."""


@dataclass
class Setup:
    """What a case prepares its fault with."""

    tmp: Path
    broker_url: str
    reaper: Reaper
    hold: contextlib.ExitStack
    """Things held open until the command has run (a busy socket, a running service)."""
    env: dict[str, str]

    @property
    def store(self) -> Path:
        return self.tmp / "data"

    def config(self, name: str = "boltwatch.toml", **sections: dict[str, Any]) -> Path:
        """A config file: a working one (quiet: warnings and errors only), with ``sections``'
        keys added or replaced."""
        base: dict[str, dict[str, Any]] = {
            "broker": {"url": self.broker_url, "client_id": f"startup-{name}"},
            "ingest": {"metrics_listen": ""},
            "store": {"path": str(self.store)},
            "alerts": {"api_listen": ""},
            "log": {"level": "warning"},
        }
        for section, keys in sections.items():
            base.setdefault(section, {}).update(keys)
        path = self.tmp / name
        path.write_text(
            "".join(
                f"[{section}]\n" + "".join(f"{k} = {_toml(v)}\n" for k, v in keys.items())
                for section, keys in base.items()
            )
        )
        return path


def _toml(value: object) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | float):
        return repr(value)
    return '"' + str(value).replace("\\", "\\\\").replace('"', '\\"') + '"'


Prepare = Callable[[Setup], tuple[Path, list[str]]]
"""Prepares a fault; returns the config to run with and what the error line must name."""


def _busy_port(setup: Setup) -> int:
    sock = setup.hold.enter_context(socket.socket())
    sock.bind(("127.0.0.1", 0))
    sock.listen()
    return int(sock.getsockname()[1])


def api_port_in_use(setup: Setup) -> tuple[Path, list[str]]:
    port = _busy_port(setup)
    config = setup.config(alerts={"api_listen": f"127.0.0.1:{port}", "api_token": "t0ken"})
    return config, ["alerts.api_listen", f"127.0.0.1:{port}", "in use"]


def metrics_port_in_use(setup: Setup) -> tuple[Path, list[str]]:
    port = _busy_port(setup)
    config = setup.config(ingest={"metrics_listen": f"127.0.0.1:{port}"})
    return config, ["ingest.metrics_listen", f"127.0.0.1:{port}", "in use"]


def store_is_a_file(setup: Setup) -> tuple[Path, list[str]]:
    setup.store.write_text("not a folder\n")
    return setup.config(), [str(setup.store), "not a folder"]


def store_is_not_sqlite(setup: Setup) -> tuple[Path, list[str]]:
    setup.store.mkdir()
    db = setup.store / "boltwatch.sqlite3"
    db.write_bytes(b"this is no SQLite database, whatever its name says. " * 100)
    return setup.config(), [str(db), "not a SQLite database"]


def alert_store_is_not_sqlite(setup: Setup) -> tuple[Path, list[str]]:
    setup.store.mkdir()
    db = setup.store / "alerts.db"
    db.write_bytes(b"this is no SQLite database, whatever its name says. " * 100)
    return setup.config(), ["store.path", str(db), "alert store"]


def store_in_use(setup: Setup) -> tuple[Path, list[str]]:
    """A first ``boltwatch run`` on the store, up and subscribed; the case runs a second one."""
    log = setup.tmp / "first.log"
    first_config = setup.config("first.toml")
    with log.open("wb") as out:
        first = setup.reaper.popen(
            [str(BOLTWATCH), "run", "--config", str(first_config)],
            stdout=out,
            stderr=subprocess.STDOUT,
            env=setup.env,
        )
    setup.hold.callback(_stop, first)
    deadline = time.monotonic() + BOUND_S
    while "ingesting " not in log.read_text(errors="replace"):
        if first.poll() is not None or time.monotonic() > deadline:
            raise AssertionError(f"the first boltwatch run did not start:\n{log.read_text()}")
        time.sleep(0.05)
    expected = f"store {setup.store} is in use by another boltwatch (pid {first.pid})"
    return setup.config("second.toml"), [expected]


def unknown_key(setup: Setup) -> tuple[Path, list[str]]:
    return setup.config(store={"retention": 3}), ["store.retention", "unknown key"]


def key_out_of_range(setup: Setup) -> tuple[Path, list[str]]:
    return setup.config(alerts={"interval_s": 0}), ["alerts.interval_s", "> 0"]


def unknown_environment_key(setup: Setup) -> tuple[Path, list[str]]:
    setup.env["BOLTWATCH_STORE_PAHT"] = str(setup.tmp / "elsewhere")
    return setup.config(), ["store.paht", "BOLTWATCH_STORE_PAHT", "unknown key"]


def _stop(proc: subprocess.Popen[bytes]) -> None:
    if proc.poll() is None:
        proc.terminate()
        try:
            proc.wait(15)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(10)


CASES: dict[str, Prepare] = {
    "api port in use": api_port_in_use,
    "metrics port in use": metrics_port_in_use,
    "store is a file": store_is_a_file,
    "store is not SQLite": store_is_not_sqlite,
    "alert store is not SQLite": alert_store_is_not_sqlite,
    "store in use by another boltwatch run": store_in_use,
    "config key unknown": unknown_key,
    "config value out of range": key_out_of_range,
    "environment key unknown": unknown_environment_key,
}


@pytest.fixture
def setup(mosquitto: MosquittoServer, reaper: Reaper, tmp_path: Path) -> Iterator[Setup]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("BOLTWATCH_")}
    with contextlib.ExitStack() as hold:
        yield Setup(tmp_path, mosquitto.url, reaper, hold, {**env, "COLUMNS": "200"})


@pytest.mark.parametrize("prepare", list(CASES.values()), ids=list(CASES))
def test_boltwatch_run_exits_2_with_one_line_naming_the_fault(
    setup: Setup, prepare: Prepare
) -> None:
    config, named = prepare(setup)
    proc = setup.reaper.popen(
        [str(BOLTWATCH), "run", "--config", str(config)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        env=setup.env,
    )
    try:
        stdout_b, stderr_b = proc.communicate(timeout=BOUND_S)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(10)
    stdout, stderr = stdout_b.decode(errors="replace"), stderr_b.decode(errors="replace")
    both = f"stdout:\n{stdout}\nstderr:\n{stderr}"
    assert proc.returncode == 2, both
    assert "Traceback" not in stdout + stderr, both
    lines = [line for line in stderr.splitlines() if line.strip()]
    assert len(lines) == 1, both
    (line,) = lines
    assert line.startswith("error: "), both
    for part in named:
        assert part in line, f"{part!r} not named in {line!r}"
