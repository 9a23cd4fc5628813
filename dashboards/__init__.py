"""The faces of boltwatch: the built-in web console (:mod:`dashboards.console`), and Grafana
dashboards as code (to come, issue 13)."""

__all__: list[str] = []
