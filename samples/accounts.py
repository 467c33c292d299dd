"""The event store's sample: bank accounts as aggregates (``backbone demo
--sample accounts``).

An :class:`Account` is the fold of its events; a withdrawal must never take the
balance below zero, so two withdrawals racing on one account must not both pass
on the same balance: each command runs through ``Repository.execute``, which
saves with the version it loaded and runs the command again on a conflict. A
projection of the balances (a Redis hash written with its checkpoint) follows
the stream live and ends equal to the aggregates' own balances.

``python -m samples.accounts [--redis-url URL] [--accounts N]`` runs it on a
Redis server; ``backbone demo --sample accounts`` on the embedded one.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import decimal
import random
import secrets
import time
from typing import TYPE_CHECKING, cast

import pydantic
from redis.asyncio.client import Pipeline
from rich.console import Console
from rich.table import Table

import backbone

if TYPE_CHECKING or __package__ == "samples":
    from contracts.accounts_gen import BankAccountAggregate, BankAccountDispatcher
else:
    from .contracts.accounts_gen import BankAccountAggregate, BankAccountDispatcher

__all__ = ["Account", "Balances", "InsufficientFunds", "run_accounts_demo"]

URI = "bank.accounts"
CENT = decimal.Decimal("0.01")


class InsufficientFunds(Exception):
    """A withdrawal larger than the balance (the command is refused)."""


class Balance(pydantic.BaseModel):
    owner: str = ""
    currency: str = ""
    balance: decimal.Decimal = decimal.Decimal(0)
    opened: bool = False


class Account(BankAccountAggregate[Balance]):
    """A bank account: state from its events, rules in its commands."""

    snapshot_every = 100

    def __init__(self) -> None:
        super().__init__(Balance())

    # events: facts, folded without checks
    def apply_opened(self, owner: str, currency: str) -> None:
        self.state.owner, self.state.currency, self.state.opened = owner, currency, True

    def apply_deposited(self, amount: decimal.Decimal) -> None:
        self.state.balance += amount

    def apply_withdrawn(self, amount: decimal.Decimal) -> None:
        self.state.balance -= amount

    # commands: check, then record
    def open(self, owner: str, currency: str = "EUR") -> None:
        if self.state.opened:
            raise ValueError(f"account {self.id} is open already")
        self.record_opened(owner, currency)

    def deposit(self, amount: decimal.Decimal) -> None:
        if not self.state.opened:
            raise ValueError(f"account {self.id} is not open")
        self.record_deposited(amount)

    def withdraw(self, amount: decimal.Decimal) -> None:
        if amount > self.state.balance:
            raise InsufficientFunds(
                f"account {self.id} holds {self.state.balance}, not {amount}"
            )
        self.record_withdrawn(amount)


class Balances:
    """A projection of every account's balance: one Redis hash (account id ->
    balance in cents), written with the projection's checkpoint in one step."""

    def __init__(self, key: str) -> None:
        self.key = key

    def _add(self, context: backbone.ProjectionContext, cents: int) -> None:
        account = context.metadata.get("a", "?")  # the aggregate id of the event
        context.writes.hincrby(self.key, account, cents)

    async def opened(
        self, owner: str, currency: str, *, context: backbone.ProjectionContext
    ) -> None:
        self._add(context, 0)

    async def deposited(
        self, amount: decimal.Decimal, *, context: backbone.ProjectionContext
    ) -> None:
        self._add(context, int(amount * 100))

    async def withdrawn(
        self, amount: decimal.Decimal, *, context: backbone.ProjectionContext
    ) -> None:
        self._add(context, -int(amount * 100))

    async def reset(self, writes: Pipeline) -> None:
        writes.delete(self.key)

    async def read(self, bus: backbone.Backbone) -> dict[str, decimal.Decimal]:
        raw = cast(dict[bytes, bytes], await bus.redis.hgetall(self.key))
        return {
            k.decode(): (decimal.Decimal(int(v)) / 100).quantize(CENT)
            for k, v in raw.items()
        }


@dataclasses.dataclass
class Tally:
    commands: int = 0
    refused: int = 0
    attempts: int = 0


