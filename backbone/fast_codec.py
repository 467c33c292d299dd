"""Per-operation encoders and decoders written out for speed.

For each operation the codec compiles two small functions: one that encodes
all of an event's arguments and one that decodes all of its payload values, in
the common case (every value of exactly its parameter's type, or handled by its
parameter's own encoder or validator). A loop calling each parameter's function
in turn runs at about half the speed: the interpreter cannot specialise a call
whose target changes at every turn. Both give None for anything out of the
common case, and :class:`~backbone.codec.OperationCodec` then goes parameter by
parameter, which says what is wrong.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any

import msgpack

from .wire import DIRECT, EXT_DATETIME, PLAIN_TYPES

if TYPE_CHECKING:
    from .param_codec import ParamCodec

__all__ = ["fast_encoder", "fast_reader"]


def fast_reader(
    params: Sequence[ParamCodec],
) -> Callable[[Sequence[bytes | None]], list[Any] | None] | None:
    """``OperationCodec.decode_values`` of the common case in one step: every
    value present and read, each of exactly its parameter's scalar type (so
    valid as it is) or validated. None from it for anything else (an absent
    value, an erased one, any error): the values are then read one by one,
    which says what is wrong. None for an operation with a personal parameter
    of no exact type (its erased value must not reach validation)."""
    if not params or any(p.personal and p.exact is None for p in params):
        return None
    names: dict[str, Any] = {
        "unpackb": msgpack.unpackb,
        "fromisoformat": dt.datetime.fromisoformat,
    }
    reads, checks = [], []
    for n, p in enumerate(params):
        names[f"read{n}"] = p.read
        if p.exact in PLAIN_TYPES:
            # What msgpack gives of exactly this type came from its encoding.
            names[f"exact{n}"] = p.exact
            reads.append(f"    v{n} = unpackb(raws[{n}])")
            checks.append(f"type(v{n}) is exact{n}")
        elif p.exact is dt.datetime:
            # The isoformat text of the datetime extension (see wire.py),
            # read without a call of its own; any other encoding by read.
            names[f"exact{n}"] = p.exact
            reads += [
                f"    r = raws[{n}]",
                f"    if r[0] == 0xC7 and r[2] == {EXT_DATETIME} "
                "and r[1] == len(r) - 3:",
                f"      v{n} = fromisoformat(r[3:].decode())",
                "    else:",
                f"      v{n} = read{n}(r)",
            ]
            checks.append(f"type(v{n}) is exact{n}")
        elif p.exact is not None:
            names[f"exact{n}"] = p.exact
            reads.append(f"    v{n} = read{n}(raws[{n}])")
            checks.append(f"type(v{n}) is exact{n}")
        else:
            names[f"validate{n}"] = p.adapter.validate_python
            reads.append(f"    v{n} = validate{n}(read{n}(raws[{n}]))")
    values = ", ".join(f"v{n}" for n in range(len(params)))
    source = "\n".join(
        [
            "def fast(raws):",
            "  try:",
            *(f"  {line}" for line in reads),
            "  except Exception:",
            "    return None",
            f"  if {' and '.join(checks) or 'True'}:",
            f"    return [{values}]",
            "  return None",
        ]
    )
    exec(compile(source, "<backbone.codec fast reader>", "exec"), names)
    return names["fast"]  # type: ignore[no-any-return]


def fast_encoder(
    params: Sequence[ParamCodec], packer: msgpack.Packer
) -> Callable[[Sequence[Any]], list[bytes] | None] | None:
    """``OperationCodec.encode`` of the common case in one step: one value per
    parameter, each of exactly its parameter's type (packed as it is) or
    encoded by its parameter. None from it for anything else (a value of
    another type, any error): the values are then encoded one by one, which
    says what is wrong. None for an operation without parameters or with
    personal ones (their values are wrapped for sealing)."""
    if not params or any(p.personal for p in params):
        return None
    names: dict[str, Any] = {"pack": packer.pack}
    checks, values = [], []
    for n, p in enumerate(params):
        direct = DIRECT.get(p.exact) if p.exact is not None else None
        if p.exact in PLAIN_TYPES or direct is not None:
            names[f"exact{n}"] = p.exact
            checks.append(f"type(a{n}) is exact{n}")
            if direct is not None:
                names[f"direct{n}"] = direct
                values.append(f"direct{n}(a{n})")
            else:
                values.append(f"pack(a{n})")
        else:
            names[f"encode{n}"] = p.encode
            values.append(f"encode{n}(a{n})")
    arguments = "".join(f"a{n}, " for n in range(len(params)))
    source = "\n".join(
        [
            "def fast(args):",
            f"  if len(args) != {len(params)}:",
            "    return None",
            f"  {arguments}= args",
            f"  if not ({' and '.join(checks) or 'True'}):",
            "    return None",
            "  try:",
            f"    return [{', '.join(values)}]",
            "  except Exception:",
            "    return None",
        ]
    )
    exec(compile(source, "<backbone.codec fast encoder>", "exec"), names)
    return names["fast"]  # type: ignore[no-any-return]
