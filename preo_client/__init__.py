"""preo-client: typed Python SDK for the Preo refund API (``POST /v1/purchases/{id}/refund``)."""

from typing import TYPE_CHECKING, Any

from ._amounts import MAX_AMOUNT
from ._client import AsyncPreoClient, PreoClient
from ._config import NOT_GIVEN, ClientSettings, NotGiven
from ._exceptions import (
    APIConnectionError,
    APIConnectionOutcomeUnknownError,
    APIError,
    APIResponseValidationError,
    APIResponseValidationOutcomeUnknownError,
    APIStatusError,
    APIStatusOutcomeUnknownError,
    APITimeoutError,
    APITimeoutOutcomeUnknownError,
    AuthenticationError,
    AuthenticationOutcomeUnknownError,
    BadRequestError,
    BadRequestOutcomeUnknownError,
    ConfigurationError,
    ConflictError,
    ConflictOutcomeUnknownError,
    InternalServerError,
    InternalServerOutcomeUnknownError,
    NotFoundError,
    NotFoundOutcomeUnknownError,
    PermissionDeniedError,
    PermissionDeniedOutcomeUnknownError,
    PreoError,
    RateLimitError,
    RateLimitOutcomeUnknownError,
    RefundOutcomeUnknownError,
    RefundValidationError,
    UnprocessableEntityError,
    UnprocessableEntityOutcomeUnknownError,
)
from ._idempotency import idempotency_key_for
from ._models import PickupPoint, Refund, StaffUser
from ._policy import POLICY, REASONS, SCOPES, Reason, RefundPlan, Scope, plan_refund
from ._retry import Backoff
from ._version import __version__

if TYPE_CHECKING:
    from ._aiohttp import AiohttpTransport
    from ._bulk import (
        AsyncBulkRun,
        BulkRun,
        BulkSummary,
        CoveringRefundUnknownError,
        ItemFailedError,
        RefundItem,
        RefundOutcome,
    )
    from ._generated.models.refund_reason import RefundReason
    from ._generated.models.refund_scope import RefundScope
    from ._generated.models.refund_status import RefundStatus
    from ._journal import JournalError
    from ._journal_reader import JournalRecord, read_journal
    from ._pacing import AdaptivePacer

# Loaded on first use, so that a plain `import preo_client` stays cheap.
_LAZY = {
    "AiohttpTransport": "._aiohttp",
    "AdaptivePacer": "._pacing",
    "AsyncBulkRun": "._bulk",
    "BulkRun": "._bulk",
    "BulkSummary": "._bulk",
    "CoveringRefundUnknownError": "._bulk",
    "ItemFailedError": "._bulk",
    "JournalError": "._journal",
    "JournalRecord": "._journal_reader",
    "read_journal": "._journal_reader",
    "RefundItem": "._bulk",
    "RefundOutcome": "._bulk",
    "RefundReason": "._generated.models.refund_reason",
    "RefundScope": "._generated.models.refund_scope",
    "RefundStatus": "._generated.models.refund_status",
}


def __getattr__(name: str) -> Any:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'preo_client' has no attribute {name!r}")
    import importlib

    value = getattr(importlib.import_module(module, __name__), name)
    if isinstance(value, type) and value.__module__.startswith("preo_client."):
        value.__module__ = __name__  # shows (and pickles) as preo_client.X
    return value


__all__ = [
    "MAX_AMOUNT",
    "NOT_GIVEN",
    "POLICY",
    "REASONS",
    "SCOPES",
    "APIConnectionError",
    "APIConnectionOutcomeUnknownError",
    "APIError",
    "APIResponseValidationError",
    "APIResponseValidationOutcomeUnknownError",
    "APIStatusError",
    "APIStatusOutcomeUnknownError",
    "APITimeoutError",
    "APITimeoutOutcomeUnknownError",
    "AdaptivePacer",
    "AiohttpTransport",
    "AsyncBulkRun",
    "AsyncPreoClient",
    "AuthenticationError",
    "AuthenticationOutcomeUnknownError",
    "Backoff",
    "BadRequestError",
    "BadRequestOutcomeUnknownError",
    "BulkRun",
    "BulkSummary",
    "ClientSettings",
    "ConfigurationError",
    "ConflictError",
    "ConflictOutcomeUnknownError",
    "CoveringRefundUnknownError",
    "InternalServerError",
    "InternalServerOutcomeUnknownError",
    "ItemFailedError",
    "JournalError",
    "JournalRecord",
    "NotFoundError",
    "NotFoundOutcomeUnknownError",
    "NotGiven",
    "PermissionDeniedError",
    "PermissionDeniedOutcomeUnknownError",
    "PickupPoint",
    "PreoClient",
    "PreoError",
    "RateLimitError",
    "RateLimitOutcomeUnknownError",
    "Reason",
    "Refund",
    "RefundItem",
    "RefundOutcome",
    "RefundOutcomeUnknownError",
    "RefundPlan",
    "RefundReason",
    "RefundScope",
    "RefundStatus",
    "RefundValidationError",
    "Scope",
    "StaffUser",
    "UnprocessableEntityError",
    "UnprocessableEntityOutcomeUnknownError",
    "__version__",
    "idempotency_key_for",
    "plan_refund",
    "read_journal",
]

# Exported classes show (and pickle) as `preo_client.X`, like httpx's do.
for _name in __all__:
    _value = globals().get(_name)
    if callable(_value) and getattr(_value, "__module__", "").startswith("preo_client."):
        _value.__module__ = __name__
del _name, _value
