"""Scenarios: TOML files describing a site, its bolts and machines, and what goes wrong.

A scenario names groups of bolts (each with a joint, a material and a fault) and machines (each
with faults); :func:`run_scenario` simulates it on a time grid and returns every series with its
ground truth. The library of scenarios ships in ``firmware_sim/scenarios/``; ``boltwatch simulate
--scenario NAME`` takes a name from there or a path. Durations are written ``"30d"``, ``"12h"``,
``"5m"``, ``"10s"`` or ``"250ms"`` (or a number of seconds); a range is a two-element list
``["5d", "10d"]``, drawn per bolt.
"""

from __future__ import annotations

import re
import tomllib
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Annotated, Any, Final

import msgspec
import numpy as np
import numpy.typing as npt
from msgspec import Meta

from firmware_sim.bolts import BoltFault, BoltGroupSpec, BoltSeries, simulate_bolts
from firmware_sim.climate import ClimateSpec, air_temperature, joint_temperature
from firmware_sim.machines import (
    FAULT_KINDS,
    MachineFault,
    MachineRun,
    MachineSpec,
    simulate_machine,
)
from sensors.schema import DEVICE_ID_PATTERN, DeviceKind

__all__ = [
    "SCENARIO_DIR",
    "ScenarioError",
    "ScenarioFile",
    "SimulationResult",
    "list_scenarios",
    "load_scenario",
    "parse_duration",
    "resolve_scenario",
    "run_scenario",
    "scenario_registry",
]

SCENARIO_DIR: Final = Path(__file__).with_name("scenarios")
_DURATION = re.compile(r"^\s*(-?\d+(?:\.\d+)?)\s*(ms|s|m|h|d|w)\s*$")
_UNIT_S: Final = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3_600.0, "d": 86_400.0, "w": 604_800.0}


class ScenarioError(Exception):
    """A scenario file is invalid.

    Attributes:
        key: The offending key, e.g. ``bolts[1].fault``.
        reason: What is wrong.
    """

    def __init__(self, key: str, reason: str) -> None:
        super().__init__(f"{key}: {reason}")
        self.key = key
        self.reason = reason


def parse_duration(value: str | float, key: str = "duration") -> float:
    """Seconds of ``"30d"``, ``"12h"``, ``"5m"``, ``"10s"``, ``"250ms"``, ``"2w"`` or a number.

    Raises:
        ScenarioError: Naming ``key``.
    """
    if isinstance(value, bool):
        raise ScenarioError(key, f"{value!r} is not a duration")
    if isinstance(value, int | float):
        return float(value)
    m = _DURATION.match(value)
    if m is None:
        raise ScenarioError(key, f"{value!r} is not a duration like 30d, 12h, 5m, 10s or 250ms")
    return float(m.group(1)) * _UNIT_S[m.group(2)]


Duration = str | float
Range = Duration | list[Duration]
Id = Annotated[str, Meta(pattern=DEVICE_ID_PATTERN)]


class _Table(msgspec.Struct, kw_only=True, forbid_unknown_fields=True):
    pass


class BoltsTable(_Table):
    """``[[bolts]]``: a group of alike bolts (see :class:`firmware_sim.bolts.BoltGroupSpec`)."""

    count: Annotated[int, Meta(ge=1, le=1_000_000)]
    id_prefix: Annotated[str, Meta(pattern=r"^[A-Za-z0-9_-]{1,56}$")]
    joint: Id = "joint-1"
    diameter_mm: Annotated[float, Meta(gt=0, le=200)] = 16.0
    target_preload_kn: Annotated[float, Meta(gt=0, le=5_000)] = 62.0
    nominal_nut_factor: Annotated[float, Meta(ge=0.05, le=0.6)] = 0.18
    nut_factor: list[Annotated[float, Meta(ge=0.05, le=0.6)]] = msgspec.field(
        default_factory=lambda: [0.14, 0.22]
    )
    joint_material: str = "steel"
    embedding_pct: list[Annotated[float, Meta(ge=0, le=50)]] = msgspec.field(
        default_factory=lambda: [5.0, 15.0]
    )
    embedding_tau_h: list[Annotated[float, Meta(gt=0, le=1_000)]] = msgspec.field(
        default_factory=lambda: [2.0, 10.0]
    )
    noise_pct: Annotated[float, Meta(ge=0, le=20)] = 0.5
    resolution_kn: Annotated[float, Meta(ge=0, le=100)] = 0.01
    install: Duration = 0.0
    fault: str = "none"
    onset: Range = 0.0
    fault_params: dict[str, float] = msgspec.field(default_factory=dict)
    retighten: Duration | None = None
    battery_v: Annotated[float, Meta(ge=2.0, le=4.5)] = 3.65


class FaultTable(_Table):
    """``[[machines.faults]]``."""

    kind: str
    onset: Duration
    duration: Duration | None = None
    severity: Annotated[float, Meta(ge=0, le=10)] = 1.0


