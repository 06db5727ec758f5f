"""Per-call escape hatches ``extra_body`` / ``extra_query``: checked, exact, never a money field."""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Final

from ._exceptions import RefundValidationError, shown

__all__ = ["POLICY_FIELDS", "check_extra_body", "check_extra_query", "merged_body"]

# The fields the refund policy decides: no escape hatch may set or replace them.
POLICY_FIELDS: Final = frozenset({"reason", "scope", "amount", "comment", "pickup_point_id"})
MAX_EXTRA_DEPTH: Final = 32
_JSON: Final = json.JSONEncoder(separators=(",", ":"), ensure_ascii=False, allow_nan=False)


def _refuse_policy_field(field: str, key: str) -> None:
    if key in POLICY_FIELDS:
        raise RefundValidationError(
            field,
            f"{key!r} is a refund field: pass it as {key}= so the refund policy checks it "
            f"(an escape hatch never sets {', '.join(sorted(POLICY_FIELDS))})",
        )


def _where(path: str, key: object) -> str:
    return f"{path}[{key!r}]" if path else repr(key)


def _check_value(value: object, path: str) -> None:
    """Refuse anything that is not exact JSON: floats, non-string keys, other types, depth."""
    stack: list[tuple[object, str, int]] = [(value, path, 0)]
    while stack:
        item, where, depth = stack.pop()
        if depth > MAX_EXTRA_DEPTH:
            raise RefundValidationError(
                "extra_body", f"{where} nests deeper than {MAX_EXTRA_DEPTH} levels"
            )
        if isinstance(item, Mapping):
            for key, child in item.items():
                if not isinstance(key, str):
                    raise RefundValidationError(
                        "extra_body", f"{where} has a key that is not a string ({shown(key)})"
                    )
                stack.append((child, _where(where, key), depth + 1))
        elif isinstance(item, list | tuple):
            stack.extend((child, f"{where}[{i}]", depth + 1) for i, child in enumerate(item))
        elif isinstance(item, float):
            raise RefundValidationError(
                "extra_body",
                f"{where} is a float ({item!r}), which is not exact on the wire: pass an int "
                "or the exact decimal text as a string",
            )
        elif not (item is None or isinstance(item, str | int)):  # bool is an int
            raise RefundValidationError(
                "extra_body",
                f"{where} is a {type(item).__name__}: values must be str, int, bool, None, "
                "lists or mappings (pass a Decimal as its exact text)",
            )


def check_extra_body(extra_body: object) -> dict[str, object]:
    """A checked copy of ``extra_body`` (JSON fields added to the request body), or
    :class:`RefundValidationError` naming ``extra_body``."""
    if not isinstance(extra_body, Mapping):
        raise RefundValidationError(
            "extra_body",
            f"must be a mapping of field names to values, not {type(extra_body).__name__}",
        )
    for key in extra_body:
        if not isinstance(key, str):
            raise RefundValidationError("extra_body", f"field names must be strings ({shown(key)})")
        _refuse_policy_field("extra_body", key)
    _check_value(extra_body, "")
    checked = dict(extra_body)
    try:  # the exact bytes, once: a lone surrogate cannot be sent
        _JSON.encode(checked).encode()
    except UnicodeEncodeError:
        raise RefundValidationError(
            "extra_body", "contains text that is not valid Unicode (a lone surrogate)"
        ) from None
    except ValueError as exc:  # an int too long to write as text
        raise RefundValidationError("extra_body", f"cannot be written as JSON ({exc})") from None
    return checked


def check_extra_query(extra_query: object) -> dict[str, str]:
    """``extra_query`` as query parameters (str or int values), or
    :class:`RefundValidationError` naming ``extra_query``."""
    if not isinstance(extra_query, Mapping):
        raise RefundValidationError(
            "extra_query",
            f"must be a mapping of names to values, not {type(extra_query).__name__}",
        )
    for key in extra_query:  # a policy field is named first, whatever else is wrong
        if isinstance(key, str):
            _refuse_policy_field("extra_query", key)
    params: dict[str, str] = {}
    for key, value in extra_query.items():
        if not isinstance(key, str) or not key:
            raise RefundValidationError(
                "extra_query", f"names must be non-empty strings ({shown(key)})"
            )
        if isinstance(value, bool) or not isinstance(value, str | int):
            raise RefundValidationError(
                "extra_query",
                f"the value of {key!r} must be a str or int, not {type(value).__name__}",
            )
        try:  # the text itself (a subclass's __str__ is not asked)
            text = str.__str__(value) if isinstance(value, str) else int.__repr__(value)
        except ValueError:  # an int past Python's int-to-text digit limit
            raise RefundValidationError(
                "extra_query", f"the value of {key!r} is an int too long to write as text"
            ) from None
        if not (key + text).isprintable() or any(0xD800 <= ord(c) <= 0xDFFF for c in key + text):
            raise RefundValidationError(
                "extra_query", f"{key!r} must be printable text without control characters"
            )
        params[key] = text
    return params


def merged_body(
    body: dict[str, object], extra_body: Mapping[str, object] | None
) -> dict[str, object]:
    """The request body with ``extra_body``'s fields added (they never share a name)."""
    if not extra_body:
        return body
    return {**body, **extra_body}
