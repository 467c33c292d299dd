"""The mutant list follows the code: every seeded fault of tests/mutant_list.py
still names text that occurs exactly once in its file, and a test selection that
exists. (Running the mutants themselves is `python3 dev.py mutants`.)"""

from __future__ import annotations

from mutant_list import MUTANTS
from mutants import ROOT, check_list


def test_every_mutant_matches_the_code() -> None:
    assert check_list(MUTANTS) == []


def test_every_selection_names_a_test_file_that_exists() -> None:
    for mutant in MUTANTS:
        for selection in mutant.selection:
            path = selection.split("::", 1)[0]
            assert (ROOT / path).is_file(), f"{mutant.name}: {path}"
