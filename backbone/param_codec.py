"""The encoder and decoder of one parameter: its pydantic ``TypeAdapter``, built
once, and the fastest path its annotation allows.

Arguments are validated strictly, except that a value of exactly the parameter's
scalar type (``type(value) is int``, never a subclass such as ``bool``) is
already valid. Strict validation takes a model instance as it is, and instances
built with ``model_construct`` or changed after they were built may hold
anything, so a parameter whose annotation holds a model anywhere is also checked
the way consumers read it: lax validation of what is stored.
"""

from __future__ import annotations

import typing
from collections.abc import Callable
from typing import Any, Final

import msgpack
import pydantic

from .contract import SCALAR_TYPES, ParamSpec
from .wire import DIRECT, reader_for

__all__ = ["ParamCodec", "one_line"]

# Bare annotations whose values need no validation when they already have the
# exact type (strict validation of such a value returns it unchanged), and which
# msgpack gives back with that exact type.
_EXACT_TYPES: Final = frozenset(SCALAR_TYPES) - {type(None)}


def _has_model(annotation: Any) -> bool:
    """True when ANNOTATION holds a pydantic model anywhere (inside containers,
    unions, Annotated). Pydantic does not validate a model instance again, so such
    a value may hold what was never validated (``model_construct``, assignment)."""
    if isinstance(annotation, type) and issubclass(annotation, pydantic.BaseModel):
        return True
    if typing.get_origin(annotation) is typing.Literal:
        return False
    return any(_has_model(arg) for arg in typing.get_args(annotation))


_UNVALIDATED_HINT: Final = (
    "every consumer would refuse it: a model in it was built without validation "
    "(model_construct) or changed after it was built; build it with Model(...) or "
    "Model.model_validate(...)"
)


class ParamCodec:
    """Encoder and decoder of one parameter."""

    __slots__ = (
        "adapter",
        "default",
        "encode",
        "exact",
        "field",
        "has_default",
        "name",
        "personal",
        "read",
    )

    def __init__(self, spec: ParamSpec, packer: msgpack.Packer) -> None:
        self.name = spec.name
        self.field = spec.name.encode()
        self.has_default = spec.has_default
        self.default = spec.default
        self.personal = spec.personal is not None
        self.adapter: pydantic.TypeAdapter[Any] = pydantic.TypeAdapter(spec.annotation)
        self.exact: type | None = (
            spec.annotation if spec.annotation in _EXACT_TYPES else None
        )
        self.encode = self._encoder(packer, _has_model(spec.annotation))
        # Reads one stored value (msgpack), as wire.unpack does, faster for
        # exact scalar types.
        self.read: Callable[[bytes], Any] = reader_for(self.exact)

    def _encoder(self, packer: msgpack.Packer, models: bool) -> Callable[[Any], bytes]:
        pack = packer.pack
        adapter = self.adapter
        exact = self.exact

        if models:
            validate = adapter.validate_python
            dump = adapter.dump_python

            def encode_checked(value: Any) -> bytes:
                # Strict validation takes a model instance as it is: check what is
                # stored the way the consumer will read it (lax validation; msgpack
                # only turns tuples and sets into lists and enums into values).
                data = dump(validate(value, strict=True), mode="python", warnings=False)
                try:
                    validate(data)
                except pydantic.ValidationError as exc:
                    raise ValueError(f"{one_line(exc)}; {_UNVALIDATED_HINT}") from exc
                return pack(data)  # type: ignore[no-any-return]

            return encode_checked

        direct = DIRECT.get(exact) if exact is not None else None
        if exact is not None and direct is not None:

            def encode_direct(value: Any) -> bytes:
                if type(value) is exact:
                    return direct(value)
                return pack(  # type: ignore[no-any-return]
                    adapter.dump_python(adapter.validate_python(value, strict=True))
                )

            return encode_direct

        if exact is not None:

            def encode_exact(value: Any) -> bytes:
                if type(value) is exact:
                    return pack(value)  # type: ignore[no-any-return]
                return pack(  # type: ignore[no-any-return]
                    adapter.dump_python(adapter.validate_python(value, strict=True))
                )

            return encode_exact

        def encode(value: Any) -> bytes:
            valid = adapter.validate_python(value, strict=True)
            return pack(adapter.dump_python(valid, mode="python"))  # type: ignore[no-any-return]

        return encode


def one_line(exc: pydantic.ValidationError) -> str:
    """A validation error in one line: each failure, where, and what it got."""
    parts = []
    for err in exc.errors(include_url=False):
        loc = ".".join(str(x) for x in err.get("loc", ()))
        msg = err.get("msg", "invalid")
        got = err.get("input")
        text = f"{loc}: {msg}" if loc else msg
        parts.append(f"{text} (got {type(got).__name__} {_short(got)})")
    return "; ".join(parts)


def _short(value: object) -> str:
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."
