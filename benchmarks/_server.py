"""A fast sandbox server for the bulk benchmark: FakePreo as raw ASGI under uvicorn."""

from __future__ import annotations

import argparse
import socket

import uvicorn

from preo_client.testing import FakePreo
from preo_client.testing._asgi import asgi_app


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--port", type=int, default=0)
    args = parser.parse_args()
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM, socket.IPPROTO_TCP)  # TCP_NODELAY
    sock.bind(("127.0.0.1", args.port))
    print(sock.getsockname()[1], flush=True)
    fake = FakePreo(auto_purchases=True, keep_history=False)
    config = uvicorn.Config(
        asgi_app(fake), log_level="warning", access_log=False, lifespan="off",
        backlog=4096, timeout_keep_alive=30,
    )  # fmt: skip
    uvicorn.Server(config).run(sockets=[sock])


if __name__ == "__main__":
    main()
