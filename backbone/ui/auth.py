"""Who may do what on the dashboard.

* Reading needs a request addressed to this server by one of its own names
  (the ``Host`` header): a page of another site that made its own name resolve
  to 127.0.0.1 (DNS rebinding) is refused, so it cannot read the figures.
* Actions (POST) need the dashboard started with ``--allow-actions``, a request
  of the dashboard's own page (``Origin`` and ``Sec-Fetch-Site``: another site
  open in the same browser cannot send one), and the token in the
  ``X-Backbone-Token`` header, compared in constant time. A custom header also
  keeps a cross-site form from sending it at all.
"""

from __future__ import annotations

import dataclasses
import hmac
import ipaddress
import secrets
from collections.abc import Mapping
from typing import Final

from ..errors import ConfigurationError

__all__ = [
    "MIN_TOKEN",
    "TOKEN_HEADER",
    "Guard",
    "Refusal",
    "check_token",
    "is_loopback",
    "new_token",
    "split_host",
]

TOKEN_HEADER: Final = "x-backbone-token"
MIN_TOKEN: Final = 16
_LOOPBACK_NAMES: Final = ("localhost", "127.0.0.1", "::1")


def new_token() -> str:
    """A fresh random token (32 URL-safe characters, 192 bits)."""
    return secrets.token_urlsafe(24)


def check_token(token: str) -> str:
    """TOKEN when it is long enough to resist guessing; else ConfigurationError."""
    if len(token) < MIN_TOKEN or not token.isprintable() or token != token.strip():
        raise ConfigurationError(
            f"the action token must be at least {MIN_TOKEN} printable characters "
            "without spaces around them; leave --token out to have one made"
        )
    return token


def is_loopback(host: str) -> bool:
    """True when HOST (a name or an address) only reaches this machine."""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


@dataclasses.dataclass(frozen=True, slots=True)
class Refusal:
    status: int
    message: str


def split_host(header: str) -> tuple[str, str] | None:
    """The name and port of a Host header (``[::1]:8765`` -> ``::1``, ``8765``;
    the port is empty when not given); None when it cannot be one."""
    if not header or any(c.isspace() for c in header):
        return None
    if header.startswith("["):
        name, closed, rest = header[1:].partition("]")
        if not closed or (rest and not rest.startswith(":")):
            return None
        return name.lower(), rest[1:]
    name, colon, port = header.rpartition(":")
    return (name.lower(), port) if colon else (header.lower(), "")


class Guard:
    """The checks of one dashboard bound to HOST and PORT."""

    def __init__(
        self, *, host: str, port: int, actions: bool, token: str | None
    ) -> None:
        if actions and token is None:
            raise ConfigurationError("actions need a token")
        self.host = host
        self.port = port
        self.actions = actions
        self._token = token.encode() if token is not None else None
        # Bound to every address, the dashboard answers to whatever name the
        # operator reaches the machine by; bound to one, only to that one.
        self.any_host = host in ("0.0.0.0", "::", "")
        self.names = {name.lower() for name in (*_LOOPBACK_NAMES, host.strip("[]"))}

    def own_host(self, host_header: str | None) -> bool:
        """True when the Host header names this server."""
        parts = split_host(host_header or "")
        if parts is None:
            return False
        name, port = parts
        if port != str(self.port) and not (port == "" and self.port == 80):
            return False
        return self.any_host or name in self.names

    def read(self, headers: Mapping[str, str]) -> Refusal | None:
        """Why a read (GET) is refused, or None."""
        if not self.own_host(headers.get("host")):
            return Refusal(
                403,
                "this dashboard answers requests for its own address only "
                f"(Host {headers.get('host', '')[:100]!r} is not it); open "
                f"http://127.0.0.1:{self.port}/",
            )
        return None

    def act(self, headers: Mapping[str, str]) -> Refusal | None:
        """Why an action (POST) is refused, or None."""
        refused = self.read(headers)
        if refused is not None:
            return refused
        if not self.actions:
            return Refusal(
                403,
                "the dashboard is read-only; start it with --allow-actions to "
                "re-drive or purge dead letters",
            )
        origin = headers.get("origin")
        if origin is not None and origin != f"http://{headers.get('host')}":
            return Refusal(
                403,
                f"a request from another site ({origin[:100]!r}) may not act on "
                "this dashboard",
            )
        if headers.get("sec-fetch-site", "same-origin") not in ("same-origin", "none"):
            return Refusal(403, "a request from another site may not act")
        given = headers.get(TOKEN_HEADER)
        if given is None:
            return Refusal(
                401,
                "the action token is missing: give the token backbone ui printed "
                "at start (or its --token)",
            )
        assert self._token is not None
        if not hmac.compare_digest(given.encode("utf-8", "replace"), self._token):
            return Refusal(401, "the action token is wrong")
        return None
