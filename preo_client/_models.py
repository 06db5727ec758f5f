"""The refund a call returns: a thin typed view of the generated model, with the exact amount."""

from __future__ import annotations

import datetime
import json
import re
from decimal import Decimal
from typing import Any

import attrs
import httpx

from ._exceptions import APIResponseValidationError
from ._generated.models.refund_request import RefundRequest
from ._generated.models.refund_scope import RefundScope
from ._generated.models.refund_status import RefundStatus
from ._generated.types import Unset

__all__ = ["Refund", "parse_refund"]

_DECIMAL_TEXT = re.compile(r"-?\d+(?:\.\d+)?")


def _unset_to_none(value: Any) -> Any:
    return None if isinstance(value, Unset) else value


@attrs.frozen(eq=False)
class Refund:
    """A created refund request.

    Every field of the response is a property; ``amount`` is an exact ``Decimal``; a ``status``
    or ``scope`` this version does not know is kept as its raw string; fields the server added
    since are in ``extra``. ``model`` is the generated ``RefundRequest``; ``http_response`` is
    the raw response; ``replayed`` is true when the server answered from its idempotency store.
    """

    model: RefundRequest
    amount: Decimal
    idempotency_key: str
    request_id: str | None
    replayed: bool
    http_response: httpx.Response = attrs.field(repr=False)

    @property
    def id(self) -> str:
        return self.model.id

    @property
    def edition_id(self) -> str:
        return self.model.edition_id

    @property
    def requested_by(self) -> dict[str, Any]:
        return self.model.requested_by.to_dict()

    @property
    def pickup_point(self) -> dict[str, Any]:
        return self.model.pickup_point.to_dict()

    @property
    def created(self) -> datetime.datetime:
        return self.model.created

    @property
    def modified(self) -> datetime.datetime:
        return self.model.modified

    @property
    def can_approve(self) -> bool | str:
        return self.model.can_approve

    @property
    def can_reject(self) -> bool | str:
        return self.model.can_reject

    @property
    def organization(self) -> str | None:
        return _unset_to_none(self.model.organization)  # type: ignore[no-any-return]

    @property
    def scope(self) -> RefundScope | str | None:
        return _unset_to_none(self.model.scope)  # type: ignore[no-any-return]

    @property
    def status(self) -> RefundStatus | str | None:
        return _unset_to_none(self.model.status)  # type: ignore[no-any-return]

    @property
    def comment(self) -> str | None:
        return _unset_to_none(self.model.comment)  # type: ignore[no-any-return]

    @property
    def service_response(self) -> str | None:
        return _unset_to_none(self.model.service_response)  # type: ignore[no-any-return]

    @property
    def refund_date(self) -> datetime.datetime | None:
        value = _unset_to_none(self.model.refund_date)
        return value if isinstance(value, datetime.datetime) else None

    @property
    def extra(self) -> dict[str, Any]:
        """Fields the response carried that this version of the SDK does not know."""
        return dict(self.model.additional_properties)

    def __repr__(self) -> str:
        return (
            f"Refund(id={self.id!r}, amount={self.amount!r}, scope={_text(self.scope)!r}, "
            f"status={_text(self.status)!r}, request_id={self.request_id!r}, "
            f"replayed={self.replayed!r})"
        )


def _text(value: object) -> object:
    return getattr(value, "value", value)


def _exact_amount(value: object) -> Decimal:
    if isinstance(value, bool):
        raise TypeError("amount is a boolean")
    if isinstance(value, Decimal | int):
        amount = Decimal(value)
    elif isinstance(value, str) and _DECIMAL_TEXT.fullmatch(value.strip()):
        amount = Decimal(value.strip())
    else:
        raise TypeError(f"amount is not a number or decimal string: {value!r}")
    if not amount.is_finite():
        raise ValueError("amount is not finite")
    return amount


def parse_refund(
    response: httpx.Response,
    content: bytes,
    *,
    idempotency_key: str,
    request_id: str | None,
) -> Refund:
    """Parse a 2xx ``response`` into a :class:`Refund`, or raise APIResponseValidationError."""

    def invalid(reason: str) -> APIResponseValidationError:
        return APIResponseValidationError(
            f"Invalid refund response (status {response.status_code}, request id {request_id}): "
            f"{reason}. The refund was probably created; retry with "
            f"idempotency_key={idempotency_key!r} to read it back safely",
            response=response,
            body=content.decode("utf-8", errors="replace"),
            request_id=request_id,
            idempotency_key=idempotency_key,
        )

    content_type = response.headers.get("content-type", "")
    media_type = content_type.split(";", 1)[0].strip().lower()
    if media_type != "application/json" and not media_type.endswith("+json"):
        raise invalid(f"expected JSON, got content type {content_type or 'none'!r}")
    try:
        data = json.loads(content, parse_float=Decimal)
    except ValueError as exc:  # JSONDecodeError and UnicodeDecodeError are both ValueErrors
        raise invalid(f"body is not valid JSON ({exc})") from None
    if not isinstance(data, dict):
        raise invalid(f"expected a JSON object, got {type(data).__name__}")
    try:
        amount = _exact_amount(data["amount"])
        data["amount"] = float(amount)
        for name in ("id", "edition_id"):
            if not isinstance(data[name], str):
                raise TypeError(f"{name} is not a string")
        for name in ("requested_by", "pickup_point"):
            if not isinstance(data[name], dict):
                raise TypeError(f"{name} is not an object")
        model = RefundRequest.from_dict(data)
    except KeyError as exc:
        raise invalid(f"required field {exc.args[0]!r} is missing") from None
    except (TypeError, ValueError, AttributeError, OverflowError) as exc:
        raise invalid(str(exc) or type(exc).__name__) from None
    return Refund(
        model=model,
        amount=amount,
        idempotency_key=idempotency_key,
        request_id=request_id,
        replayed=response.headers.get("idempotent-replayed", "").lower() == "true",
        http_response=response,
    )
