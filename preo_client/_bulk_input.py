"""Bulk input rows: CSV or JSON lines as UTF-8 bytes (BOM or not) to numbered RefundItems. Pure."""

from __future__ import annotations

import codecs
import csv
import json
from collections.abc import Iterable, Iterator, Sequence
from decimal import Decimal
from typing import Final

import attrs

from ._bulk import InvalidItem, RefundItem
from ._exceptions import PreoError
from ._policy import MAX_COMMENT_LENGTH

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
            row = json.loads(line, parse_float=Decimal, object_pairs_hook=_unique_keys)
        except _DuplicateKeyError as exc:
            yield Row(number, InvalidItem(where, str(exc)))
            continue
        except (ValueError, RecursionError):
            yield Row(number, InvalidItem(where, "not valid JSON"))
            continue
        yield Row(number, _item(row, where))


class _DuplicateKeyError(Exception):
    """A JSON object that names one key twice (json.loads would silently keep the last)."""


def _unique_keys(pairs: list[tuple[str, object]]) -> dict[str, object]:
    """``object_pairs_hook`` that refuses a key given twice in one object, at any depth."""
    row: dict[str, object] = {}
    for key, value in pairs:
        if key in row:
            raise _DuplicateKeyError(
                f"the key {key!r} appears twice in this object; give each field once"
            )
        row[key] = value
    return row


def _refuse_duplicate_columns(line: int, fields: Sequence[str]) -> None:
    """A CSV header naming one column twice (also differing only in case or surrounding space)
    is refused: ``csv.DictReader`` would silently keep the last column's value."""
    seen: dict[str, str] = {}
    for name in fields:
        folded = name.strip().casefold()
        if folded in seen:
            same = repr(name) if seen[folded] == name else f"{seen[folded]!r} and {name!r}"
            raise InputError(
                line,
                f"the CSV header names the column {same} twice; give each column once "
                f"(allowed: {', '.join(ITEM_FIELDS)})",
            )
        seen[folded] = name


def _csv_rows(first: int, text: str, rest: Iterator[tuple[int, str]]) -> Iterator[Row]:
    read = [first]  # the number of the last line handed to the parser

    def lines() -> Iterator[str]:
        yield text
        for read[0], line in rest:
            yield line

    reader = csv.DictReader(lines(), strict=True)  # strict: a quote left open is an error
    offset = first - 1
    start = first
    try:
        fields = reader.fieldnames
        if fields is not None:
            _refuse_duplicate_columns(first, fields)
        if fields is None or "purchase_id" not in fields:
            raise InputError(first, "CSV needs a header line with a purchase_id column")
        unknown = sorted(set(fields) - set(ITEM_FIELDS))
        if unknown:
            raise InputError(
                first, f"unknown CSV columns {unknown}; allowed: {', '.join(ITEM_FIELDS)}"
            )
        start = offset + reader.line_num + 1
        for row in reader:
            _refuse_swallowing(row, start, fields)
            where = f"line {start}"
            if None in row:
                yield Row(start, InvalidItem(where, "more fields than the header has columns"))
            else:
                yield Row(start, _item(row, where))
            start = offset + reader.line_num + 1
    except csv.Error as exc:
        raise _csv_error(exc, start, read[0]) from None


def _looks_like_a_row(line: str, header: Sequence[str]) -> bool:
    """A line with the header's number of fields and a purchase id without spaces."""
    fields = next(csv.reader([line]), [])
    if len(header) < 2 or len(fields) != len(header):
        return False
    purchase_id = fields[list(header).index("purchase_id")]
    return bool(purchase_id) and not any(c.isspace() or c == '"' for c in purchase_id)


def _csv_error(exc: csv.Error, start: int, line: int) -> InputError:
    """A ``csv`` parser error in words, naming the line where the bad row starts."""
    message = str(exc)
    if "field larger than field limit" in message:
        return InputError(
            start,
            f"a quoted field opened in the row starting on this line is not closed within "
            f"{csv.field_size_limit():,} characters: a quote is probably not closed (a quote "
            'inside a quoted field is written "")',
        )
    if "end of data" in message:
        return InputError(
            start,
            "a quoted field opened in the row starting on this line is never closed: every "
            "later line would become part of it. Close the quote (a quote inside a quoted "
            'field is written "")',
        )
    return InputError(line, f"malformed CSV ({message}); a quote inside a quoted field is "
                      'written ""')  # fmt: skip


def _refuse_swallowing(row: dict[str | None, object], start: int, header: Sequence[str]) -> None:
    """Refuse a multi-line quoted field that looks like a stray quote swallowing later rows:
    longer than a comment may be, or holding a line that parses as a whole row itself."""
    before = 0  # newlines in the fields before this one: the physical line the field opens on
    for value in row.values():
        if not isinstance(value, str) or "\n" not in value:
            continue
        opened = start + before
        parts = value.splitlines()
        if len(value) > MAX_COMMENT_LENGTH:
            raise InputError(
                opened,
                f"a quoted field of {len(value)} characters over {len(parts)} lines opens "
                f"here (at most {MAX_COMMENT_LENGTH} are allowed): a quote is probably not "
                'closed (a quote inside a quoted field is written "")',
            )
        for number, part in enumerate(parts[1:], start=1):
            if _looks_like_a_row(part, header):
                raise InputError(
                    opened,
                    f"a quoted field opened here swallows line {opened + number} "
                    f"({part[:40]!r}), which looks like a row of its own: a quote is "
                    'probably not closed (a quote inside a quoted field is written "")',
                )
        before += value.count("\n")
