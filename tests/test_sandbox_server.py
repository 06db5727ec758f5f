"""The sandbox as a real HTTP server: raw sockets, 64 concurrent clients, the serve command."""

from __future__ import annotations

import asyncio
import concurrent.futures
import http.client
import json
import os
import queue
import re
import signal
import socket
import subprocess
import sys
import threading
import uuid
from collections.abc import Callable, Iterator
from typing import IO

import httpx
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from preo_client.testing import DEMO_API_KEY, FakePreo, serve
from preo_client.testing._asgi import asgi_app
from preo_client.testing._server import SandboxServer

WATCHDOG = 60.0  # seconds: any hang fails the test instead of blocking CI
BODY = b'{"reason": "deposit_reclaim"}'
AUTH = b"Authorization: Bearer " + DEMO_API_KEY.encode() + b"\r\n"


@pytest.fixture(scope="module")
def server() -> Iterator[tuple[SandboxServer, list[str]]]:
    lines: list[str] = []
    with serve(FakePreo.demo(), access_log=lines.append) as running:
        yield running, lines


def exchange(port: int, raw: bytes) -> bytes:
    """Send ``raw``, close our sending side, read everything the server answers."""
    with socket.create_connection(("127.0.0.1", port), timeout=WATCHDOG) as sock:
        sock.sendall(raw)
        sock.shutdown(socket.SHUT_WR)
        answer = b""
        while chunk := sock.recv(65536):
            answer += chunk
    return answer


def parse_all(answer: bytes) -> list[tuple[int, dict[str, str], bytes]]:
    """Every HTTP/1.1 response in ``answer`` (pipelined requests get several)."""
    responses = []
    while answer:
        head, _, rest = answer.partition(b"\r\n\r\n")
        status_line, *header_lines = head.decode("latin-1").split("\r\n")
        assert status_line.startswith("HTTP/1.1 "), answer[:80]
        headers = {}
        for line in header_lines:
            name, _, value = line.partition(":")
            headers[name.strip().lower()] = value.strip()
        length = int(headers["content-length"])
        responses.append((int(status_line.split()[1]), headers, rest[:length]))
        answer = rest[length:]
    return responses


def parse(answer: bytes) -> tuple[int, dict[str, str], bytes]:
    (response,) = parse_all(answer)
    return response


def refund_request(*headers: bytes, body: bytes = BODY, length: bytes | None = None) -> bytes:
    length = str(len(body)).encode() if length is None else length
    return (
        b"POST /v1/purchases/pur_demo_locker/refund HTTP/1.1\r\nHost: 127.0.0.1\r\n"
        + AUTH
        + b"".join(h + b"\r\n" for h in headers)
        + b"Content-Length: "
        + length
        + b"\r\n\r\n"
        + body
    )


MALFORMED = {
    "superscript length": refund_request(length="²".encode()),
    "negative length": refund_request(length=b"-1"),
    "exponent length": refund_request(length=b"1e3"),
    "two lengths": refund_request(b"Content-Length: 5"),
    "host with a bad port": refund_request(b"Host: x:abc").replace(b"Host: 127.0.0.1\r\n", b""),
    "chunked": refund_request(b"Transfer-Encoding: chunked"),
    "body shorter than its length": refund_request(length=b"100"),
    "one-word request line": b"GARBAGE\r\n\r\n",
    "four-word request line": b"POST /v1/purchases/x/refund HTTP/1.1 extra\r\n\r\n",
    "HTTP/0.9 request": b"GET /v1/purchases/x/refund\r\n",
    "bad version": b"POST /v1/purchases/x/refund HTTP/x.y\r\nHost: a\r\n\r\n",
    "header without colon": b"POST /v1/purchases/x/refund HTTP/1.1\r\nHost a\r\n\r\n",
}


@pytest.mark.parametrize("raw", list(MALFORMED.values()), ids=list(MALFORMED))
def test_malformed_requests_get_a_json_400_and_a_closed_connection(
    server: tuple[SandboxServer, list[str]], raw: bytes
) -> None:
    running, lines = server
    before = len(running.fake.refunds)
    status, headers, body = parse(exchange(running.port, raw))  # recv ended: it closed
    assert status == 400
    assert headers["content-type"] == "application/json"
    assert headers["connection"] == "close"
    assert int(headers["content-length"]) == len(body)
    assert "non_field_errors" in json.loads(body)
    assert len(running.fake.refunds) == before
    assert not [line for line in lines if "connection error" in line]


