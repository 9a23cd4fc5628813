"""Which partition of the log a device's records go to.

Records are keyed by **joint** (from the registry) so that one worker sees every bolt of a joint
and joint rules (k of n bolts low, uneven preload) can be evaluated; a device outside any joint (a
machine, a gateway, an unregistered bolt) is its own key. The key is hashed with CRC-32, which is
the same in every process and release (Python's ``hash`` of a string is salted per process).
"""

from __future__ import annotations

import zlib
from collections.abc import Callable

__all__ = ["PartitionKey", "partition_of", "registry_key"]

PartitionKey = Callable[[str], str]
"""A device id to the key its partition is chosen by."""


def partition_of(key: str, partitions: int) -> int:
    """The partition, in ``[0, partitions)``, of ``key``; stable across processes and hosts."""
    if partitions < 1:
        raise ValueError(f"partitions must be >= 1, not {partitions}")
    return zlib.crc32(key.encode("utf-8")) % partitions


def registry_key(joint_of: Callable[[str], str | None]) -> PartitionKey:
    """Key by joint where ``joint_of`` knows one (``registry.locate(d).joint``), else by device.

    Joint keys are prefixed (``joint:T1-flange``) so that a joint and a device of the same name
    are different keys.
    """

    def key(device_id: str) -> str:
        joint = joint_of(device_id)
        return f"joint:{joint}" if joint else device_id

    return key
