"""The SDK's modules, imported once without their deprecation warnings.

The dashboards use the SDK's classic dashboard model (``dashboard``, not ``dashboardv2``): the
model ``POST /api/dashboards/db`` and file provisioning take, and the one ``@grafana/schema``
describes. The SDK warns "Prefer using dashboardv2.Dashboard instead" when its modules are
imported (at class definition): that is about Grafana's newer resource API, which these
dashboards do not use. Imported first by the package, so the warnings are never shown.
"""

from __future__ import annotations

import warnings

__all__: list[str] = []

with warnings.catch_warnings():
    warnings.filterwarnings("ignore", "Prefer using dashboardv2", DeprecationWarning)
    from grafana_foundation_sdk.builders import dashboard, prometheus  # noqa: F401
