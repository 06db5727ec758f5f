"""The refund a call returns: one exact parse of a 2xx body into a Refund that never raises.

``parse_refund`` decodes the body once (floats as ``Decimal``) and checks every documented
field once; the :class:`Refund` serves those checked values and never parses again. Only an
unreadable ``id`` or ``amount`` (or a body that is not a JSON object) fails the call: any other
field that is not of its documented type is kept raw, reported in ``Refund.invalid_fields`` and
logged once at WARNING (field names and expected types only, never values).
"""

from __future__ import annotations

import datetime
import decimal
import json
import logging
import os
import re
import sys
from collections.abc import Callable, Mapping
from decimal import Decimal
from types import MappingProxyType
from typing import TYPE_CHECKING, Any, ClassVar, Final, Literal, NoReturn

import httpx

from ._amounts import amount_text
from ._exceptions import (
    APIResponseValidationError,
    RefundValidationError,
    _redacted_response,
    join_sentences,
)

if TYPE_CHECKING:
    from typing_extensions import Self

    from ._generated.models.refund_request import RefundRequest
    from ._generated.models.refund_scope import RefundScope
    from ._generated.models.refund_status import RefundStatus

__all__ = ["PickupPoint", "Refund", "StaffUser", "answer_ids", "parse_refund"]

_log: Final = logging.getLogger("preo_client")

#: Deepest nesting accepted in a response body (the documented shape nests two levels).
MAX_DEPTH: Final = 64
#: Amounts with more decimal places than this, or beyond a double's range, are unreadable.
_MAX_PLACES: Final = 30
_MAX_ADJUSTED: Final = 308


def _refuse_constant(name: str) -> NoReturn:
    raise ValueError(f"{name} is not valid JSON")


def _parse_int(text: str) -> int | Decimal:
    """A JSON integer: an ``int``, or past Python's int-to-text digit limit (4,300 digits by
    default, where ``int(text)`` raises ValueError) the exact ``Decimal``, so a huge number in
    one field is that field's (kept raw) value, not an unreadable body."""
    try:
        return int(text)
    except ValueError:
        return Decimal(text)


def _exact_int(value: int) -> int | Decimal:
    """``value``, or as an exact ``Decimal`` when it has too many digits to print as text
    (as :func:`_parse_int` reads it; ``Decimal(int)`` converts without the digit limit)."""
    if value.bit_length() <= 10_000:  # fewer than 3,011 digits: always printable
        return value
    try:
        str(value)
    except ValueError:
        return Decimal(value)
    return value


# One decoder: exact amounts, no NaN/Infinity (not JSON), no per-call setup.
_JSON: Final = json.JSONDecoder(
    parse_float=Decimal, parse_int=_parse_int, parse_constant=_refuse_constant
)
_DECIMAL_TEXT: Final = re.compile(r"-?[0-9]+(?:\.[0-9]+)?", re.ASCII)
_PAD: Final = decimal.Context(prec=_MAX_ADJUSTED + _MAX_PLACES + 10)
_CENTS: Final = Decimal("0.01")
_DOUBLE_MAX: Final = Decimal(sys.float_info.max)  # exact: the largest finite double
_RFC3339: Final = re.compile(
    r"([0-9]{4})-([0-9]{2})-([0-9]{2})[Tt ]([0-9]{2}):([0-9]{2}):([0-9]{2})(?:\.([0-9]+))?"
    r"(?:[Zz]|([+-])([0-9]{2}):([0-9]{2}))",
    re.ASCII,
)
_ZONES: dict[str, datetime.timezone] = {}
_BOM: Final = b"\xef\xbb\xbf"
_UTC: Final = datetime.timezone.utc
# ``datetime.fromisoformat`` reads RFC 3339's forms (a "Z" included) from Python 3.11 on.
_C_ISO: Final = sys.version_info >= (3, 11)


# -- values ------------------------------------------------------------------------------------


def parse_datetime(text: object) -> datetime.datetime:
    """An RFC 3339 date-time (the spec's ``date-time``); raise ValueError for anything else.

    RFC 3339 text is parsed by this module itself, the same way on every Python version
    (fractions beyond microseconds are truncated). Other ISO 8601 forms (basic format, no
    offset: then the result is naive) are read with dateutil; a space before the offset is not
    ISO 8601 and is refused.
    """
    if not isinstance(text, str):
        raise ValueError("not a string")
    match = _RFC3339.fullmatch(text)
    if match is None:
        if len(text) > 64 or ("T" not in text and "t" not in text):
            raise ValueError("not a date-time")  # a date alone is not a date-time
        from dateutil.parser import isoparse  # the rarer ISO 8601 forms only

        try:
            return isoparse(text)
        except Exception:  # dateutil raises ValueError, OverflowError, ...
            raise ValueError("not a date-time") from None
    fraction, sign, off_m = match.group(7, 8, 10)
    if (
        _C_ISO
        and text[10] == "T"
        and (fraction is None or len(fraction) <= 6)
        and ((sign is None and text[-1] == "Z") or (sign is not None and off_m < "60"))
    ):
        # The common forms, read by the C parser; the same result as below (a test checks).
        return datetime.datetime.fromisoformat(text)
    return _from_groups(match)


