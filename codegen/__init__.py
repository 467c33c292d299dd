"""backbone's code generator: contract modules in, typed producer/consumer modules out.

Run it as ``backbone codegen PATH...`` (``--check`` to verify instead of write).
Installed, this package is ``backbone.codegen``; in the repository it is the
top-level ``codegen/`` folder.
"""

from __future__ import annotations

from .generate import (
    BreakingChanges,
    CodegenError,
    ContractModule,
    ImportFailures,
    Outcome,
    generate,
    load_contracts,
    module_name_for,
)
from .render import generated_module_name, render_module

__all__ = [
    "BreakingChanges",
    "CodegenError",
    "ContractModule",
    "ImportFailures",
    "Outcome",
    "generate",
    "generated_module_name",
    "load_contracts",
    "module_name_for",
    "render_module",
]