def test_header_too_long_and_body_too_large_are_json_too(
    server: tuple[SandboxServer, list[str]],
) -> None:
    running, _ = server
    status, headers, body = parse(exchange(running.port, refund_request(length=b"99999999")))
    assert (status, headers["content-type"]) == (413, "application/json")
    assert "detail" in json.loads(body)
    long_line = b"GET /" + b"a" * 70000 + b" HTTP/1.1\r\n\r\n"
    status, headers, body = parse(exchange(running.port, long_line))
    assert (status, headers["content-type"]) == (414, "application/json")


@settings(
    max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(
    raw=st.one_of(
        st.binary(max_size=300),
        st.lists(st.sampled_from([*MALFORMED.values(), refund_request()])).map(b"".join),
        st.builds(lambda a, b: a + b, st.sampled_from(list(MALFORMED.values())), st.binary()),
    )
)
def test_any_bytes_get_an_http_answer_or_a_clean_close(
    server: tuple[SandboxServer, list[str]], raw: bytes
) -> None:
    """Whatever arrives, the server answers HTTP/1.1 (JSON for its own refusals) or closes;
    it never crashes, and a connection error is never a traceback."""
    running, lines = server
    answer = exchange(running.port, raw)
    for status, headers, body in parse_all(answer):
        assert 200 <= status < 600
        if status >= 400:
            assert headers["content-type"] == "application/json"
            json.loads(body)
        assert DEMO_API_KEY.encode() not in body  # nothing of the request is echoed
    assert running._thread.is_alive()
    assert not [line for line in lines if "connection error" in line]


def test_the_server_still_works_after_the_garbage(server: tuple[SandboxServer, list[str]]) -> None:
    running, _ = server
    with httpx.Client(base_url=running.url, timeout=WATCHDOG) as http:
        response = http.post(
            "/v1/purchases/pur_demo_nothing/refund",
            json={"reason": "sold_out"},
            headers={"authorization": f"Bearer {DEMO_API_KEY}", "idempotency-key": "k"},
        )
    assert response.status_code == 404


def test_64_concurrent_clients_get_no_connection_errors() -> None:
    """64 threads open a fresh connection per request, all at once: with the stdlib's default
    listen backlog (5) some of these were reset; with ours, none is."""
    clients, per_client = 64, 40
    fake = FakePreo(auto_purchases=True, keep_history=False)
    barrier = threading.Barrier(clients)

    def run(worker: int) -> list[int]:
        statuses = []
        barrier.wait(timeout=WATCHDOG)
        for i in range(per_client):
            connection = http.client.HTTPConnection("127.0.0.1", running.port, timeout=WATCHDOG)
            try:
                connection.request(
                    "POST",
                    f"/v1/purchases/p{worker}_{i}/refund",
                    body=b'{"reason": "sold_out"}',
                    headers={
                        "authorization": f"Bearer {DEMO_API_KEY}",
                        "content-type": "application/json",
                        "connection": "close",
                    },
                )
                response = connection.getresponse()
                response.read()
                statuses.append(response.status)
            finally:
                connection.close()
        return statuses

    with (
        serve(fake) as running,
        concurrent.futures.ThreadPoolExecutor(clients) as pool,
    ):
        futures = [pool.submit(run, worker) for worker in range(clients)]
        results = [future.result(timeout=300) for future in futures]  # raises any reset
    assert [status for statuses in results for status in statuses] == [201] * (clients * per_client)
    assert fake.refund_count == clients * per_client


# -- the serve command, in a subprocess --------------------------------------------------------


class Served:
    """``python -m preo_client.testing serve ...`` running; its stdout/stderr collected."""

    def __init__(self, *args: str) -> None:
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "preo_client.testing", "serve", *args],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        self.stdout: queue.Queue[str] = queue.Queue()
        self.stderr: list[str] = []
        assert self.proc.stdout is not None
        assert self.proc.stderr is not None
        self._out = threading.Thread(target=self._pump, args=(self.proc.stdout, self.stdout.put))
        self._out.start()
        self._err = threading.Thread(target=self._pump, args=(self.proc.stderr, self.stderr.append))
        self._err.start()
        self.first_line = self.stdout.get(timeout=WATCHDOG)
        match = re.fullmatch(r"serving on (http://\S+:\d+)\n", self.first_line)
        assert match, self.first_line
        self.url = match[1]

    @staticmethod
    def _pump(stream: IO[str], put: object) -> None:
        for line in stream:
            put(line)  # type: ignore[operator]

    def post(self, purchase: str, key: str | None = "new", **body: str) -> httpx.Response:
        headers = {"authorization": f"Bearer {DEMO_API_KEY}"}
        key = uuid.uuid4().hex if key == "new" else key
        if key is not None:
            headers["idempotency-key"] = key
        return httpx.post(
            f"{self.url}/v1/purchases/{purchase}/refund",
            json=body,
            headers=headers,
            timeout=WATCHDOG,
        )

    def stop(self) -> int:
        self.proc.send_signal(signal.SIGTERM)
        try:
            code = self.proc.wait(timeout=WATCHDOG)
        finally:
            self.proc.kill()
            self._out.join(timeout=WATCHDOG)
            self._err.join(timeout=WATCHDOG)
            for stream in (self.proc.stdout, self.proc.stderr):
                if stream is not None:
                    stream.close()
        return code


