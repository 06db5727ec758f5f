"""Idempotency keys: minted once per call, checked when given, derived from a business reference."""

from __future__ import annotations

import re
import uuid
from typing import Final

from ._exceptions import RefundValidationError

__all__ = ["check_idempotency_key", "idempotency_key_for", "new_idempotency_key"]

_KEY: Final = re.compile(r"[\x21-\x7e]{1,255}")
# A fixed namespace, so the same (purchase id, reference) gives the same key in any process.
_NAMESPACE: Final = uuid.UUID("6f1c2f64-3f5e-4b8e-9a57-5d1f0c0de001")


def new_idempotency_key() -> str:
    """A fresh random key (UUID4) for one refund call."""
    return str(uuid.uuid4())


def check_idempotency_key(key: object) -> str:
    """Return ``key`` unchanged if it is 1-255 visible ASCII characters, else raise."""
    if isinstance(key, str) and _KEY.fullmatch(key):
        return key
    raise RefundValidationError(
        "idempotency_key",
        "must be 1-255 visible ASCII characters (no spaces or control characters)",
    )


def idempotency_key_for(purchase_id: str, reference: str) -> str:
    """A deterministic key for refunding ``purchase_id`` for business ``reference``.

    A process that restarts and asks again for the same refund (same purchase, same reference,
    e.g. a support ticket or a cancellation batch id) sends the same key, so a server that
    honours ``Idempotency-Key`` cannot create it twice.
    """
    if not isinstance(purchase_id, str) or not isinstance(reference, str) or not reference:
        raise RefundValidationError(
            "reference", "purchase_id and reference must be non-empty strings"
        )
    return f"preo-{uuid.uuid5(_NAMESPACE, purchase_id + chr(0) + reference)}"
