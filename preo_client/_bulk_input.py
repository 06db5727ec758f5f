"""Bulk input rows: CSV or JSON lines as UTF-8 bytes (BOM or not) to numbered RefundItems. Pure."""

from __future__ import annotations

import codecs
import csv
import json
from collections.abc import Iterable, Iterator
from decimal import Decimal
from typing import Final

import attrs

from ._bulk import InvalidItem, RefundItem
from ._exceptions import PreoError

__all__ = ["ITEM_FIELDS", "InputError", "Row", "read_rows"]

ITEM_FIELDS: Final = (
    "purchase_id",
    "reason",
    "scope",
    "amount",
    "comment",
    "pickup_point_id",
    "reference",
    "transaction_id",
)
_UTF16_BOMS: Final = (codecs.BOM_UTF16_LE, codecs.BOM_UTF16_BE)


class InputError(PreoError, ValueError):
    """An input that cannot be read as rows at all (encoding, CSV header); names the line."""

    def __init__(self, line: int, message: str) -> None:
        super().__init__(f"line {line}: {message}")
        self.line = line


@attrs.frozen
class Row:
    """One input row: its first line number (1-based) and the item or why it is invalid."""

    line: int
    item: RefundItem | InvalidItem


def _decoded(lines: Iterable[bytes]) -> Iterator[tuple[int, str]]:
    for number, raw in enumerate(lines, start=1):
        if number == 1:
            if raw.startswith(_UTF16_BOMS):
                raise InputError(1, "the file is UTF-16; save it as UTF-8")
            raw = raw.removeprefix(codecs.BOM_UTF8)
        try:
            yield number, raw.decode("utf-8")
        except UnicodeDecodeError as exc:
            raise InputError(
                number,
                f"not valid UTF-8 (byte 0x{raw[exc.start]:02x} at column {exc.start + 1}); "
                "save the file as UTF-8, e.g. iconv -f latin1 -t utf-8 IN > OUT",
            ) from None


def _scalar(name: str, value: object) -> str | None:
    if value is None or value == "":
        return None
    if isinstance(value, bool) or not isinstance(value, str | int | Decimal):
        raise ValueError(f"{name} must be a string or a number, got {type(value).__name__}")
    return str(value)


def _item(row: object, where: str) -> RefundItem | InvalidItem:
    if not isinstance(row, dict):
        return InvalidItem(where, "expected an object with a purchase_id")
    unknown = sorted(str(k) for k in row if k not in ITEM_FIELDS)
    if unknown:
        return InvalidItem(where, f"unknown fields {unknown}; allowed: {', '.join(ITEM_FIELDS)}")
    try:
        values = {name: _scalar(name, row.get(name)) for name in ITEM_FIELDS}
    except ValueError as exc:
        return InvalidItem(where, str(exc))
    purchase_id = values.pop("purchase_id")
    if not purchase_id:
        return InvalidItem(where, "no purchase_id")
    return RefundItem(purchase_id, **values)


def read_rows(lines: Iterable[bytes]) -> Iterator[Row]:
    """Rows from CSV (a header line with a ``purchase_id`` column) or JSON lines, lazily.

    A row that cannot be an item is an :class:`InvalidItem` naming its line; a file that is not
    UTF-8 or has no usable header raises :class:`InputError` (naming the line) when reached.
    """
    decoded = _decoded(lines)
    number, text = next(decoded, (0, ""))
    while number and not text.strip():
        number, text = next(decoded, (0, ""))
    if not number:
        return
    if text.lstrip().startswith("{"):
        yield from _json_rows(number, text, decoded)
    else:
        yield from _csv_rows(number, text, decoded)


def _json_rows(first: int, text: str, rest: Iterator[tuple[int, str]]) -> Iterator[Row]:
    def numbered() -> Iterator[tuple[int, str]]:
        yield first, text
        yield from rest

    for number, line in numbered():
        if not line.strip():
            continue
        where = f"line {number}"
        try:
            row = json.loads(line, parse_float=Decimal)
        except (ValueError, RecursionError):
            yield Row(number, InvalidItem(where, "not valid JSON"))
            continue
        yield Row(number, _item(row, where))


def _csv_rows(first: int, text: str, rest: Iterator[tuple[int, str]]) -> Iterator[Row]:
    def lines() -> Iterator[str]:
        yield text
        for _, line in rest:
            yield line

    reader = csv.DictReader(lines())
    fields = reader.fieldnames
    if fields is None or "purchase_id" not in fields:
        raise InputError(first, "CSV needs a header line with a purchase_id column")
    unknown = sorted(set(fields) - set(ITEM_FIELDS))
    if unknown:
        raise InputError(first, f"unknown CSV columns {unknown}; allowed: {', '.join(ITEM_FIELDS)}")
    offset = first - 1
    start = offset + reader.line_num + 1
    for row in reader:
        where = f"line {start}"
        if None in row:
            yield Row(start, InvalidItem(where, "more fields than the header has columns"))
        else:
            yield Row(start, _item(row, where))
        start = offset + reader.line_num + 1
