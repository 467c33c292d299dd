"""Serving the dashboard: a listening socket bound before anything else (so a
port in use is a clear error, and a client may connect at once), and uvicorn's
server stopped quietly by SIGINT or SIGTERM."""

from __future__ import annotations

import asyncio
import contextlib
import signal
import socket
from collections.abc import Iterator
from typing import Final

import uvicorn
from starlette.types import ASGIApp

from ..errors import ConfigurationError

__all__ = ["Server", "listen", "server_for"]

GRACE: Final = 5
"""Seconds open requests get to finish at shutdown."""


def listen(host: str, port: int) -> socket.socket:
    """A listening socket on HOST:PORT (PORT 0: any free one); an address that
    is not this machine's, or a port in use, is a ConfigurationError."""
    try:
        infos = socket.getaddrinfo(
            host, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE
        )
    except socket.gaierror as exc:
        raise ConfigurationError(
            f"--host {host!r} is not an address of this machine ({exc})"
        ) from None
    family, kind, proto, _, address = infos[0]
    listener = socket.socket(family, kind, proto)
    try:
        listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        listener.bind(address)
        listener.listen(128)
    except OSError as exc:
        listener.close()
        raise ConfigurationError(
            f"cannot listen on {host}:{port} ({exc.strerror or exc}); choose "
            "another --port (or --port 0 for any free one)"
        ) from None
    listener.setblocking(False)
    return listener


class Server(uvicorn.Server):
    """uvicorn's server; with SIGNALS, SIGINT and SIGTERM stop it gracefully and
    the program goes on (uvicorn's own handling raises the signal again after
    shutting down, which would end the command with a signal's status)."""

    def __init__(self, config: uvicorn.Config, *, signals: bool = True) -> None:
        super().__init__(config)
        self.signals = signals

    @contextlib.contextmanager
    def capture_signals(self) -> Iterator[None]:
        if not self.signals:
            yield
            return
        loop = asyncio.get_running_loop()
        handled = []
        for number in (signal.SIGINT, signal.SIGTERM):
            try:
                loop.add_signal_handler(number, self._stop)
                handled.append(number)
            except (NotImplementedError, RuntimeError):  # not the main thread
                pass
        try:
            yield
        finally:
            for number in handled:
                loop.remove_signal_handler(number)

    def _stop(self) -> None:
        if self.should_exit:
            self.force_exit = True  # a second signal: do not wait for requests
        self.should_exit = True


def server_for(app: ASGIApp, *, signals: bool = True) -> Server:
    """A server of APP, quiet (backbone's own log lines only)."""
    config = uvicorn.Config(
        app,
        log_config=None,
        access_log=False,
        lifespan="on",
        timeout_graceful_shutdown=GRACE,
    )
    return Server(config, signals=signals)
