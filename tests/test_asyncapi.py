"""`backbone docs`: the AsyncAPI 3.0 document of contracts.

The document is validated against the AsyncAPI 3.0.0 JSON Schema (tests/data,
from the npm package @asyncapi/specs 6.11.1, Apache-2.0), and its payload
schemas are exercised with real values.
"""

from __future__ import annotations

import datetime as dt
import decimal
import json
import re
import secrets
import subprocess
import sys
import uuid
from pathlib import Path
from typing import Any

import jsonschema
import pytest
from referencing import Registry
from referencing.jsonschema import DRAFT7

from backbone.contract import ContractSpec
from backbone.errors import ConfigurationError
from backbone.keys import StreamKeys
from codegen import CodegenError, load_contracts
from codegen.asyncapi import build_document
from contracts.accounts import BankAccount
from contracts.shipment_tracking import ShipmentTracking
from typed_contracts.all_types import Address, AllTypes, Customer
from typed_contracts.partitioned import Orders

ROOT = Path(__file__).resolve().parent.parent
SCHEMA = json.loads((ROOT / "tests/data/asyncapi-3.0.0.json").read_text())
REPOSITORY = [ROOT / "contracts", ROOT / "tests/typed_contracts"]
Json = dict[str, Any]


def find_contracts(paths: list[Path]) -> list[ContractSpec]:
    return [spec for found in load_contracts(paths) for spec in found.specs]


def asyncapi_errors(document: Json) -> list[str]:
    validator_class = jsonschema.validators.validator_for(SCHEMA)
    assert validator_class is jsonschema.Draft7Validator  # as the schema declares
    validator = validator_class(SCHEMA)
    return [
        f"{'/'.join(map(str, error.absolute_path))}: {error.message[:300]}"
        for error in validator.iter_errors(document)
    ]


def resolve(document: Json, ref: str) -> Any:
    assert ref.startswith("#/"), ref
    node: Any = document
    for part in ref[2:].split("/"):
        node = node[part.replace("~1", "/").replace("~0", "~")]
    return node


def refs(node: Any) -> list[str]:
    if isinstance(node, dict):
        found = [node["$ref"]] if isinstance(node.get("$ref"), str) else []
        return found + [r for value in node.values() for r in refs(value)]
    if isinstance(node, list):
        return [r for item in node for r in refs(item)]
    return []


def payload_validator(document: Json, message: str) -> jsonschema.Draft7Validator:
    """A validator of MESSAGE's payload whose $refs resolve in DOCUMENT."""
    registry: Registry[Any] = Registry().with_resource(
        "urn:document", DRAFT7.create_resource(document)
    )
    pointer = f"urn:document#/components/messages/{message}/payload"
    return jsonschema.Draft7Validator({"$ref": pointer}, registry=registry)


@pytest.fixture(scope="module")
def specs() -> list[ContractSpec]:
    found = find_contracts(REPOSITORY)
    assert [spec.protocol for spec in found] == [
        BankAccount,
        ShipmentTracking,
        AllTypes,
        Orders,
    ]
    return found


@pytest.fixture(scope="module")
def document(specs: list[ContractSpec]) -> Json:
    return build_document(specs)


def payload(document: Json, message: str) -> Json:
    result: Json = document["components"]["messages"][message]["payload"]
    return result


@pytest.mark.parametrize(
    "options",
    [{}, {"environment": "prod"}, {"uris": ["orders", "hello.event-sourcing"]}],
    ids=["parameterised", "environment", "uris"],
)
def test_document_is_valid_asyncapi_3(specs: list[ContractSpec], options: Json) -> None:
    document = build_document(specs, **options)
    assert document["asyncapi"] == "3.0.0"
    assert asyncapi_errors(document) == []
    for ref in refs(document):
        resolve(document, ref)  # every reference points into the document


def test_the_schema_catches_a_broken_document(document: Json) -> None:
    broken = json.loads(json.dumps(document))
    broken["operations"]["send.AllTypes.scalars"]["action"] = "publish"
    broken["components"]["messages"]["AllTypes.scalars"]["payload"]["required"] = 3
    errors = asyncapi_errors(broken)
    assert any(e.startswith("operations/send.AllTypes.scalars") for e in errors)
    assert any(e.startswith("components/messages/AllTypes.scalars") for e in errors)


