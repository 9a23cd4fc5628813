"""Grafana dashboards as code and the built-in web console.

Not built yet: see the alerts/main-job issue.
"""

__all__: list[str] = []
