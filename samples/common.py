"""What the sample programs share: the stream, the orders, the command line."""

from __future__ import annotations

import argparse
import datetime as dt
import decimal
import os

from .shipment import Product, Tier, User

URI = "hello.event-sourcing"
STEPS = ("order_placed", "packing", "on_delivery", "on_received")


def now() -> dt.datetime:
    return dt.datetime.now(dt.UTC)


def order(index: int) -> tuple[User, Product]:
    """The INDEX-th sample order: a user and a product."""
    user = User(
        id=index,
        name=f"User {index}",
        email=f"user{index}@example.com",
        tier=Tier.GOLD if index % 3 == 0 else Tier.STANDARD,
    )
    product = Product(
        id=100 + index, name=f"Widget {index}", price=decimal.Decimal("9.99") + index
    )
    return user, product


def arguments(description: str) -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=description)
    parser.add_argument(
        "--redis-url",
        default=os.environ.get("BACKBONE_REDIS_URL", "redis://127.0.0.1:6379/0"),
        help="Redis URL (default: $BACKBONE_REDIS_URL or redis://127.0.0.1:6379/0)",
    )
    parser.add_argument("--environment", default="dev")
    parser.add_argument("--uri", default=URI)
    return parser
