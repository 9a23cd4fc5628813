"""The built-in web console, served at ``/console`` by ``boltwatch run`` and ``boltwatch demo``.

:func:`create_console` builds the ASGI app from a :class:`ConsoleSource` (what the pages read)
and an :class:`Auth` (users, sessions, CSRF). See docs/console.md.
"""

from dashboards.console.app import POLL_S, create_console
from dashboards.console.auth import Auth, Role, Session, User
from dashboards.console.source import BoltLevel, ConsoleSource, Status

__all__ = [
    "POLL_S",
    "Auth",
    "BoltLevel",
    "ConsoleSource",
    "Role",
    "Session",
    "Status",
    "User",
    "create_console",
]
