"""`import preo_client` loads only the core: bulk, CLI, sandbox, the generated models and their
dependencies (attrs, dateutil) and asyncio load on first use. (Import *time* is measured by
benchmarks/imports.py, not asserted here.)"""

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
]


def loaded_after(code: str) -> set[str]:
    probe = f"import sys; {code}; import json; print(json.dumps(sorted(sys.modules)))"
    out = subprocess.run(
        [sys.executable, "-c", probe], capture_output=True, text=True, check=True
    ).stdout
    return set(json.loads(out))


def test_import_loads_only_the_core() -> None:
    loaded = loaded_after("import preo_client")
    assert "preo_client._client" in loaded
    assert [m for m in LAZY if m in loaded] == []


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
