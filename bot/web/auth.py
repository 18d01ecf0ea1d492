"""Who is using the console, and what they may do.

Three modes, chosen by the settings:

- ``password``: ``POLICYBOT_WEB_USERS`` lists ``NAME:ROLE:HASH`` (argon2id hashes, made with
  ``policybot web hash-password``); people log in with a form and a signed session cookie.
- ``header``: an authenticating proxy (oauth2-proxy, Pomerium, …) sets
  ``POLICYBOT_WEB_USER_HEADER`` (e.g. ``X-Forwarded-Email``); ``POLICYBOT_WEB_EDITORS`` names
  the editors (``*`` for everyone), the rest read only. Only safe when nothing but the proxy
  can reach the console.
- ``local``: neither is set. Allowed on a loopback address only; the one user is an editor
  named after the account running the console.

Every form carries a CSRF token bound to the session (:func:`csrf_token`,
:func:`check_csrf`), and session cookies are SameSite=Lax.
"""

from __future__ import annotations

import getpass
import hmac
import secrets
from dataclasses import dataclass
from typing import Literal

from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError, VerifyMismatchError
from starlette.requests import Request

from bot.config import Settings
from bot.digest.mail import is_loopback
from bot.errors import ConfigError

Role = Literal["reader", "editor"]
ROLES: tuple[Role, ...] = ("reader", "editor")
SESSION_USER = "user"
SESSION_CSRF = "csrf"
CSRF_FIELD = "csrf_token"
CSRF_HEADER = "x-csrf-token"

_hasher = PasswordHasher()


@dataclass(frozen=True, slots=True)
class User:
    name: str
    role: Role

    @property
    def can_edit(self) -> bool:
        return self.role == "editor"

    @property
    def email(self) -> str:
        """For a git commit's author: the name if it is an address, else a placeholder."""
        return self.name if "@" in self.name else f"{self.name}@policybot.invalid"

    @property
    def display(self) -> str:
        return self.name.split("@", 1)[0] if "@" in self.name else self.name


def hash_password(password: str) -> str:
    return _hasher.hash(password)


@dataclass(frozen=True, slots=True)
class Auth:
    mode: Literal["password", "header", "local"]
    passwords: dict[str, tuple[Role, str]]  # name -> (role, argon2 hash)
    header: str | None = None
    editors: frozenset[str] = frozenset()
    local_user: str = "local"

    @classmethod
    def from_settings(cls, settings: Settings) -> Auth:
        users = settings.web_users.get_secret_value().strip() if settings.web_users else ""
        header = (settings.web_user_header or "").strip()
        if users and header:
            raise ConfigError("POLICYBOT_WEB_USERS and POLICYBOT_WEB_USER_HEADER are both set: "
                              "choose the login form or the proxy's header")
        editors = frozenset(e.strip() for e in settings.web_editors.split(",") if e.strip())
        if header:
            return cls("header", {}, header=header.lower(), editors=editors)
        if users:
            return cls("password", parse_users(users))
        try:
            local = getpass.getuser()
        except (KeyError, OSError):
            local = "local"
        return cls("local", {}, local_user=local or "local")

    def user(self, request: Request) -> User | None:
        """The user making ``request``, or None if nobody is logged in."""
        if self.mode == "local":
            return User(self.local_user, "editor")
        if self.mode == "header":
            assert self.header is not None
            name = request.headers.get(self.header, "").strip()
            if not name:
                return None
            editor = "*" in self.editors or name in self.editors
            return User(name, "editor" if editor else "reader")
        session_user = request.session.get(SESSION_USER)
        if not isinstance(session_user, str) or session_user not in self.passwords:
            return None
        return User(session_user, self.passwords[session_user][0])

    def verify(self, name: str, password: str) -> User | None:
        """The user if the password is theirs. Takes as long for an unknown name."""
        role, hashed = self.passwords.get(name, ("reader", _DUMMY_HASH))
        try:
            _hasher.verify(hashed, password)
        except (VerifyMismatchError, VerificationError, InvalidHashError):
            return None
        return User(name, role) if name in self.passwords else None


_DUMMY_HASH = _hasher.hash(secrets.token_urlsafe(16))


def parse_users(value: str) -> dict[str, tuple[Role, str]]:
    """``NAME:ROLE:HASH`` entries separated by whitespace → {name: (role, hash)}."""
    users: dict[str, tuple[Role, str]] = {}
    for n, item in enumerate(value.split(), start=1):
        name, sep, rest = item.partition(":")
        role, sep2, hashed = rest.partition(":")
        where = f"POLICYBOT_WEB_USERS entry {n}"
        if not (sep and sep2 and name and hashed):
            raise ConfigError(f"{where}: expected NAME:ROLE:HASH (make the hash with "
                              "`policybot web hash-password`)")
        if role not in ROLES:
            raise ConfigError(f"{where} ({name}): role must be reader or editor, not {role!r}")
        if not hashed.startswith("$argon2"):
            raise ConfigError(f"{where} ({name}): not an argon2 hash (make one with "
                              "`policybot web hash-password`)")
        if name in users:
            raise ConfigError(f"{where}: user {name!r} is listed twice")
        users[name] = ("editor" if role == "editor" else "reader", hashed)
    return users


def check_bind(host: str, auth: Auth) -> None:
    """Refuse to serve a non-loopback address to anyone who can reach it."""
    if auth.mode == "local" and not is_loopback(host):
        raise ConfigError(
            f"refusing to serve the console on {host} without authentication: set "
            "POLICYBOT_WEB_USERS (a login form) or POLICYBOT_WEB_USER_HEADER (behind an "
            "authenticating proxy), or bind to 127.0.0.1")


# --- CSRF ---------------------------------------------------------------------------------


def csrf_token(request: Request) -> str:
    """This session's token (made on first use); every form posts it back."""
    token = request.session.get(SESSION_CSRF)
    if not isinstance(token, str):
        token = secrets.token_urlsafe(32)
        request.session[SESSION_CSRF] = token
    return token


def check_csrf(request: Request, sent: str | None) -> bool:
    expected = request.session.get(SESSION_CSRF)
    return (isinstance(expected, str) and isinstance(sent, str)
            and hmac.compare_digest(expected.encode(), sent.encode()))
