"""A retention policy applied by a running subscription.

``SubscriptionOptions(retention=RetentionPolicy(...))`` gives the subscription
a background task that trims its stream (and its dead letters) when it starts
and then every ``policy.every``, with a little jitter so that workers started
together spread their runs. The task lives beside the consumer loop, never in
it: a failure is logged and tried again (sooner while Redis is away), and it
ends when the subscription stops. Several workers applying one policy at once
are harmless: each step of a trim is one atomic script call that works from
what the stream holds at that moment.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
from typing import TYPE_CHECKING

from .faults import Fault, classify
from .retention import TrimReport, trim_keys

if TYPE_CHECKING:
    from .connection import Backbone
    from .keys import StreamKeys
    from .retention import RetentionPolicy

__all__ = ["Retainer"]

log = logging.getLogger("backbone.retention")


class Retainer:
    """The retention task of one subscription (none without a policy)."""

    def __init__(
        self,
        backbone: Backbone,
        keys: StreamKeys,
        policy: RetentionPolicy | None,
        name: str,
    ) -> None:
        self.backbone = backbone
        self.keys = keys
        self.policy = policy
        self.name = name
        self.runs = 0
        """Applications that completed."""
        self._held: tuple[str, ...] = ()
        self._task: asyncio.Task[None] | None = None

    @classmethod
    def start(
        cls,
        backbone: Backbone,
        keys: StreamKeys,
        policy: RetentionPolicy | None,
        name: str,
    ) -> Retainer:
        """A retainer running POLICY in the background (idle when None)."""
        retainer = cls(backbone, keys, policy, name)
        if policy is not None:
            retainer._task = asyncio.get_running_loop().create_task(
                retainer._run(policy), name=f"backbone-retention:{name}"
            )
        return retainer

    async def stop(self) -> None:
        """End the task; never raises."""
        task = self._task
        if task is None:
            return
        if not task.done():
            task.cancel()
            # A cancel can be lost inside a Redis command; never wait for ever.
            _, stuck = await asyncio.wait({task}, timeout=1.0)
            for late in stuck:
                late.add_done_callback(_discard)
            if stuck:
                return
        if not task.cancelled() and task.exception() is not None:
            log.error("%s: retention ended", self.name, exc_info=task.exception())

    async def apply(self, policy: RetentionPolicy) -> list[TrimReport]:
        """Apply POLICY once: the stream, then its dead letters."""
        reports = []
        for dead_letters, max_len, max_age in (
            (False, policy.max_len, policy.max_age),
            (True, policy.dead_letters_max_len, policy.dead_letters_max_age),
        ):
            if max_len is None and max_age is None:
                continue
            reports.append(
                await trim_keys(
                    self.backbone,
                    self.keys,
                    dead_letters=dead_letters,
                    max_len=max_len,
                    max_age=max_age,
                    force=policy.force,
                    dry_run=False,
                )
            )
        return reports

    async def _run(self, policy: RetentionPolicy) -> None:
        interval = policy.interval
        failures = 0
        while True:
            try:
                reports = await self.apply(policy)
            except Exception as exc:
                failures += 1
                fault = classify(exc)
                if fault is not Fault.TRANSIENT:
                    # The consumer goes on whatever this is: a refused command
                    # (the stream's key replaced by a string) or a bug.
                    log.error(
                        "%s: retention failed (%s: %s); trying again",
                        self.name,
                        type(exc).__name__,
                        exc,
                        exc_info=fault is Fault.BUG,
                    )
                elif failures == 1:
                    log.warning(
                        "%s: retention paused, Redis is not reachable (%s: %s); "
                        "trying again",
                        self.name,
                        type(exc).__name__,
                        exc,
                    )
                delay = min(interval, 0.25 * 2 ** min(failures, 10))
            else:
                if failures:
                    log.info("%s: retention applied again", self.name)
                failures = 0
                self.runs += 1
                self._log(reports)
                delay = interval * random.uniform(0.9, 1.1)
            await asyncio.sleep(delay)

    def _log(self, reports: list[TrimReport]) -> None:
        held = tuple(str(hold) for report in reports for hold in report.held)
        for report in reports:
            if report.removed or report.forced:
                log.info("%s: retention %s", self.name, report)
        if held != self._held:
            # Said once per change, not at every run: a group far behind holds
            # the same entries back for a long time.
            self._held = held
            if held:
                log.info(
                    "%s: retention holds entries back: %s", self.name, "; ".join(held)
                )


def _discard(task: asyncio.Task[None]) -> None:
    with contextlib.suppress(BaseException):
        task.exception()
