"""Which files `backbone codegen PATH` imports, and what it says when it cannot.

Files are read as source first: only a module with a class decorated by
backbone's ``contract`` is imported, so scripts, helpers and virtual
environments under PATH never run.
"""

from __future__ import annotations

import ast
import secrets
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
from backbone.codegen import CodegenError, ImportFailures, generate
from backbone.codegen.sources import declares_contract, scan

CONTRACT = """\
from __future__ import annotations
from typing import Protocol
from backbone import contract


@contract
class Shipping(Protocol):
    async def shipped(self, email: str) -> None: ...
"""


def run_cli(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "backbone", *args],
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=60,
        env={"PYTHONPATH": str(cwd), "PATH": "/usr/bin:/bin", "COLUMNS": "200"},
    )


def package(tmp_path: Path, files: dict[str, str]) -> tuple[Path, str]:
    """A fresh package holding FILES (relative path: source): (directory, name)."""
    name = f"pkg_{secrets.token_hex(4)}"
    root = tmp_path / name
    root.mkdir()
    (root / "__init__.py").write_text("")
    for relative, source in files.items():
        path = root / relative
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(textwrap.dedent(source))
    return root, name


def trap(marker: Path) -> str:
    """Source that leaves MARKER behind and hangs when it is run."""
    return (
        f"import pathlib, time\npathlib.Path({str(marker)!r}).write_text('ran')\n"
        "time.sleep(3600)\n"
    )