class MachineTable(_Table):
    """``[[machines]]``: one fablab machine."""

    kind: str
    id: Id
    interval: Duration = "10s"
    params: dict[str, float] = msgspec.field(default_factory=dict)
    faults: list[FaultTable] = msgspec.field(default_factory=list)


class ScenarioFile(_Table):
    """A scenario as written in TOML."""

    name: str
    description: str = ""
    site: Id = "site-1"
    start: datetime = datetime(2026, 3, 1, tzinfo=UTC)
    duration: Duration = "30d"
    interval: Duration = "5m"
    climate: dict[str, float | bool] = msgspec.field(default_factory=dict)
    bolts: list[BoltsTable] = msgspec.field(default_factory=list)
    machines: list[MachineTable] = msgspec.field(default_factory=list)


@dataclass(slots=True)
class SimulationResult:
    """Everything one scenario run produced.

    Attributes:
        scenario: The scenario's name.
        seed: The seed it ran with.
        site: Site id of every device.
        start_ms: Start of the run (epoch ms).
        duration_s: Length of the run.
        bolts: One series per ``[[bolts]]`` group.
        machines: One run per ``[[machines]]`` entry.
    """

    scenario: str
    seed: int
    site: str
    start_ms: int
    duration_s: float
    bolts: list[BoltSeries] = field(default_factory=list)
    machines: list[MachineRun] = field(default_factory=list)

    @property
    def bolt_samples(self) -> int:
        """Bolt samples generated (bolts x sample times)."""
        return sum(b.samples for b in self.bolts)


def list_scenarios() -> list[str]:
    """Names of the scenarios in the shipped library."""
    return sorted(p.stem for p in SCENARIO_DIR.glob("*.toml"))


def scenario_registry(name: str) -> Path | None:
    """The device registry shipped with a library scenario (``scenarios/registries/NAME.toml``:
    where its devices sit), or None when it has none."""
    path = SCENARIO_DIR / "registries" / f"{name}.toml"
    return path if path.is_file() else None


def resolve_scenario(name_or_path: str) -> Path:
    """The file of a library scenario name, or the path as given.

    Raises:
        ScenarioError: Neither a library name nor an existing file.
    """
    path = Path(name_or_path)
    if path.suffix == ".toml" or path.exists():
        if not path.is_file():
            raise ScenarioError(str(path), "no such scenario file")
        return path
    candidate = SCENARIO_DIR / f"{name_or_path}.toml"
    if candidate.is_file():
        return candidate
    raise ScenarioError(
        "scenario",
        f"{name_or_path!r} is neither a file nor a library scenario; library: "
        + ", ".join(list_scenarios()),
    )


def load_scenario(name_or_path: str) -> ScenarioFile:
    """Read and validate a scenario (library name or TOML path).

    Raises:
        ScenarioError: Naming the offending key.
    """
    path = resolve_scenario(name_or_path)
    try:
        data = tomllib.loads(path.read_text(encoding="utf-8"))
    except tomllib.TOMLDecodeError as exc:
        raise ScenarioError(str(path), f"not valid TOML: {exc}") from exc
    return parse_scenario(data)


def parse_scenario(data: dict[str, Any]) -> ScenarioFile:
    """Validate a scenario given as a dict (a parsed TOML document)."""
    try:
        scenario = msgspec.convert(data, ScenarioFile)
    except msgspec.ValidationError as exc:
        if "`$.start`" in str(exc):
            raise ScenarioError("start", f"{data.get('start')!r} is not an RFC 3339 time") from exc
        text = str(exc)
        key = "scenario"
        if " - at `$." in text:
            text, _, rest = text.partition(" - at `$.")
            key = rest.rstrip("`")
        raise ScenarioError(key, text) from exc
    _check(scenario)
    return scenario


def _check(s: ScenarioFile) -> None:
    _start_ms(s)
    if parse_duration(s.duration) <= 0:
        raise ScenarioError("duration", "must be > 0")
    if parse_duration(s.interval, "interval") <= 0:
        raise ScenarioError("interval", "must be > 0")
    try:
        ClimateSpec(**s.climate)  # type: ignore[arg-type]
    except (TypeError, ValueError) as exc:
        raise ScenarioError("climate", str(exc)) from exc
    seen = _check_bolts(s)
    _check_machines(s, seen)


def _check_bolts(s: ScenarioFile) -> set[str]:
    faults = {f.value for f in BoltFault}
    seen: set[str] = set()
    for i, b in enumerate(s.bolts):
        if b.fault not in faults:
            raise ScenarioError(
                f"bolts[{i}].fault", f"{b.fault!r} is not one of {', '.join(sorted(faults))}"
            )
        _range(b.onset, f"bolts[{i}].onset")
        parse_duration(b.install, f"bolts[{i}].install")
        if b.retighten is not None:
            parse_duration(b.retighten, f"bolts[{i}].retighten")
        try:
            _group(b)
        except ValueError as exc:
            raise ScenarioError(f"bolts[{i}]", str(exc)) from exc
        ids = {f"{b.id_prefix}{k + 1:03d}" for k in range(b.count)}
        if ids & seen:
            raise ScenarioError(f"bolts[{i}].id_prefix", "device ids collide with another group")
        seen |= ids
    return seen


