"""The parser's fast path for a well-typed answer (``_well_typed``) gives exactly what the field
table gives, field by field, for any answer; when any field is off it steps aside."""

from __future__ import annotations

import json
from decimal import Decimal
from typing import Any

import httpx
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from preo_client import _models
from preo_client._models import parse_refund
from tests.helpers import refund_json

STAMPS = st.sampled_from(
    [
        "2026-07-04T18:22:11Z",
        "2026-07-04T18:22:11.123456+02:00",
        "2026-07-04t18:22:11.5z",
        "2026-07-04 18:22:11-05:30",
        "2026-07-04T18:22:11",  # no offset: dateutil, naive
        "20260704T182211Z",  # basic format: dateutil
        "2026-13-04T18:22:11Z",  # no such month
        "2026-07-04T18:22:11+24:00",  # offset out of range
        "2026-07-04",
        "not a date",
    ]
)
ANY = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(-5, 5),
    st.text(max_size=8),
    st.just({"id": "x"}),
    st.just({"id": 7, "name": "n"}),
    st.just({"id": True}),
    st.just({}),
    st.just([1]),
    STAMPS,
    st.sampled_from(["purchase_full", "requested", "approved", "unknown_scope"]),
)
MISSING = object()


@st.composite
def answers(draw: st.DrawFn) -> dict[str, Any]:
    body = refund_json()
    for name in _models._FIELDS:
        choice = draw(st.sampled_from(["keep", "keep", "other", "missing"]))
        if choice == "missing":
            del body[name]
        elif choice == "other":
            body[name] = draw(ANY)
    if draw(st.booleans()):
        body["modified"] = body.get("created", "2026-07-04T18:22:11Z")
    return body


def parse(body: dict[str, Any]) -> _models.Refund:
    content = json.dumps(body).encode()
    response = httpx.Response(201, content=content)
    return parse_refund(response, content, idempotency_key="k", request_id="r")


@given(answers())
def test_the_fast_path_gives_what_the_table_gives(body: dict[str, Any]) -> None:
    fast = parse(body)
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(_models, "_well_typed", lambda data: None)  # the table decides
        table = parse(body)
    assert dict(fast.invalid_fields) == dict(table.invalid_fields)
    assert fast.to_dict() == table.to_dict()
    for name in _models._FIELDS:
        value, expected = getattr(fast, name), getattr(table, name)
        assert value == expected, name
        assert type(value) is type(expected), name
        if hasattr(value, "utcoffset"):
            assert value.utcoffset() == expected.utcoffset(), name
    assert fast.extra == table.extra


def test_the_fast_path_covers_every_field_once() -> None:
    grouped = [
        *(name for name, _ in _models._STRINGS),
        *(name for name, _ in _models._NULLABLE_STRINGS),
        *(name for name, _, _ in _models._OBJECTS),
        *(name for name, _, _ in _models._DATE_TIMES),
        *(name for name, _, _ in _models._enum_rules()),
    ]
    assert sorted(grouped) == sorted(_models._FIELDS)


def test_a_well_typed_answer_takes_the_fast_path() -> None:
    data = json.loads(json.dumps(refund_json()), parse_float=Decimal)
    assert _models._well_typed(data) is not None
    data["created"] = 5
    assert _models._well_typed(data) is None


# -- date-times: the C parser's fast path gives what the module's own reading gives ----------


def _two(lo: int, hi: int) -> st.SearchStrategy[str]:
    return st.integers(lo, hi).map(lambda n: f"{n:02d}")


RFC3339_SHAPED = st.builds(
    lambda y, mo, d, sep, h, mi, s, frac, zone: f"{y}-{mo}-{d}{sep}{h}:{mi}:{s}{frac}{zone}",
    st.integers(0, 9999).map(lambda n: f"{n:04d}"),
    _two(0, 13),
    _two(0, 32),
    st.sampled_from(["T", "t", " "]),
    _two(0, 25),
    _two(0, 61),
    _two(0, 61),
    st.one_of(st.just(""), st.text("0123456789", min_size=1, max_size=9).map(lambda f: "." + f)),
    st.one_of(
        st.sampled_from(["Z", "z", "+00:00", "-00:00"]),
        st.builds(
            lambda sign, h, m: f"{sign}{h}:{m}", st.sampled_from("+-"), _two(0, 25), _two(0, 99)
        ),
    ),
)


def _outcome(read: Any, text: str) -> Any:
    try:
        value = read(text)
    except ValueError:
        return "ValueError"
    return (value, value.utcoffset(), value.tzinfo is not None)


@settings(max_examples=500, deadline=None)
@given(text=RFC3339_SHAPED)
def test_the_c_parser_reads_rfc3339_as_the_module_does(text: str) -> None:
    """Whatever the fields (month 13, minute 61, offset 24:00 or :99, 9 fraction digits,
    lower-case separators), ``parse_datetime`` ends as the module's own reading ends."""
    match = _models._RFC3339.fullmatch(text)
    assert match is not None
    own = _outcome(lambda t: _models._from_groups(match), text)
    assert _outcome(_models.parse_datetime, text) == own


def test_the_c_parser_is_used_for_the_common_form(monkeypatch: pytest.MonkeyPatch) -> None:
    """Not a timing: the fast path must still be taken (a Python without it reads as before)."""
    import re
    import sys

    if sys.version_info < (3, 11):
        pytest.skip("datetime.fromisoformat reads RFC 3339 from Python 3.11 on")
    calls: list[str] = []
    original = _models._from_groups

    def counted(match: re.Match[str]) -> Any:
        calls.append(match.string)
        return original(match)

    monkeypatch.setattr(_models, "_from_groups", counted)
    _models.parse_datetime("2026-07-04T18:22:11Z")
    _models.parse_datetime("2026-07-04T18:22:11.123+02:00")
    assert calls == []
    _models.parse_datetime("2026-07-04t18:22:11Z")
    assert calls == ["2026-07-04t18:22:11Z"]


def test_the_enum_rules_are_never_seen_half_made(monkeypatch: pytest.MonkeyPatch) -> None:
    """Review round 4: a thread reading an answer while another made the rules on first use
    saw some of them and silently dropped ``status``. Another thread reads in between every
    rule made here: it sees all of them or makes its own."""
    import threading

    monkeypatch.setattr(_models, "_ENUM_RULES", None)
    maker = threading.get_ident()
    seen: list[list[str]] = []
    original = _models._rules

    def rules_slowly(*checks: Any) -> Any:
        for rule in original(*checks):
            if threading.get_ident() == maker:
                reader = threading.Thread(
                    target=lambda: seen.append([name for name, _, _ in _models._enum_rules()])
                )
                reader.start()
                reader.join(10)
            yield rule

    monkeypatch.setattr(_models, "_rules", rules_slowly)
    made = [name for name, _, _ in _models._enum_rules()]
    assert made == ["scope", "status"]
    assert seen
    assert all(names == made for names in seen)
