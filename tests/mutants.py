"""Seed one fault at a time into a copy of the project and see the suite catch it.

    python tests/mutants.py                  every mutant of tests/mutant_list.py
    python tests/mutants.py --only NAME...   only these
    python tests/mutants.py --list           the mutants, without running them
    python tests/mutants.py --no-baseline    skip the run of the unmutated copy
    python tests/mutants.py --update-docs    also rewrite the table of them in
                                             docs/guarantees.md from this run

For each mutant the runner copies the project (backbone/, codegen/, contracts/,
samples/, tests/, pyproject.toml) to a temporary directory, makes the mutant's
one replacement there and runs its test selection with the project's virtual
environment, in that directory:

    .venv/bin/python -m pytest -q -x -p no:cacheprovider -p mutant_origin \
        --timeout 60 SELECTION

The working directory comes first on ``sys.path``, so ``import backbone`` finds
the mutated copy, not the editable install of the checkout; ``mutant_origin``,
a plugin written into the copy, checks that it does and stops the run if not.

First the tests of all selections run once on an unmutated copy: a test that
fails there would "catch" every mutant. Then two mutants run at a time. One
line per mutant says which test caught it, or SURVIVED; the exit status is 1
when a mutant survived or could not be run, 2 when the list does not match the
code (an OLD text not found exactly once) or the unmutated copy fails.
"""

from __future__ import annotations

import argparse
import concurrent.futures
import dataclasses
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterable, Sequence
from pathlib import Path

from mutant_list import MUTANTS, Mutant

ROOT = Path(__file__).resolve().parent.parent
COPIED = ("backbone", "codegen", "contracts", "samples", "tests", "pyproject.toml")
DOCS = ROOT / "docs" / "guarantees.md"
TABLE_START = "<!-- mutants: start (python3 dev.py mutants --update-docs) -->"
TABLE_END = "<!-- mutants: end -->"
RUN_TIMEOUT = 300.0

# Loaded into every pytest run of a copy (``-p``): the copy's modules must be
# the ones imported, or the run would test the unmutated checkout.
ORIGIN_PLUGIN = """\
from pathlib import Path

import pytest


def pytest_configure(config: pytest.Config) -> None:
    import backbone

    here = Path.cwd().resolve()
    found = Path(backbone.__file__).resolve()
    if not found.is_relative_to(here):
        raise pytest.UsageError(f"backbone imported from {found}, not from {here}")
"""
ORIGIN_MODULE = "mutant_origin"


@dataclasses.dataclass(frozen=True, slots=True)
class Outcome:
    mutant: Mutant
    status: str  # "caught", "SURVIVED" or "ERROR"
    caught_by: str
    seconds: float
    detail: str = ""

    @property
    def line(self) -> str:
        name = f"{self.mutant.name:<42}"
        took = f"({self.seconds:.1f}s)"
        if self.status == "caught":
            why = f": {self.detail[:120]}" if self.detail else ""
            return f"caught    {name} by {self.caught_by} {took}{why}"
        if self.status == "SURVIVED":
            return f"SURVIVED  {name} {took}: {self.mutant.breaks}"
        return f"ERROR     {name} {took}: {self.detail}"


def venv_python() -> Path:
    venv = ROOT / ".venv"
    return venv / ("Scripts/python.exe" if os.name == "nt" else "bin/python")


def check_list(mutants: Sequence[Mutant]) -> list[str]:
    """What is wrong with MUTANTS against the code of the checkout."""
    problems: list[str] = []
    seen: set[str] = set()
    for m in mutants:
        if m.name in seen:
            problems.append(f"{m.name}: the name is used twice")
        seen.add(m.name)
        path = ROOT / m.file
        if not path.is_file():
            problems.append(f"{m.name}: {m.file} does not exist")
            continue
        found = path.read_text().count(m.old)
        if found != 1:
            problems.append(
                f"{m.name}: the old text occurs {found} times in {m.file}, "
                f"not once: {m.old!r}"
            )
        if m.old == m.new:
            problems.append(f"{m.name}: the replacement changes nothing")
        if not m.selection:
            problems.append(f"{m.name}: no test selection")
    return problems


