"""Idempotency keys: minted once per call, checked when given, derived from a business reference."""

from __future__ import annotations

import hashlib
import os
import re
from typing import Final

from ._exceptions import RefundValidationError

__all__ = ["check_idempotency_key", "idempotency_key_for", "new_idempotency_key"]

_KEY: Final = re.compile(r"[\x21-\x7e]{1,255}")
# A fixed namespace, so the same (purchase id, reference) gives the same key in any process.
_NAMESPACE: Final = bytes.fromhex("6f1c2f643f5e4b8e9a575d1f0c0de001")
# The version and variant bits of an RFC 9562 UUID, in its 128-bit integer.
_VERSION_AND_VARIANT: Final = (0xF000 << 64) | (0xC000 << 48)


def _uuid_text(raw: bytes, version: int) -> str:
    """``str(uuid.UUID(bytes=raw[:16], version=version))``, without the ``uuid`` module (which
    loads ``platform`` on import: `import preo_client` stays cheaper)."""
    number = int.from_bytes(raw[:16], "big") & ~_VERSION_AND_VARIANT
    h = f"{number | version << 76 | 0x8000 << 48:032x}"
    return f"{h[:8]}-{h[8:12]}-{h[12:16]}-{h[16:20]}-{h[20:]}"


def new_idempotency_key() -> str:
    """A fresh random key (UUID4) for one refund call."""
    return _uuid_text(os.urandom(16), 4)


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

    Raises :class:`RefundValidationError` naming the argument that is not text (a
    ``reference`` must also be non-empty) or holds a lone surrogate.

    A process that restarts and asks again for the same refund (same purchase, same reference,
    e.g. a support ticket or a cancellation batch id) sends the same key, so a server that
    honours ``Idempotency-Key`` cannot create it twice.
    """
    if not isinstance(purchase_id, str):
        raise RefundValidationError(
            "purchase_id", f"must be a string, not {type(purchase_id).__name__}"
        )
    if not isinstance(reference, str) or not reference:
        raise RefundValidationError("reference", "must be a non-empty string")
    try:  # as uuid.uuid5(namespace, name)
        name = (purchase_id + chr(0) + reference).encode()
    except UnicodeEncodeError as exc:  # a lone surrogate (read with errors="surrogateescape")
        field = "purchase_id" if exc.start < len(purchase_id) else "reference"
        raise RefundValidationError(
            field, "must be valid Unicode text (it holds a lone surrogate)"
        ) from None
    return f"preo-{_uuid_text(hashlib.sha1(_NAMESPACE + name, usedforsecurity=False).digest(), 5)}"
