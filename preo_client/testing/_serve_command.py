"""The ``sandbox serve`` command (click, extra ``cli``): the demo sandbox as an HTTP server."""

from __future__ import annotations

import re
import signal
import socket
import sys
import threading
from collections.abc import Callable
from typing import Any, NoReturn

import click

from .._config import ConfigurationError
from ._fake import DEMO_API_KEY, FakePreo
from ._server import BACKLOG, is_loopback, serve

__all__ = ["listening_socket", "serve_command"]

EXIT_USAGE = 2
AccessLog = Callable[[str], None]
_ARGUMENT = re.compile(r"\b(rate_limit|burst|latency_jitter|latency)\b")


def _fail(message: str) -> NoReturn:
    """One ``error:`` line on stderr and exit 2, as every ``preo`` command reports a usage
    error found while running (click reports the ones it finds while parsing)."""
    click.echo(f"{click.style('error:', fg='red', bold=True)} {message}", err=True)
    sys.exit(EXIT_USAGE)


def _flag_words(message: str) -> str:
    """A sandbox message in the command line's words (``--rate-limit``, not ``rate_limit``)."""
    return _ARGUMENT.sub(lambda match: "--" + match[1].replace("_", "-"), message)


@click.command("serve")
@click.option(
    "--port",
    type=click.IntRange(0, 65535),
    default=8765,
    show_default=True,
    help="TCP port to listen on; 0 picks a free one (the first line printed names it).",
)
@click.option(
    "--host",
    default="127.0.0.1",
    show_default=True,
    help="Address to bind. Anything but loopback (0.0.0.0) exposes the sandbox to your network.",
)
@click.option(
    "--api-key",
    default=DEMO_API_KEY,
    show_default=True,
    help="The bearer token the sandbox accepts; any other key gets a 401.",
)
@click.option(
    "--auto-purchases/--no-auto-purchases",
    default=True,
    show_default=True,
    help="Create an unknown purchase id on first use (25.00 + 2.00 deposit + 1.50 fees), as "
    "--sandbox does; --no-auto-purchases answers 404 for it.",
)
@click.option(
    "--server",
    "server_kind",
    type=click.Choice(["stdlib", "uvicorn", "auto"]),
    default="stdlib",
    show_default=True,
    help="stdlib: threaded, no dependency; uvicorn: the ASGI app under uvicorn (faster; must "
    "be installed); auto: uvicorn if installed, else stdlib.",
)
@click.option(
    "--rate-limit",
    type=click.FloatRange(min=0, min_open=True),
    default=None,
    metavar="RATE",
    help="Requests per second per API key; over it the answer is 429 with Retry-After "
    "[default: no limit].",
)
@click.option(
    "--burst",
    type=click.IntRange(min=1),
    default=10,
    show_default=True,
    metavar="N",
    help="Requests a key may send at once before --rate-limit applies (the bucket size).",
)
@click.option("--no-retry-after", is_flag=True, help="Answer 429 without a Retry-After header.")
@click.option(
    "--latency",
    type=click.FloatRange(min=0),
    default=0.0,
    show_default=True,
    metavar="SECONDS",
    help="Time every answer takes, as a real server's would (never blocks other requests).",
)
@click.option(
    "--latency-jitter",
    type=click.FloatRange(min=0),
    default=0.0,
    show_default=True,
    metavar="SECONDS",
    help="A random extra delay per answer, uniform between 0 and SECONDS, on top of --latency.",
)
@click.option("--quiet", is_flag=True, help="No access log on standard error.")
def serve_command(
    port: int,
    host: str,
    api_key: str,
    auto_purchases: bool,
    server_kind: str,
    rate_limit: float | None,
    burst: int,
    no_retry_after: bool,
    latency: float,
    latency_jitter: float,
    quiet: bool,
) -> None:
    """Serve the demo sandbox over HTTP until interrupted (Ctrl-C or SIGTERM: exit 0).

    The first line on standard output is "serving on http://HOST:PORT" (the address bound),
    then one access-log line per request on standard error (never the Authorization header).
    Demo purchases: pur_demo_ticket, pur_demo_cup, pur_demo_beer, pur_demo_locker.
    """
    try:
        fake = FakePreo.demo(api_key=api_key, auto_purchases=auto_purchases)
        fake.set_rate_limit(rate_limit, burst=burst, send_retry_after=not no_retry_after)
        fake.set_latency(latency, jitter=latency_jitter)
    except ConfigurationError as exc:
        _fail(_flag_words(str(exc)))
    if server_kind == "auto":
        server_kind = "uvicorn" if _uvicorn_available() else "stdlib"
    elif server_kind == "uvicorn" and not _uvicorn_available():
        _fail("--server uvicorn needs uvicorn installed (pip install uvicorn)")
    access_log = None if quiet else _log_line
    if server_kind == "uvicorn":
        _run_uvicorn(fake, host, port, api_key, access_log)
    else:
        _run_stdlib(fake, host, port, api_key, access_log)


def _log_line(line: str) -> None:
    print(line, file=sys.stderr, flush=True)


def _uvicorn_available() -> bool:
    try:
        import uvicorn  # noqa: F401
    except ImportError:
        return False
    return True


def _listen_error(host: str, port: int, exc: Exception) -> NoReturn:
    reason = getattr(exc, "strerror", None) or str(exc) or type(exc).__name__
    _fail(f"cannot listen on {host}:{port}: {reason}")


def _announce(fake: FakePreo, url: str, host: str, api_key: str) -> None:
    print(f"serving on {url}", flush=True)
    shown_key = api_key if api_key == DEMO_API_KEY else "<your --api-key>"
    print(f"  PREO_BASE_URL={url} PREO_API_KEY={shown_key}", flush=True)
    print(f"  demo purchases: {', '.join(fake.purchases)}", flush=True)
    if fake.auto_purchases:
        print("  unknown purchase ids are created on first use", flush=True)
    if not is_loopback(host):
        _log_line(
            f"warning: listening on {host}, not loopback: anyone who can reach this port "
            "can use the sandbox"
        )


def _run_stdlib(
    fake: FakePreo, host: str, port: int, api_key: str, access_log: AccessLog | None
) -> None:
    try:
        server = serve(fake, host=host, port=port, access_log=access_log)
    except (OSError, ValueError) as exc:  # busy port, unknown host, a host idna refuses
        _listen_error(host, port, exc)
    stop = threading.Event()

    def request_stop(signum: int, frame: Any) -> None:
        stop.set()

    signal.signal(signal.SIGTERM, request_stop)
    signal.signal(signal.SIGINT, request_stop)
    _announce(fake, server.url, host, api_key)
    try:
        while not stop.wait(0.5):
            pass
    finally:
        server.close()


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


def _run_uvicorn(
    fake: FakePreo, host: str, port: int, api_key: str, access_log: AccessLog | None
) -> None:
    import uvicorn

    from ._asgi import asgi_app

    try:
        sock = listening_socket(host, port)
    except (OSError, ValueError) as exc:
        _listen_error(host, port, exc)
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
    _announce(fake, f"http://{shown}:{bound_port}", host, api_key)
    # uvicorn shuts down gracefully on SIGTERM/SIGINT, then re-raises the signal to the handler
    # found before it ran: this one, so the command ends with exit 0 like the stdlib server.
    for signum in (signal.SIGTERM, signal.SIGINT):
        signal.signal(signum, _ignore_signal)
    uvicorn.Server(config).run(sockets=[sock])


def _ignore_signal(signum: int, frame: Any) -> None:
    """Already handled (see ``_run_uvicorn``)."""
