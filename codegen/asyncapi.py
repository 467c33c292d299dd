"""The AsyncAPI 3.0 document of contracts (``backbone docs``).

How backbone maps onto AsyncAPI:

- a **channel** is a stream. Its address is the stream key ``bb:{<env>:<uri>}``.
  Given URIs, there is one channel per URI, and every contract's messages are on
  it, since a producer may publish any contract to any URI. Without URIs there is
  one channel per contract, with the address ``bb:{tag}``: its one parameter,
  ``tag``, is the stream's whole hash tag ``{<env>:<uri>}``, braces included.
  A parameter has to cover the braces because AsyncAPI reads every ``{...}`` of
  an address as a parameter, so ``bb:{{environment}:{uri}}`` would not parse;
- a **message** is an operation of a contract: its wire name, a title, the
  docstring, the stream entry's fields as **headers** and the parameters as the
  **payload**, an object with one property per parameter (the JSON Schema
  pydantic gives for the parameter's annotation, validation mode). Model and enum
  schemas are shared in ``components/schemas``;
- each message has a ``send`` operation (producers) and a ``receive`` operation
  (consumer groups) on each channel it is on.
"""

from __future__ import annotations

import contextlib
import re
from collections.abc import Iterable, Mapping, Sequence
from typing import Any, Final

from pydantic_core import PydanticSerializationError, to_jsonable_python

from backbone.contract import NO_DEFAULT, ContractSpec, OperationSpec
from backbone.keys import StreamKeys, validate_part

from .generate import CodegenError
from .json_schema import ParamKey, parameter_schemas
from .render import snake_case

__all__ = ["ASYNCAPI_VERSION", "DEFAULT_ENVIRONMENT", "build_document"]

ASYNCAPI_VERSION: Final = "3.0.0"
DEFAULT_ENVIRONMENT: Final = "dev"
TAG_PARAMETER: Final = "tag"
_UNSAFE_ID: Final = re.compile(r"[^A-Za-z0-9_.\-]")

Json = dict[str, Any]


def build_document(
    specs: Sequence[ContractSpec],
    *,
    environment: str | None = None,
    uris: Iterable[str] = (),
) -> Json:
    """The AsyncAPI 3.0.0 document (JSON-ready) of the contracts SPECS.

    With URIS, one channel per stream ``bb:{ENVIRONMENT:uri}`` (ENVIRONMENT
    defaults to ``dev``, as everywhere else); without, one parameterised channel
    per contract. Raises ``ConfigurationError`` for an invalid environment or
    URI, and :class:`CodegenError` when two contracts share a name.
    """
    if not specs:
        raise CodegenError("no contracts to describe")
    specs = list({spec.protocol: spec for spec in specs}.values())
    _check_unique_names(specs)
    streams: list[StreamKeys] = []
    uri_list = list(dict.fromkeys(uris))
    if uri_list:
        environment = environment or DEFAULT_ENVIRONMENT
        streams = [StreamKeys(environment, uri) for uri in uri_list]
    elif environment is not None:
        validate_part("environment", environment)
    params, schemas = parameter_schemas(specs, "#/components/schemas/{model}")
    messages: Json = {}
    for spec in specs:
        for op in spec.operations:
            messages[_message_id(spec, op)] = _message(spec, op, params)
    channels: Json = {}
    operations: Json = {}
    if streams:
        for keys in streams:
            channel_id = _unique(_UNSAFE_ID.sub("_", keys.uri), channels)
            channels[channel_id] = _stream_channel(keys, specs)
            for spec in specs:
                for op in spec.operations:
                    _add_operations(
                        operations, channel_id, _message_id(spec, op), spec, op
                    )
    else:
        for spec in specs:
            channel_id = _unique(spec.name, channels)
            channels[channel_id] = _contract_channel(spec, environment)
            for op in spec.operations:
                _add_operations(operations, channel_id, op.name, spec, op)
    info: Json = {
        "title": ", ".join(spec.name for spec in specs),
        "version": _version_text(specs),
        "description": _info_description(specs),
    }
    if environment is not None:
        info["x-backbone-environment"] = environment
    components: Json = {"schemas": schemas} if schemas else {}
    components["messages"] = messages
    return {
        "asyncapi": ASYNCAPI_VERSION,
        "info": info,
        "channels": channels,
        "operations": operations,
        "components": components,
    }


