"""`import preo_client` loads only the core: bulk, CLI, sandbox, the generated models and their
dependencies (attrs, dateutil), asyncio, httpcore (and h11 under it) and uuid load on first use.
(Import *time* is measured by benchmarks/imports.py, not asserted here.)"""

from __future__ import annotations

import json
import subprocess
import sys

LAZY = [
    "asyncio",
    "attrs",
    "dateutil",
    "concurrent.futures",
    # (click and rich are not listed: httpx itself imports them when they are installed)
    "aiohttp",
    "preo_client._bulk",
    "preo_client._cli",
    "preo_client._aiohttp",
    "preo_client._generated.models.refund_request",
    "preo_client.testing",
    "opentelemetry",
    "preo_client._otel",
    # httpx itself loads httpcore only when a transport is built: so does the SDK (the attempt
    # deadline's network backend and the stray-bytes guard need it once a client exists).
    "httpcore",
    "h11",
    "uuid",  # loads platform on import; keys are made from os.urandom / hashlib
]


def printed_by(probe: str) -> str:
    """What ``probe`` prints in a fresh interpreter."""
    return subprocess.run(
        [sys.executable, "-c", probe], capture_output=True, text=True, check=True, timeout=120
    ).stdout


def loaded_after(code: str) -> set[str]:
    probe = f"import sys; {code}; import json; print(json.dumps(sorted(sys.modules)))"
    return set(json.loads(printed_by(probe)))


# As installed without the cli extra: httpx imports click and rich when it can (httpx._main),
# and click loads uuid; hidden here, what `import preo_client` itself loads is what is seen.
WITHOUT_CLI = "sys.modules.update(click=None, rich=None)"


def test_import_loads_only_the_core() -> None:
    loaded = loaded_after(f"{WITHOUT_CLI}; import preo_client")
    assert "preo_client._client" in loaded
    assert [m for m in LAZY if m in loaded] == []


def test_a_built_client_has_httpcore_and_bounds_its_attempts() -> None:
    """Deferring httpcore changes nothing once a client exists: the SDK's own HTTP clients get
    the deadline backend on every pool, sync, and their pools are guarded against stray bytes."""
    probe = (
        "import sys, preo_client; assert 'httpcore' not in sys.modules; "
        "c = preo_client.PreoClient(api_key='sk_test_1'); "
        "pool = c._http._transport._pool; "
        "print(type(pool._network_backend).__name__, pool._preo_stray_guard, "
        "'httpcore' in sys.modules, 'h11' in sys.modules)"
    )
    assert printed_by(probe).split() == ["_DeadlineBackend", "True", "True", "True"]


def test_a_client_on_a_mock_transport_still_guards_its_pools_when_one_appears() -> None:
    """With a transport that needs no httpcore, building the client loads it (the guard's pool
    types), and a pool reachable later is still found."""
    probe = (
        "import sys, httpx, preo_client\n"
        "from preo_client._stray import reachable_pools\n"
        "mock = httpx.Client(transport=httpx.MockTransport(lambda r: httpx.Response(204)))\n"
        "preo_client.PreoClient(api_key='sk_test_1', http_client=mock)\n"
        "print('httpcore' in sys.modules, len(reachable_pools(httpx.Client())[0]))\n"
    )
    assert printed_by(probe).split() == ["True", "1"]


def test_lazy_names_resolve_on_first_use() -> None:
    loaded = loaded_after(
        "import preo_client; preo_client.RefundItem; preo_client.RefundScope.PURCHASE_FULL"
    )
    assert "preo_client._bulk" in loaded
    assert "preo_client._generated.models.refund_scope" in loaded
    assert "preo_client._cli" not in loaded


REFUND = """
import httpx, preo_client
def answer(request):
    return httpx.Response(201, json={"id": "rr_1", "amount": "1.00"})
http = httpx.Client(transport=httpx.MockTransport(answer))
preo_client.PreoClient(api_key="sk_test_1", http_client=http).purchases.refund(
    "pur_1", reason="sold_out"
)
"""


def test_a_refund_call_without_opentelemetry_in_use_imports_none_of_it() -> None:
    """Installed (the dev extra has it) but not imported by the application: nothing of it is
    imported, logging on or off."""
    loaded = loaded_after(f"exec({REFUND!r})")
    assert "preo_client._observe" in loaded
    assert not any(m == "opentelemetry" or m.startswith("opentelemetry.") for m in loaded)
    assert "preo_client._otel" not in loaded
    logged = loaded_after(f"import logging; logging.basicConfig(level=10); exec({REFUND!r})")
    assert "preo_client._otel" not in logged
    assert "opentelemetry" not in logged


def test_the_bridge_loads_once_the_application_uses_opentelemetry() -> None:
    loaded = loaded_after(f"import opentelemetry.trace; exec({REFUND!r})")
    assert "preo_client._otel" in loaded