def test_only_modules_declaring_a_contract_are_imported(tmp_path: Path) -> None:
    marker = tmp_path / "ran"
    decorated_elsewhere = (
        "from typing import Protocol\nfrom mylib import contract\n\n"
        "@contract\nclass Other(Protocol): ...\n"
    )
    hidden_contract = CONTRACT + trap(marker)
    root, name = package(
        tmp_path,
        {
            "events.py": CONTRACT,
            "script.py": trap(marker),
            "service.py": "import backbone\n" + trap(marker),
            "mentions.py": '"""Uses @contract."""\nfrom backbone import contract\n'
            + trap(marker),
            "other.py": decorated_elsewhere + trap(marker),
            "venv/lib/events.py": hidden_contract,
            ".cache/events.py": hidden_contract,
            "__pycache__/events.py": hidden_contract,
            "legacy_gen.py": hidden_contract,
        },
    )
    (root / "venv" / "pyvenv.cfg").write_text("home = /usr/bin\n")
    result = run_cli("codegen", name, cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert not marker.exists()
    assert (root / "events_gen.py").exists()
    assert "1 written, 0 unchanged" in result.stdout
    assert not (root / "venv" / "lib" / "events_gen.py").exists()
    assert not (root / ".cache" / "events_gen.py").exists()


@pytest.mark.parametrize(
    ("imports", "decorator"),
    [
        ("import backbone", '@backbone.contract(name="Shipping")'),
        ("import backbone as bb", "@bb.contract"),
        ("from backbone import contract as c", "@c"),
        ("from backbone import contract as c", "@c(version=2)"),
        ("from backbone.contract import contract", "@contract()"),
        ("import backbone.contract", "@backbone.contract"),
        (
            "try:\n    import backbone\nexcept ImportError:\n    raise",
            "@backbone.contract",
        ),
    ],
)
def test_every_way_of_naming_the_decorator_is_found(
    tmp_path: Path, imports: str, decorator: str
) -> None:
    source = (
        f"from typing import Protocol\n{imports}\n\n\n{decorator}\n"
        "class Shipping(Protocol):\n"
        "    async def shipped(self, email: str) -> None: ...\n"
    )
    assert declares_contract(ast.parse(source))
    root, _ = package(tmp_path, {"events.py": source})
    outcome = generate([root])
    assert outcome.written == ((root / "events_gen.py").resolve(),)


@pytest.mark.parametrize(
    "source",
    [
        "from backbone import contract\n# @contract\nclass A: ...\n",
        "from backbone import contract\n\n@contract\ndef f() -> None: ...\n",
        "from mylib import contract\n\n@contract\nclass A: ...\n",
        "import backbone\n\n@backbone.operation()\nclass A: ...\n",
        "import mylib\n\n@mylib.contract\nclass A: ...\n",
        "from backbone import contract as c\n\n@contract\nclass A: ...\n",
        "from backbone import contract\n\ndef f():\n    @contract\n    class A: ...\n",
    ],
)
def test_lookalikes_are_not_contracts(source: str) -> None:
    assert not declares_contract(ast.parse(source))


def test_classes_under_module_level_blocks_are_found() -> None:
    source = """\
        import sys
        import backbone

        if sys.version_info >= (3, 11):
            with open(__file__):
                pass
        else:
            try:
                pass
            finally:

                @backbone.contract
                class A: ...
        """
    assert declares_contract(ast.parse(textwrap.dedent(source)))


def test_a_path_without_contracts_is_an_error_naming_what_was_searched(
    tmp_path: Path,
) -> None:
    tools = tmp_path / "tools"
    (tools / ".venv").mkdir(parents=True)
    (tools / "backup.py").write_text("import shutil\n")
    (tools / "report.py").write_text("import backbone\nprint(backbone.Backbone)\n")
    for args in (("codegen", "tools"), ("codegen", "--check", "tools")):
        result = run_cli(*args, cwd=tmp_path)
        assert result.returncode == 1, args
        assert result.stdout == ""
        assert result.stderr.splitlines() == [
            "error: no contract found: searched 2 Python file(s) under tools; "
            "not entered: .venv; a contract is a typing.Protocol class decorated "
            "with backbone's contract (`from backbone import contract` and "
            "`@contract(...)`, or `import backbone` and `@backbone.contract(...)`)"
        ]


def test_import_errors_name_the_users_file_and_line(tmp_path: Path) -> None:
    """One line per failing module, at the deepest frame of the user's code (not
    in the standard library), no traceback; nothing is written."""
    root, name = package(
        tmp_path,
        {
            "settings/__init__.py": "from .load import TIMEOUT\n",
            "settings/load.py": """\
                import json

                CONFIG = json.loads('{"retries": 3}')
                TIMEOUT = CONFIG["timeout"]
                """,
            "events.py": CONTRACT + "from .settings import TIMEOUT\n",
            "parsed.py": """\
                import json

                DATA = json.loads("{")
                """,
            "orders.py": CONTRACT + "from . import parsed\n",
            "broken.py": "import backbone\n\ndef f(:\n",
            "good.py": CONTRACT,
        },
    )
    result = run_cli("codegen", name, cwd=tmp_path)
    assert result.returncode == 1
    assert "Traceback" not in result.stderr
    resolved = root.resolve()
    assert result.stderr.splitlines() == [
        f"error: {resolved}/broken.py:3: SyntaxError: invalid syntax (it mentions "
        "backbone, so it may declare a contract)",
        f"error: {resolved}/settings/load.py:4: KeyError: 'timeout' (while importing "
        f"{name}.events from {resolved}/events.py)",
        f"error: {resolved}/parsed.py:3: JSONDecodeError: Expecting property name "
        "enclosed in double quotes: line 1 column 2 (char 1) (while importing "
        f"{name}.orders from {resolved}/orders.py)",
    ]
    assert not (root / "good_gen.py").exists()


def test_an_error_at_import_in_the_contract_module_itself(tmp_path: Path) -> None:
    root, _ = package(
        tmp_path, {"events.py": CONTRACT + "\nraise SystemExit('no config')\n"}
    )
    with pytest.raises(ImportFailures) as caught:
        generate([root])
    line = CONTRACT.count("\n") + 2
    assert caught.value.lines == (
        f"{root.resolve()}/events.py:{line}: SystemExit: no config",
    )


def test_a_missing_path_is_one_line(tmp_path: Path) -> None:
    result = run_cli("codegen", "nowhere", cwd=tmp_path)
    assert result.returncode == 1
    assert result.stderr.splitlines() == ["error: nowhere: no such file or directory"]
    notes = tmp_path / "notes.txt"
    notes.write_text("")
    with pytest.raises(CodegenError, match="not a Python file"):
        generate([notes])


def test_scan_reports_generated_modules_and_skipped_directories(
    tmp_path: Path,
) -> None:
    root, _ = package(
        tmp_path,
        {
            "events.py": CONTRACT,
            "events_gen.py": "# Generated by `backbone codegen`; do not edit.\n",
            "env/x.py": CONTRACT,
        },
    )
    (root / "env" / "pyvenv.cfg").write_text("")
    found = scan([root])
    assert found.contract_modules == ((root / "events.py").resolve(),)
    assert found.generated == ((root / "events_gen.py").resolve(),)
    assert found.searched == 2  # __init__.py and events.py
    assert found.skipped_dirs == (root / "env",)
