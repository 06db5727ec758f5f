"""The OpenAPI document: valid, faithful to the source page, and its examples validate."""

from __future__ import annotations

import copy
from typing import Any

import pytest
from openapi_spec_validator import validate

from preo_client import REASONS, SCOPES, RefundReason, RefundScope, RefundStatus, plan_refund
from tests._contract import operation, spec, validator

SEED_REASONS = [
    "deposit_reclaim",
    "sold_out",
    "event_cancelled",
    "product_defect",
    "duplicate_purchase",
    "customer_request",
    "compensation",
    "overcharge",
    "other",
    "rental_return",
]


def test_document_is_valid_openapi_3_1() -> None:
    document = spec()
    assert document["openapi"].startswith("3.1")
    validate(document)


def test_operation_matches_the_page() -> None:
    document = spec()
    assert document["servers"] == [{"url": "https://api.preo.dev"}]
    assert document["components"]["securitySchemes"]["bearerAuth"] == {
        "type": "http",
        "scheme": "bearer",
        "description": "`Authorization: Bearer <token>`",
    }
    op = operation()
    assert op["summary"] == "Create refund request for purchase"
    assert op["tags"] == ["purchases"]
    (path_param,) = [p for p in op["parameters"] if p["in"] == "path"]
    assert path_param["name"] == "id"
    assert path_param["description"] == "A unique value identifying this purchase."
    assert set(op["responses"]) == {"201", "400", "401", "403", "404", "409", "422", "429", "5XX"}
    assert "Retry-After" in op["responses"]["429"]["headers"]


def test_reason_enum_takes_all_ten_described_values() -> None:
    schemas = spec()["components"]["schemas"]
    assert schemas["RefundReason"]["enum"] == SEED_REASONS
    assert sorted(r.value for r in RefundReason) == sorted(SEED_REASONS)
    assert sorted(REASONS) == sorted(SEED_REASONS)


def test_scope_and_status_enums_match_generated_code_and_policy() -> None:
    schemas = spec()["components"]["schemas"]
    assert schemas["RefundScope"]["enum"] == list(SCOPES)
    assert sorted(schemas["RefundScope"]["enum"]) == sorted(s.value for s in RefundScope)
    assert sorted(schemas["RefundStatus"]["enum"]) == sorted(s.value for s in RefundStatus)
    assert len(schemas["RefundStatus"]["enum"]) == 8


def test_response_schema_has_every_field_of_the_page() -> None:
    refund = spec()["components"]["schemas"]["RefundRequest"]
    assert set(refund["properties"]) == {
        "id", "edition_id", "amount", "requested_by", "pickup_point", "created", "modified",
        "can_approve", "can_reject", "organization", "scope", "status", "comment",
        "service_response", "refund_date",
    }  # fmt: skip
    assert set(refund["required"]) == {
        "id", "edition_id", "amount", "requested_by", "pickup_point", "created", "modified",
        "can_approve", "can_reject",
    }  # fmt: skip
    check = validator("#/components/schemas/RefundRequest")
    base: dict[str, Any] = operation()["responses"]["201"]["content"]["application/json"][
        "examples"
    ]["sold_out"]["value"]
    check.validate({**base, "can_approve": "true", "can_reject": "false"})
    with pytest.raises(Exception, match="is not of type 'string'"):  # the page says string
        check.validate({**base, "can_approve": True})
    check.validate({**base, "comment": None})  # string | null on the page
    check.validate({**base, "status": "some_future_status"})  # forward compatible
    check.validate({**base, "new_field": {"a": 1}})  # extra fields allowed


def _examples(section: dict[str, Any]) -> list[tuple[str, Any]]:
    media = section["content"]["application/json"]
    if "examples" in media:
        return [(name, ex["value"]) for name, ex in media["examples"].items()]
    return [("example", media["example"])] if "example" in media else []


def test_request_examples_cover_every_reason_and_follow_the_policy() -> None:
    examples = _examples(operation()["requestBody"])
    check = validator("#/components/schemas/RefundRequestCreate")
    assert {value["reason"] for _, value in examples} == set(SEED_REASONS)
    for _, value in examples:
        check.validate(value)
        plan_refund(value["reason"], value.get("scope"), value.get("amount"))


@pytest.mark.parametrize("status", ["201", "400", "401", "403", "404"])
def test_response_examples_validate(status: str) -> None:
    section = operation()["responses"][status]
    schema_ref = section["content"]["application/json"]["schema"]["$ref"]
    examples = _examples(section)
    assert examples
    for _, value in examples:
        validator(schema_ref).validate(value)


def test_schema_rejects_a_float_reason_and_unknown_scope() -> None:
    check = validator("#/components/schemas/RefundRequestCreate")
    with pytest.raises(Exception, match="is not one of"):
        check.validate({"reason": "sold-out"})
    with pytest.raises(Exception, match="is not one of"):
        check.validate({"reason": "sold_out", "scope": "everything"})


# -- the page's type line, field by field -----------------------------------------------------
# Line 2 of the source page (shared/seeds/000_*.txt), in order, transcribed:
# (name, types, format, required, readOnly). "object" stands for the two nested serializers,
# "enum" for an enum of strings (the request `scope` has no entry on the line: same shape).

