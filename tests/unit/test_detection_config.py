"""``[detection.<detector>]``: each detector's parameters from the configuration file, checked
against its parameter dataclass, and used by ``boltwatch run``'s engine."""

from __future__ import annotations

import dataclasses
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


def test_the_sample_tables_uncommented_are_every_detector_at_its_defaults() -> None:
    """``boltwatch config detection``: derived from the parameter classes, so uncommenting every
    key that has a default gives back exactly the defaults, for every registered detector."""
    import re
    import tomllib

    from boltwatch.detection_config import sample_toml
    from detection.registry import DETECTORS, detector_class

    text = sample_toml()
    uncommented = "\n".join(
        re.sub(r"  # .*$", "", line[2:])
        for line in text.splitlines()
        if line.startswith("# ") and "<" not in line.split("#")[1]
    )
    tables = tomllib.loads(uncommented)["detection"]
    with_params = {n for n in DETECTORS if dataclasses.fields(detector_class(n).params_type)}
    assert set(tables) == with_params
    params = detector_params(tables)
    for name, value in params.items():
        assert value == detector_class(name).params_type(), name
    # every key has its meaning beside it (from the class's Attributes section)
    keys = [line for line in text.splitlines() if re.match(r"# \w+ = ", line)]
    assert keys
    assert all("  # " in line for line in keys), [k for k in keys if "  # " not in k][:3]


def test_the_sample_of_an_unknown_detector_names_it() -> None:
    from boltwatch.detection_config import sample_toml

    with pytest.raises(ConfigError, match=r"detection\.nope: no such detector"):
        sample_toml(["nope"])
