"""`backbone codegen` compares each contract with the one its code was generated
from and names the changes that would break stored events."""

from __future__ import annotations

import importlib
import sys
import textwrap
from pathlib import Path

import pytest
import redis

from codegen import BreakingChanges, generate
from codegen.compat import read_shapes
from test_codegen import HEADER, make_package, run_cli

V1 = """
@contract(name="Parcels")
class Parcels(Protocol):
    async def shipped(self, email: str, weight: int) -> None: ...

    async def noted(self, text: str) -> None: ...
"""


def evolve(module: Path, body: str) -> None:
    """Replace the contract module's source (and forget the imported one)."""
    module.write_text(HEADER + textwrap.dedent(body))
    for name in [n for n in sys.modules if n.startswith(module.parent.name)]:
        del sys.modules[name]
    importlib.invalidate_caches()


@pytest.fixture
def package(tmp_path: Path) -> Path:
    module, _ = make_package(tmp_path, HEADER + V1)
    generate([module.parent])
    return module


def generated(module: Path) -> Path:
    return module.with_name(module.stem + "_gen.py")


def test_the_generated_module_records_each_operations_shape(package: Path) -> None:
    shapes = read_shapes(generated(package).read_text())
    assert shapes == {
        "Parcels": {
            "shipped": {
                "version": 1,
                "params": [["email", "str", False], ["weight", "int", False]],
            },
            "noted": {"version": 1, "params": [["text", "str", False]]},
        }
    }


@pytest.mark.parametrize(
    ("body", "expected"),
    [
        pytest.param(
            V1.replace("email: str, weight: int", "email: str"),
            ["Parcels.shipped: parameter 'weight' was removed", "version=2"],
            id="removed-parameter",
        ),
        pytest.param(
            V1.replace("weight: int", "weight: float"),
            ["parameter 'weight' changed type from int to float", "upcasters={1: ...}"],
            id="retyped-parameter",
        ),
        pytest.param(
            V1.replace("weight: int", "weight: int, express: bool"),
            ["parameter 'express' was added without a default", "give it a default"],
            id="added-without-default",
        ),
        pytest.param(
            V1.replace("    async def noted(self, text: str) -> None: ...\n", ""),
            ["Parcels.noted was removed", "unknown-operation", "retired"],
            id="removed-operation",
        ),
        pytest.param(
            V1.replace("class Parcels", "class Other").replace('"Parcels"', '"Other"'),
            ["contract Parcels was removed"],
            id="removed-contract",
        ),
        pytest.param(
            V1.replace(
                "    async def shipped(self, email: str, weight: int)",
                "    @operation(version=2)\n"
                "    async def shipped(self, email: str, grams: int)",
            ),
            ["'weight' was removed", "add an upcaster from version 1"],
            id="new-version-without-upcaster",
        ),
    ],
)
def test_a_breaking_change_is_named_and_nothing_is_written(
    package: Path, body: str, expected: list[str]
) -> None:
    before = generated(package).read_text()
    evolve(package, body)
    with pytest.raises(BreakingChanges) as caught:
        generate([package.parent])
    text = str(caught.value)
    for part in expected:
        assert part in text
    assert str(package) in text
    assert "--accept-breaking" in text
    assert generated(package).read_text() == before
    # --check names the same change.
    outcome = generate([package.parent], check=True)
    assert not outcome.ok_for_check
    assert any(expected[0] in line for line in outcome.breaking)
    # Accepting the break writes, and then the contract is the new baseline.
    generate([package.parent], accept_breaking=True)
    assert generated(package).read_text() != before
    assert generate([package.parent], check=True).ok_for_check


