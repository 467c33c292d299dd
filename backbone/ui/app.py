"""The dashboard's ASGI app (Starlette): the page, its JSON endpoints and the
two actions.

::

    GET  /                           the page (static/index.html)
    GET  /static/<file>              its scripts and style (static/*)
    GET  /api/snapshot               the latest figures and the state of Redis
    GET  /api/history?after=SEQ      the chart points after sample SEQ
    GET  /api/tail?uri=U[&after=ID]  events of stream U after ID (or the last few)
    GET  /api/deadletters?uri=U      dead letters of U with decoded payloads
    POST /api/deadletters/redrive    {"uri": U, "ids": [...]}: re-drive
    POST /api/deadletters/purge      {"uri": U, "ids": [...]}: purge

Every request passes :class:`~backbone.ui.auth.Guard` first; every response
carries headers that keep the page from being framed or fed scripts of another
origin. Needs the ``backbone[ui]`` extra.
"""

from __future__ import annotations

import asyncio
import contextlib
import importlib.resources
import json
import logging
import re
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import TYPE_CHECKING, Any, Final

from starlette.applications import Starlette
from starlette.datastructures import Headers, MutableHeaders
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from ..cli.common import is_entry_id
from ..errors import BackboneError, ConfigurationError
from ..faults import Fault, classify
from ..inspection import NotAStreamError
from .actions import Action, ActionError, ActionRequest, perform
from .auth import Guard, Refusal
from .monitor import Monitor
from .views import dead_letters, tail

if TYPE_CHECKING:
    from ..connection import Backbone

__all__ = ["Dashboard"]

log = logging.getLogger("backbone.ui")

MAX_BODY: Final = 64 * 1024
"""Bytes of an action's request body (a thousand ids fit many times)."""
READ_TIMEOUT: Final = 10.0
MAX_URI: Final = 200
"""Characters of a stream URI (keys.py allows no more): longer is refused
before the message would repeat all of it."""
STATIC: Final = {
    "app.js": "text/javascript; charset=utf-8",
    "chart.js": "text/javascript; charset=utf-8",
    "panel.js": "text/javascript; charset=utf-8",
    "style.css": "text/css; charset=utf-8",
}
# The page's own script and style only: nothing inline, nothing from elsewhere,
# never inside another site's frame.
SECURITY_HEADERS: Final = {
    "content-security-policy": (
        "default-src 'none'; script-src 'self'; style-src 'self'; "
        "img-src 'self' data:; connect-src 'self'; base-uri 'none'; "
        "form-action 'none'; frame-ancestors 'none'"
    ),
    "x-content-type-options": "nosniff",
    "x-frame-options": "DENY",
    "referrer-policy": "no-referrer",
    "cache-control": "no-store",
}


def _json(document: Any, status: int = 200) -> Response:
    body = json.dumps(document, ensure_ascii=False, separators=(",", ":"))
    return Response(body, status_code=status, media_type="application/json")


def _error(status: int, message: str) -> Response:
    return _json({"error": message}, status)


def _static(name: str) -> bytes:
    return (importlib.resources.files(__package__) / "static" / name).read_bytes()


class _Guarded:
    """ASGI middleware: the Host check on every request, security headers on
    every response."""

    def __init__(self, app: ASGIApp, guard: Guard) -> None:
        self.app = app
        self.guard = guard

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return

        async def secured(message: Message) -> None:
            if message["type"] == "http.response.start":
                headers = MutableHeaders(scope=message)
                for name, value in SECURITY_HEADERS.items():
                    headers[name] = value
            await send(message)

        refusal = self.guard.read(Headers(scope=scope))
        if refusal is not None:
            await _error(refusal.status, refusal.message)(scope, receive, secured)
            return
        await self.app(scope, receive, secured)