@pytest.fixture
def free_port() -> Iterator[socket.socket]:
    """A listening socket: its port is busy."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        sock.listen()
        yield sock


def run_serve(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "preo_client.testing", "serve", *args],
        capture_output=True,
        text=True,
        timeout=WATCHDOG,
        check=False,
    )


def test_a_busy_port_is_one_line_and_exit_2(free_port: socket.socket) -> None:
    port = free_port.getsockname()[1]
    result = run_serve("--port", str(port))
    assert result.returncode == 2
    assert result.stderr.splitlines() == [
        f"error: cannot listen on 127.0.0.1:{port}: Address already in use"
    ]
    assert result.stdout == ""


@pytest.mark.parametrize(
    ("args", "words"),
    [
        (["--port", "70000"], "Invalid value for '--port': 70000 is not in the range 0<=x<=65535"),
        (["--port", "abc"], "Invalid value for '--port': 'abc' is not a valid integer"),
        (["--port", "-1"], "'--port'"),
        (["--rate-limit", "0"], "Invalid value for '--rate-limit': 0.0 is not in the range x>0"),
        (["--burst", "0"], "Invalid value for '--burst'"),
        (["--latency", "-0.5"], "Invalid value for '--latency'"),
        (["--latency-jitter", "-1"], "Invalid value for '--latency-jitter'"),
        (["--server", "tornado"], "Invalid value for '--server': 'tornado' is not one of"),
        (["--no-such-flag"], "No such option '--no-such-flag'"),
    ],
)
def test_bad_arguments_are_clicks_usage_errors_exit_2(args: list[str], words: str) -> None:
    """The same toolkit and style as every ``preo`` command: usage, a hint, the error."""
    result = run_serve(*args)
    assert result.returncode == 2
    assert result.stderr.startswith("Usage: python -m preo_client.testing serve [OPTIONS]\n")
    assert "Try 'python -m preo_client.testing serve --help' for help." in result.stderr
    assert words in result.stderr.splitlines()[-1]
    assert "Traceback" not in result.stderr
    assert result.stdout == ""


@pytest.mark.parametrize(
    ("args", "words"),
    [
        (["--host", "999.1.1.1", "--port", "0"], "cannot listen on 999.1.1.1:0"),
        (["--host", "a" * 300, "--port", "0"], "cannot listen on"),
        (["--rate-limit", "inf"], "--rate-limit must be None (no limit) or a finite number"),
        (["--latency", "inf"], "--latency must be a finite number of seconds"),
        (["--latency", "nan"], "--latency must be a finite number of seconds"),
        (["--latency-jitter", "inf"], "--latency-jitter must be a finite number of seconds"),
    ],
)
def test_errors_found_while_starting_are_one_error_line_and_exit_2(
    args: list[str], words: str
) -> None:
    """As ``preo`` reports a usage error it finds while running: one ``error:`` line naming
    the flag (never the Python argument name)."""
    result = run_serve(*args)
    assert result.returncode == 2
    (line,) = result.stderr.splitlines()
    assert line.startswith("error: ")
    assert words in line
    assert "rate_limit" not in line
    assert "latency_jitter" not in line


def test_access_log_one_line_per_request_and_never_the_key(
    no_contract_request_check: None,
) -> None:
    served = Served("--port", "0", "--no-auto-purchases")
    try:
        assert served.post("pur_demo_cup", "abcdefghijkl", reason="deposit_reclaim").status_code
        assert served.post("pur_missing", None, reason="sold_out").status_code == 404
        port = int(served.url.rsplit(":", 1)[1])
        assert parse(exchange(port, MALFORMED["superscript length"]))[0] == 400
    finally:
        assert served.stop() == 0
    log = "".join(served.stderr)
    lines = log.splitlines()
    assert len(lines) == 3, log
    assert re.fullmatch(r"POST /v1/purchases/pur_demo_locker/refund 400 key=- \d+\.\dms", lines[2])
    assert "Traceback" not in log
    assert re.fullmatch(
        r"POST /v1/purchases/pur_demo_cup/refund 201 key=abcdefgh \d+\.\dms", lines[0]
    )
    assert re.fullmatch(r"POST /v1/purchases/pur_missing/refund 404 key=- \d+\.\dms", lines[1])
    assert DEMO_API_KEY not in log
    assert "Bearer" not in log
    assert "ijkl" not in log


def test_quiet_mutes_the_access_log() -> None:
    served = Served("--port", "0", "--quiet")
    try:
        assert served.post("pur_demo_cup", reason="deposit_reclaim").status_code == 201
    finally:
        assert served.stop() == 0
    assert served.stderr == []


def test_binding_beyond_loopback_warns() -> None:
    served = Served("--port", "0", "--host", "0.0.0.0", "--quiet")  # noqa: S104 - the point
    try:
        assert served.url.startswith("http://0.0.0.0:")
    finally:
        assert served.stop() == 0
    (warning,) = served.stderr
    assert warning.startswith("warning: listening on 0.0.0.0")
    assert "anyone who can reach this port" in warning


def test_loopback_does_not_warn() -> None:
    served = Served("--port", "0", "--quiet")
    assert served.stop() == 0
    assert served.stderr == []


@pytest.mark.parametrize("server_kind", ["stdlib", "uvicorn"])
def test_the_benchmark_command_line_rate_limits_and_answers(server_kind: str) -> None:
    served = Served(
        "--port", "0", "--quiet", "--rate-limit", "0.01", "--burst", "2", "--latency", "0.02",
        "--server", server_kind,
    )  # fmt: skip
    try:
        statuses = [served.post(f"pur_demo_{p}", reason="sold_out") for p in ("ticket", "beer")]
        refused = served.post("pur_demo_locker", reason="sold_out")
    finally:
        assert served.stop() == 0
    assert [r.status_code for r in statuses] == [201, 201]
    assert refused.status_code == 429
    assert refused.headers["retry-after"] == "100"
    assert refused.json()["detail"].startswith("Request was throttled.")


def test_no_retry_after_flag() -> None:
    served = Served("--port", "0", "--quiet", "--rate-limit", "0.01", "--burst", "1",
                    "--no-retry-after")  # fmt: skip
    try:
        served.post("pur_demo_ticket", reason="sold_out")
        refused = served.post("pur_demo_beer", reason="sold_out")
    finally:
        assert served.stop() == 0
    assert refused.status_code == 429
    assert "retry-after" not in refused.headers


def test_uvicorn_server_logs_access_too() -> None:
    served = Served("--port", "0", "--server", "uvicorn")
    try:
        assert served.post("pur_demo_cup", "abcdefghijkl", reason="deposit_reclaim").status_code
    finally:
        assert served.stop() == 0
    log = "".join(served.stderr)
    assert re.search(r"POST /v1/purchases/pur_demo_cup/refund 201 key=abcdefgh \d+\.\dms", log)
    assert DEMO_API_KEY not in log


def test_preo_sandbox_serve_is_the_same_command(free_port: socket.socket) -> None:
    port = free_port.getsockname()[1]
    preo = os.path.join(os.path.dirname(sys.executable), "preo")
    result = subprocess.run(
        [preo, "sandbox", "serve", "--port", str(port)],
        capture_output=True, text=True, timeout=WATCHDOG, check=False,
    )  # fmt: skip
    assert result.returncode == 2
    assert result.stderr.splitlines() == [
        f"error: cannot listen on 127.0.0.1:{port}: Address already in use"
    ]


def test_the_servers_answer_without_waiting_for_delayed_acks() -> None:
    """Regression: the status line, headers and body go out in separate writes; with Nagle's
    algorithm on, every answer waited for the client's delayed ACK (~40 ms a request)."""
    import socket

    from preo_client.testing._serve_command import listening_socket
    from preo_client.testing._server import _Handler

    assert _Handler.disable_nagle_algorithm is True
    # uvicorn mode binds its own socket: asyncio sets TCP_NODELAY only on IPPROTO_TCP sockets
    with listening_socket("127.0.0.1", 0) as sock:
        assert sock.proto == socket.IPPROTO_TCP


