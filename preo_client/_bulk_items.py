"""Bulk items: the RefundItem value, its canonical request, its key, identity and group. Pure."""

from __future__ import annotations

import hashlib
import json
import unicodedata
import uuid
from decimal import Decimal
from typing import Final

import attrs

from ._exceptions import PreoError, RefundOutcomeUnknownError, RefundValidationError, truncate
from ._policy import (
    MAX_ID_LENGTH,
    check_comment,
    check_pickup_point_id,
    check_purchase_id,
    plan_refund,
)

__all__ = [
    "TRANSACTION_HINT",
    "CoveringRefundUnknownError",
    "InvalidItem",
    "ItemFailedError",
    "Ordinals",
    "RefundItem",
    "bulk_idempotency_key",
    "canonical_request",
    "group_of_request",
    "transaction_request",
]

_KEY_NAMESPACE: Final = uuid.UUID("0d7c5b8e-1f5a-4c43-9a0e-7b2f8c1e5a11")
_TEXT_FIELDS: Final = ("comment", "pickup_point_id", "reference", "transaction_id")
TRANSACTION_HINT: Final = (
    "this purchase's transaction may already have been refunded by another row of this run "
    "(transaction scopes refund every purchase of the transaction); give each row its "
    "transaction_id so one request is sent per transaction and the others are reported as covered"
)


@attrs.frozen
class RefundItem:
    """One refund of a bulk run (frozen). Every field but ``purchase_id`` is optional:

    - ``purchase_id``: the purchase to refund.
    - ``reason`` / ``scope``: as for ``client.purchases.refund``; None falls back to the
      run's common ``reason`` / ``scope`` (a scope left out is derived from the reason).
    - ``amount``: for the custom scopes only: a ``Decimal``, ``int`` or decimal ``str``
      (exact; at most two decimal places).
    - ``comment``: free text sent with the refund; ``pickup_point_id``: the pickup point
      where the refund is processed.
    - ``reference``: a business id (e.g. an order line) that makes the idempotency key
      reproducible from the item alone: the same reference and request (and its ordinal among
      identical rows) send the same key in any run, at any position.
    - ``transaction_id``: the purchase's transaction. With a transaction scope, one request
      is sent per transaction and transaction request (reason, scope, amount), whatever the
      rows' reference, comment or pickup point: the first such row's (its text and key), and
      the run's other items of it are reported as covered (``RefundOutcome.covered_by``). A
      row asking its transaction for another transaction request (amount, reason or scope)
      is refused: an in-memory input before anything is sent.
    """

    purchase_id: str
    reason: str | None = None
    scope: str | None = None
    amount: Decimal | int | str | None = None
    comment: str | None = None
    pickup_point_id: str | None = None
    reference: str | None = None
    transaction_id: str | None = None


@attrs.frozen
class InvalidItem:
    """An input row that could not become a :class:`RefundItem` (reported, never sent)."""

    where: str
    problem: str


class ItemFailedError(PreoError):
    """An unexpected error while handling one item (``.original``); the run goes on."""

    def __init__(self, original: BaseException) -> None:
        super().__init__(f"{type(original).__name__}: {truncate(str(original), 300)}")
        self.original = original


class CoveringRefundUnknownError(RefundOutcomeUnknownError):
    """The refund of this item's transaction (sent for another item) has an unknown outcome:
    this purchase may be refunded by it. Nothing was sent for this item; a resume resends that
    refund with its key."""

    def __init__(self, leader: int) -> None:
        super().__init__(
            f"the refund of this purchase's transaction (sent for item {leader + 1}) has an "
            "unknown outcome; nothing was sent for this item: resume with the same journal"
        )
        self.leader = leader


def _check_transaction_id(transaction_id: str) -> None:
    """A transaction id is matched exactly: ``" tx1"`` and ``"tx1"`` would be two groups (two
    refunds of one transaction), so the forms a sheet can hide are refused, as for purchase
    ids: empty, whitespace anywhere (no-break spaces included), control characters."""
    if not transaction_id:
        raise RefundValidationError("transaction_id", "must not be empty (leave it out instead)")
    if len(transaction_id) > MAX_ID_LENGTH:
        raise RefundValidationError(
            "transaction_id",
            f"must be at most {MAX_ID_LENGTH} characters, got {len(transaction_id)}",
        )
    if any(c.isspace() or unicodedata.category(c).startswith("C") for c in transaction_id):
        raise RefundValidationError(
            "transaction_id",
            f"{transaction_id!r} must not contain whitespace or control characters (a space "
            "before or after the id would make it another transaction)",
        )


