"""The contract model: what describe() reads from a Protocol."""

from __future__ import annotations

import datetime as dt
from typing import Protocol

import pytest

import backbone
from contracts.shipment_tracking import ShipmentTracking
from typed_contracts.all_types import AllTypes


def test_describe_reads_names_versions_and_parameters() -> None:
    spec = backbone.describe(ShipmentTracking)
    assert spec.name == "ShipmentTracking"
    assert spec.version == 1
    assert [op.name for op in spec.operations] == [
        "order_placed",
        "packing",
        "on_delivery",
        "on_received",
    ]
    packing = spec.operation("packing")
    assert [p.name for p in packing.params] == ["email", "product_id", "time"]
    assert packing.params[2].annotation is dt.datetime
    assert packing.doc == "The warehouse is packing the order."
    with pytest.raises(KeyError, match="known: order_placed, packing"):
        spec.operation("shipped")


def test_operation_decorator_sets_wire_name_and_version() -> None:
    spec = backbone.describe(AllTypes)
    assert spec.version == 3
    renamed = spec.operation("renamed-op")
    assert renamed.method == "renamed"
    assert renamed.version == 2
    assert spec.operation("optionals").params[4].default == "fallback"


def test_fingerprint_changes_with_the_contract() -> None:
    @backbone.contract(name="X")
    class One(Protocol):
        async def a(self, value: int) -> None: ...

    @backbone.contract(name="X")
    class Two(Protocol):
        async def a(self, value: str) -> None: ...

    @backbone.contract(name="X")
    class Three(Protocol):
        async def a(self, value: int) -> None: ...

    assert backbone.describe(One).fingerprint != backbone.describe(Two).fingerprint
    assert backbone.describe(One).fingerprint == backbone.describe(Three).fingerprint


def test_undecorated_class_and_bad_names_are_refused() -> None:
    class Plain(Protocol):
        async def a(self) -> None: ...

    with pytest.raises(
        backbone.ContractError, match=r"decorate it with @backbone\.contract"
    ):
        backbone.describe(Plain)
    with pytest.raises(backbone.ContractError, match="contract name"):
        backbone.contract(name="has space")
    with pytest.raises(backbone.ContractError, match="version must be an int >= 1"):
        backbone.contract(version=0)


def test_empty_contract_is_refused() -> None:
    @backbone.contract
    class Empty(Protocol):
        pass

    with pytest.raises(backbone.ContractError, match="declares no operations"):
        backbone.describe(Empty)


def test_runtime_does_not_import_codegen() -> None:
    import subprocess
    import sys

    code = (
        "import sys, backbone, contracts.shipment_tracking_gen;"
        "print('codegen' in sys.modules)"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True
    )
    assert out.stdout.strip() == "False"


def test_handler_missing_an_operation_is_refused_clearly() -> None:
    from contracts.shipment_tracking_gen import ShipmentTrackingDispatcher

    class Partial:
        async def packing(self, email: str, product_id: int, time: object) -> None:
            return None

    with pytest.raises(backbone.ContractError) as caught:
        ShipmentTrackingDispatcher(Partial())  # type: ignore[arg-type]
    message = str(caught.value)
    assert "Partial lacks order_placed, on_delivery, on_received" in message
    assert "ShipmentTracking" in message


def test_sync_handler_method_is_refused_clearly() -> None:
    from contracts.shipment_tracking_gen import ShipmentTrackingDispatcher
    from helpers import Recorder

    class Sync(Recorder):
        def packing(self, *args: object, **kwargs: object) -> None:  # type: ignore[override]
            return None

    with pytest.raises(
        backbone.ContractError, match=r"Sync\.packing must be `async def`"
    ):
        ShipmentTrackingDispatcher(Sync())
