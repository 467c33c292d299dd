"""Retrying one write whose outcome an error leaves unknown.

The producer's batches and the event store's appends are both written by a
script that recognises a retry of an attempt that got through (the batch
record), so after a lost connection or a timeout the only safe move is to send
the same attempt again, until it is answered or the time is up. Redis refusing
the write is not retried: the caller turns it into its own error.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable, Mapping
from typing import Any, TypeVar

import redis.exceptions as rex

from .errors import PublishTimeout
from .faults import is_transient

__all__ = ["until_answered"]

log = logging.getLogger("backbone.producer")

T = TypeVar("T")


async def until_answered(
    attempt: Callable[[float], Awaitable[T]],
    *,
    timeout: float,
    what: Callable[[], str],
    where: object,
    refused: Callable[[Exception], BaseException] | None,
    log_extra: Mapping[str, Any],
) -> T:
    """Run ATTEMPT (given the seconds left) until it is answered; retry lost
    connections and timeouts with a growing pause until TIMEOUT, then raise
    :class:`PublishTimeout` naming WHAT() and the last error. An error reply that
    is not transient raises ``REFUSED(error)`` (the error itself when REFUSED is
    None). WHERE (its repr) names the Redis in the timeout's message. Both are
    formatted only when an attempt fails."""
    deadline = time.monotonic() + timeout
    delay = 0.05
    count = 0
    while True:
        count += 1
        try:
            return await attempt(max(deadline - time.monotonic(), 0.001))
        except (rex.ResponseError, rex.DataError) as exc:
            if not is_transient(exc):
                if refused is None:
                    raise
                raise refused(exc) from exc
            last: BaseException = exc
        except TimeoutError as exc:
            last = exc
        except Exception as exc:
            if not is_transient(exc):
                raise
            last = exc
        # The outcome of the failed attempt is unknown: the same batch number
        # lets the script answer what an attempt that got through wrote.
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            raise PublishTimeout(
                f"could not {what()} within {timeout:g}s ({count} attempts); last "
                f"error: {type(last).__name__}: {last}. Check that Redis at {where!r} "
                "is up, or raise ProducerOptions.publish_timeout"
            ) from last
        if count == 1:
            log.warning(
                "%s failed (%s: %s); retrying for up to %.1fs",
                what(),
                type(last).__name__,
                last,
                remaining,
                extra=dict(log_extra),
            )
        await asyncio.sleep(min(delay, remaining))
        delay = min(delay * 2, 1.0)
