"""The OpenAPI document: valid, faithful to the source page, and its examples validate."""

from __future__ import annotations

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
    for flag in (True, "true"):  # the page says string; servers send booleans too
        check.validate({**base, "can_approve": flag, "can_reject": flag})
    check.validate({**base, "status": "some_future_status"})  # forward compatible


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
