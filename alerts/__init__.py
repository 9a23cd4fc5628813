"""Alert rules, lifecycle store, pipeline stages, notification channels and the outbox.

Not built yet: see the alerts issue.
"""

__all__: list[str] = []
