"""The bank-account contract: an account is opened, money is deposited and
withdrawn. The event store's sample: an account is an aggregate whose rule (a
withdrawal never takes the balance below zero) makes concurrent commands race.
"""

from __future__ import annotations

import decimal
from typing import Annotated, Protocol

import pydantic

from backbone import contract

Amount = Annotated[decimal.Decimal, pydantic.Field(gt=0, decimal_places=2)]


@contract(name="BankAccount", version=1)
class BankAccount(Protocol):
    async def opened(self, owner: str, currency: str) -> None:
        """The account was opened for OWNER, in CURRENCY."""

    async def deposited(self, amount: Amount) -> None:
        """Money came in."""

    async def withdrawn(self, amount: Amount) -> None:
        """Money went out (never more than the balance)."""
