"""Personal parameters in contracts: what `describe` accepts and refuses, the
fingerprint, the sealing primitives, and the generated code's types (mypy
makes handlers and apply_ methods consider ERASED)."""

from __future__ import annotations

import subprocess
import sys
import textwrap
import uuid
from pathlib import Path
from typing import Annotated, Protocol

import pytest

import backbone
from backbone import ERASED, Personal, contract
from backbone.codec import OperationCodec, unpack_value
from backbone.errors import ContractError
from backbone.personal import AGGREGATE_SUBJECT, SEALED
from backbone.sealing import (
    ERASED_VALUE,
    SealError,
    Unsealed,
    key_id,
    new_key,
    open_state,
    open_value,
    seal,
    seal_state,
    state_key_ids,
)
from test_codegen import ROOT, make_package, run_cli

# --- describe ------------------------------------------------------------------------


def test_the_marking_lands_in_the_param_spec() -> None:
    @contract
    class Marked(Protocol):
        async def a(
            self,
            customer: uuid.UUID,
            email: Annotated[str, Personal("customer")],
            own: Annotated[str, Personal("own")],
            by_aggregate: Annotated[int | None, Personal],
            also: Annotated[str, Personal()],
            plain: str = "x",
        ) -> None: ...

    params = {
        p.name: p.personal for p in backbone.describe(Marked).operations[0].params
    }
    assert params == {
        "customer": None,
        "email": "customer",
        "own": "own",
        "by_aggregate": AGGREGATE_SUBJECT,
        "also": AGGREGATE_SUBJECT,
        "plain": None,
    }


@contract
class Bad1(Protocol):
    async def a(self, email: Annotated[str, Personal("customer")]) -> None: ...


@contract
class Bad2(Protocol):
    async def a(
        self,
        email: Annotated[str, Personal("email")],
        other: Annotated[str, Personal("email")],
        name: Annotated[str, Personal("other")],
    ) -> None: ...


@contract
class Bad3(Protocol):
    async def a(
        self, amount: float, note: Annotated[str, Personal("amount")]
    ) -> None: ...


@contract
class Bad4(Protocol):
    async def a(self, emails: list[Annotated[str, Personal]]) -> None: ...


@contract
class Bad5(Protocol):
    async def a(self, email: Annotated[str, Personal, Personal("email")]) -> None: ...


@contract
class Bad6(Protocol):
    async def a(
        self, who: str | None, email: Annotated[str, Personal("who")]
    ) -> None: ...


@pytest.mark.parametrize(
    ("cls", "expected"),
    [
        (Bad1, "has no parameter 'customer' (it has: email)"),
        (Bad2, "'other', is itself personal with another subject"),
        (Bad3, "is float; a subject is a str, int or UUID"),
        (Bad4, "Personal marks a whole parameter"),
        (Bad5, "marked Personal more than once"),
        (Bad6, "is str | None; a subject is a str, int or UUID"),
    ],
)
def test_describe_refuses_subjects_that_cannot_work(cls: type, expected: str) -> None:
    with pytest.raises(ContractError) as raised:
        backbone.describe(cls)
    assert expected in str(raised.value)
    assert raised.value.method == "a"
    assert raised.value.line is not None


def test_personal_takes_a_parameter_name() -> None:
    with pytest.raises(TypeError, match="name of the subject's parameter"):
        Personal("not a name")
    assert repr(Personal("x")) == "Personal('x')"
    assert repr(Personal()) == "Personal()"


def test_the_marking_is_part_of_the_fingerprint() -> None:
    @contract(name="Same")
    class Plain(Protocol):
        async def a(self, who: str, email: str) -> None: ...

    @contract(name="Same")
    class Marked(Protocol):
        async def a(self, who: str, email: Annotated[str, Personal("who")]) -> None: ...

    @contract(name="Same")
    class Other(Protocol):
        async def a(
            self, who: str, email: Annotated[str, Personal("email")]
        ) -> None: ...

    prints = {backbone.describe(c).fingerprint for c in (Plain, Marked, Other)}
    assert len(prints) == 3


# --- the codec and the sealing primitives ---------------------------------------------


@contract
class Codec(Protocol):
    async def a(
        self, who: int, email: Annotated[str, Personal("who")], n: int = 0
    ) -> None: ...