def test_each_operation_is_a_message(specs: list[ContractSpec], document: Json) -> None:
    messages = document["components"]["messages"]
    expected = [f"{s.name}.{op.name}" for s in specs for op in s.operations]
    assert list(messages) == expected
    for spec in specs:
        for op in spec.operations:
            message = messages[f"{spec.name}.{op.name}"]
            assert message["name"] == op.name
            assert message["title"] == f"{spec.name}.{op.name}"
            assert message["summary"] == op.doc
            assert message["x-backbone-contract"] == spec.name
            assert message["x-backbone-contract-version"] == spec.version
            assert message["x-backbone-operation"] == op.name
            assert message["x-backbone-version"] == op.version
            assert message["x-backbone-method"] == op.method
            headers = message["headers"]
            assert headers["properties"]["o"]["const"] == op.name
            assert headers["properties"]["v"]["const"] == str(op.version)
            assert headers["properties"]["c"]["const"] == spec.name
            assert set(headers["properties"]) >= {"o", "v", "c", "t", "p", "co", "ca"}
            assert headers["required"] == ["o", "v", "c", "t", "p"]
            assert list(message["payload"]["properties"]) == [p.name for p in op.params]
    renamed = messages["AllTypes.renamed-op"]
    assert (renamed["name"], renamed["x-backbone-version"]) == ("renamed-op", 2)
    assert renamed["x-backbone-method"] == "renamed"
    assert messages["ShipmentTracking.order_placed"]["summary"] == (
        "A user ordered a product."
    )


def test_each_message_is_sent_and_received_on_its_channel(document: Json) -> None:
    operations = document["operations"]
    seen: dict[str, list[str]] = {}
    for operation in operations.values():
        channel_ref = operation["channel"]["$ref"]
        [message] = operation["messages"]
        assert message["$ref"].startswith(channel_ref + "/messages/")
        target = resolve(document, resolve(document, message["$ref"])["$ref"])
        seen.setdefault(target["title"], []).append(operation["action"])
    assert set(seen) == set(document["components"]["messages"])
    assert all(sorted(actions) == ["receive", "send"] for actions in seen.values())
    send = operations["send.ShipmentTracking.order_placed"]
    assert send["channel"] == {"$ref": "#/channels/ShipmentTracking"}
    assert "shipment_tracking_producer(bus, uri).order_placed" in send["description"]
    receive = operations["receive.ShipmentTracking.order_placed"]
    assert "XREADGROUP" in receive["description"]


def test_parameter_types_map_to_json_types(document: Json) -> None:
    scalars = payload(document, "AllTypes.scalars")["properties"]
    assert {name: s["type"] for name, s in scalars.items()} == {
        "text": "string",
        "number": "integer",
        "ratio": "number",
        "flag": "boolean",
        "raw": "string",
        "nothing": "null",
    }
    assert scalars["raw"]["format"] == "binary"
    times = payload(document, "AllTypes.times")["properties"]
    assert [times[n]["format"] for n in ("moment", "day", "clock", "span")] == [
        "date-time",
        "date",
        "time",
        "duration",
    ]
    identifiers = payload(document, "AllTypes.identifiers")["properties"]
    assert identifiers["key"] == {"type": "string", "format": "uuid"}
    assert identifiers["color"] == {"$ref": "#/components/schemas/Color"}
    schemas = document["components"]["schemas"]
    assert schemas["Color"]["enum"] == ["red", "green"]
    assert schemas["Level"]["enum"] == [1, 2]
    containers = payload(document, "AllTypes.containers")["properties"]
    assert containers["items"] == {"type": "array", "items": {"type": "integer"}}
    # A fixed tuple in Draft 7 terms (pydantic writes 2020-12's prefixItems).
    assert containers["pair"]["items"] == [{"type": "string"}, {"type": "integer"}]
    assert containers["pair"]["additionalItems"] is False
    assert "prefixItems" not in json.dumps(document)
    assert containers["unique"]["uniqueItems"] is True
    assert containers["mapping"]["type"] == "object"
    assert containers["mapping"]["additionalProperties"]["items"] == {"type": "integer"}
    optionals = payload(document, "AllTypes.optionals")
    props = optionals["properties"]
    assert props["maybe"]["anyOf"] == [{"type": "integer"}, {"type": "null"}]
    assert props["choice"]["enum"] == ["a", "b"]
    assert (props["limited"]["minimum"], props["limited"]["maximum"]) == (0, 10)
    assert props["defaulted"]["default"] == "fallback"
    assert props["absent"]["default"] is None
    assert optionals["required"] == ["maybe", "either", "choice", "limited"]
    assert "required" not in payload(document, "AllTypes.empty")


