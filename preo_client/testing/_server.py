"""The sandbox as a real HTTP server on loopback (standard library, one thread per request)."""

from __future__ import annotations

import re
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from types import TracebackType
from typing import Any

import httpx

from ._fake import FakePreo

__all__ = ["SandboxServer", "serve"]

_MAX_BODY = 1024 * 1024
_UNSAFE = re.compile(r"[\x00-\x08\x0a-\x1f\x7f-\x9f]")
_MALFORMED = httpx.Response(
    400,
    headers={"content-type": "application/json"},
    content=b'{"non_field_errors": ["Malformed request."]}',
)


class _Handler(BaseHTTPRequestHandler):
    server: _Server
    protocol_version = "HTTP/1.1"

    def _answer(self) -> None:
        if self.headers.defects or any(_UNSAFE.search(v) for v in self.headers.values()):
            # Control characters in headers (a bare CR, NUL, C1 codes) can make the standard
            # library's parser and the client disagree on where the request ends: answer,
            # then close the connection so nothing left on it is read as a new request.
            self.close_connection = True
            self._write(_MALFORMED)
            return
        length = self.headers.get("content-length") or "0"
        if not length.isdigit() or int(length) > _MAX_BODY:
            self.close_connection = True
            self.send_error(413 if length.isdigit() else 400)
            return
        body = self.rfile.read(int(length))
        host = self.headers.get("host") or f"127.0.0.1:{self.server.server_address[1]}"
        try:
            request = httpx.Request(
                self.command,
                f"http://{host}{self.path}",
                headers=[(k, v) for k, v in self.headers.items()],
                content=body,
            )
        except (ValueError, httpx.HTTPError):  # a header or URL no HTTP client may send
            self.close_connection = True
            response = _MALFORMED
        else:
            try:
                response = self.server.fake.handle(request)
            except httpx.TransportError:
                self.close_connection = True  # an injected fault: drop the connection
                return
        self._write(response)

    def _write(self, response: httpx.Response) -> None:
        content = response.content
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

    def __getattr__(self, name: str) -> Any:
        """Every method (``do_QUERY`` too) reaches the sandbox, which answers 405 as the API
        would, instead of the standard library's 501."""
        if name.startswith("do_"):
            return self._answer
        raise AttributeError(name)

    def log_message(self, format: str, *args: object) -> None:
        """Quiet: tests and benchmarks must not print a line per request."""


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    fake: FakePreo


class SandboxServer:
    """A running loopback server for a :class:`FakePreo`; ``url`` is its base URL."""

    def __init__(self, fake: FakePreo, *, host: str = "127.0.0.1", port: int = 0) -> None:
        if host not in ("127.0.0.1", "localhost", "::1"):
            raise ValueError("the sandbox server listens on loopback only")
        self.fake = fake
        self._server = _Server((host, port), _Handler)
        self._server.fake = fake
        self.port = self._server.server_address[1]
        self.url = f"http://{host}:{self.port}"
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)

    def start(self) -> SandboxServer:
        self._thread.start()
        return self

    def close(self) -> None:
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


def serve(fake: FakePreo | None = None, *, host: str = "127.0.0.1", port: int = 0) -> SandboxServer:
    """Start a loopback server (port 0 picks a free one) for ``fake`` or a demo sandbox."""
    return SandboxServer(fake or FakePreo.demo(), host=host, port=port).start()
