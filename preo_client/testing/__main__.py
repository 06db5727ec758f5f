"""``python -m preo_client.testing serve``: the demo sandbox as a test server (also ``preo
sandbox serve``)."""

from __future__ import annotations

import argparse
import signal
import socket
import sys
import threading
from collections.abc import Callable
from typing import Any, NoReturn

from .._config import ConfigurationError
from ._fake import DEMO_API_KEY, FakePreo
from ._server import BACKLOG, is_loopback, serve

__all__ = ["build_parser", "main"]

EXIT_USAGE = 2


class _Parser(argparse.ArgumentParser):
    """argparse, but a usage error is one line on stderr (and exit 2), never the usage."""

    def format_help(self) -> str:
        text = super().format_help()
        return "Usage: " + text.removeprefix("usage: ")  # as click's commands print it

    def error(self, message: str) -> NoReturn:
        _error(message)
        raise SystemExit(EXIT_USAGE)


def _error(message: str) -> None:
    print(f"error: {message}", file=sys.stderr, flush=True)


def _port(value: str) -> int:
    if not value.isascii() or not value.isdigit() or not 0 <= int(value) <= 65535:
        raise argparse.ArgumentTypeError(f"must be an integer 0-65535, got {value!r}")
    return int(value)


def build_parser(prog: str = "python -m preo_client.testing") -> argparse.ArgumentParser:
    """The ``serve`` command's arguments (shared by ``preo sandbox serve``)."""
    parser = _Parser(prog=prog)
    commands = parser.add_subparsers(dest="command", required=True, parser_class=_Parser)
    run = commands.add_parser("serve", help="serve the demo sandbox over HTTP")
    run.add_argument("--port", type=_port, default=8765, help="TCP port (0 picks a free one)")
    run.add_argument(
        "--host",
        default="127.0.0.1",
        help="address to bind (default loopback; 0.0.0.0 exposes it to your network)",
    )
    run.add_argument("--api-key", default=DEMO_API_KEY, help="bearer token the sandbox accepts")
    run.add_argument("--quiet", action="store_true", help="no access log on stderr")
    run.add_argument(
        "--auto-purchases",
        action="store_true",
        help="create an unknown purchase id on first use (25.00 + 2.00 deposit + 1.50 fees) "
        "instead of answering 404",
    )
    run.add_argument(
        "--server",
        choices=("stdlib", "uvicorn", "auto"),
        default="stdlib",
        help="stdlib: threaded, no dependency (default); uvicorn: the ASGI app under uvicorn "
        "(faster; must be installed); auto: uvicorn if installed, else stdlib",
    )
    run.add_argument(
        "--rate-limit",
        type=float,
        default=None,
        metavar="RATE",
        help="requests per second per API key; over it: 429 with Retry-After",
    )
    run.add_argument("--burst", type=int, default=10, metavar="N", help="bucket size (10)")
    run.add_argument("--no-retry-after", action="store_true", help="answer 429 without Retry-After")
    run.add_argument("--latency", type=float, default=0.0, metavar="SECONDS")
    run.add_argument("--latency-jitter", type=float, default=0.0, metavar="SECONDS")
    return parser


def _log_line(line: str) -> None:
    print(line, file=sys.stderr, flush=True)


def _uvicorn_available() -> bool:
    try:
        import uvicorn  # noqa: F401
    except ImportError:
        return False
    return True


def main(argv: list[str] | None = None, *, prog: str = "python -m preo_client.testing") -> int:
    """Run the command; returns the exit code (2: usage error or the address cannot be used)."""
    args = build_parser(prog).parse_args(argv)
    try:
        fake = FakePreo.demo(api_key=args.api_key, auto_purchases=args.auto_purchases)
        fake.set_rate_limit(
            args.rate_limit, burst=args.burst, send_retry_after=not args.no_retry_after
        )
        fake.set_latency(args.latency, jitter=args.latency_jitter)
    except ConfigurationError as exc:
        _error(str(exc))
        return EXIT_USAGE
    server_kind = args.server
    if server_kind == "auto":
        server_kind = "uvicorn" if _uvicorn_available() else "stdlib"
    elif server_kind == "uvicorn" and not _uvicorn_available():
        _error("--server uvicorn needs uvicorn installed (pip install uvicorn)")
        return EXIT_USAGE
    access_log = None if args.quiet else _log_line
    if server_kind == "uvicorn":
        return _run_uvicorn(fake, args, access_log)
    return _run_stdlib(fake, args, access_log)


