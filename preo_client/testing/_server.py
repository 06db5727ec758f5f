"""The sandbox as a real HTTP server (standard library, one thread per connection)."""

from __future__ import annotations

import ipaddress
import json
import re
import socket
import sys
import threading
import time
from collections.abc import Callable
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from types import TracebackType
from typing import Any

import httpx

from ._fake import FakePreo

__all__ = ["BACKLOG", "SandboxServer", "access_line", "is_loopback", "serve"]

BACKLOG = 1024  # listen queue: 64+ clients connecting at once are queued, never reset
_MAX_BODY = 1024 * 1024
_IDLE_TIMEOUT = 30.0  # seconds a connection may sit idle or trickle a request
_UNSAFE = re.compile(r"[\x00-\x08\x0a-\x1f\x7f-\x9f]")
_LENGTH = re.compile(r"[0-9]{1,10}")  # ASCII digits only ("²".isdigit() is True)
_PRINTABLE = re.compile(r"[^\x21-\x7e]")

AccessLog = Callable[[str], None]


def is_loopback(host: str) -> bool:
    """Whether ``host`` (an address or ``localhost``) is a loopback address."""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def access_line(method: str, path: str, status: int, key: str | None, elapsed: float) -> str:
    """One access-log line: method, path, status, the first 8 characters of the
    ``Idempotency-Key`` (``-`` if none) and the elapsed milliseconds. Never a header value
    beyond that prefix, never the ``Authorization`` header."""
    shown_key = _PRINTABLE.sub("?", key[:8]) if key else "-"
    return (
        f"{_PRINTABLE.sub('?', method[:16])} {_PRINTABLE.sub('?', path[:200])} {status} "
        f"key={shown_key} {elapsed * 1000:.1f}ms"
    )


def _error_response(status: int, message: str) -> httpx.Response:
    payload = {"non_field_errors": [message]} if status == 400 else {"detail": message}
    return httpx.Response(
        status,
        headers={"content-type": "application/json"},
        content=json.dumps(payload).encode(),
    )


