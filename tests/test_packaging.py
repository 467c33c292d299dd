"""The distribution: one import name, ``backbone``, and everything working from
a wheel installed in a fresh virtual environment, next to a user's own
``contracts`` package."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import sysconfig
import tomllib
import venv
import zipfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
# Where each repository folder is installed.
MAPPED = {
    "backbone": "backbone",
    "backbone.codegen": "codegen",
    "backbone.samples": "samples",
    "backbone.samples.contracts": "contracts",
}
SOURCES = (".py", ".lua")


def source_packages() -> dict[str, Path]:
    """Every directory holding sources, by the package name it is installed as."""
    found: dict[str, Path] = {}
    for package, folder in MAPPED.items():
        for current, dirs, files in os.walk(ROOT / folder):
            dirs[:] = sorted(d for d in dirs if d != "__pycache__")
            if any(name.endswith(SOURCES) for name in files):
                rel = Path(current).relative_to(ROOT / folder)
                found[".".join([package, *rel.parts])] = Path(current)
    return found


def test_every_package_is_in_the_distribution() -> None:
    config = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]
    mapping = {name: folder for name, folder in config["package-dir"].items()}
    assert mapping == {k: v for k, v in MAPPED.items() if k != "backbone"}
    missing = sorted(set(source_packages()) - set(config["packages"]))
    assert not missing, (
        f"add to [tool.setuptools] packages in pyproject.toml: {missing}"
    )
    assert all(name.split(".")[0] == "backbone" for name in config["packages"])


def run(
    *args: str | Path, cwd: Path, env: dict[str, str]
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(a) for a in args],
        cwd=cwd,
        env=env,
        capture_output=True,
        text=True,
        timeout=180,
    )


def build_wheel(tmp_path: Path) -> Path:
    """The wheel of a copy of the repository (the build writes next to its sources)."""
    source = tmp_path / "source"
    source.mkdir()
    for name in ("pyproject.toml", "README.md"):
        shutil.copy2(ROOT / name, source / name)
    for folder in sorted(set(MAPPED.values())):
        shutil.copytree(
            ROOT / folder,
            source / folder,
            ignore=shutil.ignore_patterns("__pycache__", "*.pyc"),
        )
    dist = tmp_path / "dist"
    # No build isolation: the backend is the environment's (the dev extra has it),
    # so the build needs no network.
    built = run(
        sys.executable,
        "-m",
        "pip",
        "wheel",
        "--no-deps",
        "--no-build-isolation",
        "--no-index",
        "--disable-pip-version-check",
        "-q",
        "-w",
        dist,
        source,
        cwd=tmp_path,
        env=dict(os.environ),
    )
    assert built.returncode == 0, built.stderr
    (wheel,) = dist.glob("backbone-*.whl")
    return wheel


def fresh_venv(tmp_path: Path, wheel: Path) -> Path:
    """A new virtual environment with WHEEL installed; its dependencies are the
    ones of this environment (a .pth line), so nothing is downloaded."""
    target = tmp_path / "venv"
    venv.EnvBuilder(with_pip=False).create(target)
    python = target / "bin" / "python"
    installed = run(
        sys.executable,
        "-m",
        "pip",
        "--python",
        python,
        "install",
        "--no-deps",
        "--no-index",
        "--disable-pip-version-check",
        "-q",
        wheel,
        cwd=tmp_path,
        env=dict(os.environ),
    )
    assert installed.returncode == 0, installed.stderr
    site = run(
        python,
        "-c",
        "import sysconfig; print(sysconfig.get_paths()['purelib'])",
        cwd=tmp_path,
        env={"PATH": "/usr/bin:/bin"},
    ).stdout.strip()
    ours = sysconfig.get_paths()["purelib"]
    Path(site, "_backbone_test_dependencies.pth").write_text(ours + "\n")
    return target


@pytest.mark.slow
def test_wheel_installs_one_name_and_runs_beside_a_users_contracts(
    tmp_path: Path,
) -> None:
    wheel = build_wheel(tmp_path)
    version = wheel.name.split("-")[1]
    with zipfile.ZipFile(wheel) as archive:
        names = archive.namelist()
        info = f"backbone-{version}.dist-info"
        record = archive.read(f"{info}/RECORD").decode().splitlines()
        top_level = archive.read(f"{info}/top_level.txt").decode().split()
    assert top_level == ["backbone"]
    installed = {line.split(",")[0] for line in record}
    assert {p.split("/")[0] for p in installed if not p.startswith(info)} == {
        "backbone"
    }
    for package, directory in source_packages().items():
        for file in directory.iterdir():
            if file.suffix in SOURCES:
                path = "/".join([*package.split("."), file.name])
                assert path in names, f"{file} is not in the wheel as {path}"
    pages = ("index.html", "app.js", "chart.js", "panel.js", "style.css")
    for page in pages:  # backbone ui's package data
        assert f"backbone/ui/static/{page}" in names, f"{page} is not in the wheel"

    env_dir = fresh_venv(tmp_path, wheel)
    python = env_dir / "bin" / "python"
    script = env_dir / "bin" / "backbone"
    # A user's project with a `contracts` package of its own, which backbone must
    # never import (it fails when it is).
    project = tmp_path / "project"
    (project / "contracts").mkdir(parents=True)
    (project / "contracts" / "__init__.py").write_text("")
    (project / "contracts" / "shipment_tracking_gen.py").write_text(
        "raise RuntimeError('the project\\'s own module was imported')\n"
    )
    (project / "contracts" / "orders.py").write_text(
        "from typing import Protocol\n\nimport backbone\n\n\n"
        "@backbone.contract\nclass Orders(Protocol):\n"
        "    async def placed(self, order_id: int) -> None: ...\n"
    )
    env = {
        "PATH": f"{env_dir / 'bin'}:/usr/bin:/bin",
        "HOME": str(tmp_path),
        "COLUMNS": "200",
    }

    where = run(
        python, "-c", "import backbone; print(backbone.__file__)", cwd=project, env=env
    )
    assert Path(where.stdout.strip()).is_relative_to(env_dir), where.stdout
    for command in ([script], [python, "-m", "backbone"]):
        shown = run(*command, "--version", cwd=project, env=env)
        assert (shown.returncode, shown.stdout) == (0, f"backbone {version}\n")

    demo = run(python, "-m", "backbone", "demo", "--orders", "2", cwd=project, env=env)
    assert demo.returncode == 0, demo.stdout + demo.stderr
    assert "2 order(s) placed, 2 received (all received)" in demo.stdout

    generated = run(script, "codegen", "contracts", cwd=project, env=env)
    assert generated.returncode == 0, generated.stderr
    assert "1 written" in generated.stdout
    used = run(
        python,
        "-c",
        "import contracts.orders_gen as gen; print(gen.ORDERS.spec.name)",
        cwd=project,
        env=env,
    )
    assert (used.returncode, used.stdout) == (0, "Orders\n"), used.stderr