# -- every flavour: in-process, stdlib server, ASGI app, uvicorn -------------------------------

FLAVOURS = ["in-process", "in-process-async", "stdlib", "asgi", "uvicorn"]
Send = Callable[[str, bytes], httpx.Response]


@pytest.fixture(scope="module", params=FLAVOURS)
def flavour(request: pytest.FixtureRequest) -> Iterator[Send]:
    """``send(method, body)``: one request to the refund path of a demo sandbox, answered by
    the flavour under test (each answer bounded by the watchdog)."""
    headers = {"authorization": f"Bearer {DEMO_API_KEY}", "content-type": "application/json"}
    path = "/v1/purchases/pur_demo_locker/refund"
    kind = request.param
    if kind == "uvicorn":
        served = Served("--port", "0", "--quiet", "--server", "uvicorn", "--no-auto-purchases")
        try:
            with httpx.Client(base_url=served.url, timeout=WATCHDOG) as http:
                yield lambda method, body: http.request(method, path, content=body, headers=headers)
        finally:
            assert served.stop() == 0
        return
    if kind == "stdlib":
        with (
            serve(FakePreo.demo()) as running,
            httpx.Client(base_url=running.url, timeout=WATCHDOG) as http,
        ):
            yield lambda method, body: http.request(method, path, content=body, headers=headers)
        return
    fake = FakePreo.demo()
    if kind == "in-process":
        with httpx.Client(base_url="https://sandbox.test", transport=fake.transport()) as http:
            yield lambda method, body: http.request(method, path, content=body, headers=headers)
        return
    if kind == "in-process-async":
        transport: httpx.AsyncBaseTransport = fake.async_transport()
    else:
        transport = httpx.ASGITransport(asgi_app(fake))  # type: ignore[arg-type]

    def send_async(method: str, body: bytes) -> httpx.Response:
        async def go() -> httpx.Response:
            async with httpx.AsyncClient(base_url="http://sandbox.test", transport=transport) as h:
                response = await h.request(method, path, content=body, headers=headers)
                await response.aread()
                return response

        return asyncio.run(asyncio.wait_for(go(), WATCHDOG))

    yield send_async


