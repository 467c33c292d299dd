"""From a stored event to a call of the right handler method.

Generated code binds each contract once (:func:`bind`), which validates it,
checks that the generated code is current and compiles a codec per operation. A
generated dispatcher lists, per operation, the handler method to call; this
module decodes the payload into typed arguments and makes the call, passing the
:class:`EventContext` to methods that declare a keyword-only ``context``.
"""

from __future__ import annotations

import dataclasses
import inspect
from collections.abc import Awaitable, Callable, Mapping
from typing import Any, Generic, TypeVar

from .codec import OperationCodec
from .contract import ContractSpec
from .describe import describe
from .errors import ContractError, StaleCodeError

__all__ = ["CompiledContract", "Dispatcher", "Route", "bind", "route"]

H = TypeVar("H")


@dataclasses.dataclass(frozen=True, slots=True)
class CompiledContract:
    """A contract with a codec per operation, ready for producers and consumers."""

    spec: ContractSpec
    codecs: Mapping[str, OperationCodec]

    @property
    def name(self) -> str:
        return self.spec.name

    def operation(self, name: str) -> OperationCodec:
        """The codec of operation NAME (its wire name)."""
        try:
            return self.codecs[name]
        except KeyError:
            self.spec.operation(name)  # raises with the list of known names
            raise


def bind(protocol: type, fingerprint: str | None = None) -> CompiledContract:
    """Validate contract PROTOCOL and compile its codecs.

    Generated code passes the FINGERPRINT of the contract it was generated from;
    a mismatch means the contract changed since, and raises :class:`StaleCodeError`.
    """
    spec = describe(protocol)
    if fingerprint is not None and spec.fingerprint != fingerprint:
        raise StaleCodeError(
            f"the generated code for contract {spec.name} ({spec.module}) is out of "
            f"date: it was generated from fingerprint {fingerprint}, the contract is "
            f"now {spec.fingerprint}; run `backbone codegen` on its package"
        )
    codecs = {op.name: OperationCodec(op) for op in spec.operations}
    return CompiledContract(spec, codecs)


@dataclasses.dataclass(frozen=True, slots=True)
class Route:
    """How to handle one operation: its codec and the bound handler method, which
    takes the decoded arguments (and ``context=`` when TAKES_CONTEXT)."""

    codec: OperationCodec
    method: Callable[..., Awaitable[None]]
    takes_context: bool
    handler_name: str


def route(codec: OperationCodec, method: Callable[..., Awaitable[None]]) -> Route:
    """A route calling METHOD with the decoded arguments (and the context, when the
    method declares a keyword-only or keyword parameter named ``context``)."""
    name = getattr(method, "__qualname__", repr(method))
    if not inspect.iscoroutinefunction(method):
        raise ContractError(
            f"handler method {name} must be `async def` (it handles "
            f"{codec.operation.qualified_name})"
        )
    return Route(codec, method, _accepts_context(method), name)


def _accepts_context(method: Callable[..., Any]) -> bool:
    try:
        params = inspect.signature(method).parameters
    except (TypeError, ValueError):
        return False
    param = params.get("context")
    return param is not None and param.kind in (
        inspect.Parameter.KEYWORD_ONLY,
        inspect.Parameter.POSITIONAL_OR_KEYWORD,
    )


class Dispatcher(Generic[H]):
    """Maps operation names to handler calls for one contract and one handler.

    Generated dispatchers subclass it and implement :meth:`routes`. Every method
    is checked when the dispatcher is built (at subscribe time): it must be
    ``async def`` and take the operation's arguments. With ``partial=True`` the
    handler may implement only some operations; events of the others are
    acknowledged and skipped (counted in ``SubscriptionStats.unimplemented``).
    """

    contract: CompiledContract

    def __init__(self, handler: H, *, partial: bool = False) -> None:
        self.handler = handler
        self.partial = partial
        spec = self.contract.spec
        lacking = [
            op.method
            for op in spec.operations
            if not callable(getattr(handler, op.method, None))
        ]
        if lacking and not partial:
            raise ContractError(
                f"handler {type(handler).__qualname__} lacks "
                f"{', '.join(lacking)} of contract {spec.name}; implement every "
                f"operation (async def {lacking[0]}(...) -> None), or subscribe with "
                "partial=True to handle only some (the others are acknowledged and "
                "skipped)"
            )
        if lacking and len(lacking) == len(spec.operations):
            raise ContractError(
                f"handler {type(handler).__qualname__} implements no operation of "
                f"contract {spec.name} ({', '.join(lacking)})"
            )
        if partial:
            self._routes = {
                op.name: route(
                    self.contract.codecs[op.name], getattr(handler, op.method)
                )
                for op in spec.operations
                if op.method not in lacking
            }
        else:
            self._routes = dict(self.routes(handler))
            missing = [op.name for op in spec.operations if op.name not in self._routes]
            if missing:
                raise ContractError(
                    f"dispatcher {type(self).__qualname__} has no route for "
                    f"{', '.join(missing)}; run `backbone codegen` again"
                )
        for found in self._routes.values():
            check_signature(found)

    def routes(self, handler: H) -> Mapping[str, Route]:
        raise NotImplementedError

    @property
    def contract_name(self) -> str:
        return self.contract.spec.name

    def get(self, operation: str) -> Route | None:
        """The route of OPERATION, or None when the handler does not implement it
        (or the contract lacks it)."""
        return self._routes.get(operation)

    def implements(self, operation: str) -> bool:
        return operation in self._routes


def check_signature(found: Route) -> None:
    """Refuse a handler method that cannot take its operation's arguments (found
    now, not when the first event fails with a TypeError)."""
    op = found.codec.operation
    try:
        signature = inspect.signature(found.method)
    except (TypeError, ValueError):
        return  # a callable without a signature: it can only be tried
    arguments = [object()] * len(op.params)
    keywords = {"context": object()} if found.takes_context else {}
    try:
        signature.bind(*arguments, **keywords)
    except TypeError as exc:
        expected = ", ".join(p.name for p in op.params)
        raise ContractError(
            f"handler method {found.handler_name}{signature} cannot take the "
            f"arguments of {op.qualified_name}({expected}): {exc}; declare it as "
            f"`async def {op.method}(self, {expected}) -> None` (optionally with "
            "`*, context: backbone.EventContext = backbone.NO_CONTEXT`)"
        ) from None