@pytest.mark.parametrize(
    "body",
    [
        pytest.param(
            V1.replace("weight: int", "weight: int, express: bool = False"),
            id="added-with-default",
        ),
        pytest.param(
            V1 + "\n    async def returned(self, email: str) -> None: ...\n",
            id="added-operation",
        ),
        pytest.param(
            "def up(payload: dict[str, Any]) -> dict[str, Any]:\n"
            "    payload['grams'] = payload.pop('weight') * 1000\n"
            "    return payload\n"
            + V1.replace(
                "    async def shipped(self, email: str, weight: int)",
                "    @operation(version=2, upcasters={1: up})\n"
                "    async def shipped(self, email: str, grams: int)",
            ),
            id="new-version-with-upcaster",
        ),
    ],
)
def test_a_compatible_change_is_generated(package: Path, body: str) -> None:
    evolve(package, body)
    outcome = generate([package.parent])
    assert outcome.written == (generated(package),)


def test_a_version_never_goes_down(package: Path) -> None:
    evolve(
        package,
        V1.replace(
            "    async def shipped", "    @operation(version=3)\n    async def shipped"
        ),
    )
    generate([package.parent], accept_breaking=True)
    evolve(
        package,
        V1.replace(
            "    async def shipped", "    @operation(version=2)\n    async def shipped"
        ),
    )
    with pytest.raises(BreakingChanges, match="version went down from 3 to 2"):
        generate([package.parent])


