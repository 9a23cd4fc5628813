"""The faces of boltwatch: the built-in web console (:mod:`dashboards.console`), and Grafana
dashboards as code (:mod:`dashboards.grafana`)."""

__all__: list[str] = []
