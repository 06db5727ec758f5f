"""The refund a call returns: a thin typed view of the generated model, with the exact amount.

The answer is checked eagerly (every required field present and of the documented type, the
date-times parseable, the amount exact), so a bad answer fails the call itself. The generated
``RefundRequest`` is then built on first use of a field that needs it, which keeps its date
parsing off the hot path of a call whose result is only counted.
"""

from __future__ import annotations

import datetime
import functools
import json
import re
import sys
from decimal import Decimal
from typing import TYPE_CHECKING, Any, Final

import httpx

from ._exceptions import APIResponseValidationError

if TYPE_CHECKING:
    from ._generated.models.refund_request import RefundRequest
    from ._generated.models.refund_scope import RefundScope
    from ._generated.models.refund_status import RefundStatus

__all__ = ["Refund", "parse_refund"]

_JSON: Final = json.JSONDecoder(
    parse_float=Decimal
)  # one decoder: exact amounts, no per-call setup
_DECIMAL_TEXT: Final = re.compile(r"-?\d+(?:\.\d+)?")


@functools.cache
def _required() -> frozenset[str]:
    """The generated model's required fields: those its constructor needs a value for."""
    import attrs

    from ._generated.models.refund_request import RefundRequest

    return frozenset(
        f.name for f in attrs.fields(RefundRequest) if f.init and f.default is attrs.NOTHING
    )


_OPTIONAL_TEXT: Final = ("organization", "scope", "status", "comment", "service_response")
_NULLABLE: Final = frozenset({"organization", "service_response"})


def _unset_to_none(value: Any) -> Any:
    from ._generated.types import Unset

    return None if isinstance(value, Unset) else value


def parse_datetime(text: object) -> datetime.datetime:
    """An ISO 8601 date-time: the fast standard parser first, dateutil for the rest."""
    if not isinstance(text, str):
        raise TypeError(f"expected a date-time string, got {type(text).__name__}")
    try:
        if sys.version_info < (3, 11) and text.endswith(("Z", "z")):
            text = text[:-1] + "+00:00"
        return datetime.datetime.fromisoformat(text)
    except ValueError:
        from dateutil.parser import isoparse  # the rarer forms the standard parser refuses

        return isoparse(text)


class Refund:
    """A created refund request.

    Every field of the response is a property; ``amount`` is an exact ``Decimal``; a ``status``
    or ``scope`` this version does not know is kept as its raw string; fields the server added
    since are in ``extra``. ``model`` is the generated ``RefundRequest``; ``http_response`` is
    the raw response; ``replayed`` is true when the server answered from its idempotency store.
    """

    __slots__ = (
        "_data",
        "_model",
        "amount",
        "created",
        "http_response",
        "idempotency_key",
        "modified",
        "replayed",
        "request_id",
    )

    def __init__(
        self,
        data: dict[str, Any],
        *,
        amount: Decimal,
        created: datetime.datetime,
        modified: datetime.datetime,
        idempotency_key: str,
        request_id: str | None,
        replayed: bool,
        http_response: httpx.Response,
    ) -> None:
        self._data = data
        self._model: RefundRequest | None = None
        self.amount = amount
        self.created = created
        self.modified = modified
        self.idempotency_key = idempotency_key
        self.request_id = request_id
        self.replayed = replayed
        self.http_response = http_response

    @property
    def model(self) -> RefundRequest:
        """The generated ``RefundRequest`` (its ``amount`` is the float of :attr:`amount`)."""
        if self._model is None:
            from ._generated.models.refund_request import RefundRequest

            self._model = RefundRequest.from_dict({**self._data, "amount": float(self.amount)})
        return self._model

    @property
    def id(self) -> str:
        value: str = self._data["id"]
        return value

    @property
    def edition_id(self) -> str:
        value: str = self._data["edition_id"]
        return value

    @property
    def requested_by(self) -> dict[str, Any]:
        return self.model.requested_by.to_dict()

    @property
    def pickup_point(self) -> dict[str, Any]:
        return self.model.pickup_point.to_dict()

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
        scope = self._data.get("scope")
        status = self._data.get("status")
        return (
            f"Refund(id={self.id!r}, amount={self.amount!r}, scope={scope!r}, "
            f"status={status!r}, request_id={self.request_id!r}, replayed={self.replayed!r})"
        )


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


def _check_shape(data: dict[str, Any]) -> None:
    """Raise TypeError/ValueError unless ``data`` is what the generated model can read."""
    missing = _required() - data.keys()
    if missing:
        raise KeyError(sorted(missing)[0])
    for name in ("id", "edition_id"):
        if not isinstance(data[name], str):
            raise TypeError(f"{name} is not a string")
    for name in ("requested_by", "pickup_point"):
        if not isinstance(data[name], dict):
            raise TypeError(f"{name} is not an object")
    for name in ("can_approve", "can_reject"):
        if not isinstance(data[name], bool | str):
            raise TypeError(f"{name} is not a boolean or string")
    for name in _OPTIONAL_TEXT:
        value = data.get(name, "")
        if not (isinstance(value, str) or (value is None and name in _NULLABLE)):
            raise TypeError(f"{name} is not a string")
    refund_date = data.get("refund_date")
    if refund_date is not None:
        parse_datetime(refund_date)


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

    headers = response.headers
    content_type = headers.get("content-type", "")
    media_type = content_type.partition(";")[0].strip().lower()
    if media_type != "application/json" and not media_type.endswith("+json"):
        raise invalid(f"expected JSON, got content type {content_type or 'none'!r}")
    try:
        data = _JSON.decode(content.decode("utf-8"))
    except ValueError as exc:  # JSONDecodeError and UnicodeDecodeError are both ValueErrors
        raise invalid(f"body is not valid JSON ({exc})") from None
    if not isinstance(data, dict):
        raise invalid(f"expected a JSON object, got {type(data).__name__}")
    try:
        _check_shape(data)
        amount = _exact_amount(data["amount"])
        created = parse_datetime(data["created"])
        modified = parse_datetime(data["modified"])
    except KeyError as exc:
        raise invalid(f"required field {exc.args[0]!r} is missing") from None
    except (TypeError, ValueError, OverflowError) as exc:
        raise invalid(str(exc) or type(exc).__name__) from None
    return Refund(
        data,
        amount=amount,
        created=created,
        modified=modified,
        idempotency_key=idempotency_key,
        request_id=request_id,
        replayed=headers.get("idempotent-replayed", "").lower() == "true",
        http_response=response,
    )