def _listen_error(host: str, port: int, exc: Exception) -> int:
    reason = getattr(exc, "strerror", None) or str(exc) or type(exc).__name__
    _error(f"cannot listen on {host}:{port}: {reason}")
    return EXIT_USAGE


def _announce(fake: FakePreo, url: str, host: str, api_key: str) -> None:
    print(f"serving on {url}", flush=True)
    shown_key = api_key if api_key == DEMO_API_KEY else "<your --api-key>"
    print(f"  PREO_BASE_URL={url} PREO_API_KEY={shown_key}", flush=True)
    print(f"  demo purchases: {', '.join(fake.purchases)}", flush=True)
    if not is_loopback(host):
        _log_line(
            f"warning: listening on {host}, not loopback: anyone who can reach this port "
            "can use the sandbox"
        )


def _run_stdlib(fake: FakePreo, args: Any, access_log: Callable[[str], None] | None) -> int:
    try:
        server = serve(fake, host=args.host, port=args.port, access_log=access_log)
    except (OSError, ValueError) as exc:  # busy port, unknown host, a host idna refuses
        return _listen_error(args.host, args.port, exc)
    stop = threading.Event()

    def request_stop(signum: int, frame: Any) -> None:
        stop.set()

    signal.signal(signal.SIGTERM, request_stop)
    signal.signal(signal.SIGINT, request_stop)
    _announce(fake, server.url, args.host, args.api_key)
    try:
        while not stop.wait(0.5):
            pass
    finally:
        server.close()
    return 0


def listening_socket(host: str, port: int) -> socket.socket:
    """A bound TCP socket for uvicorn. Made with ``IPPROTO_TCP`` on purpose: asyncio sets
    TCP_NODELAY only on such sockets, and without it every answer (headers and body written
    separately) waits for the client's delayed ACK, about 40 ms a request."""
    family = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)[0][0]
    sock = socket.socket(family, socket.SOCK_STREAM, socket.IPPROTO_TCP)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind((host.strip("[]"), port))
    except OSError:
        sock.close()
        raise
    return sock


def _run_uvicorn(fake: FakePreo, args: Any, access_log: Callable[[str], None] | None) -> int:
    import uvicorn

    from ._asgi import asgi_app

    try:
        sock = listening_socket(args.host, args.port)
    except (OSError, ValueError) as exc:
        return _listen_error(args.host, args.port, exc)
    bound_host, bound_port = sock.getsockname()[:2]
    shown = f"[{bound_host}]" if ":" in bound_host else bound_host
    config = uvicorn.Config(
        asgi_app(fake, access_log=access_log),
        log_level="warning",
        access_log=False,
        lifespan="off",
        backlog=BACKLOG,
        timeout_keep_alive=30,
    )
    _announce(fake, f"http://{shown}:{bound_port}", args.host, args.api_key)
    # uvicorn shuts down gracefully on SIGTERM/SIGINT, then re-raises the signal to the handler
    # found before it ran: this one, so the command ends with exit 0 like the stdlib server.
    for signum in (signal.SIGTERM, signal.SIGINT):
        signal.signal(signum, _ignore_signal)
    uvicorn.Server(config).run(sockets=[sock])
    return 0


def _ignore_signal(signum: int, frame: Any) -> None:
    """Already handled (see ``_run_uvicorn``)."""


if __name__ == "__main__":
    raise SystemExit(main())
