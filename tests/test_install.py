"""What a clean install offers: the version, shell completion, the embedded
backend as an extra with a clear error without it, and no silent fallback to it
in ``Backbone.from_env``."""

from __future__ import annotations

import importlib.metadata
import os
import subprocess
import sys
from pathlib import Path

import pytest

import backbone
from backbone.connection import ENV_URL

BIN = Path(sys.executable).parent
EXTRA = "pip install 'backbone[embedded]'"


def run(
    *args: str, env: dict[str, str] | None = None, cwd: Path | None = None
) -> subprocess.CompletedProcess[str]:
    environ = {k: v for k, v in os.environ.items() if k != ENV_URL}
    environ["COLUMNS"] = "200"
    environ.update(env or {})
    return subprocess.run(
        args, capture_output=True, text=True, timeout=60, env=environ, cwd=cwd
    )


def without(module: str, code: str) -> str:
    """CODE run in a process where importing MODULE fails, as when not installed."""
    return f"import sys\nsys.modules[{module!r}] = None\n{code}"


@pytest.mark.parametrize(
    "command",
    [[str(BIN / "backbone")], [sys.executable, "-m", "backbone"]],
    ids=["script", "python -m"],
)
def test_version(command: list[str]) -> None:
    result = run(*command, "--version")
    assert result.returncode == 0
    assert result.stdout == f"backbone {backbone.__version__}\n"
    assert result.stderr == ""
    assert importlib.metadata.version("backbone") == backbone.__version__


def test_shell_completion_script_and_answers() -> None:
    script = run(str(BIN / "backbone"), "--show-completion", "bash")
    assert script.returncode == 0
    assert "_BACKBONE_COMPLETE=complete_bash" in script.stdout
    assert "complete -o default -F _backbone_completion backbone" in script.stdout
    assert script.stderr == ""
    # What the installed script answers when the shell asks, under either name.
    for command in ([str(BIN / "backbone")], [sys.executable, "-m", "backbone"]):
        answer = run(
            *command,
            env={
                "_BACKBONE_COMPLETE": "complete_bash",
                "COMP_WORDS": "backbone dlq re",
                "COMP_CWORD": "2",
            },
        )
        assert answer.returncode == 0
        assert answer.stdout.split() == ["retry"]
        assert answer.stderr == ""
    helped = run(str(BIN / "backbone"), "--help")
    assert "--install-completion" in helped.stdout
    assert helped.stderr == ""


@pytest.mark.parametrize("missing", ["fakeredis", "lupa"])
def test_embedded_backend_without_its_extra_names_it(missing: str) -> None:
    code = without(
        missing,
        "import backbone\n"
        "try:\n"
        "    backbone.Backbone('memory://')\n"
        "except backbone.ConfigurationError as exc:\n"
        "    print(exc)\n",
    )
    result = run(sys.executable, "-c", code)
    assert result.returncode == 0, result.stderr
    assert EXTRA in result.stdout
    assert "memory://" in result.stdout
    assert f"({missing})" in result.stdout


def test_demo_without_the_extra_says_so_in_one_line(tmp_path: Path) -> None:
    code = without(
        "fakeredis",
        "sys.argv = ['backbone', 'demo', '--orders', '1']\n"
        "from backbone.cli import main\n"
        "main()\n",
    )
    result = run(sys.executable, "-c", code, cwd=tmp_path)
    assert result.returncode == 1
    assert result.stdout == ""
    assert result.stderr.splitlines() == [
        "error: without --redis-url the demo runs on the embedded in-process Redis, "
        f"which needs the embedded extra: {EXTRA} (or pass --redis-url "
        "redis://host:port/db)"
    ]


async def test_from_env_never_falls_back_to_the_embedded_backend(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.delenv(ENV_URL, raising=False)
    with pytest.raises(backbone.ConfigurationError) as caught:
        backbone.Backbone.from_env()
    assert f"{ENV_URL} is not set" in str(caught.value)
    monkeypatch.setenv(ENV_URL, "")
    with pytest.raises(backbone.ConfigurationError, match=ENV_URL):
        backbone.Backbone.from_env(environment="prod")

    async with backbone.Backbone.from_env(default="memory://") as bus:
        assert bus.embedded
        assert await bus.ping()

    monkeypatch.setenv(ENV_URL, "redis://127.0.0.1:1/0")
    async with backbone.Backbone.from_env(
        environment="prod", default="memory://"
    ) as bus:
        assert not bus.embedded
        assert bus.url == "redis://127.0.0.1:1/0"
        assert bus.environment == "prod"
