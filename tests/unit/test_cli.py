"""The command line: listed commands work, errors are one line naming the key, exit status 2."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from typer.testing import CliRunner

from boltwatch import __version__
from boltwatch.cli import app
from boltwatch.tour import sample_registry_path
from sensors.examples import EXAMPLES

runner = CliRunner()


def test_help_lists_the_working_commands() -> None:
    result = runner.invoke(app, ["--help"])
    assert result.exit_code == 0
    for command in ("version", "config", "registry", "contract", "demo"):
        assert command in result.output


def test_console_script_is_installed() -> None:
    exe = Path(sys.executable).parent / "boltwatch"
    result = subprocess.run([str(exe), "--help"], capture_output=True, text=True, check=False)
    assert result.returncode == 0, result.stderr
    assert "Monitoring for connected bolts" in result.stdout


def test_version() -> None:
    result = runner.invoke(app, ["version"])
    assert result.exit_code == 0
    assert result.output.strip() == f"boltwatch {__version__}"
    assert __version__ != "0.0.0+unknown"


def test_config_check_ok_and_show_redacts(tmp_path: Path) -> None:
    f = tmp_path / "c.toml"
    f.write_text('[broker]\nurl = "mqtt://10.0.0.5:1883"\npassword = "hunter2"\n')
    ok = runner.invoke(app, ["config", "check", "--config", str(f)])
    assert ok.exit_code == 0, ok.output
    assert "config ok" in ok.output
    shown = runner.invoke(app, ["config", "show", "-c", str(f)])
    assert shown.exit_code == 0
    data = json.loads(shown.output)
    assert data["broker"]["url"] == "mqtt://10.0.0.5:1883"
    assert data["broker"]["password"] == "***"
    assert "hunter2" not in shown.output


def test_config_error_names_key_and_env_var(tmp_path: Path) -> None:
    f = tmp_path / "c.toml"
    f.write_text("[ingest]\nbatch_max_ms = 0\n")
    bad = runner.invoke(app, ["config", "check", "-c", str(f)])
    assert bad.exit_code == 2
    assert "ingest.batch_max_ms" in bad.output
    env_bad = runner.invoke(app, ["config", "check"], env={"BOLTWATCH_BROKER_KEEPALIVE_S": "nope"})
    assert env_bad.exit_code == 2
    assert "broker.keepalive_s" in env_bad.output
    assert "BOLTWATCH_BROKER_KEEPALIVE_S" in env_bad.output
    assert "Traceback" not in env_bad.output


def test_config_from_environment_variable(tmp_path: Path) -> None:
    f = tmp_path / "c.toml"
    f.write_text('[log]\nlevel = "debug"\n')
    result = runner.invoke(app, ["config", "show"], env={"BOLTWATCH_CONFIG": str(f)})
    assert result.exit_code == 0, result.output
    assert json.loads(result.output)["log"]["level"] == "debug"


def test_registry_check_and_locate() -> None:
    path = sample_registry_path()
    ok = runner.invoke(app, ["registry", "check", path])
    assert ok.exit_code == 0, ok.output
    assert "registry ok" in ok.output
    from sensors.registry import load_registry

    reg = load_registry(path)
    bolt = next(d for d in reg.devices() if reg.bolt(d) is not None and reg.history(d))
    found = runner.invoke(app, ["registry", "locate", path, bolt])
    assert found.exit_code == 0, found.output
    loc = reg.locate(bolt)
    assert loc is not None
    assert loc.joint is not None
    assert loc.joint in found.output
    assert "K=" in found.output
    missing = runner.invoke(app, ["registry", "locate", path, "no-such-bolt"])
    assert missing.exit_code == 1


def test_registry_error_is_one_line(tmp_path: Path) -> None:
    f = tmp_path / "r.toml"
    f.write_text('[[sites]]\nid = "a b"\nname = "x"\n')
    result = runner.invoke(app, ["registry", "check", str(f)])
    assert result.exit_code == 2
    assert "sites[0].id" in result.output


def test_contract_fields() -> None:
    result = runner.invoke(app, ["contract", "fields", "--kind", "cbolt"], env={"COLUMNS": "200"})
    assert result.exit_code == 0
    assert "preload_kn" in result.output
    assert "kN" in result.output
    assert "hotend_c" not in result.output
    bad = runner.invoke(app, ["contract", "fields", "--kind", "toaster"])
    assert bad.exit_code == 2


@pytest.mark.parametrize("example", EXAMPLES, ids=[e.title for e in EXAMPLES])
def test_contract_check_every_example(tmp_path: Path, example: object) -> None:
    from sensors.examples import Example

    assert isinstance(example, Example)
    f = tmp_path / "payload.json"
    f.write_bytes(example.payload)
    result = runner.invoke(
        app, ["contract", "check", example.topic, str(f)], env={"COLUMNS": "300"}
    )
    if example.rejected_because:
        assert result.exit_code == 2
        assert example.rejected_because in result.output
    else:
        assert result.exit_code == 0, result.output
        assert any(w in result.output for w in ("reading", "event", "status"))


def test_contract_check_reads_stdin() -> None:
    result = runner.invoke(
        app,
        ["contract", "check", "boltwatch/v1/s/cbolt/b1/telemetry"],
        input='{"ts": 1772323500000, "seq": 1, "preload_kn": 5}',
    )
    assert result.exit_code == 0, result.output
    assert "preload_kn=5.0" in result.output


def test_demo_runs_the_contract_tour() -> None:
    result = runner.invoke(app, ["demo", "--tour"], env={"COLUMNS": "200"})
    assert result.exit_code == 0, result.output
    rejected = sum(1 for e in EXAMPLES if e.rejected_because)
    assert f"{rejected} rejected" in result.output
    assert "spoofed" in result.output
    assert "prusa-xl-1" in result.output  # the Sparkplug B device
    assert "position" in result.output


def test_python_dash_m() -> None:
    env = {**os.environ, "COLUMNS": "120"}
    result = subprocess.run(
        [sys.executable, "-m", "boltwatch", "version"],
        capture_output=True,
        text=True,
        check=False,
        env=env,
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith("boltwatch ")


def test_error_paths_with_brackets_are_printed_whole() -> None:
    result = runner.invoke(
        app,
        ["contract", "check", "boltwatch/v1/s/gateway/gw/telemetry"],
        input='{"readings": [{"kind": "cbolt", "ts": 1772323500000, "seq": 1, "preload_kn": 5}]}',
        env={"COLUMNS": "300"},
    )
    assert result.exit_code == 2
    assert "$.readings[0].device_id" in result.output


def test_user_errors_raised_by_a_task_group_are_one_line_each(
    capsys: pytest.CaptureFixture[str],
) -> None:
    """``boltwatch run``'s API task fails inside a TaskGroup: still one line and status 2."""
    import errno

    import typer

    from alerts.errors import ListenError
    from boltwatch.cli import _user_errors

    busy = ListenError("alerts.api_listen", errno.EADDRINUSE, "cannot listen on 127.0.0.1:8080")
    with pytest.raises(typer.Exit) as info, _user_errors():
        raise ExceptionGroup("unhandled errors in a TaskGroup", [busy])
    assert info.value.exit_code == 2
    assert capsys.readouterr().err.strip() == (
        "error: alerts.api_listen: cannot listen on 127.0.0.1:8080"
    )
    # A group holding anything else is a bug: it goes on as it is (a traceback).
    with pytest.raises(ExceptionGroup), _user_errors():
        raise ExceptionGroup("x", [busy, ZeroDivisionError()])
