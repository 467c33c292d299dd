"""The generated aggregate base: mypy --strict checks a user's apply_ methods and
recorded events against the contract."""

from __future__ import annotations

import subprocess
import sys
import textwrap
from pathlib import Path

from test_codegen import ROOT, make_package, run_cli

CONTRACT = """
from __future__ import annotations
import datetime
from typing import Protocol
from backbone import contract

@contract
class Shipping(Protocol):
    async def shipped(self, email: str, at: datetime.datetime) -> None:
        \"\"\"The parcel left.\"\"\"
    async def returned(self, email: str, reason: str = "unknown") -> None: ...
"""

GOOD = """
from __future__ import annotations
import dataclasses
import datetime
from .events_gen import ShippingAggregate

@dataclasses.dataclass
class Parcel:
    shipped: int = 0
    reasons: list[str] = dataclasses.field(default_factory=list)

class Shipment(ShippingAggregate[Parcel]):
    snapshot_every = 10

    def __init__(self) -> None:
        super().__init__(Parcel())

    def apply_shipped(self, email: str, at: datetime.datetime) -> None:
        self.state.shipped += 1

    # apply_returned is left out: optional

    def ship(self, now: datetime.datetime) -> None:
        self.record_shipped("a@example.com", now)
        self.record_returned("a@example.com")

def count(shipment: Shipment) -> int:
    return shipment.state.shipped
"""

WRONG = """
from __future__ import annotations
import datetime
from .events_gen import ShippingAggregate
from .good import Parcel

class Shipment(ShippingAggregate[Parcel]):
    def apply_shipped(self, email: int, at: datetime.datetime) -> None:  # line 8
        pass

    def ship(self) -> None:
        self.record_returned(42)  # line 12

def count(shipment: Shipment) -> str:
    return shipment.state.shipped  # line 15
"""


def test_the_aggregate_base_lets_mypy_check_apply_methods(tmp_path: Path) -> None:
    module, package = make_package(tmp_path, CONTRACT)
    generated = run_cli("codegen", package, cwd=tmp_path)
    assert generated.returncode == 0, generated.stderr
    (module.parent / "good.py").write_text(textwrap.dedent(GOOD))
    (module.parent / "wrong.py").write_text(textwrap.dedent(WRONG))
    mypy = subprocess.run(
        [
            sys.executable,
            "-m",
            "mypy",
            "--strict",
            "--config-file",
            str(ROOT / "pyproject.toml"),
            "--cache-dir",
            str(tmp_path / "cache"),
            "-p",
            package,
        ],
        cwd=ROOT,
        capture_output=True,
        text=True,
        env={"MYPYPATH": str(tmp_path), "PATH": "/usr/bin:/bin"},
    )
    errors = [line for line in mypy.stdout.splitlines() if ": error:" in line]
    places = [line.split(": error:")[0] for line in errors]
    wrong = f"{tmp_path / package}/wrong.py"
    assert places == [f"{wrong}:8", f"{wrong}:12", f"{wrong}:15"], mypy.stdout
    assert "apply_shipped" in mypy.stdout
    assert '"record_returned"' in mypy.stdout
