"""Contract checks: requests and responses validated against openapi/preo.yaml."""

from __future__ import annotations

import json
import re
from functools import cache
from pathlib import Path
from typing import Any

import httpx
import yaml
from openapi_schema_validator import OAS31Validator

SPEC_PATH = Path(__file__).resolve().parent.parent / "openapi" / "preo.yaml"
OPERATION_PATH = re.compile(r"/v1/purchases/[^/]+/refund")
KEY_PATTERN = re.compile(r"[\x21-\x7e]{1,255}")


@cache
def spec() -> dict[str, Any]:
    loaded: dict[str, Any] = yaml.safe_load(SPEC_PATH.read_text(encoding="utf-8"))
    return loaded


def validator(ref: str) -> OAS31Validator:
    schema = {"components": spec()["components"], "$ref": ref}
    return OAS31Validator(schema)


def operation() -> dict[str, Any]:
    op: dict[str, Any] = spec()["paths"]["/v1/purchases/{id}/refund"]["post"]
    return op


def check_request(request: httpx.Request) -> None:
    """Fail if ``request`` is not what the document allows for the refund operation."""
    if not OPERATION_PATH.fullmatch(request.url.raw_path.decode("ascii").split("?")[0]):
        raise AssertionError(f"request to an undocumented path: {request.url}")
    assert request.method == "POST"
    assert request.headers["content-type"] == "application/json"
    assert request.headers["authorization"].startswith("Bearer ")
    key = request.headers.get("idempotency-key")
    assert key is not None
    assert KEY_PATTERN.fullmatch(key), key
    body = json.loads(request.content)
    validator("#/components/schemas/RefundRequestCreate").validate(body)


def check_response(response: httpx.Response) -> None:
    """Fail if ``response`` does not match the documented response for its status."""
    responses = operation()["responses"]
    documented = responses.get(str(response.status_code)) or responses.get(
        f"{response.status_code // 100}XX"
    )
    assert documented is not None, f"undocumented status {response.status_code}"
    content = documented.get("content")
    if not content:
        return
    assert response.headers["content-type"].startswith("application/json")
    schema = content["application/json"]["schema"]
    validator(schema["$ref"]).validate(json.loads(response.content))
