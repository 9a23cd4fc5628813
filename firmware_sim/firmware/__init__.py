"""Simulated device firmware on the wire: smart-bolt and machine nodes, and their MQTT uplinks.

A :class:`Node` is one logical device (kind, site, device id). It does what the firmware of a real
battery node does between two radio wake-ups: it asks its sensor for a measurement (a
:data:`SampleFn`), numbers the reading (``seq``, restarting at every boot, with a new ``boot_id``),
stamps it with its own clock (which may be off: a sensor fault), drains its battery, and adapts its
sampling rate (faster while the watched field — a bolt's preload — is changing). It holds no
network state and knows nothing of asyncio: something else (the :class:`~firmware_sim.fleet.Fleet`
scheduler, a test) calls :meth:`Node.sample` at the times :attr:`Node.next_sample_ms` asks for.

An :class:`Uplink` is one MQTT connection (gmqtt, QoS 1, persistent session):

* :class:`DirectUplink` carries one device on its own topics (JSON, or Sparkplug B for machines);
* :class:`GatewayUplink` carries many nodes: ``{"readings": [...]}`` batches on the gateway's own
  topic, each reading with its ``kind`` and ``device_id``, plus the gateway's health readings.

Both publish a retained birth (``{"state": "online", "boot_id", "fw_version", "interval_s"}``) on
the status channel at every connect and leave a retained ``{"state": "offline"}`` last will; both
store and forward: while the connection is down (or the broker's in-flight window is full),
readings wait in a bounded "flash" buffer that drops its oldest entry when full, and are replayed
in order, as batches, after the reconnect (exponential backoff with jitter). Messages already
handed to the broker but not acknowledged are resent by gmqtt when the broker kept the session;
when it did not, they go back to the front of the flash buffer. Duplicates and out-of-order
delivery are therefore possible, as with real devices; ``(device_id, seq)`` identifies a reading.

Commands (``cmd`` channel): ``set_interval`` changes a node's base interval (and republishes its
birth, which carries the interval); ``request_tightening_record`` publishes the node's stored
installation record as a ``tightened`` event. Bad commands are counted and ignored.

Units: simulated time in epoch milliseconds (``*_ms``), intervals in simulated seconds
(``*_s``); reconnect delays and timeouts in real seconds.

Modules: :mod:`~firmware_sim.firmware.node` (a device's firmware),
:mod:`~firmware_sim.firmware.config` (errors, broker address, link settings),
:mod:`~firmware_sim.firmware.session` (buffered records, messages, the in-flight store),
:mod:`~firmware_sim.firmware.uplink` (the connection), :mod:`~firmware_sim.firmware.direct` and
:mod:`~firmware_sim.firmware.gateway` (the two kinds of uplink).
"""

from firmware_sim.firmware.config import (
    MQTT_V5,
    MQTT_V311,
    BrokerAddress,
    FirmwareConfigError,
    LinkConfig,
)
from firmware_sim.firmware.direct import DirectUplink
from firmware_sim.firmware.gateway import GatewayUplink
from firmware_sim.firmware.node import (
    BatteryModel,
    InstallationRecord,
    Node,
    NodeStats,
    SampleFn,
    steady_bolt,
)
from firmware_sim.firmware.uplink import Uplink, UplinkStats

__all__ = [
    "MQTT_V5",
    "MQTT_V311",
    "BatteryModel",
    "BrokerAddress",
    "DirectUplink",
    "FirmwareConfigError",
    "GatewayUplink",
    "InstallationRecord",
    "LinkConfig",
    "Node",
    "NodeStats",
    "SampleFn",
    "Uplink",
    "UplinkStats",
    "steady_bolt",
]
