"""The sandbox as a real HTTP server on loopback (standard library, one thread per request)."""

from __future__ import annotations

import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from types import TracebackType

import httpx

from ._fake import FakePreo

__all__ = ["SandboxServer", "serve"]

_MAX_BODY = 1024 * 1024


class _Handler(BaseHTTPRequestHandler):
    server: _Server
    protocol_version = "HTTP/1.1"

    def _answer(self) -> None:
        length = int(self.headers.get("content-length") or 0)
        if length > _MAX_BODY:
            self.send_error(413)
            return
        body = self.rfile.read(length) if length else b""
        host = self.headers.get("host") or f"127.0.0.1:{self.server.server_address[1]}"
        request = httpx.Request(
            self.command,
            f"http://{host}{self.path}",
            headers=[(k, v) for k, v in self.headers.items()],
            content=body,
        )
        try:
            response = self.server.fake.handle(request)
        except httpx.TransportError:
            self.close_connection = True  # an injected fault: drop the connection, no answer
            return
        content = response.content
        self.send_response(response.status_code)
        for name, value in response.headers.items():
            if name.lower() not in ("content-length", "connection", "transfer-encoding"):
                self.send_header(name, value)
        self.send_header("content-length", str(len(content)))
        self.end_headers()
        self.wfile.write(content)

    do_POST = do_GET = do_PUT = do_PATCH = do_DELETE = _answer

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