def _from_groups(match: re.Match[str]) -> datetime.datetime:
    """The date-time an ``_RFC3339`` match stands for; ValueError when it is not a real one."""
    year, month, day, hour, minute, second, fraction, sign, off_h, off_m = match.groups()
    if sign is None or (off_h == "00" and off_m == "00"):
        zone = _UTC
    else:
        key = sign + off_h + off_m
        found = _ZONES.get(key)
        if found is None:
            delta = datetime.timedelta(hours=int(off_h), minutes=int(off_m))
            found = datetime.timezone(-delta if sign == "-" else delta)  # ValueError if >= 24h
            if len(_ZONES) < 512:
                _ZONES[key] = found
        zone = found
    micro = int((fraction + "00000")[:6]) if fraction else 0
    return datetime.datetime(
        int(year), int(month), int(day), int(hour), int(minute), int(second), micro, zone
    )


def _exact_amount(value: object) -> Decimal | None:
    """The exact amount, at least two places (``51.50``, never rounded), or None if unreadable."""
    if isinstance(value, Decimal):
        amount = value
    elif (isinstance(value, int) and not isinstance(value, bool)) or (
        isinstance(value, str) and len(value) < 400 and _DECIMAL_TEXT.fullmatch(value)
    ):
        amount = Decimal(value)
    else:
        return None
    if not amount.is_finite():
        return None
    exponent = amount.as_tuple().exponent
    if not isinstance(exponent, int) or exponent < -_MAX_PLACES:
        return None
    if amount.adjusted() > _MAX_ADJUSTED or amount.copy_abs() > _DOUBLE_MAX:
        return None
    return amount.quantize(_CENTS, context=_PAD) if exponent > -2 else amount


def _amount_text(amount: Decimal) -> str:
    """Fixed-point text of an amount: a valid JSON number and an exact decimal string."""
    return amount_text(amount)


def _depth_ok(data: dict[str, Any], text: str = "") -> bool:
    """True unless ``data`` nests containers deeper than MAX_DEPTH (checked without recursion).

    ``text``, the JSON ``data`` was decoded from, gives a bound first: a body with at most
    MAX_DEPTH opening brackets (those inside strings counted too) cannot nest deeper.
    """
    if text and text.count("{") + text.count("[") <= MAX_DEPTH:
        return True
    for value in data.values():  # fast path: the documented shape nests two levels only
        if isinstance(value, dict | list):
            inner = value.values() if isinstance(value, dict) else value
            if any(isinstance(child, dict | list) for child in inner):
                break
    else:
        return True
    stack: list[tuple[object, int]] = [(data, 1)]
    while stack:
        item, depth = stack.pop()
        if isinstance(item, dict):
            children: Any = item.values()
        elif isinstance(item, list):
            children = item
        else:
            continue
        if depth > MAX_DEPTH:
            return False
        stack.extend((child, depth + 1) for child in children if isinstance(child, dict | list))
    return True


