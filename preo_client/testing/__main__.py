"""``python -m preo_client.testing serve --port 8765``: run the demo sandbox on loopback."""

from __future__ import annotations

import argparse
import time

from ._fake import DEMO_API_KEY, FakePreo
from ._server import serve


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m preo_client.testing")
    commands = parser.add_subparsers(dest="command", required=True)
    run = commands.add_parser("serve", help="serve the demo sandbox on loopback")
    run.add_argument("--port", type=int, default=8765, help="TCP port (0 picks a free one)")
    run.add_argument("--host", default="127.0.0.1", help="loopback address to bind")
    run.add_argument("--api-key", default=DEMO_API_KEY, help="bearer token the sandbox accepts")
    args = parser.parse_args(argv)
    fake = FakePreo.demo(api_key=args.api_key)
    server = serve(fake, host=args.host, port=args.port)
    print(f"Preo sandbox listening on {server.url}", flush=True)
    print(f"  PREO_BASE_URL={server.url} PREO_API_KEY={args.api_key}", flush=True)
    print(f"  demo purchases: {', '.join(fake.purchases)}", flush=True)
    try:
        while True:
            time.sleep(3600)
    except KeyboardInterrupt:
        server.close()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
