"""Turning operation arguments into payload-hash fields and back.

Each parameter becomes one hash field whose value is msgpack (:mod:`backbone.wire`
has the extension types of the values msgpack lacks). Values are validated and
serialised by pydantic (a ``TypeAdapter`` per parameter, built once per
operation); the consumer's annotation turns them back.

A field the producer did not write (an older producer) takes the parameter's
default; fields the consumer does not know (a newer producer) are ignored.

Each event records its operation's version. A payload of an older version is
read whole, passed through the operation's upcasters (version K to K + 1, up to
the current one) and then read like a current one, so handlers only ever see the
current shape. A payload of a newer version is read as if current when it fits
(the newer version only added parameters); otherwise it fails as
``newer-version``.

How each parameter is validated and packed: :mod:`backbone.param_codec`.
"""

from __future__ import annotations

import struct
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import msgpack
import pydantic

from .contract import OperationSpec
from .errors import DecodeError, ValidationError
from .events import as_text
from .fast_codec import fast_encoder, fast_reader
from .param_codec import ParamCodec, one_line
from .personal import AGGREGATE_SUBJECT, ERASED
from .sealing import Unsealed
from .wire import (
    EXT_DATE,
    EXT_DATETIME,
    EXT_DECIMAL,
    EXT_TIME,
    EXT_TIMEDELTA,
    EXT_UUID,
    default,
    pack_value,
    unpack,
    unpack_value,
)

__all__ = [
    "EXT_DATE",
    "EXT_DATETIME",
    "EXT_DECIMAL",
    "EXT_TIME",
    "EXT_TIMEDELTA",
    "EXT_UUID",
    "OperationCodec",
    "pack_value",
    "unpack_value",
]