def canonical_request(item: RefundItem) -> str:
    """The item's identity as exact text: the request it sends (scope derived, amount to the
    cent), its reference and, when set, its ``transaction_id`` (which decides what its
    transaction-scope request covers, so a resume may not change it). Raises
    :class:`RefundValidationError` for an invalid item."""
    check_purchase_id(item.purchase_id)
    check_comment(item.comment)
    check_pickup_point_id(item.pickup_point_id)
    for name in _TEXT_FIELDS:
        if not isinstance(getattr(item, name), str | None):
            raise RefundValidationError(name, "must be a string")
    if item.transaction_id is not None:
        _check_transaction_id(item.transaction_id)
    if item.reason is None:
        raise RefundValidationError("reason", "is required (per item or for the run)")
    plan = plan_refund(item.reason, item.scope, item.amount)
    amount = None if plan.amount is None else f"{plan.amount.quantize(Decimal('0.01')):f}"
    request = {
        "purchase_id": item.purchase_id,
        "reason": str(plan.reason),
        "scope": str(plan.scope),
        "amount": amount,
        "comment": item.comment,
        "pickup_point_id": item.pickup_point_id,
        "reference": item.reference,
    }
    if item.transaction_id is not None:  # absent when unset: identities without one unchanged
        request["transaction_id"] = item.transaction_id
    return json.dumps(request, sort_keys=True, separators=(",", ":"))  # ASCII: \ud83d escaped


def bulk_idempotency_key(run_id: str, ordinal: int, canonical: str, reference: str | None) -> str:
    """The key of a bulk item, unique to its identity (its canonical request, ``transaction_id``
    included, and its ``ordinal`` among identical requests of the input, 0 for the first): from
    its ``reference``, request and ordinal alone when it has a reference (any run, any position
    sends the same key), else from the run id too. Never its position, so inserting, removing or
    reordering other rows changes no key; two rows differing only by ``transaction_id``, and two
    identical rows with one reference, are two items with two keys. (The first of a request
    without ``transaction_id`` keeps the key earlier versions gave it.)"""
    if reference:
        name = f"ref\0{canonical}" if ordinal == 0 else f"ref\0{ordinal}\0{canonical}"
    else:
        name = f"item\0{run_id}\0{ordinal}\0{canonical}"
    return f"preo-{uuid.uuid5(_KEY_NAMESPACE, name)}"


def transaction_request(canonical: str) -> tuple[str, str, str, str | None] | None:
    """The transaction request of a transaction-scope item with a ``transaction_id``:
    (transaction, reason, scope, amount); None for any other item."""
    if '"transaction_id":' not in canonical or '"scope":"transaction_' not in canonical:
        return None
    request = json.loads(canonical)
    amount = request.get("amount")
    return (
        str(request["transaction_id"]),
        str(request["reason"]),
        str(request["scope"]),
        None if amount is None else str(amount),
    )


def group_of_request(canonical: str) -> str | None:
    """The transaction group of an item: its transaction and the transaction's request
    (reason, scope, amount), whatever its purchase, reference, comment or pickup point (one
    request refunds the whole transaction), as a digest; None outside any group."""
    wanted = transaction_request(canonical)
    if wanted is None:
        return None
    text = json.dumps(list(wanted), separators=(",", ":"))
    return hashlib.sha256(text.encode("ascii")).hexdigest()


class Ordinals:
    """Each canonical request's ordinal among the identical requests read so far (the second
    of two identical rows is a second item). Remembers a 16-byte digest per distinct request."""

    def __init__(self) -> None:
        self._seen: dict[bytes, int] = {}

    def next(self, canonical: str) -> int:
        """The ordinal of this occurrence of ``canonical`` (0 for the first)."""
        digest = hashlib.blake2b(canonical.encode("utf-8", "surrogatepass"), digest_size=16)
        name = digest.digest()
        ordinal = self._seen.get(name, -1) + 1
        self._seen[name] = ordinal
        return ordinal
