"""The code blocks of README.md and docs/*.md, run, so they cannot drift from the code.

The ```python blocks of one file run in order as one program, as a reader follows
them (later blocks use names of earlier ones), with top-level ``await``, on both
backends: the URL ``redis://127.0.0.1:6379/0`` the docs write becomes the test's
backend and ``environment="dev"`` a fresh environment. A block that is not
runnable on purpose is preceded by ``<!-- not run: why -->``. In shell blocks
every ``backbone <command> [<subcommand>]`` must name a command that exists and
every ``python3 dev.py <command>`` one that dev.py knows.
"""

from __future__ import annotations

import ast
import dataclasses
import inspect
import logging
import re
import shlex
import subprocess
import sys
import types
from collections.abc import Iterator
from pathlib import Path

import pytest
import typer.main

import backbone
from backbone.cli import app
from conftest import drop_environment

ROOT = Path(__file__).resolve().parent.parent
DOC_URL = "redis://127.0.0.1:6379/0"
DOC_ENVIRONMENT = 'environment="dev"'
NOT_RUN = re.compile(r"<!--\s*not run:\s*\S.*?-->")
FENCE = re.compile(r"^(\s*)(`{3,}|~{3,})\s*([\w+-]*)")
SHELL = {"", "sh", "shell", "bash", "console", "text"}
"""Block languages whose lines may be commands (unlabelled: command synopses)."""


@dataclasses.dataclass(frozen=True)
class Block:
    path: Path
    line: int
    """Line number of the opening fence (1-based)."""
    language: str
    text: str
    not_run: bool

    @property
    def where(self) -> str:
        inside = self.path.is_relative_to(ROOT)
        return f"{self.path.relative_to(ROOT) if inside else self.path}:{self.line}"


def documents() -> list[Path]:
    return [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]


def blocks(path: Path) -> list[Block]:
    """The fenced code blocks of PATH, in order."""
    lines = path.read_text(encoding="utf-8").splitlines()
    found: list[Block] = []
    index = 0
    while index < len(lines):
        opening = FENCE.match(lines[index])
        index += 1
        if opening is None:
            continue
        indent, fence, language = opening.groups()
        start = index
        closing = re.compile(rf"\s*{re.escape(fence[0])}{{{len(fence)},}}\s*")
        while index < len(lines) and not closing.fullmatch(lines[index]):
            index += 1
        body = [line[len(indent) :] for line in lines[start:index]]
        before = [line for line in lines[: start - 1] if line.strip()]
        marked = bool(before) and NOT_RUN.search(before[-1]) is not None
        found.append(Block(path, start, language.lower(), "\n".join(body), marked))
        index += 1
    return found


# --- python blocks: one program per file --------------------------------------------


def programs() -> list[Path]:
    return [
        path
        for path in documents()
        if any(block.language == "python" for block in blocks(path))
    ]


async def run_program(path: Path, url: str, environment: str) -> None:
    """Run the python blocks of PATH in order in one fresh module; an error names
    the file and the line of the block that failed."""
    module = types.ModuleType("doc_" + re.sub(r"\W", "_", path.stem))
    sys.modules[module.__name__] = module
    try:
        for block in blocks(path):
            if block.language == "python" and not block.not_run:
                await run_block(block, module.__dict__, url, environment)
    finally:
        del sys.modules[module.__name__]
        await close_what_is_left(module.__dict__)


async def run_block(
    block: Block, namespace: dict[str, object], url: str, environment: str
) -> None:
    source = block.text.replace(DOC_URL, url).replace(
        DOC_ENVIRONMENT, f'environment="{environment}"'
    )
    if re.search(r"\b(rediss?|unix)://", block.text.replace(DOC_URL, "")):
        pytest.fail(
            f"{block.where}: a Redis URL other than {DOC_URL} (the one the test "
            "replaces with its backend's); write that one"
        )
    try:
        # Padded so that tracebacks give the line numbers of the markdown file.
        code = compile(
            "\n" * block.line + source,
            str(block.path),
            "exec",
            flags=ast.PyCF_ALLOW_TOP_LEVEL_AWAIT,
        )
        result = eval(code, namespace)
        if inspect.iscoroutine(result):
            await result
    except Exception as exc:
        pytest.fail(
            f"{block.where}: the python block starting here fails "
            f"({type(exc).__name__}: {exc}); make it runnable, or precede it with "
            "<!-- not run: why -->."
        )


async def close_what_is_left(namespace: dict[str, object]) -> None:
    values = list(namespace.values())
    for value in values:
        if isinstance(value, backbone.Subscription) and value.running:
            await value.stop()
    for value in values:
        if isinstance(value, backbone.Backbone):
            await value.close()


@pytest.fixture
def global_state() -> Iterator[None]:
    """Put back what documented set-up code changes for the whole process."""
    loggers = [logging.getLogger(), logging.getLogger("backbone")]
    saved = [(lg, lg.level, list(lg.handlers)) for lg in loggers]
    yield
    for logger, level, handlers in saved:
        logger.setLevel(level)
        logger.handlers[:] = handlers
    telemetry = sys.modules.get("backbone.telemetry")
    if telemetry is not None:
        telemetry.uninstrument()


