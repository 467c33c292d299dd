"""JSON Schemas of contract parameters, in the dialect AsyncAPI 3.0 uses.

pydantic writes JSON Schema 2020-12; AsyncAPI's Schema Object is a superset of
Draft 7. The few 2020-12 keywords pydantic uses for supported parameter types
are rewritten: ``prefixItems`` (fixed tuples) and the OpenAPI ``discriminator``
object (discriminated unions of models).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, Final

import pydantic
from pydantic.json_schema import JsonSchemaMode

from backbone.contract import ContractSpec

__all__ = ["ParamKey", "parameter_schemas"]

Json = dict[str, Any]
ParamKey = tuple[str, str, str]
"""A parameter: contract name, operation (wire) name, parameter name."""

# Keywords whose value is data (left alone), or a map of names to schemas.
_VALUE_KEYWORDS: Final = frozenset({"const", "default", "enum", "examples"})
_SCHEMA_MAP_KEYWORDS: Final = frozenset(
    {"properties", "patternProperties", "$defs", "definitions", "dependentSchemas"}
)


def parameter_schemas(
    specs: Sequence[ContractSpec], ref_template: str
) -> tuple[dict[ParamKey, Json], Json]:
    """Every parameter's JSON Schema, and the shared definitions they refer to.

    One pydantic run over all parameters names each model once (two models of
    one name in different modules get distinct names).
    """
    inputs: list[tuple[ParamKey, JsonSchemaMode, pydantic.TypeAdapter[Any]]] = [
        ((spec.name, op.name, p.name), "validation", pydantic.TypeAdapter(p.annotation))
        for spec in specs
        for op in spec.operations
        for p in op.params
    ]
    if not inputs:
        return {}, {}
    by_key, definitions = pydantic.TypeAdapter.json_schemas(
        inputs, ref_template=ref_template
    )
    params = {key: _draft7(schema) for (key, _mode), schema in by_key.items()}
    defs = definitions.get("$defs", {})
    return params, {name: _draft7(defs[name]) for name in sorted(defs)}


def _draft7(node: Any) -> Any:
    """Schema NODE in AsyncAPI's dialect (Draft 7) instead of pydantic's
    (2020-12): ``prefixItems`` becomes an ``items`` array (``additionalItems``
    for the rest), an OpenAPI ``discriminator`` object its property name."""
    if isinstance(node, bool) or not isinstance(node, dict):
        return node
    out: Json = {}
    for key, value in node.items():
        if key in _VALUE_KEYWORDS:
            out[key] = value
        elif key in _SCHEMA_MAP_KEYWORDS and isinstance(value, dict):
            out[key] = {name: _draft7(schema) for name, schema in value.items()}
        elif isinstance(value, list):
            out[key] = [_draft7(item) for item in value]
        else:
            out[key] = _draft7(value)
    if "prefixItems" in out:
        prefix = out.pop("prefixItems")
        if "items" in out:
            out["additionalItems"] = out.pop("items")
        elif out.get("maxItems") == len(prefix):
            out["additionalItems"] = False
        out["items"] = prefix
    discriminator = out.get("discriminator")
    if isinstance(discriminator, dict) and "propertyName" in discriminator:
        out["discriminator"] = discriminator["propertyName"]
    return out
