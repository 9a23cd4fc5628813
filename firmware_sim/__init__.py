"""Simulated device firmware and physics (smart bolts, gateways, fablab machines).

Not built yet: see the firmware_sim issue. Nothing here is imported by ingest, detection or alerts.
"""

__all__: list[str] = []
