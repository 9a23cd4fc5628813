"""Who may use the console: users and roles, signed session cookies, CSRF tokens, login links.

A user logs in with a token (the API token, or a per-user token from ``[[console.users]]``)
and gets a session cookie (``HttpOnly``, ``SameSite=Strict``, path ``/console``) signed with a
secret of this process: a restart logs everyone out, and nothing about sessions is stored.
Every action (a POST) must carry the session's CSRF token, in the form field ``csrf`` or the
``X-CSRF-Token`` header. Two roles: ``read`` sees everything, ``operator`` also acknowledges,
comments and silences. A one-time login link (``boltwatch demo`` prints one) opens a session
once, within :data:`LINK_TTL_S`.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import json
import secrets
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from enum import StrEnum
from typing import Final

__all__ = [
    "LINK_TTL_S",
    "SESSION_COOKIE",
    "SESSION_TTL_S",
    "Auth",
    "Role",
    "Session",
    "User",
]

SESSION_COOKIE: Final = "bw_session"
LOGIN_COOKIE: Final = "bw_login"
SESSION_TTL_S: Final = 12 * 3600
"""A session lasts this long, then the user logs in again."""
LINK_TTL_S: Final = 600
"""A one-time login link works once, within this many seconds of being made."""
MAX_COOKIE_CHARS: Final = 1024


class Role(StrEnum):
    """What a user may do: ``read`` sees; ``operator`` also acts on alerts."""

    READ = "read"
    OPERATOR = "operator"


@dataclass(frozen=True, slots=True)
class User:
    """A console user.

    Attributes:
        name: Shown in the page and written in the alert history for every action.
        token: The secret the user logs in with.
        role: What the user may do.
    """

    name: str
    token: str
    role: Role

    @property
    def can_act(self) -> bool:
        """Operators acknowledge, comment and silence."""
        return self.role is Role.OPERATOR


@dataclass(frozen=True, slots=True)
class Session:
    """A logged-in user, from a valid session cookie.

    Attributes:
        user: Who.
        expires_s: When the session ends (epoch seconds).
        nonce: The session's random id (its CSRF token derives from it).
        csrf: The token every action of this session must carry.
    """

    user: User
    expires_s: float
    nonce: str
    csrf: str


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def _unb64(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


class Auth:
    """Users, sessions and CSRF for one console.

    Args:
        users: Who may log in; names and tokens must be unique.
        clock: Epoch seconds (injected so that tests can expire sessions).
        secret: Key that signs cookies; a random one per process when None.

    Raises:
        ValueError: No user, an empty or repeated token, or a repeated name.
    """

    def __init__(
        self,
        users: Iterable[User],
        *,
        clock: Callable[[], float],
        secret: bytes | None = None,
    ) -> None:
        self._users = {u.name: u for u in users}
        tokens = [u.token for u in self._users.values()]
        if not self._users:
            raise ValueError("console: at least one user (or the API token) is needed to log in")
        if any(not t.strip() for t in tokens):
            raise ValueError("console.users: a token must not be empty")
        if len(set(tokens)) != len(tokens):
            raise ValueError("console.users: two users share a token")
        self._clock = clock
        self._secret = secret or secrets.token_bytes(32)
        self._links: dict[str, tuple[str, float]] = {}
        self._ended: set[str] = set()

    # -- signing --------------------------------------------------------------------------------

    def _sign(self, text: str) -> str:
        return _b64(hmac.new(self._secret, text.encode(), hashlib.sha256).digest())

    def login_nonce(self) -> tuple[str, str]:
        """A (cookie value, form value) pair guarding the login form against cross-site posts."""
        nonce = secrets.token_urlsafe(16)
        return nonce, self._sign("login:" + nonce)

    def login_form_ok(self, cookie: str | None, field: str | None) -> bool:
        """The login form was posted from the page that set ``cookie``."""
        if not cookie or not field or len(cookie) > MAX_COOKIE_CHARS:
            return False
        return hmac.compare_digest(self._sign("login:" + cookie), field)

    # -- users ----------------------------------------------------------------------------------

    def user_for_token(self, token: str) -> User | None:
        """The user whose token this is (compared in constant time against each)."""
        found = None
        given = token.encode()
        for user in self._users.values():
            if hmac.compare_digest(user.token.encode(), given):
                found = user
        return found

    def user(self, name: str) -> User | None:
        """The user of this name."""
        return self._users.get(name)

    # -- sessions -------------------------------------------------------------------------------

    def open_session(self, user: User) -> str:
        """A new session for ``user``: the cookie value to set."""
        body = _b64(
            json.dumps(
                {"u": user.name, "e": int(self._clock() + SESSION_TTL_S), "n": secrets.token_hex(8)}
            ).encode()
        )
        return f"{body}.{self._sign('session:' + body)}"

    def session(self, cookie: str | None) -> Session | None:
        """The session of a cookie value, or None if it is missing, forged, ended or expired."""
        if not cookie or len(cookie) > MAX_COOKIE_CHARS or cookie.count(".") != 1:
            return None
        body, sig = cookie.split(".")
        if not hmac.compare_digest(self._sign("session:" + body), sig):
            return None
        try:
            data = json.loads(_unb64(body))
            name, expires, nonce = str(data["u"]), float(data["e"]), str(data["n"])
        except (ValueError, KeyError, TypeError, binascii.Error):
            return None
        user = self._users.get(name)
        if user is None or expires <= self._clock() or nonce in self._ended:
            return None
        return Session(user, expires, nonce, self._sign("csrf:" + nonce))

    def end_session(self, session: Session) -> None:
        """Log out: the cookie no longer opens a session, even if it is replayed."""
        self._ended.add(session.nonce)

    def csrf_ok(self, session: Session, given: str | None) -> bool:
        """``given`` is this session's CSRF token."""
        return bool(given) and hmac.compare_digest(session.csrf, given or "")

    # -- one-time links -------------------------------------------------------------------------

    def one_time_code(self, name: str) -> str:
        """A code that opens one session for user ``name``, once, within :data:`LINK_TTL_S`.

        Raises:
            KeyError: No such user.
        """
        if name not in self._users:
            raise KeyError(name)
        now = self._clock()
        self._links = {c: v for c, v in self._links.items() if v[1] > now}
        code = secrets.token_urlsafe(24)
        self._links[code] = (name, now + LINK_TTL_S)
        return code

    def redeem(self, code: str) -> User | None:
        """The user a one-time code was made for; the code is then spent."""
        found = self._links.pop(code, None)
        if found is None or found[1] <= self._clock():
            return None
        return self._users.get(found[0])
