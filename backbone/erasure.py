"""Erasing a subject's personal data: deleting the subject's key.

Every personal value of a subject, wherever a copy of it lies (the stream's
payload hashes, dead letters' payload copies, snapshots, an archive), is sealed
with that subject's key; once the key is deleted none of them can be opened
again, and readers see :data:`~backbone.ERASED` (crypto-shredding;
docs/event-lifecycle.md).
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import time
import uuid
from typing import TYPE_CHECKING

from .errors import ConfigurationError
from .keyring import Keyring
from .sealing import key_id

if TYPE_CHECKING:
    from .connection import Backbone

__all__ = ["ErasureReport", "erase"]


@dataclasses.dataclass(frozen=True, slots=True)
class ErasureReport:
    """What :func:`erase` did for one subject."""

    environment: str
    key_id: str
    """The subject's key id (hex), as the keyring names it."""
    erased: bool
    """True when this call deleted the subject's key."""
    erased_at: dt.datetime | None
    """When the key was deleted: now, or by an earlier erasure; None when the
    subject never had a key (no personal data of it was written)."""

    @property
    def outcome(self) -> str:
        """``erased``, ``already erased`` or ``no data``."""
        if self.erased:
            return "erased"
        return "already erased" if self.erased_at is not None else "no data"

    def __str__(self) -> str:
        where = f"(key {self.key_id}, environment {self.environment!r})"
        if self.erased:
            return (
                f"erased the subject's personal data {where}: every copy of it now "
                "reads as <erased>"
            )
        if self.erased_at is not None:
            when = self.erased_at.isoformat(timespec="seconds")
            return f"the subject was already erased at {when} {where}; nothing to do"
        return f"the subject has no personal data {where}; nothing to erase"


async def erase(backbone: Backbone, subject: str | int | uuid.UUID) -> ErasureReport:
    """Erase SUBJECT's personal data in BACKBONE's environment: delete its key,
    so every personal value of it, in every copy, reads as
    :data:`~backbone.ERASED` from now on; the rest of every event stays.

    SUBJECT is the value of the subject parameter (its ``str()``), or the
    aggregate id for parameters marked ``Personal()``. Erasing again, or a
    subject without data, changes nothing (the report says so). Events published
    about the subject afterwards get a new key and are readable."""
    if isinstance(subject, bool) or not isinstance(subject, (str, int, uuid.UUID)):
        raise ConfigurationError(
            f"a subject is a str, int or UUID (the subject parameter's value), not "
            f"{type(subject).__name__}"
        )
    text = str(subject)
    if not text:
        raise ConfigurationError("the subject is empty; name the subject to erase")
    kid = key_id(text)
    now = time.time_ns() // 1_000_000
    deleted, at = await Keyring.of(backbone).erase(kid, now)
    return ErasureReport(
        environment=backbone.environment,
        key_id=kid.hex(),
        erased=deleted,
        erased_at=None if at is None else dt.datetime.fromtimestamp(at / 1000, dt.UTC),
    )