def make_copy(mutant: Mutant | None, into: Path) -> None:
    """Copy the project into INTO and apply MUTANT there (None: no mutant)."""
    ignore = shutil.ignore_patterns("__pycache__", ".hypothesis", ".pytest_cache")
    for name in COPIED:
        source = ROOT / name
        if source.is_dir():
            shutil.copytree(source, into / name, ignore=ignore)
        else:
            shutil.copy2(source, into / name)
    (into / f"{ORIGIN_MODULE}.py").write_text(ORIGIN_PLUGIN)
    if mutant is None:
        return
    target = into / mutant.file
    text = target.read_text()
    if text.count(mutant.old) != 1:  # the checkout changed under the run
        raise RuntimeError(f"the old text is not in {mutant.file} exactly once")
    target.write_text(text.replace(mutant.old, mutant.new, 1))


def failed_test(output: str) -> tuple[str, str]:
    """The first test pytest's summary reports as failed (or erroring) in
    OUTPUT, and the reason it gives."""
    summary = output.partition("short test summary info")[2]
    for line in summary.splitlines():
        if re.match(r"(?:FAILED|ERROR) \S+?\.py", line):
            test, _, reason = line.partition(" ")[2].partition(" - ")
            return test, reason
    return "", ""


def run_tests(
    mutant: Mutant | None, selection: Sequence[str], python: Path
) -> tuple[int | str, str]:
    """Run SELECTION in a copy with MUTANT applied: pytest's exit status and
    output, or the reason it could not run and ""."""
    env = dict(os.environ)
    env.pop("BACKBONE_REDIS_URL", None)  # the tests start their own redis-server
    env.pop("PYTHONSAFEPATH", None)  # it would keep the copy off sys.path
    env["PYTHONDONTWRITEBYTECODE"] = "1"
    env["COLUMNS"] = "400"  # failure reasons in the summary, not cut at 80
    command = [str(python), "-m", "pytest", "-q", "-x", "-p", "no:cacheprovider"]
    command += ["-p", ORIGIN_MODULE, "--timeout", "60", *selection]
    prefix = f"backbone-mutant-{mutant.name if mutant else 'none'}-"
    with tempfile.TemporaryDirectory(prefix=prefix) as tmp:
        try:
            make_copy(mutant, Path(tmp))
            result = subprocess.run(
                command,
                cwd=tmp,
                env=env,
                capture_output=True,
                text=True,
                timeout=RUN_TIMEOUT,
            )
        except subprocess.TimeoutExpired:
            return f"ran over {RUN_TIMEOUT:g}s", ""
        except (OSError, RuntimeError) as exc:
            return str(exc), ""
    return result.returncode, result.stdout + result.stderr


def tail(output: str) -> str:
    """What OUTPUT of a run that failed to run says about why."""
    test, reason = failed_test(output)
    if test:
        return f"{test}: {reason}" if reason else test
    lines = [line for line in output.splitlines() if line.strip("! \n")]
    return lines[-1] if lines else "(no output)"


def run_one(mutant: Mutant, python: Path) -> Outcome:
    started = time.monotonic()
    status, output = run_tests(mutant, mutant.selection, python)
    took = time.monotonic() - started
    if status == 0:
        return Outcome(mutant, "SURVIVED", "", took)
    if status == 1:
        test, reason = failed_test(output)
        return Outcome(mutant, "caught", test or "(exit 1)", took, reason)
    if isinstance(status, str):
        return Outcome(mutant, "ERROR", "", took, status)
    return Outcome(mutant, "ERROR", "", took, f"pytest exit {status}: {tail(output)}")


def baseline(mutants: Sequence[Mutant], python: Path) -> bool:
    """Run the tests of all selections on an unmutated copy; True when they pass."""
    files = {s for m in mutants for s in m.selection if "::" not in s}
    tests = {s for m in mutants for s in m.selection if s.split("::")[0] not in files}
    started = time.monotonic()
    status, output = run_tests(None, sorted(files | tests), python)
    took = time.monotonic() - started
    if status == 0:
        print(f"baseline  the unmutated copy passes the selections ({took:.1f}s)")
        return True
    detail = failed_test(output)[0] or (
        status if isinstance(status, str) else tail(output)
    )
    print(f"baseline  FAILED on the unmutated copy: {detail}", file=sys.stderr)
    return False