def test_a_model_parameter_refers_to_components_schemas(document: Json) -> None:
    models = payload(document, "AllTypes.models")["properties"]
    assert models["customer"] == {"$ref": "#/components/schemas/Customer"}
    assert models["others"]["items"] == {"$ref": "#/components/schemas/Customer"}
    schemas = document["components"]["schemas"]
    customer = schemas["Customer"]
    assert customer["properties"]["address"] == {"$ref": "#/components/schemas/Address"}
    assert set(customer["required"]) == {"id", "name", "since", "address"}
    order = payload(document, "ShipmentTracking.order_placed")["properties"]
    assert order["user"] == {"$ref": "#/components/schemas/User"}
    assert "$defs" not in json.dumps(document)


def test_payload_schemas_accept_real_events_and_refuse_wrong_ones(
    document: Json,
) -> None:
    customer = Customer(
        id=uuid.uuid4(),
        name="Ada",
        since=dt.date(2020, 1, 2),
        address=Address(street="Main 1", zip_code="1000", tags={"home"}),
        balance=decimal.Decimal("12.50"),
    ).model_dump(mode="json")
    models = payload_validator(document, "AllTypes.models")
    assert models.is_valid({"customer": customer, "others": [customer]})
    assert not models.is_valid({"customer": customer})  # others is required
    assert not models.is_valid({"customer": {**customer, "address": 5}, "others": []})
    containers = payload_validator(document, "AllTypes.containers")
    good = {
        "items": [1, 2],
        "pair": ["a", 1],
        "many": [1.5],
        "unique": ["x", "y"],
        "frozen": [1],
        "mapping": {"k": [1]},
        "by_number": {"1": "one"},
        "by_key": {str(uuid.uuid4()): "green"},
    }
    assert containers.is_valid(good)
    assert not containers.is_valid({**good, "pair": ["a", 1, 2]})
    assert not containers.is_valid({**good, "pair": [1, "a"]})
    assert not containers.is_valid({**good, "unique": ["x", "x"]})
    assert not containers.is_valid({**good, "by_key": {str(uuid.uuid4()): "blue"}})


def test_parameterised_channel_per_contract(
    specs: list[ContractSpec], document: Json
) -> None:
    channels = document["channels"]
    assert list(channels) == ["BankAccount", "ShipmentTracking", "AllTypes", "Orders"]
    keys = StreamKeys("dev", "hello.event-sourcing")
    for spec in specs:
        channel = channels[spec.name]
        address = channel["address"]
        # AsyncAPI tools read each {...} of an address as a parameter: the one
        # parameter covers the hash tag, braces included.
        assert re.findall(r"{(.+?)}", address) == list(channel["parameters"])
        assert address.replace("{tag}", keys.tag) == keys.stream
        assert list(channel["messages"]) == [op.name for op in spec.operations]
    assert "x-backbone-environment" not in document["info"]


def test_uris_give_one_channel_per_stream(specs: list[ContractSpec]) -> None:
    uris = ["orders", "a/b", "a_b", "orders"]
    document = build_document(specs, environment="prod", uris=uris)
    channels = document["channels"]
    assert list(channels) == ["orders", "a_b", "a_b-2"]
    addresses = [channel["address"] for channel in channels.values()]
    assert addresses == ["bb:{prod:orders}", "bb:{prod:a/b}", "bb:{prod:a_b}"]
    every = list(document["components"]["messages"])
    for channel in channels.values():
        assert "parameters" not in channel
        assert list(channel["messages"]) == every
    assert len(document["operations"]) == 2 * 3 * len(every)
    assert document["info"]["x-backbone-environment"] == "prod"
    dev = build_document(specs, uris=["orders"])
    assert dev["channels"]["orders"]["address"] == "bb:{dev:orders}"
    with pytest.raises(ConfigurationError, match="uri 'no spaces'"):
        build_document(specs, uris=["no spaces"])


def make_package(tmp_path: Path, modules: dict[str, str]) -> str:
    name = f"pkg_{secrets.token_hex(4)}"
    package = tmp_path / name
    package.mkdir()
    (package / "__init__.py").write_text("")
    for module, source in modules.items():
        (package / f"{module}.py").write_text(source)
    return name


CONTRACT = """\
from __future__ import annotations
from typing import Annotated, Literal, Protocol, Union
import pydantic
from backbone import contract


class Item(pydantic.BaseModel):
    {field}


@contract(name="{name}")
class Events(Protocol):
    async def added(self, item: Item) -> None:
        \"\"\"An item was added.\"\"\"
"""


