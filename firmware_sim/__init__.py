"""Simulated device firmware and physics: smart bolts, gateways, fablab machines.

Physics (:mod:`~firmware_sim.bolts`, :mod:`~firmware_sim.climate`, :mod:`~firmware_sim.machines`)
is vectorised numpy with ground truth; :mod:`~firmware_sim.scenario` reads the TOML scenario
library; :mod:`~firmware_sim.offline` writes CSVs in the replay formats; the firmware's behaviour
on the wire (:mod:`~firmware_sim.firmware`) and the fleet runner (:mod:`~firmware_sim.fleet`)
publish to a real broker. Nothing here is imported by ingest, detection or alerts.
"""

from firmware_sim.bolts import (
    LOOSENING_FAULTS,
    SENSOR_FAULTS,
    BoltEvent,
    BoltFault,
    BoltGroupSpec,
    BoltSeries,
    BoltTruth,
    simulate_bolts,
)
from firmware_sim.climate import ClimateSpec, air_temperature, joint_temperature
from firmware_sim.firmware import (
    BatteryModel,
    DirectUplink,
    FirmwareConfigError,
    GatewayUplink,
    InstallationRecord,
    LinkConfig,
    Node,
    SampleFn,
    Uplink,
)
from firmware_sim.fleet import Fleet, FleetStats, build_fleet
from firmware_sim.machines import (
    FAULT_KINDS,
    FaultInterval,
    MachineEvent,
    MachineFault,
    MachineRun,
    MachineSpec,
    cnc_waveform,
    simulate_machine,
)
from firmware_sim.offline import write_outputs
from firmware_sim.scenario import (
    ScenarioError,
    SimulationResult,
    list_scenarios,
    load_scenario,
    run_scenario,
)

__all__ = [
    "FAULT_KINDS",
    "LOOSENING_FAULTS",
    "SENSOR_FAULTS",
    "BatteryModel",
    "BoltEvent",
    "BoltFault",
    "BoltGroupSpec",
    "BoltSeries",
    "BoltTruth",
    "ClimateSpec",
    "DirectUplink",
    "FaultInterval",
    "FirmwareConfigError",
    "Fleet",
    "FleetStats",
    "GatewayUplink",
    "InstallationRecord",
    "LinkConfig",
    "MachineEvent",
    "MachineFault",
    "MachineRun",
    "MachineSpec",
    "Node",
    "SampleFn",
    "ScenarioError",
    "SimulationResult",
    "Uplink",
    "air_temperature",
    "build_fleet",
    "cnc_waveform",
    "joint_temperature",
    "list_scenarios",
    "load_scenario",
    "run_scenario",
    "simulate_bolts",
    "simulate_machine",
    "write_outputs",
]
