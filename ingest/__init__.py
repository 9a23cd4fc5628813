"""MQTT ingest, dead-letter, dedup, batching and storage.

Not built yet: see the ingest issue.
"""

__all__: list[str] = []
