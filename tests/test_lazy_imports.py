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