def test_models_of_one_name_in_two_modules_stay_apart(tmp_path: Path) -> None:
    package = make_package(
        tmp_path,
        {
            "first": CONTRACT.format(field="sku: str", name="First"),
            "second": CONTRACT.format(field="weight: float", name="Second"),
            "script": "raise SystemExit('only contract modules are imported')\n",
        },
    )
    specs = find_contracts([tmp_path / package])
    assert [spec.name for spec in specs] == ["First", "Second"]
    document = build_document(specs)
    assert asyncapi_errors(document) == []
    first = payload(document, "First.added")["properties"]["item"]["$ref"]
    second = payload(document, "Second.added")["properties"]["item"]["$ref"]
    assert first != second
    assert resolve(document, first)["properties"] == {
        "sku": {"title": "Sku", "type": "string"}
    }
    assert set(resolve(document, second)["properties"]) == {"weight"}
    # The generated helpers are named after the class, not the contract name.
    send = document["operations"]["send.First.added"]["description"]
    assert "`events_producer(bus, uri).added(...)`" in send


def test_two_contracts_of_one_name_are_refused(tmp_path: Path) -> None:
    package = make_package(
        tmp_path,
        {
            "first": CONTRACT.format(field="sku: str", name="Same"),
            "second": CONTRACT.format(field="sku: str", name="Same"),
        },
    )
    with pytest.raises(CodegenError, match="two contracts are named 'Same'"):
        build_document(find_contracts([tmp_path / package]))


def test_a_discriminated_union_keeps_the_document_valid(tmp_path: Path) -> None:
    source = CONTRACT.format(field="sku: str", name="Pets").replace(
        "async def added(self, item: Item)",
        "async def adopted(self, pet: Annotated[Union[Cat, Dog], "
        "pydantic.Field(discriminator='kind')])",
    )
    source = source.replace(
        "@contract",
        "class Cat(pydantic.BaseModel):\n    kind: Literal['cat']\n\n\n"
        "class Dog(pydantic.BaseModel):\n    kind: Literal['dog']\n\n\n@contract",
    )
    package = make_package(tmp_path, {"pets": source})
    document = build_document(find_contracts([tmp_path / package]))
    assert asyncapi_errors(document) == []
    pet = payload(document, "Pets.adopted")["properties"]["pet"]
    assert pet["discriminator"] == "kind"  # AsyncAPI's form: the property name
    assert len(pet["oneOf"]) == 2


def run_cli(*args: str, cwd: Path = ROOT) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "backbone", "docs", *args],
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=120,
        env={"PYTHONPATH": str(cwd), "PATH": "/usr/bin:/bin", "COLUMNS": "80"},
    )


def test_cli_writes_the_document(tmp_path: Path, document: Json) -> None:
    result = run_cli("contracts", "tests/typed_contracts")
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout) == document
    target = tmp_path / "asyncapi.json"
    args = ["contracts", "-o", str(target), "-e", "prod", "-u", "orders"]
    result = run_cli(*args)
    assert result.returncode == 0, result.stderr
    assert f"wrote {target}" in result.stdout
    written = json.loads(target.read_text())
    assert asyncapi_errors(written) == []
    assert written["channels"]["orders"]["address"] == "bb:{prod:orders}"


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["backbone/cli"], "error: no contract found: searched"),
        (["missing"], "error: missing: no such file or directory"),
        (["contracts", "-u", "a b"], "error: uri 'a b' is not valid"),
        (["contracts", "-o", "no/such/dir/x.json"], "error: cannot write no/such"),
    ],
)
def test_cli_errors_are_one_line(args: list[str], message: str) -> None:
    result = run_cli(*args)
    assert result.returncode == 1
    assert result.stdout == ""
    assert result.stderr.startswith(message)
    assert len(result.stderr.strip().splitlines()) == 1, result.stderr


def test_cli_names_a_module_that_fails_to_import(tmp_path: Path) -> None:
    source = CONTRACT.format(field="sku: str", name="Broken").replace(
        "import pydantic\n", "import pydantic\nimport no_such_module\n"
    )
    package = make_package(tmp_path, {"events": source})
    result = run_cli(package, cwd=tmp_path)
    assert result.returncode == 1
    [line] = result.stderr.strip().splitlines()
    assert line.startswith(f"error: {tmp_path / package / 'events.py'}:4: ")
    assert "no_such_module" in line
