"""``[detection.<detector>]``: each detector's parameters from the configuration file, checked
against its parameter dataclass, and used by ``boltwatch run``'s engine."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from boltwatch.config import ConfigError, load_config, parse_config
from boltwatch.detection_config import detector_params
from detection.preload import PreloadParams
from detection.sensor_faults import SensorFaultParams


def test_tables_set_the_named_fields_and_keep_the_other_defaults(tmp_path: Path) -> None:
    path = tmp_path / "boltwatch.toml"
    path.write_text(
        "[detection.cbolt]\nmin_loss_pct = 4\n"
        "[detection.cbolt.sensor]\nshift_readings = 4\n"
        "[detection.printer3d]\n"
    )
    params = detector_params(load_config(path, environ={}).detection)
    bolt = params["cbolt"]
    assert isinstance(bolt, PreloadParams)
    assert bolt.min_loss_pct == 4.0
    assert bolt.sensor == SensorFaultParams(shift_readings=4)
    assert bolt.max_learn_h == PreloadParams().max_learn_h
    assert set(params) == {"cbolt", "printer3d"}


def test_no_section_means_every_default() -> None:
    assert detector_params(parse_config({}, environ={}).detection) == {}


@pytest.mark.parametrize(
    ("tables", "key", "words"),
    [
        ({"nope": {}}, "detection.nope", "known: cbolt"),
        ({"cbolt": 3}, "detection.cbolt", "must be a table"),
        ({"cbolt": {"min_los_pct": 1}}, "detection.cbolt.min_los_pct", "min_loss_pct"),
        ({"cbolt": {"min_loss_pct": "x"}}, "detection.cbolt.min_loss_pct", "Expected `float`"),
        ({"cbolt": {"min_loss_pct": float("nan")}}, "detection.cbolt.min_loss_pct", "finite"),
        ({"cbolt": {"sensor": 3}}, "detection.cbolt.sensor", "must be a table"),
        (
            {"cbolt": {"sensor": {"shift_readings": 2.5}}},
            "detection.cbolt.sensor.shift_readings",
            "Expected `int`",
        ),
    ],
)
def test_errors_name_the_key(tables: dict[str, Any], key: str, words: str) -> None:
    with pytest.raises(ConfigError) as err:
        parse_config({"detection": tables}, environ={})
    assert err.value.key == key
    assert words in err.value.reason


def test_run_builds_its_engine_with_the_configured_parameters() -> None:
    from boltwatch.run import build_engine
    from detection.registry import make_detector

    config = parse_config({"detection": {"cbolt": {"min_learn_h": 9.5}}}, environ={})
    engine = build_engine(config)
    assert engine.detectors["cbolt"].params.min_learn_h == 9.5
    assert engine.detectors["printer3d"].params == make_detector("printer3d").params
