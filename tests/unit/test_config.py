"""Config: TOML file, environment overrides, errors that name the key."""

from __future__ import annotations

from pathlib import Path

import pytest

from boltwatch.config import Config, ConfigError, load_config, parse_config, redacted


def test_defaults_are_the_embedded_setup() -> None:
    cfg = parse_config({}, environ={})
    assert cfg == Config()
    assert cfg.broker.url == "mqtt://127.0.0.1:1883"
    assert cfg.store.path == "./boltwatch-data"
    assert cfg.broker.topics == ["boltwatch/v1/+/+/+/+", "spBv1.0/#"]  # JSON and Sparkplug B


def test_file_values(tmp_path: Path) -> None:
    f = tmp_path / "b.toml"
    f.write_text(
        '[broker]\nurl = "mqtts://broker.example:8883"\n'
        'topics = ["$share/g/boltwatch/v1/+/+/+/+"]\n'
        "[ingest]\nbatch_max_ms = 35\n"
    )
    cfg = load_config(f, environ={})
    assert cfg.broker.url == "mqtts://broker.example:8883"
    assert cfg.broker.topics == ["$share/g/boltwatch/v1/+/+/+/+"]
    assert cfg.ingest.batch_max_ms == 35


def test_environment_overrides_file(tmp_path: Path) -> None:
    f = tmp_path / "b.toml"
    f.write_text("[ingest]\nbatch_max_ms = 20\n")
    env = {
        "BOLTWATCH_INGEST_BATCH_MAX_MS": "75",
        "BOLTWATCH_INGEST_STRICT_REGISTRY": "true",
        "BOLTWATCH_BROKER_TOPICS": "a/+/#, b/#",
        "BOLTWATCH_CONFIG": "ignored-here",
        "OTHER": "x",
    }
    cfg = load_config(f, environ=env)
    assert cfg.ingest.batch_max_ms == 75
    assert cfg.ingest.strict_registry is True
    assert cfg.broker.topics == ["a/+/#", "b/#"]


@pytest.mark.parametrize(
    ("data", "env", "key", "words"),
    [
        ({"brokr": {}}, {}, "brokr", "unknown section"),
        ({"broker": {"prot": 1}}, {}, "broker.prot", "unknown key"),
        ({"broker": {"keepalive_s": "x"}}, {}, "broker.keepalive_s", "Expected `int`"),
        ({"broker": {"keepalive_s": 1}}, {}, "broker.keepalive_s", ">= 5"),
        ({"broker": {"topics": [1]}}, {}, "broker.topics[0]", "Expected `str`"),
        ({"broker": {"topics": []}}, {}, "broker.topics", "at least one"),
        ({"broker": {"url": "http://x:1"}}, {}, "broker.url", "mqtt://host:port"),
        ({"broker": {"url": "mqtt://x:99999"}}, {}, "broker.url", "port from 1 to 65535"),
        ({"broker": {"url": "mqtt://:1883"}}, {}, "broker.url", "needs a host"),
        ({"broker": 3}, {}, "broker", "Expected `object`"),
        ({"log": {"level": "loud"}}, {}, "log.level", "Invalid enum value"),
        ({"broker": {"password_file": "/no/such/file"}}, {}, "broker.password_file", "no such"),
        (
            {"broker": {"tls_cert_file": "/etc/hostname"}},
            {},
            "broker.tls_key_file",
            "needs its key",
        ),
        ({"registry": {"path": "/no/registry.toml"}}, {}, "registry.path", "no such file"),
        ({"cluster": {"urls": ["http://n1:4222"]}}, {}, "cluster.urls", "nats:// or tls://"),
        ({"cluster": {"role": "boss"}}, {}, "cluster.role", "Invalid enum value"),
        ({"cluster": {"partitions": 0}}, {}, "cluster.partitions", ">= 1"),
        ({"cluster": {"stream": "a.b"}}, {}, "cluster.stream", "matching regex"),
        (
            {"cluster": {"credentials_file": "/no/x.creds"}},
            {},
            "cluster.credentials_file",
            "no such",
        ),
        ({}, {"BOLTWATCH_CLUSTER_REPLICAS": "7"}, "cluster.replicas", "<= 5"),
        (
            {},
            {"BOLTWATCH_BROKER_KEEPALIVE_S": "2"},
            "broker.keepalive_s",
            "BOLTWATCH_BROKER_KEEPALIVE_S",
        ),
        ({}, {"BOLTWATCH_INGEST_BATCH_MAX_MS": "soon"}, "ingest.batch_max_ms", "from BOLTWATCH_"),
        ({}, {"BOLTWATCH_BROKR_URL": "x"}, "BOLTWATCH_BROKR_URL", "no config section"),
        (
            {},
            {"BOLTWATCH_BROKER_URLL": "x"},
            "broker.urll",
            "unknown key (from BOLTWATCH_BROKER_URLL)",
        ),
        ({"broker": "x"}, {"BOLTWATCH_BROKER_URL": "mqtt://a:1"}, "broker", "must be a table"),
    ],
)
def test_errors_name_the_key(
    data: dict[str, object], env: dict[str, str], key: str, words: str
) -> None:
    with pytest.raises(ConfigError) as info:
        parse_config(data, environ=env)
    assert info.value.key == key, str(info.value)
    assert words in info.value.reason, str(info.value)


def test_password_and_password_file_exclusive(tmp_path: Path) -> None:
    secret = tmp_path / "pw"
    secret.write_text("s3cret\n")
    with pytest.raises(ConfigError) as info:
        parse_config({"broker": {"password": "a", "password_file": str(secret)}}, environ={})
    assert info.value.key == "broker.password_file"


def test_missing_file_and_bad_toml(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="no such config file"):
        load_config(tmp_path / "nope.toml", environ={})
    bad = tmp_path / "bad.toml"
    bad.write_text("[broker]\nurl = \n")
    with pytest.raises(ConfigError) as info:
        load_config(bad, environ={})
    assert info.value.key == str(bad)
    assert "line 2" in info.value.reason


def test_redacted_hides_secrets() -> None:
    cfg = parse_config({"broker": {"username": "u", "password": "hunter2"}}, environ={})
    shown = redacted(cfg)
    assert shown["broker"]["password"] == "***"
    assert shown["broker"]["username"] == "u"
    assert "hunter2" not in repr(shown)


def test_sample_config_loads() -> None:
    sample = Path(__file__).parents[2] / "boltwatch.sample.toml"
    cfg = load_config(sample, environ={})
    assert cfg.broker.receive_maximum > 0


def test_cluster_urls_from_the_environment() -> None:
    cfg = parse_config({}, environ={"BOLTWATCH_CLUSTER_URLS": "nats://a:4222, nats://b:4222"})
    assert cfg.cluster.urls == ["nats://a:4222", "nats://b:4222"]
    assert cfg.cluster.enabled
    assert not parse_config({}, environ={}).cluster.enabled  # the default: one machine, no NATS