def _check_machines(s: ScenarioFile, seen: set[str]) -> None:
    for i, m in enumerate(s.machines):
        try:
            kind = DeviceKind(m.kind)
        except ValueError:
            kind = None
        if kind is None or kind not in FAULT_KINDS:
            known = ", ".join(k.value for k in FAULT_KINDS)
            raise ScenarioError(
                f"machines[{i}].kind", f"{m.kind!r} is not a machine kind ({known})"
            )
        if m.id in seen:
            raise ScenarioError(f"machines[{i}].id", f"{m.id!r} is used twice")
        seen.add(m.id)
        parse_duration(m.interval, f"machines[{i}].interval")
        for j, f in enumerate(m.faults):
            if f.kind not in FAULT_KINDS[kind]:
                raise ScenarioError(
                    f"machines[{i}].faults[{j}].kind",
                    f"{f.kind!r} is not a {kind.value} fault ({', '.join(FAULT_KINDS[kind])})",
                )
            parse_duration(f.onset, f"machines[{i}].faults[{j}].onset")


def _range(value: Range, key: str) -> tuple[float, float]:
    if isinstance(value, list):
        if len(value) != 2:
            raise ScenarioError(key, "a range is [low, high]")
        lo, hi = parse_duration(value[0], key), parse_duration(value[1], key)
        if lo > hi:
            raise ScenarioError(key, f"low end {value[0]!r} is above high end {value[1]!r}")
        return lo, hi
    v = parse_duration(value, key)
    return v, v


def _pair(values: list[float], key: str) -> tuple[float, float]:
    if len(values) != 2:
        raise ValueError(f"{key} is [low, high]")
    return float(values[0]), float(values[1])


def _group(b: BoltsTable) -> BoltGroupSpec:
    return BoltGroupSpec(
        count=b.count,
        id_prefix=b.id_prefix,
        joint=b.joint,
        diameter_mm=b.diameter_mm,
        target_preload_kn=b.target_preload_kn,
        nominal_nut_factor=b.nominal_nut_factor,
        nut_factor=_pair(b.nut_factor, "nut_factor"),
        joint_material=b.joint_material,
        embedding_pct=_pair(b.embedding_pct, "embedding_pct"),
        embedding_tau_h=_pair(b.embedding_tau_h, "embedding_tau_h"),
        noise_pct=b.noise_pct,
        resolution_kn=b.resolution_kn,
        install_s=parse_duration(b.install),
        fault=BoltFault(b.fault),
        fault_onset_s=_range(b.onset, "onset"),
        fault_params=dict(b.fault_params),
        retighten_s=None if b.retighten is None else parse_duration(b.retighten),
        battery_v=b.battery_v,
    )


def _start_ms(s: ScenarioFile) -> int:
    start = s.start if s.start.tzinfo is not None else s.start.replace(tzinfo=UTC)
    return int(start.timestamp() * 1000)


def run_scenario(
    scenario: ScenarioFile,
    seed: int,
    *,
    duration_s: float | None = None,
) -> SimulationResult:
    """Simulate a scenario: every bolt group and machine, with ground truth.

    Args:
        scenario: The validated scenario.
        seed: Seeds every random draw: the same seed gives the same run.
        duration_s: Overrides the scenario's duration.
    """
    start_ms = _start_ms(scenario)
    duration = parse_duration(scenario.duration) if duration_s is None else duration_s
    result = SimulationResult(scenario.name, seed, scenario.site, start_ms, duration)
    root = np.random.SeedSequence(seed)
    climate_seed, *group_seeds = root.spawn(1 + len(scenario.bolts) + len(scenario.machines))
    interval_ms = int(parse_duration(scenario.interval, "interval") * 1000)
    t_ms: npt.NDArray[np.int64] = start_ms + np.arange(
        0, int(duration * 1000), interval_ms, dtype=np.int64
    )
    if scenario.bolts:
        climate = ClimateSpec(**scenario.climate)  # type: ignore[arg-type]
        air = air_temperature(climate, t_ms, np.random.default_rng(climate_seed))
        joint = joint_temperature(air, t_ms)
        for b, s in zip(scenario.bolts, group_seeds, strict=False):
            result.bolts.append(simulate_bolts(_group(b), t_ms, joint, np.random.default_rng(s)))
    for m, s in zip(scenario.machines, group_seeds[len(scenario.bolts) :], strict=True):
        step = parse_duration(m.interval, "interval")
        grid = np.arange(0.0, duration, step)
        spec = MachineSpec(
            kind=DeviceKind(m.kind),
            device_id=m.id,
            faults=tuple(
                MachineFault(
                    kind=f.kind,
                    onset_s=parse_duration(f.onset),
                    duration_s=None if f.duration is None else parse_duration(f.duration),
                    severity=f.severity,
                )
                for f in m.faults
            ),
            params=dict(m.params),
        )
        result.machines.append(simulate_machine(spec, grid, np.random.default_rng(s)))
    return result
