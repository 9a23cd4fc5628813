"""Ingest takes QoS 1 packets from gmqtt's handler and acknowledges a committed group in one
write: the hook it relies on is in the installed gmqtt, and its PUBACK is byte for byte the one
gmqtt would send. (At-least-once through a real broker is tested in tests/integration: a message
is acknowledged only after its commit, and one left unacknowledged at a stop comes again.)"""

from __future__ import annotations

from typing import Any

import gmqtt
from gmqtt.mqtt.constants import MQTTCommands, MQTTv50
from gmqtt.mqtt.package import CommandWithMidPacket

from ingest.service import _PUBACK_V5, _acknowledge, _Pending, _take_qos1


def test_the_hook_replaces_gmqtts_qos1_handling_on_that_client_only() -> None:
    taken: list[tuple[str, bytes, int, Any]] = []
    client = gmqtt.Client("hooked")
    other = gmqtt.Client("plain")
    handler = client._package_handler
    assert callable(getattr(handler, "_handle_qos_1_publish_packet", None))
    _take_qos1(client, lambda *a: taken.append(a))
    handler._handle_qos_1_publish_packet(7, b'{"x": 1}', "boltwatch/v1/s/cbolt/b/telemetry", {})
    assert taken == [("boltwatch/v1/s/cbolt/b/telemetry", b'{"x": 1}', 7, None)]
    assert "_handle_qos_1_publish_packet" not in vars(other._package_handler)


def test_puback_bytes_are_gmqtts() -> None:
    for mid in (1, 255, 256, 65535):
        ours = _PUBACK_V5.pack(0x40, 4, mid, 0, 0)
        assert ours == CommandWithMidPacket.build_package(
            MQTTCommands.PUBACK, mid, False, reason_code=0, proto_ver=MQTTv50
        )


class _Connection:
    def __init__(self, closing: bool = False) -> None:
        self.sent: list[bytes] = []
        self.closing = closing

    def is_closing(self) -> bool:
        return self.closing

    def send_package(self, data: bytes) -> None:
        self.sent.append(data)


def test_a_committed_group_is_acknowledged_in_one_write_per_live_connection() -> None:
    live, gone = _Connection(), _Connection(closing=True)
    group = [
        _Pending("t", b"", 0, None, 1, live),
        _Pending("t", b"", 0, None, 2, gone),
        _Pending("t", b"", 0, None, 3, live),
    ]
    _acknowledge(group)
    assert live.sent == [_PUBACK_V5.pack(0x40, 4, 1, 0, 0) + _PUBACK_V5.pack(0x40, 4, 3, 0, 0)]
    assert gone.sent == []  # the broker delivers those again on the next connection
