"""Operation-version marks shared through Redis: deprecated and retired versions.

A contract declares, per operation, older versions that producers should stop
writing (``@operation(version=3, deprecated={2}, retired={1})``). The producers
that still write them run older code that has never heard of that: so the marks
live on the stream, in ``bb:{env:uri}:versions``, recorded by every process whose
contract declares some (before its first write or read), and checked by
``publish.lua`` and ``append.lua`` in the same atomic step as the write. A
retired version is refused as a whole batch; a deprecated one is written and
reported, and the producer warns once per operation version.

Marks only go up (``versions.lua``), so the newest contract's word stands
whatever order processes start in.
"""

from __future__ import annotations

import logging
import os
import sys
import warnings
import weakref
from collections.abc import Iterable
from typing import TYPE_CHECKING

from .errors import DeprecatedVersionWarning, RetiredVersionError
from .faults import Fault, classify

if TYPE_CHECKING:
    from .connection import Backbone
    from .contract import OperationSpec
    from .keys import StreamKeys

__all__ = ["marks_of", "record_marks", "refuse_retired", "warn_deprecated"]

log = logging.getLogger("backbone.producer")

# What each connection has recorded: (marks key, marks).
_recorded: weakref.WeakKeyDictionary[
    Backbone, set[tuple[str, tuple[tuple[str, str], ...]]]
] = weakref.WeakKeyDictionary()


def marks_of(operations: Iterable[OperationSpec]) -> list[tuple[str, str]]:
    """The (field, status) marks OPERATIONS declare, as ``versions.lua`` takes
    them: ``<contract>.<operation>:<version>`` -> ``deprecated`` or ``retired``."""
    marks: list[tuple[str, str]] = []
    for op in operations:
        for version in sorted(op.deprecated):
            marks.append((f"{op.contract}.{op.name}:{version}", "deprecated"))
        for version in sorted(op.retired):
            marks.append((f"{op.contract}.{op.name}:{version}", "retired"))
    return marks


async def record_marks(
    backbone: Backbone, keys: StreamKeys, operations: Iterable[OperationSpec]
) -> bool:
    """Record the marks OPERATIONS declare on the stream of KEYS, once per
    connection. True when they are recorded (now or before).

    A failure is logged, not raised (False): the process can still write and
    read, only its contract's marks wait for the next attempt (its next write
    or start).
    """
    marks = marks_of(operations)
    if not marks:
        return True
    done = _recorded.setdefault(backbone, set())
    token = (keys.versions, tuple(marks))
    if token in done:
        return True
    try:
        raised = await backbone.scripts.versions.mark(
            backbone.redis, keys.versions, marks
        )
    except Exception as exc:
        if classify(exc) is Fault.BUG:
            raise
        log.warning(
            "could not record version marks %s on %s (%s); will try again",
            ", ".join(f"{field}={status}" for field, status in marks),
            keys.stream,
            exc,
        )
        return False
    done.add(token)
    if raised:
        log.info("recorded %d version mark(s) on %s", raised, keys.stream)
    return True


def refuse_retired(stream: str, mark: str) -> RetiredVersionError:
    """The error for a batch refused because MARK (``contract.op:version``) is
    retired on STREAM."""
    return RetiredVersionError(
        f"{mark.rpartition(':')[0]} version {mark.rpartition(':')[2]} is retired on "
        f"{stream} (a newer contract retired it); nothing of the batch was "
        "written: regenerate this producer from the current contract",
        (mark,),
    )


def warn_deprecated(stream: str, marks: Iterable[str], warned: set[str]) -> None:
    """Warn once per producer (WARNED) for each deprecated MARK written."""
    for mark in marks:
        if mark in warned:
            continue
        warned.add(mark)
        name, _, version = mark.rpartition(":")
        message = (
            f"{name} version {version} is deprecated on {stream} (a newer contract "
            "marked it); the event was written, but regenerate this producer from "
            "the current contract before the version is retired"
        )
        log.warning("%s", message, extra={"stream": stream, "mark": mark})
        warnings.warn(message, DeprecatedVersionWarning, stacklevel=_outside())


def _outside() -> int:
    """The stack level of the first frame outside backbone (the user's call,
    when the write runs in the caller's task)."""
    package = os.path.dirname(os.path.abspath(__file__)) + os.sep
    frame = sys._getframe(1)
    level = 1
    while frame.f_back is not None and frame.f_code.co_filename.startswith(package):
        frame = frame.f_back
        level += 1
    return level
