"""A stateful in-memory Preo sandbox for tests, examples and the loopback server.

``FakePreo`` implements ``POST /v1/purchases/{id}/refund`` as one function
``handle(httpx.Request) -> httpx.Response``, running the same refund policy as the client.
Mount it as an httpx transport, a wired ``PreoClient``, or a real HTTP server on loopback
(``python -m preo_client.testing serve --port 8765``).
"""

from ._fake import DEMO_API_KEY, FakePreo, Fault, Purchase, RefundRecord
from ._refunds import make_refund
from ._server import SandboxServer, serve

__all__ = [
    "DEMO_API_KEY",
    "FakePreo",
    "Fault",
    "Purchase",
    "RefundRecord",
    "SandboxServer",
    "make_refund",
    "serve",
]
