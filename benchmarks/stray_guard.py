"""Cost of checking the pools before every attempt (``_stray.guard_pools``), as a share of one
refund over loopback keep-alive (a raw-socket server answering a canned 201 at once).

Rounds are interleaved; each ratio is taken within a round. The guard runs on the client's
real pool (one idle connection), and on the same pool padded to 100 connections (the walk
over a large bulk run's pool).
"""

from __future__ import annotations

import socket
import statistics
import threading
import time
from typing import Any

from benchmarks._common import API_KEY, BODY, table
from preo_client import Backoff, PreoClient
from preo_client._stray import guard_pools

ANSWER = (
    b"HTTP/1.1 201 Created\r\nContent-Type: application/json\r\nContent-Length: %d\r\n\r\n"
    % len(BODY)
) + BODY


def serve(listener: socket.socket) -> None:
    while True:
        try:
            conn, _ = listener.accept()
        except OSError:
            return
        threading.Thread(target=answer_all, args=(conn,), daemon=True).start()


def answer_all(conn: socket.socket) -> None:
    buf = b""
    with conn:
        while True:
            while b"\r\n\r\n" not in buf:
                data = conn.recv(65536)
                if not data:
                    return
                buf += data
            head, _, rest = buf.partition(b"\r\n\r\n")
            length = next(
                int(line.split(b":", 1)[1])
                for line in head.split(b"\r\n")
                if line.lower().startswith(b"content-length:")
            )
            while len(rest) < length:
                rest += conn.recv(65536)
            buf = rest[length:]
            conn.sendall(ANSWER)


def per_call(fn: Any, count: int) -> float:
    started = time.perf_counter()
    for _ in range(count):
        fn()
    return (time.perf_counter() - started) / count


def main() -> None:
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(16)
    threading.Thread(target=serve, args=(listener,), daemon=True).start()
    url = f"http://127.0.0.1:{listener.getsockname()[1]}"
    client = PreoClient(api_key=API_KEY, base_url=url, max_retries=0, backoff=Backoff(0, 0))
    padded = PreoClient(api_key=API_KEY, base_url=url)
    pool = padded._http._transport._pool  # type: ignore[attr-defined]
    filler = type("Conn", (), {"_preo_stray_guard": True})
    pool._connections.extend(filler() for _ in range(100))

    def refund() -> None:
        client.purchases.refund("pur_1", reason="sold_out")

    refund()
    rows: dict[str, list[float]] = {"1 connection": [], "100 connections": []}
    for _ in range(7):
        call = per_call(refund, 200)
        rows["1 connection"].append(per_call(lambda: guard_pools(client._http), 2000) / call)
        rows["100 connections"].append(per_call(lambda: guard_pools(padded._http), 2000) / call)
    print(
        table(
            "guard_pools per attempt, as a share of one loopback refund (median, min-max)",
            ["pool", "ratio"],
            [
                [name, f"{statistics.median(r):.4f} ({min(r):.4f}-{max(r):.4f})"]
                for name, r in rows.items()
            ],
        )
    )
    client.close()
    listener.close()


if __name__ == "__main__":
    main()