def _check_unique_names(specs: Sequence[ContractSpec]) -> None:
    seen: dict[str, ContractSpec] = {}
    for spec in specs:
        other = seen.setdefault(spec.name, spec)
        if other.protocol is not spec.protocol:
            raise CodegenError(
                f"two contracts are named {spec.name!r} ({_where(other)} and "
                f"{_where(spec)}); one document describes a contract name once, "
                "so document them separately"
            )


def _where(spec: ContractSpec) -> str:
    return f"{spec.file or spec.module}:{spec.line}" if spec.line else spec.module


def _version_text(specs: Sequence[ContractSpec]) -> str:
    if len(specs) == 1:
        return str(specs[0].version)
    return ", ".join(f"{spec.name} {spec.version}" for spec in specs)


def _info_description(specs: Sequence[ContractSpec]) -> str:
    lines = [
        "Event contracts on Redis Streams, generated by `backbone docs`.",
        "",
        "Each event is one stream entry, whose fields are the message headers "
        "(operation, version, contract, producer, time, correlation and causation "
        "ids), and one payload hash `<stream key>:p:<entry id>` with one msgpack "
        "field per parameter; the message payload describes those values.",
        "",
    ]
    for spec in specs:
        summary = _summary(spec.doc)
        lines.append(
            f"- **{spec.name}** (version {spec.version})"
            + (f": {summary}" if summary else "")
        )
    return "\n".join(lines)


def _summary(doc: str | None) -> str | None:
    """The first paragraph of DOC on one line."""
    if not doc:
        return None
    return " ".join(doc.split("\n\n", 1)[0].split())


def _message_id(spec: ContractSpec, op: OperationSpec) -> str:
    # Contract and operation names are letters, digits, '_', '.' and '-': the
    # characters component keys allow.
    return f"{spec.name}.{op.name}"


def _unique(base: str, taken: Mapping[str, object]) -> str:
    candidate, n = base, 1
    while candidate in taken:
        n += 1
        candidate = f"{base}-{n}"
    return candidate


def _pointer(*parts: str) -> str:
    """A local JSON reference to PARTS (JSON Pointer escaping)."""
    escaped = (part.replace("~", "~0").replace("/", "~1") for part in parts)
    return "#/" + "/".join(escaped)


# -- channels and operations ----------------------------------------------------


def _contract_channel(spec: ContractSpec, environment: str | None) -> Json:
    env = environment or "<environment>"
    channel: Json = {"address": f"bb:{{{TAG_PARAMETER}}}", "title": spec.name}
    summary = _summary(spec.doc)
    if summary:
        channel["summary"] = summary
    channel["description"] = (
        f"The stream a {spec.name} producer publishes to: `bb:{{{env}:<uri>}}` "
        "for the URI it is given. Each entry is one event's metadata; its payload "
        "is the hash `<stream key>:p:<entry id>`. Consumer groups are the "
        "stream's own groups."
    )
    channel["parameters"] = {
        TAG_PARAMETER: {
            "description": (
                f"The stream's hash tag, braces included: `{{{env}:<uri>}}`, "
                f"e.g. `{{{environment or DEFAULT_ENVIRONMENT}:orders}}` for URI "
                "`orders`."
            ),
        }
    }
    channel["messages"] = {
        op.name: {"$ref": _pointer("components", "messages", _message_id(spec, op))}
        for op in spec.operations
    }
    return channel


def _stream_channel(keys: StreamKeys, specs: Sequence[ContractSpec]) -> Json:
    names = ", ".join(spec.name for spec in specs)
    return {
        "address": keys.stream,
        "title": keys.uri,
        "description": (
            f"The stream of URI `{keys.uri}` in environment `{keys.environment}`. "
            f"Events of {names} may be published to it. Each entry is one event's "
            f"metadata; its payload is the hash `{keys.payload_prefix}<entry id>`. "
            "Consumer groups are the stream's own groups."
        ),
        "messages": {
            _message_id(spec, op): {
                "$ref": _pointer("components", "messages", _message_id(spec, op))
            }
            for spec in specs
            for op in spec.operations
        },
    }


