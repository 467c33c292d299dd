"""backbone's code generator: contract modules in, typed producer/consumer modules out.

Run it as ``backbone codegen PATH...`` (``--check`` to verify instead of write).
"""

from __future__ import annotations

from .generate import CodegenError, Outcome, generate, module_name_for
from .render import generated_module_name, render_module

__all__ = [
    "CodegenError",
    "Outcome",
    "generate",
    "generated_module_name",
    "module_name_for",
    "render_module",
]