async def run_accounts_demo(
    redis_url: str,
    *,
    accounts: int = 3,
    operations: int = 20,
    environment: str = "demo",
    timeout: float = 30.0,
    out: Console | None = None,
) -> bool:
    """Open ACCOUNTS accounts and run OPERATIONS deposits and withdrawals on each,
    several at once on every account; True when no balance went below zero and
    the read model agrees with every aggregate."""
    console = out or Console()
    uri = f"{URI}.{secrets.token_hex(4)}"
    rng = random.Random(7)
    tally = Tally()
    async with backbone.Backbone(redis_url, environment=environment) as bus:
        where = "embedded Redis" if bus.embedded else bus.url
        console.print(f"backbone accounts demo on {where}, stream {uri}")
        repository = bus.aggregates(uri, Account)
        balances = Balances(bus.keys(uri).projection("balances", "by-account"))
        projection = backbone.Projection(
            bus, uri, "balances", balances, BankAccountDispatcher
        )
        ids = [f"acct-{n}" for n in range(1, accounts + 1)]
        started = time.perf_counter()
        following = asyncio.ensure_future(projection.run())  # catch up, then live
        try:
            for account_id in ids:
                await repository.execute(account_id, lambda a: a.open("owner"))

            async def one(account_id: str, amount: decimal.Decimal) -> None:
                calls = 0

                def command(account: Account) -> None:
                    nonlocal calls
                    calls += 1
                    if amount > 0:
                        account.deposit(amount)
                    else:
                        account.withdraw(-amount)

                tally.commands += 1
                try:
                    await repository.execute(account_id, command, attempts=50)
                except InsufficientFunds:
                    tally.refused += 1
                tally.attempts += calls

            work = [
                one(
                    account_id,
                    decimal.Decimal(rng.randint(-60, 100)).quantize(CENT)
                    or decimal.Decimal(1),
                )
                for account_id in ids
                for _ in range(operations)
            ]
            await asyncio.gather(*work)  # all at once: commands race
            final = {i: (await repository.load(i)) for i in ids}
            # Stop following (the page under way is written with its checkpoint),
            # then catch up from that checkpoint to the end of the stream.
            projection.stop()
            async with asyncio.timeout(timeout):
                await following
                await projection.catch_up()
            read_model = await balances.read(bus)
        finally:
            projection.stop()
            with contextlib.suppress(Exception):
                await following
            await _remove_stream(bus, uri)
        elapsed = time.perf_counter() - started
    return _summary(console, final, read_model, tally, elapsed)


async def _remove_stream(bus: backbone.Backbone, uri: str) -> None:
    pattern = bus.keys(uri).stream.replace("{", "\\{").replace("}", "\\}") + "*"
    keys = [key async for key in bus.redis.scan_iter(match=pattern, count=500)]
    for start in range(0, len(keys), 500):
        await bus.redis.delete(*keys[start : start + 500])


def _summary(
    console: Console,
    final: dict[str, Account],
    read_model: dict[str, decimal.Decimal],
    tally: Tally,
    elapsed: float,
) -> bool:
    table = Table(title="accounts")
    for column in ("account", "version", "balance", "read model", "agrees"):
        table.add_column(column, justify="right" if column != "account" else "left")
    ok = True
    for account_id, account in final.items():
        model = read_model.get(account_id)
        agrees = model == account.state.balance and account.state.balance >= 0
        ok = ok and agrees
        table.add_row(
            account_id,
            str(account.version),
            str(account.state.balance),
            str(model),
            "yes" if agrees else "NO",
        )
    console.print(table)
    conflicts = tally.attempts - tally.commands
    console.print(
        f"{tally.commands} command(s), {tally.refused} refused (insufficient "
        f"funds), {conflicts} retried after a concurrency conflict, in "
        f"{elapsed:.2f}s: " + ("every balance agrees" if ok else "BALANCES DIFFER"),
        highlight=False,
    )
    return ok


def main() -> None:
    """``python -m samples.accounts``: the demo against a Redis server."""
    import argparse
    import os

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--redis-url",
        default=os.environ.get("BACKBONE_REDIS_URL", "redis://127.0.0.1:6379/0"),
    )
    parser.add_argument("--environment", default="dev")
    parser.add_argument("--accounts", type=int, default=3)
    args = parser.parse_args()
    ok = asyncio.run(
        run_accounts_demo(
            args.redis_url, accounts=args.accounts, environment=args.environment
        )
    )
    raise SystemExit(0 if ok else 1)


if __name__ == "__main__":
    main()