def test_the_command_prints_one_line_per_change_and_exits_1(package: Path) -> None:
    evolve(package, V1.replace("email: str, weight: int", "email: bytes"))
    cwd = package.parent.parent
    result = run_cli("codegen", package.parent.name, cwd=cwd)
    assert result.returncode == 1
    errors = [line for line in result.stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 3  # two changes and what to do
    assert "Traceback" not in result.stderr
    check = run_cli("codegen", "--check", package.parent.name, cwd=cwd)
    assert check.returncode == 1
    assert check.stderr.count("breaking:") == 2
    accepted = run_cli("codegen", "--accept-breaking", package.parent.name, cwd=cwd)
    assert accepted.returncode == 0, accepted.stderr
    assert run_cli("codegen", "--check", package.parent.name, cwd=cwd).returncode == 0


OTHER = """
@contract(name="Other")
class Other(Protocol):
    async def happened(self, what: str) -> None: ...
"""


def test_a_contract_module_deleted_is_a_removed_contract(package: Path) -> None:
    """Its generated module is orphaned, and its shapes still name the contract
    whose events streams hold: deleting it silently would hide the break."""
    other = package.with_name("other.py")
    other.write_text(HEADER + textwrap.dedent(OTHER))
    generate([package.parent])
    before = generated(package).read_text()
    package.unlink()
    with pytest.raises(BreakingChanges, match="contract Parcels was removed"):
        generate([package.parent])
    assert generated(package).read_text() == before  # nothing deleted
    outcome = generate([package.parent], check=True)
    assert any("contract Parcels was removed" in line for line in outcome.breaking)
    generate([package.parent], accept_breaking=True)
    assert not generated(package).exists()
    assert generate([package.parent], check=True).ok_for_check


def test_a_contract_moved_to_another_module_is_not_removed(package: Path) -> None:
    other = package.with_name("other.py")
    other.write_text(HEADER + textwrap.dedent(OTHER))
    generate([package.parent])
    # Parcels moves from events.py to other.py, unchanged.
    third = OTHER.replace('"Other"', '"Third"').replace("class Other", "class Third")
    other.write_text(HEADER + textwrap.dedent(OTHER) + textwrap.dedent(V1))
    evolve(package, third)
    outcome = generate([package.parent])
    assert set(outcome.written) == {generated(package), generated(other)}
    # A move that also breaks is still named, with the file it moved to.
    retyped = V1.replace("weight: int", "weight: float")
    other.write_text(HEADER + textwrap.dedent(OTHER) + textwrap.dedent(retyped))
    evolve(package, third)
    with pytest.raises(BreakingChanges, match="'weight' changed type") as caught:
        generate([package.parent])
    assert str(caught.value).startswith(f"{other}: Parcels.shipped")


def test_a_module_generated_before_shapes_were_recorded_is_not_compared(
    package: Path,
) -> None:
    target = generated(package)
    text = target.read_text()
    target.write_text(text[: text.index("\n\n# The shape of the contracts")] + "\n")
    evolve(package, V1.replace("email: str, weight: int", "email: str"))
    assert generate([package.parent]).written == (target,)
    assert read_shapes(target.read_text()) is not None


@pytest.mark.parametrize(
    "damaged",
    [
        '{"Parcels": 5}',
        '{"Parcels": {"shipped": {"version": "x"}}}',
        '{"Parcels": {"shipped": {"version": 1, "params": [["a"]]}}}',
        '{"Parcels": {"shipped": {"version": 1, "params": 3}}}',
        '{"Parcels": {"shipped": []}}',
        "{1: 2}",
        "{[1]: 2}",
    ],
)
def test_a_damaged_shapes_record_is_not_compared_nor_a_traceback(
    package: Path, damaged: str
) -> None:
    """A hand edit or a merge left a `_SHAPES` that is no shape record: it is
    read as none (as for a module generated before shapes were recorded)."""
    target = generated(package)
    text = target.read_text()
    at = text.index("_SHAPES = ")
    target.write_text(text[:at] + f"_SHAPES = {damaged}\n")
    assert read_shapes(target.read_text()) is None
    cwd = package.parent.parent
    result = run_cli("codegen", package.parent.name, cwd=cwd)
    assert result.returncode == 0, result.stderr
    assert read_shapes(target.read_text()) is not None


def test_with_the_streams_at_hand_only_a_removed_operation_still_stored_breaks(
    package: Path, real_url: str, environment: str
) -> None:
    client = redis.Redis.from_url(real_url)
    try:
        # Only a dead letter still holds a `noted` event: it could be re-driven.
        client.xadd(f"bb:{{{environment}:parcels}}", {"c": "Parcels", "o": "shipped"})
        client.xadd(
            f"bb:{{{environment}:parcels}}:dlq", {"m:c": "Parcels", "m:o": "noted"}
        )
        cwd = package.parent.parent
        lookup = ["--redis-url", real_url, "--environment", environment]
        evolve(
            package,
            V1.replace("    async def noted(self, text: str) -> None: ...\n", ""),
        )
        refused = run_cli("codegen", *lookup, package.parent.name, cwd=cwd)
        assert refused.returncode == 1
        assert "Parcels.noted was removed" in refused.stderr
        evolve(
            package,
            V1.replace(
                "    async def shipped(self, email: str, weight: int) -> None: ...\n",
                "",
            ),
        )
        # Without the lookup every removal counts; with it, `shipped` is gone
        # from every stream of the environment... except the one above.
        assert run_cli("codegen", package.parent.name, cwd=cwd).returncode == 1
        assert run_cli("codegen", *lookup, package.parent.name, cwd=cwd).returncode == 1
        client.delete(f"bb:{{{environment}:parcels}}")
        written = run_cli("codegen", *lookup, package.parent.name, cwd=cwd)
        assert written.returncode == 0, written.stderr
    finally:
        for key in client.scan_iter(match=f"bb:{{{environment}:*"):
            client.delete(key)
        client.close()


def test_generated_code_says_which_version_each_operation_is(package: Path) -> None:
    evolve(
        package,
        "def up(payload: dict[str, Any]) -> dict[str, Any]:\n"
        "    return payload\n"
        + V1.replace(
            "    async def shipped(self, email: str, weight: int)",
            "    @operation(\n"
            "        version=3, upcasters={2: up}, deprecated={2}, retired={1}\n"
            "    )\n"
            "    async def shipped(self, email: str, weight: int)",
        ),
    )
    generate([package.parent], accept_breaking=True)
    text = generated(package).read_text()
    assert "# shipped: version 3; upcast 2 to 3; deprecated 2; retired 1\n" in text
    assert "# noted:" not in text  # version 1 says nothing