class _Handler(BaseHTTPRequestHandler):
    server: _Server
    protocol_version = "HTTP/1.1"
    server_version = "PreoSandbox"
    sys_version = ""
    timeout = _IDLE_TIMEOUT
    # The status line, headers and body go out in separate writes: without TCP_NODELAY each
    # answer waits for the client's delayed ACK (about 40 ms a request on Linux).
    disable_nagle_algorithm = True
    _started = 0.0

    def parse_request(self) -> bool:
        self._started = time.perf_counter()
        self.path = ""
        self.__dict__.pop("headers", None)  # nothing left over from the previous request
        return super().parse_request()

    def _answer(self) -> None:
        if self.request_version == "HTTP/0.9":  # "GET /" alone: no headers, no length
            self.request_version = "HTTP/1.1"
            self._refuse(400, "Malformed request line.")
            return
        if self.headers.defects or any(_UNSAFE.search(v) for v in self.headers.values()):
            # Control characters in headers (a bare CR, NUL, C1 codes) can make the standard
            # library's parser and the client disagree on where the request ends: answer,
            # then close the connection so nothing left on it is read as a new request.
            self._refuse(400, "Malformed request.")
            return
        if "transfer-encoding" in self.headers:
            self._refuse(400, "Transfer-Encoding is not supported; send Content-Length.")
            return
        lengths = self.headers.get_all("content-length") or ["0"]
        length = lengths[0].strip()
        if len(set(lengths)) > 1 or not _LENGTH.fullmatch(length):
            self._refuse(400, "Invalid Content-Length header.")
            return
        if int(length) > _MAX_BODY:
            self._refuse(413, "Request body too large.")
            return
        try:
            body = self.rfile.read(int(length))
        except OSError:  # the client went silent (timeout) or away: nobody to answer
            self.close_connection = True
            self._log(408)
            return
        if len(body) < int(length):
            self._refuse(400, "Request body shorter than Content-Length.")
            return
        host = self.headers.get("host") or f"127.0.0.1:{self.server.server_address[1]}"
        try:
            request = httpx.Request(
                self.command,
                f"http://{host}{self.path}",
                headers=list(self.headers.items()),
                content=body,
            )
        except (ValueError, httpx.InvalidURL, httpx.HTTPError):  # a Host or URL no client sends
            self._refuse(400, "Malformed request: invalid Host header or request target.")
            return
        try:
            response = self.server.fake.handle(request)
        except httpx.TransportError:
            self.close_connection = True  # an injected fault: drop the connection
            self._log(0)
            return
        self._write(response)

    def _refuse(self, status: int, message: str) -> None:
        self.close_connection = True
        self._write(_error_response(status, message))

    def _write(self, response: httpx.Response) -> None:
        content = response.content
        try:
            self.send_response(response.status_code)
            for name, value in response.headers.items():
                if name.lower() not in ("content-length", "connection", "transfer-encoding"):
                    self.send_header(name, value)
            self.send_header("content-length", str(len(content)))
            if self.close_connection:
                self.send_header("connection", "close")
            self.end_headers()
            if self.command != "HEAD":  # a HEAD answer has headers only
                self.wfile.write(content)
            self.wfile.flush()
        except OSError:  # the client is gone: nothing to tell it
            self.close_connection = True
        self._log(response.status_code)

    def send_error(self, code: int, message: str | None = None, explain: str | None = None) -> None:
        """The standard library's own refusals (bad request line, header too long, ...) as
        JSON, on a connection that is then closed."""
        if self.request_version == "HTTP/0.9":  # no usable version: answer as HTTP/1.1
            self.request_version = "HTTP/1.1"
        # The standard library's message may quote the request line: never echo it back.
        phrase = HTTPStatus(code).phrase if code in HTTPStatus._value2member_map_ else "Error"
        self._refuse(code, f"Malformed request: {phrase}.")

    def _log(self, status: int) -> None:
        log = self.server.access_log
        if log is None:
            return
        elapsed = time.perf_counter() - self._started if self._started else 0.0
        headers = getattr(self, "headers", None)
        key = headers.get("idempotency-key") if headers is not None else None
        path = getattr(self, "path", "") or "-"
        log(access_line(self.command or "-", path.split("?", 1)[0], status, key, elapsed))

    def __getattr__(self, name: str) -> Any:
        """Every method (``do_QUERY`` too) reaches the sandbox, which answers 405 as the API
        would, instead of the standard library's 501."""
        if name.startswith("do_"):
            return self._answer
        raise AttributeError(name)

    def log_message(self, format: str, *args: object) -> None:
        """The standard library's log lines are replaced by :func:`access_line`."""


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    request_queue_size = BACKLOG
    fake: FakePreo
    access_log: AccessLog | None = None

    def handle_error(self, request: Any, client_address: Any) -> None:
        """A connection that fails (reset, broken pipe) is one log line, not a traceback."""
        if self.access_log is not None:
            error = sys.exc_info()[1]
            self.access_log(f"- connection error: {type(error).__name__}")


class _Server6(_Server):
    address_family = socket.AF_INET6


class SandboxServer:
    """A running HTTP server for a :class:`FakePreo`; ``url`` is its base URL.

    ``host`` may be any local address (the default is loopback; anything else exposes the
    sandbox to whoever can reach the port). Binding errors (busy port, unknown host) raise
    ``OSError``. ``access_log`` receives one line per request (see :func:`access_line`).
    """

    def __init__(
        self,
        fake: FakePreo,
        *,
        host: str = "127.0.0.1",
        port: int = 0,
        access_log: AccessLog | None = None,
    ) -> None:
        self.fake: FakePreo = fake
        family = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)[0][0]
        server_class = _Server6 if family == socket.AF_INET6 else _Server
        self._server = server_class((host.strip("[]"), port), _Handler)
        self._server.fake = fake
        self._server.access_log = access_log
        bound = self._server.server_address
        self.host: str = str(bound[0])
        self.port: int = int(bound[1])
        shown = f"[{self.host}]" if ":" in self.host else self.host
        self.url: str = f"http://{shown}:{self.port}"
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)

    def start(self) -> SandboxServer:
        """Serve in a daemon thread; returns this server (``serve()`` calls it for you)."""
        self._thread.start()
        return self

    def close(self) -> None:
        """Stop serving (if started) and release the port; the context manager calls it."""
        if self._thread.is_alive():
            self._server.shutdown()
        self._server.server_close()

    def __enter__(self) -> SandboxServer:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()


def serve(
    fake: FakePreo | None = None,
    *,
    host: str = "127.0.0.1",
    port: int = 0,
    access_log: AccessLog | None = None,
) -> SandboxServer:
    """Start a server (port 0 picks a free one) for ``fake`` or a demo sandbox."""
    server = SandboxServer(fake or FakePreo.demo(), host=host, port=port, access_log=access_log)
    return server.start()