def test_the_codec_marks_personal_values_and_passes_erased_through() -> None:
    codec = OperationCodec(backbone.describe(Codec).operations[0])
    assert codec.personal == ((1, 0),)
    who, email, n = codec.encode((7, "a@example.com", 3))
    assert type(email) is Unsealed
    assert email.subject == "7"
    assert type(who) is bytes
    assert codec.decode_values([who, email, n]) == [7, "a@example.com", 3]
    assert codec.decode_values([who, ERASED_VALUE, n]) == [7, ERASED, 3]
    with pytest.raises(backbone.DecodeError, match="'n'"):
        codec.decode_values([who, email, ERASED_VALUE])  # not personal: invalid
    with pytest.raises(backbone.ValidationError):
        codec.encode((7, ERASED, 3))  # producers never write the marker
    sealed = seal(bytes(email), key_id("7"), new_key())
    assert unpack_value(sealed) is SEALED  # shown unopened: <personal>
    with pytest.raises(backbone.DecodeError, match="<personal>"):
        codec.decode_values([who, sealed, n])  # a value never opened: refused


def test_a_value_opens_only_under_its_own_key() -> None:
    kid, key = key_id("s"), new_key()
    sealed = seal(b"\xa5hello", kid, key)
    assert b"hello" not in sealed
    assert open_value(sealed, {kid: key}) == (b"\xa5hello", True)
    assert open_value(sealed, {kid: None}) == (ERASED_VALUE, False)
    assert open_value(sealed, {}) == (ERASED_VALUE, False)
    # A newer key of the same subject (erased, then seen again): erased.
    assert open_value(sealed, {kid: new_key()}) == (ERASED_VALUE, False)
    # The header is authenticated: another key id in it does not open.
    other = key_id("t")
    moved = sealed.replace(kid, other)
    with pytest.raises(SealError, match="does not authenticate"):
        open_value(moved, {other: key})
    long = seal(b"\xda" + b"x" * 70_000, kid, key)  # an ext32 body
    assert open_value(long, {kid: key})[0].endswith(b"x" * 100)


def test_a_sealed_state_needs_every_key() -> None:
    a, b = key_id("a"), key_id("b")
    keys = {a: new_key(), b: new_key()}
    sealed = seal_state(b"state", keys)
    assert b"state" not in sealed
    assert {kid for kid, _ in state_key_ids(sealed) or ()} == {a, b}
    assert open_state(sealed, keys) == b"state"
    assert open_state(sealed, {a: keys[a]}) is None
    assert open_state(sealed, {a: keys[a], b: new_key()}) is None
    with pytest.raises(SealError):
        open_state(sealed[:-1] + bytes([sealed[-1] ^ 1]), keys)


# --- generated code ------------------------------------------------------------------

CONTRACT = """
from __future__ import annotations
from typing import Annotated, Protocol
from backbone import Personal, contract

@contract
class People(Protocol):
    async def registered(
        self, person: str, email: Annotated[str | None, Personal("person")]
    ) -> None: ...
"""

GOOD = """
from __future__ import annotations
import dataclasses
import backbone
from .events_gen import PeopleAggregate, PeopleProducer

class Handler:
    async def registered(
        self, person: str, email: str | None | backbone.Erased
    ) -> None:
        if isinstance(email, str):
            print(email.lower())

@dataclasses.dataclass
class State:
    email: str | None = None

class Person(PeopleAggregate[State]):
    def apply_registered(
        self, person: str, email: str | None | backbone.Erased
    ) -> None:
        self.state.email = None if isinstance(email, backbone.Erased) else email

    def register(self, email: str) -> None:
        self.record_registered(self.id, email)

async def send(producer: PeopleProducer) -> None:
    await producer.registered("p-1", "a@example.com")
"""

WRONG = """
from __future__ import annotations
from .events_gen import PeopleConsumer, PeopleDispatcher

class Careless:
    async def registered(self, person: str, email: str | None) -> None:
        pass

def use() -> None:
    handler: PeopleConsumer = Careless()  # line 10
    PeopleDispatcher(handler)
"""


def test_generated_code_types_personal_values_as_possibly_erased(
    tmp_path: Path,
) -> None:
    module, package = make_package(tmp_path, CONTRACT)
    generated = run_cli("codegen", package, cwd=tmp_path)
    assert generated.returncode == 0, generated.stderr
    text = (module.parent / "events_gen.py").read_text()
    assert "email: str | None | backbone.Erased" in text  # consumer, apply_
    assert text.count("backbone.Erased") == 2
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
    assert places == [f"{tmp_path / package}/wrong.py:10"], mypy.stdout
    assert "Erased" in mypy.stdout
