"""Shared test helpers: canned responses and running sync or async clients alike."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Callable
from typing import Any

import httpx

from preo_client import AsyncPreoClient, Backoff, PreoClient, Refund

API = "https://api.preo.dev"
KEY = "sk_live_supersecret_1234567890"
NO_WAIT = Backoff(base=0, cap=0)


def refund_json(**overrides: Any) -> dict[str, Any]:
    body: dict[str, Any] = {
        "id": "rr_1",
        "edition_id": "ed_2026",
        "amount": 12.5,
        "requested_by": {"id": "usr_1"},
        "pickup_point": {"id": "pp_1"},
        "created": "2026-07-04T18:22:11Z",
        "modified": "2026-07-04T18:22:11Z",
        "can_approve": "true",
        "can_reject": "true",
        "organization": "org_1",
        "scope": "purchase_custom",
        "status": "requested",
        "comment": "",
        "service_response": None,
        "refund_date": None,
    }
    body.update(overrides)
    return body


def created(body: dict[str, Any] | None = None, **headers: str) -> httpx.Response:
    return httpx.Response(
        201,
        content=json.dumps(body if body is not None else refund_json()).encode(),
        headers={"content-type": "application/json", "x-request-id": "req_abc", **headers},
    )


class Runner:
    """Runs ``purchases.refund`` on a sync or an async client with the same arguments."""

    def __init__(self, kind: str) -> None:
        self.kind = kind

    def client(self, **options: Any) -> PreoClient | AsyncPreoClient:
        options.setdefault("api_key", KEY)
        options.setdefault("backoff", NO_WAIT)
        return PreoClient(**options) if self.kind == "sync" else AsyncPreoClient(**options)

    def refund(
        self, purchase_id: str, *, options: dict[str, Any] | None = None, **kw: Any
    ) -> Refund:
        client = self.client(**(options or {}))
        if isinstance(client, PreoClient):
            with client:
                return client.purchases.refund(purchase_id, **kw)

        async def go(client: AsyncPreoClient) -> Refund:
            async with client:
                return await client.purchases.refund(purchase_id, **kw)

        return asyncio.run(go(client))

    def call(self, fn: Callable[[Any], Any], client: PreoClient | AsyncPreoClient) -> Any:
        """Run ``fn(client.purchases)``; awaits the result for an async client."""
        result = fn(client.purchases)
        if self.kind == "async":
            return asyncio.run(result)
        return result
