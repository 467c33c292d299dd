"""The rules an append checks an aggregate's version against."""

from __future__ import annotations

import enum

from ..errors import ConfigurationError

__all__ = ["ExpectedVersion", "wire"]


class ExpectedVersion(enum.Enum):
    """What an append expects of the aggregate's version, besides an exact
    version (an int: exactly that many events so far; 0 is a new aggregate)."""

    ANY = "any"
    """Append whatever the version (no concurrency check)."""
    NEW = "new"
    """The aggregate must have no events yet ("no stream")."""
    EXISTS = "exists"
    """The aggregate must have at least one event."""

    def __str__(self) -> str:
        return _DESCRIPTIONS[self]


_DESCRIPTIONS = {
    ExpectedVersion.ANY: "any version",
    ExpectedVersion.NEW: "a new aggregate (no events yet)",
    ExpectedVersion.EXISTS: "an existing aggregate (at least one event)",
}


def wire(expected: int | ExpectedVersion) -> str:
    """EXPECTED as append.lua's argument; a clear error for what is no rule."""
    if isinstance(expected, ExpectedVersion):
        return expected.value
    if isinstance(expected, int) and not isinstance(expected, bool) and expected >= 0:
        return str(expected)
    raise ConfigurationError(
        f"expected version {expected!r} is not valid; use a version (an int >= 0) "
        "or ExpectedVersion.ANY, .NEW or .EXISTS"
    )
