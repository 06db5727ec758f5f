"""``make_refund``: a :class:`~preo_client.Refund` for partner tests, built like an answer."""

from __future__ import annotations

import datetime
import uuid
from decimal import Decimal
from typing import Any

from .._models import Refund

__all__ = ["make_refund"]


def make_refund(
    *,
    idempotency_key: str = "key_test",
    request_id: str | None = "req_test",
    replayed: bool = False,
    **fields: Any,
) -> Refund:
    """A refund as the sandbox answers it, with ``fields`` replacing its values.

    Every documented field has a value (``id`` a fresh ``rr_…``, ``amount`` ``Decimal('10.00')``,
    ``scope`` ``purchase_full``, ``status`` ``requested``, ``created`` / ``modified`` now, ...);
    pass any field to set it (``amount="12.50"``, ``status="approved"``, an unknown field for
    ``extra``), or ``None``. The body is read by ``Refund.from_dict``, the same parser as an
    answer: a value not of its documented type is kept raw and listed in ``invalid_fields``.
    ``idempotency_key``, ``request_id`` and ``replayed`` set how it "came back".
    """
    now = datetime.datetime.now(datetime.timezone.utc).replace(microsecond=0)
    body: dict[str, Any] = {
        "id": f"rr_{uuid.uuid4().hex[:16]}",
        "edition_id": "ed_sandbox",
        "amount": Decimal("10.00"),
        "requested_by": {"id": "usr_sandbox", "name": "Sandbox staff"},
        "pickup_point": {"id": "pp_sandbox", "name": "Sandbox desk"},
        "created": now,
        "modified": now,
        "can_approve": "true",
        "can_reject": "true",
        "organization": None,
        "scope": "purchase_full",
        "status": "requested",
        "comment": "",
        "service_response": None,
        "refund_date": None,
    }
    body.update(fields)
    return Refund.from_dict(
        body, idempotency_key=idempotency_key, request_id=request_id, replayed=replayed
    )