METHODS = st.one_of(
    st.sampled_from(["GET", "PUT", "PATCH", "DELETE", "OPTIONS", "TRACE", "HEAD"]),
    st.from_regex(r"[A-Z]{3,12}", fullmatch=True).filter(lambda m: m not in {"POST", "CONNECT"}),
)


@settings(
    max_examples=15, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(method=METHODS)
def test_any_other_method_is_a_405_with_allow_post(
    flavour: Send, no_contract_request_check: None, method: str
) -> None:
    """RFC 9110 §15.5.6: a 405 carries ``Allow`` (Schemathesis ST204 flagged TRACE)."""
    response = flavour(method, b"")
    assert response.status_code == 405
    assert response.headers["allow"] == "POST"
    if method != "HEAD":  # a HEAD answer has no body
        assert method in response.json()["detail"]


def nested(depth: int, opener: str, inside_an_object: bool, closed: bool) -> bytes:
    """JSON nested ``depth`` levels (arrays or objects), optionally as the value of
    ``reason`` in a valid-looking object, closed or cut off."""
    open_, close = ("[", "]") if opener == "[" else ('{"a":', "}")
    text = open_ * depth + ("1" + close * depth if closed else "")
    if inside_an_object:
        text = '{"reason": ' + text + ("}" if closed else "")
    return text.encode()


@settings(
    max_examples=12, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(
    depth=st.integers(1_000, 150_000),
    opener=st.sampled_from(["[", "{"]),
    inside_an_object=st.booleans(),
    closed=st.booleans(),
)
def test_deeply_nested_json_is_a_json_400_not_a_dropped_connection(
    flavour: Send,
    no_contract_request_check: None,
    depth: int,
    opener: str,
    inside_an_object: bool,
    closed: bool,
) -> None:
    """Regression (repro round3/sandbox_deep_json_no_answer.py): nesting past the parser's
    recursion limit made json.loads raise RecursionError, and the server dropped the
    connection without an answer."""
    body = nested(depth, opener, inside_an_object, closed)
    assert len(body) <= 1024 * 1024  # within the body limit: the JSON itself is the problem
    response = flavour("POST", body)
    assert response.status_code == 400
    assert response.headers["content-type"] == "application/json"
    errors = response.json()  # DRF's shape: field -> messages (depth at the limit may parse)
    assert errors
    assert all(isinstance(m, list) and all(isinstance(s, str) for s in m) for m in errors.values())
    if depth > 5_000:  # far past any recursion limit: the parser gives up
        assert errors == {"non_field_errors": ["Invalid JSON body."]}