def _add_operations(
    operations: Json,
    channel_id: str,
    message_key: str,
    spec: ContractSpec,
    op: OperationSpec,
) -> None:
    channel = {"$ref": _pointer("channels", channel_id)}
    message = [{"$ref": _pointer("channels", channel_id, "messages", message_key)}]
    name = snake_case(spec.protocol.__name__)  # as the generated helpers are named
    described = {
        "send": (
            f"Publish {op.contract}.{op.name}",
            f"Producers publish it with `{name}_producer(bus, uri).{op.method}"
            "(...)`: one Lua call appends the stream entry and writes its payload "
            "hash, atomically.",
        ),
        "receive": (
            f"Handle {op.contract}.{op.name}",
            f"Consumer groups (`subscribe_{name}(bus, uri, handler, group=...)`) "
            "read it with `XREADGROUP` and its payload hash, call the handler's "
            f"`{op.method}` method and acknowledge it with `XACK`. Every group "
            "sees every event; the consumers of one group share them.",
        ),
    }
    summary = _summary(op.doc)
    for action, (title, description) in described.items():
        operation: Json = {"action": action, "channel": channel, "messages": message}
        operation["title"] = title
        if summary:
            operation["summary"] = summary
        operation["description"] = description
        key = _unique(f"{action}.{channel_id}.{message_key}", operations)
        operations[key] = operation


# -- messages -------------------------------------------------------------------


def _message(
    spec: ContractSpec, op: OperationSpec, params: Mapping[ParamKey, Json]
) -> Json:
    message: Json = {
        "name": op.name,
        "title": f"{spec.name}.{op.name}",
    }
    summary = _summary(op.doc)
    if summary:
        message["summary"] = summary
    if op.doc and "\n\n" in op.doc:  # more than the summary's paragraph
        message["description"] = op.doc
    message["tags"] = [{"name": spec.name}]
    message["headers"] = _headers(spec, op)
    message["payload"] = _payload(spec, op, params)
    message["correlationId"] = {
        "description": (
            "`<stream key>/<entry id>` of the first event of the causal chain; "
            "set on events published while a handler runs"
        ),
        "location": "$message.header#/co",
    }
    message["x-backbone-contract"] = spec.name
    message["x-backbone-contract-version"] = spec.version
    message["x-backbone-operation"] = op.name
    message["x-backbone-version"] = op.version
    message["x-backbone-method"] = op.method
    return message


def _headers(spec: ContractSpec, op: OperationSpec) -> Json:
    def text(description: str, **extra: Any) -> Json:
        return {"type": "string", "description": description, **extra}

    return {
        "type": "object",
        "description": (
            "The fields of the event's stream entry (all values are strings); the "
            "entry id Redis assigns (`<ms>-<seq>`) is the event's id."
        ),
        "properties": {
            "o": text("operation name", const=op.name),
            "v": text("operation version, decimal", const=str(op.version)),
            "c": text("contract name", const=spec.name),
            "t": text("producer clock, Unix milliseconds", pattern="^[0-9]+$"),
            "p": text("producer identity, `host:pid:random`"),
            "co": text(
                "correlation id: `<stream key>/<entry id>` of the first event of "
                "the causal chain (only on events published inside a handler)"
            ),
            "ca": text(
                "causation id: the event being handled when this one was "
                "published (only on events published inside a handler)"
            ),
            "rg": text("re-driven entries only: the one group that handles it"),
            "ri": text("re-driven entries only: the original event's entry id"),
        },
        "required": ["o", "v", "c", "t", "p"],
    }


def _payload(
    spec: ContractSpec, op: OperationSpec, params: Mapping[ParamKey, Json]
) -> Json:
    properties: Json = {}
    required: list[str] = []
    for param in op.params:
        schema = dict(params[(spec.name, op.name, param.name)])
        if param.default is NO_DEFAULT:
            required.append(param.name)
        else:
            # (bytes that are not UTF-8 have no JSON form: no default then)
            with contextlib.suppress(PydanticSerializationError):
                schema["default"] = to_jsonable_python(param.default)
        properties[param.name] = schema
    payload: Json = {
        "type": "object",
        "description": (
            "One field per parameter in the payload hash, each a msgpack value "
            "(types JSON lacks travel as msgpack extension types, see "
            "docs/redis-layout.md); a consumer fills a missing field from its "
            "default and ignores fields it does not know."
        ),
        "properties": properties,
    }
    if required:
        payload["required"] = required
    return payload