SEED_REQUEST = [
    ("reason", {"string"}, None, True, False),
    ("scope", {"string"}, None, False, False),
    ("amount", {"number", "null"}, "double", False, False),
    ("comment", {"string"}, None, False, False),
    ("pickup_point_id", {"string", "null"}, None, False, False),
]
SEED_RESPONSE = [
    ("id", {"string"}, None, True, True),
    ("edition_id", {"string"}, None, True, True),
    ("amount", {"number"}, "double", True, False),
    ("requested_by", {"object"}, None, True, True),
    ("pickup_point", {"object"}, None, True, True),
    ("created", {"string"}, "date-time", True, True),
    ("modified", {"string"}, "date-time", True, True),
    ("can_approve", {"string"}, None, True, True),
    ("can_reject", {"string"}, None, True, True),
    ("organization", {"string", "null"}, None, False, False),
    ("scope", {"string"}, None, False, False),
    ("status", {"string"}, None, False, False),
    ("comment", {"string", "null"}, None, False, False),
    ("service_response", {"string", "null"}, None, False, False),
    ("refund_date", {"string", "null"}, "date-time", False, False),
]
SEED_ENUMS = {"scope": "RefundScope", "status": "RefundStatus", "reason": "RefundReason"}


Table = list[tuple[str, set[str], str | None, bool, bool]]


def _resolve(schemas: dict[str, Any], schema: dict[str, Any]) -> dict[str, Any]:
    ref = schema.get("$ref")
    if ref is None:
        return schema
    target: dict[str, Any] = schemas[ref.rsplit("/", 1)[1]]
    return target


def _types(schemas: dict[str, Any], schema: dict[str, Any]) -> set[str]:
    """The JSON types a property admits (through $ref, allOf and anyOf branches)."""
    schema = _resolve(schemas, schema)
    if "type" in schema:
        declared = schema["type"]
        return {declared} if isinstance(declared, str) else set(declared)
    if "allOf" in schema:
        return set.intersection(*(_types(schemas, s) for s in schema["allOf"]))
    branches = schema.get("anyOf") or schema.get("oneOf") or []
    return set().union(*(_types(schemas, s) for s in branches))


def _refs(schema: dict[str, Any]) -> set[str]:
    branches = [schema, *schema.get("anyOf", []), *schema.get("allOf", [])]
    return {b["$ref"].rsplit("/", 1)[1] for b in branches if "$ref" in b}


def table_mismatches(schemas: dict[str, Any], schema_name: str, table: Table) -> list[str]:
    """Where ``schemas[schema_name]`` differs from the page's table: "field: what" entries."""
    schema = schemas[schema_name]
    found: list[str] = []
    if list(schema["properties"]) != [name for name, *_ in table]:
        found.append(f"fields: {list(schema['properties'])}")
    required = set(schema.get("required", []))
    for name, types, fmt, is_required, read_only in table:
        prop = schema["properties"].get(name)
        if prop is None:
            found.append(f"{name}: missing")
            continue
        if _types(schemas, prop) != types:
            found.append(f"{name}: type {sorted(_types(schemas, prop))}")
        if _resolve(schemas, prop).get("format") != fmt:
            found.append(f"{name}: format")
        if (name in required) != is_required:
            found.append(f"{name}: required")
        if bool(prop.get("readOnly", False)) != read_only:
            found.append(f"{name}: readOnly")
        if name in SEED_ENUMS and SEED_ENUMS[name] not in _refs(prop):
            found.append(f"{name}: enum")
        if types == {"object"}:
            (ref,) = _refs(prop)
            if schemas[ref].get("additionalProperties") is not True:
                found.append(f"{name}: additionalProperties")
    return found


@pytest.mark.parametrize(
    ("schema_name", "table"),
    [("RefundRequestCreate", SEED_REQUEST), ("RefundRequest", SEED_RESPONSE)],
)
def test_schema_matches_the_page_type_line_field_by_field(schema_name: str, table: Table) -> None:
    assert table_mismatches(spec()["components"]["schemas"], schema_name, table) == []


def test_the_table_check_catches_each_kind_of_drift() -> None:
    schemas = copy.deepcopy(spec()["components"]["schemas"])
    props = schemas["RefundRequest"]["properties"]
    props["comment"]["type"] = "string"  # the old reading: null refused
    props["can_approve"]["type"] = ["string", "boolean"]
    props["amount"]["readOnly"] = True
    del props["refund_date"]["format"]
    schemas["RefundRequest"]["required"].remove("modified")
    props["status"] = {"type": "string"}
    assert sorted(table_mismatches(schemas, "RefundRequest", SEED_RESPONSE)) == [
        "amount: readOnly",
        "can_approve: type ['boolean', 'string']",
        "comment: type ['string']",
        "modified: required",
        "refund_date: format",
        "status: enum",
    ]


def test_path_id_matches_the_page() -> None:
    (path_param,) = [p for p in operation()["parameters"] if p["in"] == "path"]
    assert path_param["schema"] == {"type": "string"}
    assert path_param["required"] is True


def test_response_allows_null_comment_and_refuses_what_the_page_refuses() -> None:
    check = validator("#/components/schemas/RefundRequest")
    base: dict[str, Any] = operation()["responses"]["201"]["content"]["application/json"][
        "examples"
    ]["sold_out"]["value"]
    check.validate({**base, "comment": None})
    for field, bad in [("comment", 5), ("created", None), ("can_reject", 7), ("amount", "1")]:
        with pytest.raises(Exception, match="is not of type"):
            check.validate({**base, field: bad})
