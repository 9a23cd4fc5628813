"""The ``[alerts]`` keys of the API's rate limits and CORS: defaults, overrides, errors naming
the key."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from alerts.ratelimit import RateLimits
from boltwatch.config import ConfigError, load_config, parse_config


def test_defaults() -> None:
    a = parse_config({}, environ={}).alerts
    assert (a.api_rate_per_s, a.api_burst, a.api_auth_failures_per_min) == (20.0, 40, 5.0)
    assert a.api_cors_origins == []
    # the same defaults as the API's own
    limits = RateLimits()
    assert (limits.rate_per_s, limits.burst, limits.auth_failures_per_min) == (20.0, 40, 5.0)


def test_file_and_environment(tmp_path: Path) -> None:
    f = tmp_path / "b.toml"
    f.write_text(
        "[alerts]\napi_rate_per_s = 2.5\napi_burst = 5\napi_auth_failures_per_min = 0\n"
        'api_cors_origins = ["https://ops.example.com", "http://localhost:3000"]\n'
    )
    a = load_config(f, environ={}).alerts
    assert (a.api_rate_per_s, a.api_burst, a.api_auth_failures_per_min) == (2.5, 5, 0.0)
    assert a.api_cors_origins == ["https://ops.example.com", "http://localhost:3000"]
    a = load_config(
        f,
        environ={
            "BOLTWATCH_ALERTS_API_RATE_PER_S": "0",
            "BOLTWATCH_ALERTS_API_BURST": "80",
            "BOLTWATCH_ALERTS_API_CORS_ORIGINS": "https://a.example, https://[::1]:8443",
        },
    ).alerts
    assert (a.api_rate_per_s, a.api_burst) == (0.0, 80)
    assert a.api_cors_origins == ["https://a.example", "https://[::1]:8443"]


@pytest.mark.parametrize(
    ("alerts", "key", "reason"),
    [
        ({"api_rate_per_s": -1}, "alerts.api_rate_per_s", ">= 0.0"),
        ({"api_rate_per_s": float("nan")}, "alerts.api_rate_per_s", ">= 0.0"),
        ({"api_rate_per_s": float("inf")}, "alerts.api_rate_per_s", "<= 1000000.0"),
        ({"api_rate_per_s": "fast"}, "alerts.api_rate_per_s", "Expected `float`"),
        ({"api_burst": 0}, "alerts.api_burst", ">= 1"),
        ({"api_burst": 2.5}, "alerts.api_burst", "Expected `int`"),
        ({"api_auth_failures_per_min": -5}, "alerts.api_auth_failures_per_min", ">= 0.0"),
        ({"api_cors_origins": "https://a.example"}, "alerts.api_cors_origins", "array"),
        ({"api_cors_origins": ["*"]}, "alerts.api_cors_origins", "'*' is not an origin"),
        ({"api_cors_origins": ["https://a.example/"]}, "alerts.api_cors_origins", "no path"),
        ({"api_cors_origins": ["https://a.example/x"]}, "alerts.api_cors_origins", "no path"),
        ({"api_cors_origins": ["a.example"]}, "alerts.api_cors_origins", "scheme://"),
        ({"api_cors_origins": ["ftp://a.example"]}, "alerts.api_cors_origins", "scheme://"),
        ({"api_cors_origins": ["https://*.example"]}, "alerts.api_cors_origins", "wildcard"),
        ({"api_cors_origins": ["null"]}, "alerts.api_cors_origins", "not an origin"),
    ],
)
def test_errors_name_the_key(alerts: dict[str, Any], key: str, reason: str) -> None:
    with pytest.raises(ConfigError) as info:
        parse_config({"alerts": alerts}, environ={})
    assert info.value.key == key
    assert reason in info.value.reason


def test_environment_errors_name_the_variable() -> None:
    with pytest.raises(ConfigError) as info:
        parse_config({}, environ={"BOLTWATCH_ALERTS_API_BURST": "lots"})
    assert info.value.key == "alerts.api_burst"
    assert "BOLTWATCH_ALERTS_API_BURST" in info.value.reason


def test_the_documented_example_loads(tmp_path: Path) -> None:
    doc = (Path(__file__).parents[2] / "docs" / "alerts.md").read_text(encoding="utf-8")
    section = doc[doc.index("### Browsers (CORS)") :]
    start = section.index("```toml\n") + len("```toml\n")
    block = section[start : section.index("\n```", start)]
    f = tmp_path / "b.toml"
    f.write_text(block)
    a = load_config(f, environ={}).alerts
    assert a.api_cors_origins == ["https://ops.example.com"]
    assert (a.api_rate_per_s, a.api_burst, a.api_auth_failures_per_min) == (20.0, 40, 5.0)