@pytest.mark.parametrize("path", programs(), ids=lambda path: path.name)
@pytest.mark.usefixtures("global_state")
async def test_python_blocks_run_as_one_program(
    path: Path, url: str, environment: str
) -> None:
    try:
        await run_program(path, url, environment)
    finally:
        if url != "memory://":
            async with backbone.Backbone(url, environment=environment) as connection:
                await drop_environment(connection)


async def test_a_failing_block_is_named_by_file_and_line(tmp_path: Path) -> None:
    page = tmp_path / "page.md"
    page.write_text(
        "# Page\n\n```python\nx = 1\n```\n\n<!-- not run: shown only -->\n"
        "```python\nnot python\n```\n\n```python\nassert x == 2\n```\n"
    )
    program = [block for block in blocks(page) if block.language == "python"]
    assert [(block.line, block.not_run) for block in program] == [
        (3, False),
        (8, True),
        (12, False),
    ]
    namespace: dict[str, object] = {}
    await run_block(program[0], namespace, "memory://", "t")
    with pytest.raises(pytest.fail.Exception, match=r"page\.md:12: the python block"):
        await run_block(program[2], namespace, "memory://", "t")


# --- shell blocks: commands that exist ----------------------------------------------


def command_lines() -> list[tuple[Block, list[str]]]:
    """Every command line of the shell blocks, as words (comments and leading
    ``$ `` and VAR=value assignments removed)."""
    found = []
    for path in documents():
        for block in blocks(path):
            if block.language not in SHELL:
                continue
            for line in block.text.splitlines():
                line = line.strip().removeprefix("$ ")
                try:
                    words = shlex.split(line, comments=True)
                except ValueError:
                    words = line.split()
                while words and re.fullmatch(r"[A-Za-z_]\w*=.*", words[0]):
                    words.pop(0)
                if words:
                    found.append((block, words))
    return found


def backbone_commands() -> dict[tuple[str, ...], list[str]]:
    """Each distinct ``backbone`` command named (with its subcommand for a
    group such as dlq; ``a|b`` names both), and the blocks that name it."""
    groups = typer.main.get_command(app)
    found: dict[tuple[str, ...], list[str]] = {}
    for block, words in command_lines():
        if words[:3] in (["python", "-m", "backbone"], ["python3", "-m", "backbone"]):
            words = words[2:]
        if words[0] != "backbone" or len(words) < 2 or words[1].startswith("-"):
            continue
        for name in words[1].split("|"):
            command = getattr(groups, "commands", {}).get(name)
            subcommands = getattr(command, "commands", None)
            nested = words[2] if subcommands and len(words) > 2 else None
            if nested is None or nested.startswith(("-", "[")):
                found.setdefault((name,), []).append(block.where)
                continue
            for sub in nested.split("|"):
                found.setdefault((name, sub), []).append(block.where)
    return found


COMMANDS = backbone_commands()


@pytest.mark.parametrize(
    "command", sorted(COMMANDS), ids=lambda words: "backbone " + " ".join(words)
)
def test_each_backbone_command_of_the_docs_exists(command: tuple[str, ...]) -> None:
    done = subprocess.run(
        [sys.executable, "-m", "backbone", *command, "--help"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 0, (
        f"`backbone {' '.join(command)}` of {', '.join(COMMANDS[command])} is no "
        f"command of backbone (--help exits {done.returncode}): {done.stderr}"
    )


def dev_commands() -> set[str]:
    """The commands dev.py dispatches on (``command == "..."``)."""
    tree = ast.parse((ROOT / "dev.py").read_text(encoding="utf-8"))
    return {
        constant.value
        for node in ast.walk(tree)
        if isinstance(node, ast.Compare)
        and isinstance(node.left, ast.Name)
        and node.left.id == "command"
        for comparator in node.comparators
        for constant in ast.walk(comparator)
        if isinstance(constant, ast.Constant) and isinstance(constant.value, str)
    }


def test_each_dev_py_command_of_the_docs_exists() -> None:
    known = dev_commands()
    assert {"demo", "test", "check"} <= known, "dev.py no longer reads as expected"
    unknown = [
        f"{block.where}: python3 dev.py {words[2]}"
        for block, words in command_lines()
        if words[:2] in (["python3", "dev.py"], ["python", "dev.py"])
        and len(words) > 2
        and words[2] not in known
    ]
    assert not unknown, f"commands dev.py does not know: {unknown}"


def test_the_readme_starts_with_the_two_quickstart_commands() -> None:
    first = blocks(ROOT / "README.md")[0]
    commands = [line.split("#")[0].strip() for line in first.text.splitlines()]
    assert commands == ["python3 dev.py demo", "python3 dev.py test"], (
        f"{first.where}: the quickstart is exactly these two commands"
    )


def test_the_readme_lists_the_public_api_and_every_command() -> None:
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    api = readme.split("## Public API", 1)[1].split("\n## ", 1)[0]
    unlisted = set(backbone.__all__) - set(re.findall(r"`(\w+)`", api))
    assert not unlisted, f"README.md, Public API: {sorted(unlisted)} not listed"
    named = {
        words[1]
        for block, words in command_lines()
        if block.path.name == "README.md" and words[0] == "backbone" and words[1:]
    }
    commands = set(getattr(typer.main.get_command(app), "commands", {}))
    assert commands <= named, f"README.md: no line for backbone {commands - named}"