def run_all(mutants: Sequence[Mutant], python: Path, jobs: int) -> list[Outcome]:
    """Run MUTANTS, JOBS at a time; print each line in list order."""
    outcomes: list[Outcome] = []
    with concurrent.futures.ThreadPoolExecutor(max_workers=jobs) as pool:
        futures = [pool.submit(run_one, m, python) for m in mutants]
        try:
            for future in futures:
                outcome = future.result()
                print(outcome.line, flush=True)
                outcomes.append(outcome)
        except BaseException:
            for future in futures:
                future.cancel()
            raise
    return outcomes


def table(outcomes: Iterable[Outcome]) -> str:
    """The markdown table of OUTCOMES, for docs/guarantees.md."""
    rows = [
        "| mutant | file | what it breaks | caught by |",
        "|---|---|---|---|",
    ]
    for o in outcomes:
        test = re.sub(r"\[.*\]$", "", o.caught_by).removeprefix("tests/")
        where = f"`{test}`" if o.status == "caught" else f"**{o.status}**"
        rows.append(
            f"| `{o.mutant.name}` | `{o.mutant.file}` | {o.mutant.breaks} | {where} |"
        )
    return "\n".join(rows)


def update_docs(outcomes: Sequence[Outcome]) -> None:
    text = DOCS.read_text()
    start, end = text.find(TABLE_START), text.find(TABLE_END)
    if start < 0 or end < start:
        raise SystemExit(f"{DOCS}: the markers {TABLE_START} ... {TABLE_END} are gone")
    body = f"{TABLE_START}\n{table(outcomes)}\n"
    DOCS.write_text(text[:start] + body + text[end:])
    print(f"updated the table in {DOCS.relative_to(ROOT)}")


def main(argv: Sequence[str]) -> int:
    parser = argparse.ArgumentParser(
        prog="mutants", description="Check that the suite catches seeded faults."
    )
    parser.add_argument("--only", nargs="+", metavar="NAME", help="run these only")
    parser.add_argument("--list", action="store_true", help="list and exit")
    parser.add_argument(
        "--no-baseline", action="store_true", help="skip the unmutated run"
    )
    parser.add_argument("--jobs", type=int, default=2, help="at once (default 2)")
    parser.add_argument(
        "--update-docs",
        action="store_true",
        help="rewrite the table in docs/guarantees.md (the whole list only)",
    )
    args = parser.parse_args(argv)

    problems = check_list(MUTANTS)
    if problems:
        print("the mutant list does not match the code:", file=sys.stderr)
        for problem in problems:
            print(f"  {problem}", file=sys.stderr)
        return 2
    chosen = list(MUTANTS)
    if args.only:
        known = {m.name: m for m in MUTANTS}
        unknown = [name for name in args.only if name not in known]
        if unknown:
            print(f"unknown mutants: {', '.join(unknown)}", file=sys.stderr)
            return 2
        chosen = [known[name] for name in args.only]
        if args.update_docs:
            print("--update-docs needs the whole list, not --only", file=sys.stderr)
            return 2
    if args.list:
        for m in chosen:
            print(f"{m.name:<42} {m.file}: {m.breaks}")
            print(f"{'':<42} tests: {' '.join(m.selection)}")
        return 0

    python = venv_python()
    if not python.exists():
        print("no .venv yet: run python3 dev.py test once", file=sys.stderr)
        return 2
    started = time.monotonic()
    if not args.no_baseline and not baseline(chosen, python):
        return 2
    outcomes = run_all(chosen, python, max(1, args.jobs))
    caught = sum(o.status == "caught" for o in outcomes)
    print(
        f"{caught} of {len(outcomes)} mutants caught "
        f"in {time.monotonic() - started:.0f}s",
        flush=True,
    )
    if args.update_docs:
        if any(o.status == "ERROR" for o in outcomes):
            print("not updating the docs: some mutants could not be run")
        else:
            update_docs(outcomes)
    return 0 if caught == len(outcomes) else 1


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