class Dashboard:
    """The dashboard of BACKBONE's environment: ``app`` is the ASGI app;
    ``running()`` samples Redis in the background (the app's lifespan does it
    when a server runs the app)."""

    def __init__(self, backbone: Backbone, monitor: Monitor, guard: Guard) -> None:
        self.backbone = backbone
        self.monitor = monitor
        self.guard = guard
        self._page = _static("index.html")
        self._files = {name: _static(name) for name in STATIC}
        routes = [
            Route("/", self._index, methods=["GET"]),
            Route("/static/{name}", self._file, methods=["GET"]),
            Route("/api/snapshot", self._snapshot, methods=["GET"]),
            Route("/api/history", self._history, methods=["GET"]),
            Route("/api/tail", self._tail, methods=["GET"]),
            Route("/api/deadletters", self._letters, methods=["GET"]),
            Route("/api/deadletters/redrive", self._redrive, methods=["POST"]),
            Route("/api/deadletters/purge", self._purge, methods=["POST"]),
        ]
        inner = Starlette(routes=routes, lifespan=self._lifespan)
        self.app: ASGIApp = _Guarded(inner, guard)

    @contextlib.asynccontextmanager
    async def running(self) -> AsyncIterator[Dashboard]:
        async with self.monitor.running():
            yield self

    @contextlib.asynccontextmanager
    async def _lifespan(self, app: Starlette) -> AsyncIterator[None]:
        async with self.running():
            yield

    # --- reading -------------------------------------------------------------------

    async def _index(self, request: Request) -> Response:
        return Response(self._page, media_type="text/html; charset=utf-8")

    async def _file(self, request: Request) -> Response:
        name = request.path_params["name"]
        if name not in self._files:
            return _error(404, f"no file {name[:100]!r}")
        return Response(self._files[name], media_type=STATIC[name])

    async def _snapshot(self, request: Request) -> Response:
        document = self.monitor.snapshot()
        document["actions"] = self.guard.actions
        return _json(document)

    async def _history(self, request: Request) -> Response:
        after = request.query_params.get("after", "-1")
        if not re.fullmatch(r"-?[0-9]{1,18}", after):
            return _error(400, f"after {after[:100]!r} is not a sample number")
        return _json({"points": self.monitor.history.points(int(after))})

    def _uri(self, request: Request) -> str:
        uri = request.query_params.get("uri")
        if uri is None:
            raise ConfigurationError("uri: name the stream, e.g. ?uri=orders")
        if len(uri) > MAX_URI:
            raise ConfigurationError(
                f"uri {uri[:40]!r}... is too long for a stream URI"
            )
        self.backbone.keys(uri)  # ConfigurationError naming what is wrong
        return uri

    async def _tail(self, request: Request) -> Response:
        after = request.query_params.get("after")

        async def read() -> Any:
            uri = self._uri(request)
            if after is not None and not is_entry_id(after):
                raise ConfigurationError(
                    f"after {after[:100]!r} is not an entry id: expected <ms>-<seq>, "
                    "e.g. 1764000000000-0"
                )
            return await tail(self.backbone, uri, after)

        return await self._read(read)

    async def _letters(self, request: Request) -> Response:
        return await self._read(lambda: dead_letters(self.backbone, self._uri(request)))

    async def _read(self, reading: Callable[[], Awaitable[Any]]) -> Response:
        """The JSON of READING, or an error saying what went wrong."""
        try:
            async with asyncio.timeout(READ_TIMEOUT):
                return _json(await reading())
        except NotAStreamError as exc:
            return _error(409, str(exc))
        except BackboneError as exc:
            return _error(400, str(exc))
        except Exception as exc:
            return _error(*_redis_failure(exc))

    # --- acting --------------------------------------------------------------------

    async def _redrive(self, request: Request) -> Response:
        return await self._act(request, Action.REDRIVE)

    async def _purge(self, request: Request) -> Response:
        return await self._act(request, Action.PURGE)

    async def _act(self, request: Request, action: Action) -> Response:
        who = _who(request)
        refusal = self.guard.act(request.headers)
        if refusal is None:
            refusal = _json_request(request)
        if refusal is not None:
            log.warning("refused %s from %s: %s", action, who, refusal.message)
            return _error(refusal.status, refusal.message)
        try:
            body = json.loads(await _body(request))
            checked = ActionRequest.parse(self.backbone, body)
            async with asyncio.timeout(READ_TIMEOUT):
                result = await perform(self.backbone, action, checked)
        except ActionError as exc:
            log.warning("refused %s from %s: %s", action, who, exc.message)
            return _error(exc.status, exc.message)
        except (ValueError, UnicodeDecodeError, RecursionError):
            # RecursionError: nested deeper than json.loads goes.
            message = "the request body is not JSON"
            log.warning("refused %s from %s: %s", action, who, message)
            return _error(400, message)
        except Exception as exc:
            status, message = _redis_failure(exc)
            log.warning("%s from %s failed: %s", action, who, message)
            return _error(status, message)
        log.warning(
            "%s by %s: stream %s, dead letters %s: %d of %d done",
            action,
            who,
            checked.uri,
            ", ".join(checked.ids[:20]) + (" ..." if len(checked.ids) > 20 else ""),
            result["done"],
            result["wanted"],
        )
        self.monitor.refresh()
        return _json(result)


class _TooLarge(ActionError):
    def __init__(self) -> None:
        super().__init__(413, f"the request body is larger than {MAX_BODY} bytes")


async def _body(request: Request) -> bytes:
    """The request's body, refused past MAX_BODY bytes before it is all read."""
    declared = request.headers.get("content-length", "0")
    if declared.isdigit() and int(declared) > MAX_BODY:
        raise _TooLarge()
    body = bytearray()
    async for chunk in request.stream():
        body += chunk
        if len(body) > MAX_BODY:
            raise _TooLarge()
    return bytes(body)


def _json_request(request: Request) -> Refusal | None:
    kind = request.headers.get("content-type", "").split(";")[0].strip().lower()
    if kind != "application/json":
        return Refusal(415, "send the action as application/json")
    return None


def _who(request: Request) -> str:
    client = request.client
    return f"{client.host}:{client.port}" if client else "an unknown client"


def _redis_failure(exc: Exception) -> tuple[int, str]:
    """The status and message of a failed Redis call (a bug propagates)."""
    fault = classify(exc)
    if fault is Fault.BUG:
        raise exc
    detail = str(exc).strip().splitlines()[0][:300] if str(exc).strip() else ""
    text = f"{type(exc).__name__}: {detail}" if detail else type(exc).__name__
    if fault is Fault.TRANSIENT:
        return 503, f"Redis unreachable ({text}); try again when it is back"
    return 502, f"Redis refused the command ({text})"
