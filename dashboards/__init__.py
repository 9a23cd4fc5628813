"""Grafana dashboards as code and the built-in web console.

Empty so far: the console and the dashboards are issue 13. Nothing is public yet.
"""

__all__: list[str] = []