def _json_safe(value: Any) -> Any:
    """A copy of a decoded JSON value that ``json.dumps`` accepts, with numbers kept exact.

    A ``Decimal`` becomes the ``float`` that prints as the very same number when there is
    one (``0.1``), else its exact decimal string.
    """
    if isinstance(value, dict):
        return {k: _json_safe(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_json_safe(v) for v in value]
    if isinstance(value, Decimal):
        as_float = float(value)
        finite = as_float == as_float and abs(as_float) != float("inf")
        if finite and Decimal(repr(as_float)) == value:
            return as_float
        return str(value)
    return value


def _copy(value: Any) -> Any:
    """A deep copy of a decoded JSON value (containers only; leaves are immutable)."""
    if isinstance(value, dict):
        return {k: _copy(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_copy(v) for v in value]
    return value


# -- nested objects ----------------------------------------------------------------------------


class _Nested:
    """A nested object of the response: a documented ``id`` and everything else in ``extra``."""

    __slots__ = ("_data", "_id")
    _data: dict[str, Any]
    _id: str | int | None

    def __init__(self, data: Mapping[str, Any]) -> None:
        """A view of a copy of ``data`` (the object as decoded from JSON)."""
        self._own(_copy(dict(data)))

    @classmethod
    def _owning(cls, data: dict[str, Any]) -> Self:
        """A view that takes ``data`` over without copying it (the parser's own dict)."""
        view = object.__new__(cls)
        view._own(data)
        return view

    def _own(self, data: dict[str, Any]) -> None:
        raw = data.get("id")
        _set_data(self, data)
        _set_id(self, raw if isinstance(raw, str | int) and not isinstance(raw, bool) else None)

    @property
    def id(self) -> str | int | None:
        """The object's identifier (string or integer); None when absent or of another type."""
        return self._id

    @property
    def extra(self) -> dict[str, Any]:
        """Every other field the server sent for this object (a copy), e.g. ``name``."""
        return {k: _copy(v) for k, v in self._data.items() if k != "id"}

    def to_dict(self, *, mode: Literal["python", "json"] = "python") -> dict[str, Any]:
        """The object as sent: a fresh dict; ``mode="json"`` makes numbers ``json.dumps``-safe."""
        copied: dict[str, Any] = _copy(self._data) if mode == "python" else _json_safe(self._data)
        return copied

    def __setattr__(self, name: str, value: object) -> None:
        raise AttributeError(f"{type(self).__name__} is read-only")

    def __delattr__(self, name: str) -> None:
        raise AttributeError(f"{type(self).__name__} is read-only")

    def __eq__(self, other: object) -> bool:
        if type(other) is not type(self) or not isinstance(other, _Nested):
            return NotImplemented
        return self._data == other._data

    __hash__: ClassVar[None] = None  # type: ignore[assignment]  # equal by value: unhashable

    def __repr__(self) -> str:
        return f"{type(self).__name__}(id={self._id!r}, extra={self.extra!r})"

    def __reduce__(self) -> tuple[Any, ...]:
        return (type(self)._owning, (self._data,))


# The slots' own setters: what ``object.__setattr__`` ends up calling, without its lookup.
_set_data: Final[Callable[[_Nested, dict[str, Any]], None]] = vars(_Nested)["_data"].__set__
_set_id: Final[Callable[[_Nested, str | int | None], None]] = vars(_Nested)["_id"].__set__


class StaffUser(_Nested):
    """The staff user who requested the refund (the page's "Staff user serializer").

    ``id`` is its identifier; the page documents no other field, so everything else the server
    sends (such as ``name``) is in ``extra``. Read-only; equal when the data is equal.
    """

    __slots__ = ()


class PickupPoint(_Nested):
    """The pickup point of the refund (the page's "Simple pickup point serializer").

    ``id`` is its identifier; the page documents no other field, so everything else the server
    sends (such as ``name``) is in ``extra``. Read-only; equal when the data is equal.
    """

    __slots__ = ()


# -- field rules -------------------------------------------------------------------------------

_Check = Callable[[Any], Any]  # raises _Invalid, or returns the typed value
_UNSET: Final = object()


class _Invalid(Exception):
    """The raw value does not have its documented type."""


def _string(value: Any) -> str:
    if not isinstance(value, str):
        raise _Invalid
    return value


def _nullable_string(value: Any) -> str | None:
    if value is not None and not isinstance(value, str):
        raise _Invalid
    return value


def _date_time(value: Any) -> datetime.datetime:
    try:
        return parse_datetime(value)
    except (ValueError, OverflowError):
        raise _Invalid from None


def _nullable_date_time(value: Any) -> datetime.datetime | None:
    return None if value is None else _date_time(value)


def _enum_members() -> tuple[dict[str, Any], dict[str, Any]]:
    global _ENUMS
    if _ENUMS is None:
        from ._generated.models.refund_scope import RefundScope
        from ._generated.models.refund_status import RefundStatus

        _ENUMS = ({m.value: m for m in RefundScope}, {m.value: m for m in RefundStatus})
    return _ENUMS


_ENUMS: tuple[dict[str, Any], dict[str, Any]] | None = None


def _scope(value: Any) -> Any:
    return _enum_members()[0].get(_string(value), value)


def _status(value: Any) -> Any:
    return _enum_members()[1].get(_string(value), value)


def _staff_user(value: Any) -> StaffUser:
    if not isinstance(value, dict):
        raise _Invalid
    return StaffUser._owning(value)


def _pickup_point(value: Any) -> PickupPoint:
    if not isinstance(value, dict):
        raise _Invalid
    return PickupPoint._owning(value)


# name -> (check, required, what the warning and invalid_fields say was expected). ``id`` and
# ``amount`` are not here: they are read first, and a bad one fails the call.
_FIELDS: Final[dict[str, tuple[_Check, bool, str]]] = {
    "edition_id": (_string, True, "string"),
    "requested_by": (_staff_user, True, "object"),
    "pickup_point": (_pickup_point, True, "object"),
    "created": (_date_time, True, "string (date-time)"),
    "modified": (_date_time, True, "string (date-time)"),
    "can_approve": (_string, True, "string"),
    "can_reject": (_string, True, "string"),
    "organization": (_nullable_string, False, "string or null"),
    "scope": (_scope, False, "string"),
    "status": (_status, False, "string"),
    "comment": (_nullable_string, False, "string or null"),
    "service_response": (_nullable_string, False, "string or null"),
    "refund_date": (_nullable_date_time, False, "string (date-time) or null"),
}
_DOCUMENTED: Final = frozenset({"id", "amount", *_FIELDS})


def _rules(*checks: _Check) -> list[tuple[str, bool, _Check]]:
    return [(name, req, check) for name, (check, req, _) in _FIELDS.items() if check in checks]


# The table's fields by kind, for the fast path (``_well_typed``); a test checks they cover it.
_STRINGS: Final = [(name, req) for name, req, _ in _rules(_string)]
_NULLABLE_STRINGS: Final = [(name, req) for name, req, _ in _rules(_nullable_string)]
_OBJECTS: Final = [
    (name, req, StaffUser if check is _staff_user else PickupPoint)
    for name, req, check in _rules(_staff_user, _pickup_point)
]
_DATE_TIMES: Final = [
    (name, req, check is _nullable_date_time)
    for name, req, check in _rules(_date_time, _nullable_date_time)
]


_ENUM_RULES: tuple[tuple[str, bool, dict[str, Any]], ...] | None = None


def _enum_rules() -> tuple[tuple[str, bool, dict[str, Any]], ...]:
    """The enum fields' rules, made on first use (the generated enums load lazily) and
    published whole in one assignment: a thread never sees half of them."""
    global _ENUM_RULES
    rules = _ENUM_RULES
    if rules is None:
        scopes, statuses = _enum_members()
        rules = tuple(
            (name, req, scopes if check is _scope else statuses)
            for name, req, check in _rules(_scope, _status)
        )
        _ENUM_RULES = rules
    return rules


_NESTED_ID: Final = "string or integer"


# -- the refund ----------------------------------------------------------------------------------


class Refund:
    """A created refund request, read from the server's answer.

    Every field of the response is a read-only property, typed as documented; each was parsed
    once when the answer arrived, so reading one never raises.

    * ``id`` (str) and ``amount`` (exact ``Decimal``, at least two places: ``Decimal('51.50')``)
      are always there: an answer without them fails the call.
    * Any other field is None when the server left it out, sent null, or sent a value that is
      not of its documented type. In the last case the raw value is kept (see ``to_dict()``)
      and ``invalid_fields`` names the field and the type it should have had.
    * A ``scope`` or ``status`` this version does not know is kept as its plain string.
    * Fields the server added since are in ``extra``.

    ``to_dict()`` / ``to_dict(mode="json")`` / ``to_json()`` give the data back (see each);
    ``http_response`` is the raw response, ``request_id`` its ``X-Request-Id``, ``replayed``
    true when the server answered from its idempotency store, ``idempotency_key`` the key the
    call sent.
    """

    __slots__ = (
        "_amount",
        "_data",
        "_http_response",
        "_id",
        "_idempotency_key",
        "_invalid",
        "_model",
        "_replayed",
        "_request_id",
        "_values",
    )

    def __init__(
        self,
        data: dict[str, Any],
        *,
        id: str,
        amount: Decimal,
        values: dict[str, Any],
        invalid: dict[str, str],
        idempotency_key: str,
        request_id: str | None,
        replayed: bool,
        http_response: httpx.Response,
    ) -> None:
        """Built by :func:`parse_refund`; not meant to be called directly."""
        self._data = data
        self._id = id
        self._amount = amount
        self._values = values
        self._invalid = MappingProxyType(invalid) if invalid else _NO_INVALID
        self._model: object = _UNSET
        self._idempotency_key = idempotency_key
        self._request_id = request_id
        self._replayed = replayed
        self._http_response = http_response

    # -- always present

    @property
    def id(self) -> str:
        """The refund request's identifier (a non-empty string)."""
        return self._id

    @property
    def amount(self) -> Decimal:
        """The amount refunded, exact: read from the JSON text, never through a float.

        At least two decimal places (``Decimal('51.50')``); more only if the server sent more
        (never rounded).
        """
        return self._amount

    # -- required by the page, None only when the server broke its contract

    @property
    def edition_id(self) -> str | None:
        """The edition (event) the purchase belongs to; None if missing or not a string."""
        value: str | None = self._values.get("edition_id")
        return value

    @property
    def requested_by(self) -> StaffUser | None:
        """The staff user who requested the refund; None if missing or not an object."""
        value: StaffUser | None = self._values.get("requested_by")
        return value

    @property
    def pickup_point(self) -> PickupPoint | None:
        """The pickup point of the refund; None if missing or not an object."""
        value: PickupPoint | None = self._values.get("pickup_point")
        return value

    @property
    def created(self) -> datetime.datetime | None:
        """When the refund request was created (timezone-aware when the server sent an offset,
        as the spec requires); None if missing or not a date-time."""
        value: datetime.datetime | None = self._values.get("created")
        return value

    @property
    def modified(self) -> datetime.datetime | None:
        """When the refund request was last modified; None if missing or not a date-time."""
        value: datetime.datetime | None = self._values.get("modified")
        return value

    @property
    def can_approve(self) -> str | None:
        """Whether the caller may approve the request, as the server's string (e.g. ``"true"``);
        None if missing or not a string (a boolean, say: see ``invalid_fields``)."""
        value: str | None = self._values.get("can_approve")
        return value

    @property
    def can_reject(self) -> str | None:
        """Whether the caller may reject the request, as the server's string (e.g. ``"true"``);
        None if missing or not a string (a boolean, say: see ``invalid_fields``)."""
        value: str | None = self._values.get("can_reject")
        return value

    # -- optional on the page

    @property
    def organization(self) -> str | None:
        """The organization's identifier; None if absent, null or not a string."""
        value: str | None = self._values.get("organization")
        return value

    @property
    def scope(self) -> RefundScope | str | None:
        """What was refunded (``RefundScope``); a value this version does not know is its plain
        string; None if absent or not a string."""
        value: RefundScope | str | None = self._values.get("scope")
        return value

    @property
    def status(self) -> RefundStatus | str | None:
        """Where the refund request is (``RefundStatus``, e.g. ``requested``); a value this
        version does not know is its plain string; None if absent or not a string."""
        value: RefundStatus | str | None = self._values.get("status")
        return value

    @property
    def comment(self) -> str | None:
        """Comment added upon a custom refund; None if absent, null or not a string."""
        value: str | None = self._values.get("comment")
        return value

    @property
    def service_response(self) -> str | None:
        """The payment service's answer; None if absent, null or not a string."""
        value: str | None = self._values.get("service_response")
        return value

    @property
    def refund_date(self) -> datetime.datetime | None:
        """When the refund was successfully processed; None until then (absent or null), or if
        not a date-time."""
        value: datetime.datetime | None = self._values.get("refund_date")
        return value

    # -- everything else

    @property
    def extra(self) -> dict[str, Any]:
        """Fields the response carried that this version of the SDK does not know (a copy;
        JSON numbers with a fraction are ``Decimal``)."""
        return {k: _copy(v) for k, v in self._data.items() if k not in _DOCUMENTED}

    @property
    def invalid_fields(self) -> Mapping[str, str]:
        """Documented fields whose value was not of the documented type, or that were required
        and missing: field name (``requested_by.id`` for a nested one) to the type expected.
        Their properties are None; the raw values are in ``to_dict()``. Empty normally."""
        return self._invalid

    @property
    def model(self) -> RefundRequest | None:
        """The generated ``RefundRequest``, built on first use from the values parsed here.

        A convenience only, not the way to get data out: its ``amount`` is a binary float.
        None when the answer had an invalid or missing required field (the generated model has
        no way to hold it); see ``invalid_fields``. Never raises.
        """
        if self._model is _UNSET:
            self._model = self._build_model()
        return self._model  # type: ignore[return-value]

    def _build_model(self) -> RefundRequest | None:
        if self._invalid:
            return None
        try:
            from ._generated.models.refund_request import RefundRequest
            from ._generated.types import UNSET

            values = self._values
            model = RefundRequest(
                id=self._id,
                edition_id=values["edition_id"],
                amount=float(self._amount),
                requested_by=_generated_nested("StaffUser", values["requested_by"]),
                pickup_point=_generated_nested("PickupPoint", values["pickup_point"]),
                created=values["created"],
                modified=values["modified"],
                can_approve=values["can_approve"],
                can_reject=values["can_reject"],
                **{
                    name: values[name] if name in self._data else UNSET
                    for name in _OPTIONAL_FOR_MODEL
                },
            )
            model.additional_properties = self.extra
        except Exception:  # a convenience must not fail the caller
            return None
        return model

    @property
    def http_response(self) -> httpx.Response:
        """The raw HTTP response the refund was read from."""
        return self._http_response

    @property
    def replayed(self) -> bool:
        """True when the server answered from its idempotency store (``Idempotent-Replayed``)."""
        return self._replayed

    @property
    def request_id(self) -> str | None:
        """The response's ``X-Request-Id``, for support; None if the server sent none."""
        return self._request_id

    @property
    def idempotency_key(self) -> str:
        """The ``Idempotency-Key`` the call sent: retrying with it never refunds twice."""
        return self._idempotency_key

    # -- conversions

    def to_dict(self, *, mode: Literal["python", "json"] = "python") -> dict[str, Any]:
        """The response's fields as a fresh dict, in the order the server sent them.

        ``mode="python"``: ``amount`` a ``Decimal``, date-times ``datetime``, ``scope`` and
        ``status`` plain strings, ``requested_by`` / ``pickup_point`` dicts; unknown fields and
        the raw values of invalid fields as sent (numbers with a fraction as ``Decimal``).
        ``mode="json"``: what ``json.dumps`` accepts: ``amount`` an exact decimal string
        (``"51.50"``), date-times ISO 8601 strings, other numbers a ``float`` when that float
        is the very same number, else an exact decimal string. Fields the server left out are
        left out here too. Response metadata (``request_id``, ...) is not included.
        """
        if mode not in ("python", "json"):
            raise ValueError(f"mode must be 'python' or 'json', not {mode!r}")
        as_json = mode == "json"
        result: dict[str, Any] = {}
        values = self._values
        for name, raw in self._data.items():
            if name == "amount":
                result[name] = _amount_text(self._amount) if as_json else self._amount
            elif name == "id":
                result[name] = self._id
            elif name in values and name not in self._invalid:
                result[name] = _plain(values[name], as_json)
            else:  # unknown, or kept raw because invalid
                result[name] = _json_safe(raw) if as_json else _copy(raw)
        return result

    def to_json(self, *, indent: int | str | None = None) -> str:
        """The refund as JSON text: ``amount`` an exact JSON number with the digits of
        ``to_dict(mode="json")["amount"]`` (``51.50``, never ``51.500000001``), date-times
        ISO 8601, everything else as in ``to_dict(mode="json")``. ``indent`` as for
        ``json.dumps`` (None: one line)."""
        document = self.to_dict(mode="json")
        marker = f"<amount {os.urandom(16).hex()}>"  # stands for the amount, replaced below
        document["amount"] = marker
        return json.dumps(document, indent=indent).replace(
            json.dumps(marker), _amount_text(self._amount), 1
        )

    @classmethod
    def from_dict(
        cls,
        data: Mapping[str, Any],
        *,
        idempotency_key: str = "",
        request_id: str | None = None,
        replayed: bool = False,
    ) -> Refund:
        """A refund from an API body already decoded (a cache, a queue, a test), read by the
        same lenient parser as an answer: what ``to_dict()``, ``to_dict(mode="json")`` or
        ``json.loads(to_json())`` gave reads back as an equal refund.

        Numbers may be ``Decimal``, ``int`` or ``float`` (a float is read as its shortest
        text: ``51.5`` is ``Decimal('51.50')``); date-times ``datetime`` or ISO 8601 text. A
        field not of its documented type is kept raw and listed in ``invalid_fields``, as for
        an answer. Raises :class:`RefundValidationError` (field ``data``) when ``data`` is not
        a mapping of JSON-like values or has no readable ``id`` or ``amount``.

        ``http_response`` is a stand-in (status 200, the refund's JSON as body, the request id
        as ``X-Request-Id``): nothing was received.
        """
        if not isinstance(data, Mapping):
            raise RefundValidationError(
                "data", f"must be a mapping (a decoded JSON object), not {type(data).__name__}"
            )
        try:
            body = _from_python(data, 0)
            headers = {} if request_id is None else {"x-request-id": request_id}
            refund = _read(
                body,
                idempotency_key=idempotency_key,
                request_id=request_id,
                replayed=replayed,
                http_response=httpx.Response(200, headers=headers),
            )
        except _Unreadable as exc:
            raise RefundValidationError("data", exc.reason) from None
        refund._http_response = httpx.Response(
            200, headers={**headers, "content-type": "application/json"},
            content=refund.to_json().encode(),
        )  # fmt: skip
        return refund

    def __reduce__(self) -> tuple[Any, ...]:
        """Pickles with every field (``to_dict()`` equal after a round trip), its metadata,
        and its HTTP response without the ``Authorization`` header."""
        metadata = {
            "idempotency_key": self._idempotency_key,
            "request_id": self._request_id,
            "replayed": self._replayed,
            "http_response": _redacted_response(self._http_response),
        }
        return (_unpickle_refund, (self._data, metadata))

    def __repr__(self) -> str:
        scope = self._values.get("scope")
        status = self._values.get("status")
        return (
            f"Refund(id={self._id!r}, amount={self._amount!r}, scope={_plain(scope, False)!r}, "
            f"status={_plain(status, False)!r}, request_id={self._request_id!r}, "
            f"replayed={self._replayed!r})"
        )


_OPTIONAL_FOR_MODEL: Final = (
    "organization",
    "scope",
    "status",
    "comment",
    "service_response",
    "refund_date",
)


def _generated_nested(name: str, view: _Nested) -> Any:
    from ._generated import models

    return getattr(models, name).from_dict(view.to_dict())


def _plain(value: Any, as_json: bool) -> Any:
    """A parsed field value as a plain Python (or JSON-safe) value."""
    if isinstance(value, _Nested):
        return value.to_dict(mode="json" if as_json else "python")
    if isinstance(value, datetime.datetime):
        return value.isoformat() if as_json else value
    if isinstance(value, str):
        return str.__str__(value)  # a RefundScope/RefundStatus member as its plain string
    return value


# -- the parser ----------------------------------------------------------------------------------


def parse_refund(
    response: httpx.Response,
    content: bytes,
    *,
    idempotency_key: str,
    request_id: str | None,
    replayed: bool | None = None,
) -> Refund:
    """Parse a 2xx ``response`` (body ``content``) into a :class:`Refund`.

    ``request_id`` and ``replayed`` are what :func:`answer_ids` reads from the headers
    (``replayed`` is read here when not given).

    Raises :class:`APIResponseValidationError`, and nothing else whatever the bytes, when the
    body is not a JSON object (not UTF-8, not JSON, nested deeper than ``MAX_DEPTH``, numbers
    Python cannot read) or its ``id`` or ``amount`` is unreadable. Any other field that is not
    of its documented type is kept raw, listed in ``Refund.invalid_fields`` and logged once at
    WARNING on the ``preo_client`` logger (names and expected types, never values).
    """

    def invalid(reason: str) -> APIResponseValidationError:
        return APIResponseValidationError(
            join_sentences(
                f"Invalid refund response (status {response.status_code}, request id "
                f"{request_id}): {reason}",
                f"The refund was probably created; retry with idempotency_key={idempotency_key!r}"
                " to read it back safely",
            ),
            response=response,
            body=content.decode("utf-8", errors="replace"),
            request_id=request_id,
            idempotency_key=idempotency_key,
        )

    try:
        if replayed is None:
            replayed = answer_ids(response.headers)[1]
        return _parse(response, content, idempotency_key, request_id, replayed)
    except _Unreadable as exc:
        raise invalid(exc.reason) from None
    except Exception as exc:  # a last resort: this function raises nothing else
        raise invalid(f"internal error ({type(exc).__name__}) while reading it") from None


def _well_typed(data: dict[str, Any]) -> dict[str, Any] | None:
    """The checked values of ``data``'s documented fields when every one has its documented
    type (a normal answer): what the ``_FIELDS`` table gives, without a call and a ``try`` per
    field. None when any field is off: then the table decides, field by field."""
    get = data.get
    values: dict[str, Any] = {}
    for name, required in _STRINGS:
        value = get(name, _UNSET)
        if isinstance(value, str):
            values[name] = value
        elif value is not _UNSET or required:
            return None
    for name, required in _NULLABLE_STRINGS:
        value = get(name, _UNSET)
        if value is None or isinstance(value, str):
            values[name] = value
        elif value is not _UNSET or required:
            return None
    for name, required, kind in _OBJECTS:
        value = get(name, _UNSET)
        if isinstance(value, dict):
            view = kind._owning(value)
            if view._id is None and "id" in value:
                return None
            values[name] = view
        elif value is not _UNSET or required:
            return None
    last: tuple[object, datetime.datetime | None] = (_UNSET, None)  # created == modified, often
    for name, required, nullable in _DATE_TIMES:
        value = get(name, _UNSET)
        if value is None and nullable:
            values[name] = None
        elif value is not _UNSET:
            if value != last[0]:
                try:
                    last = (value, parse_datetime(value))
                except (ValueError, OverflowError):
                    return None
            values[name] = last[1]
        elif required:
            return None
    for name, required, members in _enum_rules():
        value = get(name, _UNSET)
        if isinstance(value, str):
            values[name] = members.get(value, value)
        elif value is not _UNSET or required:
            return None
    return values


_NONE_INVALID: Final[dict[str, str]] = {}
_NO_INVALID: Final[Mapping[str, str]] = MappingProxyType({})


class _Unreadable(Exception):
    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


def _parse(
    response: httpx.Response,
    content: bytes,
    idempotency_key: str,
    request_id: str | None,
    replayed: bool,
) -> Refund:
    # The body decides, not its label: a refund whose JSON arrives as text/plain, without a
    # content type or behind a UTF-8 BOM is still the refund that was made (I3); an HTML page
    # or anything else that is not a JSON object is refused below.
    try:
        text = (content[3:] if content[:3] == _BOM else content).decode()  # as utf-8-sig
        data = _JSON.decode(text)
    except RecursionError:
        raise _Unreadable("body is not valid JSON (nested too deeply)") from None
    except ValueError as exc:  # JSONDecodeError, UnicodeDecodeError, int digit limit
        raise _Unreadable(f"body is not valid JSON ({str(exc)[:200]})") from None
    if not isinstance(data, dict):
        raise _Unreadable(f"expected a JSON object, got {type(data).__name__}")
    return _read(
        data,
        idempotency_key=idempotency_key,
        request_id=request_id,
        replayed=replayed,
        http_response=response,
        text=text,
    )


def _read(
    data: dict[str, Any],
    *,
    idempotency_key: str,
    request_id: str | None,
    replayed: bool,
    http_response: httpx.Response,
    log: bool = True,
    text: str = "",
) -> Refund:
    """The one reading of a decoded body (an answer's, ``from_dict``'s, an unpickled one's);
    ``text``, the JSON it was decoded from when there is one, bounds the depth check."""
    if not _depth_ok(data, text):
        raise _Unreadable(f"body nests deeper than {MAX_DEPTH} levels")

    refund_id = data.get("id", _UNSET)
    if refund_id is _UNSET:
        raise _Unreadable("required field 'id' is missing")
    if not isinstance(refund_id, str) or not refund_id:
        raise _Unreadable("id is not a string" if refund_id != "" else "id is empty")
    if "amount" not in data:
        raise _Unreadable("required field 'amount' is missing")
    amount = _exact_amount(data["amount"])
    if amount is None:
        raise _Unreadable(
            "amount is not a finite number or decimal string (at most "
            f"{_MAX_PLACES} decimal places, within a double's range)"
        )

    fast = _well_typed(data)
    if fast is not None:
        values, bad = fast, _NONE_INVALID
    else:
        values, bad = _checked_fields(data)
        if bad and log:
            _log.warning(
                "Refund response fields not of their documented type, kept raw "
                "(see Refund.invalid_fields): %s",
                ", ".join(f"{name} (expected {expected})" for name, expected in bad.items()),
                extra={
                    "preo.request_id": request_id,
                    "preo.idempotency_key": idempotency_key,
                    "preo.invalid_fields": dict(bad),
                },
            )
    return Refund(
        data,
        id=refund_id,
        amount=amount,
        values=values,
        invalid=bad,
        idempotency_key=idempotency_key,
        request_id=request_id,
        replayed=replayed,
        http_response=http_response,
    )


def answer_ids(headers: httpx.Headers) -> tuple[str | None, bool]:
    """``X-Request-Id`` (None when absent) and whether ``Idempotent-Replayed`` is ``true``, as
    ``headers.get`` would read them, in one pass over the headers instead of one per name."""
    encoding = headers.encoding
    ids: list[str] = []
    replayed: list[str] = []
    for key, value in headers.raw:
        key = key.lower()
        if key == b"x-request-id":
            ids.append(value.decode(encoding))
        elif key == b"idempotent-replayed":
            replayed.append(value.decode(encoding))
    return (", ".join(ids) if ids else None), ", ".join(replayed).lower() == "true"


def _checked_fields(data: dict[str, Any]) -> tuple[dict[str, Any], dict[str, str]]:
    """Every documented field checked by the ``_FIELDS`` table: the typed values, and the
    fields not of their documented type (names and what each should be)."""
    values: dict[str, Any] = {}
    bad: dict[str, str] = {}
    for name, (check, required, expected) in _FIELDS.items():
        raw = data.get(name, _UNSET)
        if raw is _UNSET:
            if required:
                bad[name] = f"{expected} (required, missing)"
            continue
        try:
            values[name] = check(raw)
        except _Invalid:
            bad[name] = expected
    for name in ("requested_by", "pickup_point"):
        view = values.get(name)
        if view is not None and view.id is None and "id" in view._data:
            bad[f"{name}.id"] = _NESTED_ID
    return values, bad


def _unpickle_refund(data: dict[str, Any], metadata: dict[str, Any]) -> Refund:
    return _read(data, **metadata, log=False)  # logged when it was first read


def _from_python(value: Any, depth: int) -> Any:
    """A copy of a decoded body as the parser's decoder would have made it (floats and
    date-times back to exact text forms); :class:`_Unreadable` for anything JSON cannot hold."""
    if depth > MAX_DEPTH:
        raise _Unreadable(f"body nests deeper than {MAX_DEPTH} levels")
    if isinstance(value, Mapping):
        copied: dict[str, Any] = {}
        for key, item in value.items():
            if not isinstance(key, str):
                raise _Unreadable(f"keys must be strings, got {type(key).__name__}")
            copied[key] = _from_python(item, depth + 1)
        return copied
    if isinstance(value, list | tuple):
        return [_from_python(item, depth + 1) for item in value]
    if isinstance(value, float):
        if value != value or value in (float("inf"), float("-inf")):
            raise _Unreadable(f"{value!r} is not a JSON number")
        return Decimal(float.__repr__(value))
    if isinstance(value, datetime.datetime):
        return value.isoformat()
    if isinstance(value, int) and not isinstance(value, bool):
        return _exact_int(value)
    if value is None or isinstance(value, str | int | Decimal):  # bool is an int
        return value
    raise _Unreadable(f"a {type(value).__name__} is not a JSON value")