class OperationCodec:
    """Encodes and decodes the arguments of one operation."""

    __slots__ = (
        "_decoders",
        "_fast",
        "_fast_encode",
        "_params",
        "operation",
        "personal",
    )

    def __init__(self, operation: OperationSpec) -> None:
        self.operation = operation
        packer = msgpack.Packer(default=default, use_bin_type=True, autoreset=True)
        self._params = tuple(ParamCodec(p, packer) for p in operation.params)
        index = {p.name: n for n, p in enumerate(operation.params)}
        self.personal: tuple[tuple[int, int | None], ...] = tuple(
            (n, None if p.personal == AGGREGATE_SUBJECT else index[p.personal])
            for n, p in enumerate(operation.params)
            if p.personal is not None
        )
        """The personal parameters: (position, position of the subject's
        parameter, or None for the aggregate id)."""
        # What decoding needs of each parameter, unpacked once per value.
        self._decoders = tuple(
            (p.exact, p.adapter.validate_python, p, p.read) for p in self._params
        )
        self._fast = fast_reader(self._params)
        self._fast_encode = fast_encoder(self._params, packer)

    @property
    def fast_decoder(
        self,
    ) -> Callable[[Sequence[bytes | None]], list[Any] | None] | None:
        """:meth:`decode_values` of the common case in one call, given exactly
        one value per parameter: every value present, read and valid. None from
        it for anything else, and :meth:`decode_values` says what is wrong.
        None when the operation has no such shortcut."""
        return self._fast

    @property
    def parameter_names(self) -> tuple[str, ...]:
        return tuple(p.name for p in self._params)

    @property
    def field_names(self) -> tuple[bytes, ...]:
        """The payload hash's field names, in parameter order."""
        return tuple(p.field for p in self._params)

    def encode(self, args: Sequence[Any]) -> list[bytes]:
        """Validate ARGS (in parameter order) into the hash values, in the order of
        :attr:`field_names`.

        Raises :class:`ValidationError` naming the parameter; nothing is written.
        The values of personal parameters are :class:`~backbone.sealing.Unsealed`:
        the writer seals them with their subjects' keys first.
        """
        fast = self._fast_encode
        if fast is not None:
            values = fast(args)
            if values is not None:
                return values
        params = self._params
        if len(args) != len(params):
            raise ValidationError(
                self.operation.qualified_name,
                "*",
                f"expected {len(params)} arguments, got {len(args)}",
            )
        out: list[bytes] = []
        for param, value in zip(params, args, strict=True):
            try:
                encoded = param.encode(value)
            except pydantic.ValidationError as exc:
                raise ValidationError(
                    self.operation.qualified_name, param.name, one_line(exc)
                ) from exc
            except (TypeError, ValueError, OverflowError, struct.error) as exc:
                raise ValidationError(
                    self.operation.qualified_name, param.name, str(exc)
                ) from exc
            out.append(encoded)
        for position, subject in self.personal:
            owner = None
            if subject is not None:
                owner = self._subject(subject, args, out)
                if not owner:
                    raise ValidationError(
                        self.operation.qualified_name,
                        self._params[position].name,
                        f"its subject, parameter {self._params[subject].name!r}, is "
                        "empty, and personal data of an empty subject could never be "
                        "erased; give the subject's value",
                    )
            out[position] = Unsealed(out[position], owner)
        return out

    def _subject(self, at: int, args: Sequence[Any], out: Sequence[bytes]) -> str:
        """The subject named by the parameter at position AT: the ``str()`` of
        the value stored (what consumers see and ``erase`` is given), not of the
        argument as passed (an enum member, a value a constraint normalises)."""
        value = args[at]
        exact = self._params[at].exact
        if exact is None or type(value) is not exact:
            value = unpack(out[at])
        return str(value)

    @property
    def version(self) -> int:
        """The operation's current version (the one this codec writes)."""
        return self.operation.version

    def decode(
        self,
        fields: Mapping[bytes, bytes],
        version: int | None,
        *,
        key: str = "the payload hash",
    ) -> list[Any]:
        """Decode a whole payload hash (field -> value) written as VERSION of the
        operation (None: unknown, read as the current one).

        An empty FIELDS that cannot be decoded is a hash that does not exist:
        ``missing-payload``, naming KEY (an empty one that can, every parameter
        having a default, is decoded)."""
        try:
            if version is not None and version < self.operation.version:
                return self.decode_older(fields, version)
            values = [fields.get(name) for name in self.field_names]
            if version is not None and version > self.operation.version:
                return self.decode_newer(values, version)
            return self.decode_values(values)
        except DecodeError as exc:
            if fields:
                raise
            raise DecodeError(
                "missing-payload",
                f"{key} does not exist (deleted, expired or never written)",
            ) from exc

    def decode_newer(self, raws: Sequence[bytes | None], version: int) -> list[Any]:
        """Decode the values (in parameter order) of a payload written by a newer
        version of the operation: it works when that version only added
        parameters; otherwise :class:`DecodeError` ``newer-version``."""
        try:
            return self.decode_values(raws)
        except DecodeError as exc:
            raise DecodeError(
                "newer-version",
                f"{self.operation.qualified_name}: the event was written by version "
                f"{version} of the operation and this consumer knows version "
                f"{self.operation.version}, whose shape it does not fit ({exc}); "
                "regenerate this consumer from the newer contract",
            ) from exc

    def decode_older(self, fields: Mapping[bytes, bytes], version: int) -> list[Any]:
        """Decode a whole payload hash written by an older VERSION of the
        operation: its values, through the upcasters from VERSION up to the
        current version, then validated like a current payload."""
        op = self.operation
        payload: dict[str, Any] = {}
        for name, raw in fields.items():
            try:
                payload[as_text(name)] = unpack(raw)
            except Exception as exc:
                raise DecodeError(
                    "undecodable",
                    f"{op.qualified_name}: field {as_text(name)!r} (version "
                    f"{version}) is not valid msgpack ({type(exc).__name__}: {exc})",
                ) from exc
        for step in range(version, op.version):
            upcaster = op.upcasters.get(step)
            if upcaster is None:
                continue  # a compatible step: added parameters have defaults
            what = getattr(upcaster, "__qualname__", repr(upcaster))
            try:
                result = upcaster(dict(payload))
            except Exception as exc:
                raise DecodeError(
                    "upcast-failed",
                    f"{op.qualified_name}: upcaster {what} (version {step} to "
                    f"{step + 1}) failed on this event: {type(exc).__name__}: {exc}",
                ) from exc
            if not isinstance(result, Mapping):
                raise DecodeError(
                    "upcast-failed",
                    f"{op.qualified_name}: upcaster {what} (version {step} to "
                    f"{step + 1}) returned {type(result).__name__}, not a mapping of "
                    "parameter names to values",
                )
            payload = {str(key): value for key, value in result.items()}
        return self.decode_mapping(payload, f"upcast from version {version}")

    def decode_mapping(self, payload: Mapping[str, Any], origin: str) -> list[Any]:
        """Validate unpacked PAYLOAD values (parameter name -> value) into the
        arguments; ORIGIN says where the payload came from, for errors.

        PAYLOAD comes out of the upcasters, which see opened personal values as
        they are, :data:`~backbone.ERASED` included, and may move, copy or wrap
        them: a value that is, or holds, the erased marker and does not
        validate reads as ERASED (its subject was erased), never as a bad
        payload."""
        args: list[Any] = []
        for exact, validate, param, _ in self._decoders:
            if param.name not in payload:
                if param.has_default:
                    args.append(param.default)
                    continue
                raise DecodeError(
                    "invalid-payload",
                    f"{self.operation.qualified_name}: the payload ({origin}) has no "
                    f"field {param.name!r} and the parameter has no default; add an "
                    "upcaster that sets it, or give the parameter a default",
                )
            obj = payload[param.name]
            if type(obj) is exact or obj is ERASED:
                args.append(obj)
                continue
            try:
                args.append(validate(obj))
            except pydantic.ValidationError as exc:
                if _holds_erased(obj):
                    args.append(ERASED)
                    continue
                raise DecodeError(
                    "invalid-payload",
                    f"{self.operation.qualified_name}: field {param.name!r} ({origin}) "
                    f"does not fit its annotation: {one_line(exc)}",
                ) from exc
        return args

    def decode_values(self, raws: Sequence[bytes | None]) -> list[Any]:
        """Decode the payload's values given in parameter order (None: absent),
        written by the current version of the operation."""
        fast = self._fast
        if fast is not None and len(raws) == len(self._params):
            args = fast(raws)
            if args is not None:
                return args
        return self._decode_each(raws)

    def _decode_each(self, raws: Sequence[bytes | None]) -> list[Any]:
        args: list[Any] = []
        append = args.append
        for (exact, validate, param, read), raw in zip(
            self._decoders, raws, strict=True
        ):
            if raw is None:
                if param.has_default:
                    args.append(param.default)
                    continue
                raise DecodeError(
                    "invalid-payload",
                    f"{self.operation.qualified_name}: the payload has no field "
                    f"{param.name!r} and the parameter has no default",
                )
            try:
                obj = read(raw)
            except Exception as exc:
                raise DecodeError(
                    "undecodable",
                    f"{self.operation.qualified_name}: field {param.name!r} is not "
                    f"valid msgpack ({type(exc).__name__}: {exc})",
                ) from exc
            if type(obj) is exact or (obj is ERASED and param.personal):
                append(obj)
                continue
            try:
                append(validate(obj))
            except pydantic.ValidationError as exc:
                raise DecodeError(
                    "invalid-payload",
                    f"{self.operation.qualified_name}: field {param.name!r} does not "
                    f"fit its annotation: {one_line(exc)}",
                ) from exc
        return args


def _holds_erased(value: object) -> bool:
    """True when VALUE is, or holds inside containers, the erased marker."""
    if value is ERASED:
        return True
    if isinstance(value, Mapping):
        return any(_holds_erased(item) for item in value.values())
    if isinstance(value, (list, tuple, set, frozenset)):
        return any(_holds_erased(item) for item in value)
    return False
