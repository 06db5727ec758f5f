"""Errors a partner can act on: the CLI's --json error document for every error class, the
right remedy for a 409 and a 422, and messages without doubled punctuation or field names."""

from __future__ import annotations

import inspect
import json
import re
from collections.abc import Callable, Iterator
from decimal import Decimal
from pathlib import Path
from typing import Any

import httpx
import pytest
from click.testing import CliRunner
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import preo_client
from preo_client import _cli, _exceptions
from preo_client._call import Call, deadline_failure, transport_failure
from preo_client._error_document import ERROR_FIELDS, error_document
from preo_client._exceptions import (
    APIError,
    PreoError,
    RefundOutcomeUnknownError,
    RefundValidationError,
    make_status_error,
    mark_outcome_unknown,
)
from preo_client._models import parse_refund
from preo_client.testing import FakePreo, Fault, serve

KEY = "key-0001"
ERROR_CLASSES = sorted(
    (
        obj
        for name in _exceptions.__all__
        if inspect.isclass(obj := getattr(_exceptions, name)) and issubclass(obj, BaseException)
    ),
    key=lambda cls: cls.__name__,
)


def _call(**options: Any) -> Call:
    with FakePreo.demo().client() as client:
        arguments: dict[str, Any] = {
            "reason": "sold_out", "scope": None, "amount": None, "comment": None,
            "pickup_point_id": None, "idempotency_key": KEY, **options,
        }  # fmt: skip
        return client._prepare("pur_1", **arguments)


def _response(status: int, body: bytes, request_id: str = "req_42") -> httpx.Response:
    return httpx.Response(
        status,
        content=body,
        headers={"x-request-id": request_id},
        request=httpx.Request("POST", "https://api.preo.dev/v1/purchases/pur_1/refund"),
    )


def _status_error(status: int, detail: object = "Injected.") -> _exceptions.APIStatusError:
    body = json.dumps(detail if isinstance(detail, dict) else {"detail": detail}).encode()
    return make_status_error(
        _response(status, body), content=body, request_id="req_42", idempotency_key=KEY
    )


def _validation_error() -> RefundValidationError:
    try:
        preo_client.plan_refund("sold-out")
    except RefundValidationError as exc:
        return exc
    raise AssertionError("not refused")


def _response_validation_error() -> _exceptions.APIResponseValidationError:
    try:
        parse_refund(_response(201, b"{}"), b"{}", idempotency_key=KEY, request_id="req_42")
    except _exceptions.APIResponseValidationError as exc:
        return exc
    raise AssertionError("not refused")


def _configuration_error() -> preo_client.ConfigurationError:
    try:
        preo_client.PreoClient(api_key="sk_test", base_url="ftp://example.com")
    except preo_client.ConfigurationError as exc:
        return exc
    raise AssertionError("not refused")


_STATUS_OF = {
    "APIStatusError": 418, "BadRequestError": 400, "AuthenticationError": 401,
    "PermissionDeniedError": 403, "NotFoundError": 404, "ConflictError": 409,
    "UnprocessableEntityError": 422, "RateLimitError": 429, "InternalServerError": 500,
}  # fmt: skip


def example_error(cls: type[BaseException]) -> BaseException:
    """An instance of ``cls`` made the way the library makes it."""
    name = cls.__name__
    base = name.replace("OutcomeUnknown", "")
    unknown = name.endswith("OutcomeUnknownError") and name != "RefundOutcomeUnknownError"
    error: BaseException
    if base in _STATUS_OF:
        detail: object = {"amount": ["Too big."]} if base == "BadRequestError" else "Injected."
        error = _status_error(_STATUS_OF[base], detail)
    elif base in ("APIConnectionError", "APITimeoutError"):
        call = _call()  # httpx marks a transport's error with its request, as made here
        fault = httpx.ConnectError if base == "APIConnectionError" else httpx.ConnectTimeout
        error = transport_failure(fault("refused", request=call.request), call).error
    elif base == "APIResponseValidationError":
        error = _response_validation_error()
    elif name == "RefundValidationError":
        return _validation_error()
    elif name == "ConfigurationError":
        return _configuration_error()
    elif name == "RefundOutcomeUnknownError":
        plain = RefundOutcomeUnknownError("The refund may exist")
        plain.idempotency_key = KEY
        return plain
    elif name == "APIError":
        return APIError("Something failed", idempotency_key=KEY)
    elif name == "PreoError":
        return PreoError("Something failed")
    else:
        raise AssertionError(f"no example for {name}")
    if unknown:
        assert isinstance(error, APIError)
        error = mark_outcome_unknown(error)
    assert type(error) is cls, (type(error), cls)
    return error


def test_every_error_class_has_an_example() -> None:
    assert len(ERROR_CLASSES) == 29
    for cls in ERROR_CLASSES:
        assert type(example_error(cls)) is cls


def _exit_code(error: BaseException) -> int:
    if isinstance(error, RefundValidationError | preo_client.ConfigurationError):
        return 2
    if isinstance(error, preo_client.AuthenticationError | preo_client.PermissionDeniedError):
        return 3
    return 1


@pytest.mark.parametrize("cls", ERROR_CLASSES, ids=lambda cls: cls.__name__)
def test_cli_json_error_document_for_every_error_class(
    cls: type[BaseException], monkeypatch: pytest.MonkeyPatch
) -> None:
    """`preo refund --json` turns each error class into one document a script can act on."""
    error = example_error(cls)

    def client(*args: object, **kwargs: object) -> preo_client.PreoClient:
        made = FakePreo.demo().client()

        def refund(*args: object, **kwargs: object) -> preo_client.Refund:
            raise error

        monkeypatch.setattr(made.purchases, "refund", refund)
        return made

    monkeypatch.setattr(_cli, "_sync_client", client)
    result = CliRunner().invoke(
        _cli.cli, ["refund", "pur_1", "--reason", "sold_out", "--json", "--sandbox"]
    )
    assert result.exception is None or isinstance(result.exception, SystemExit), result.output
    document = json.loads(result.output)["error"]
    assert tuple(document) == ERROR_FIELDS
    assert document["type"] == cls.__name__
    assert document["exit_code"] == result.exit_code == _exit_code(error)
    assert document["message"] == str(error) or isinstance(error, preo_client.ConfigurationError)
    assert document["outcome_unknown"] is isinstance(error, RefundOutcomeUnknownError)
    assert document["status_code"] == getattr(error, "status_code", None)
    assert document["request_id"] == getattr(error, "request_id", None)
    assert document["idempotency_key"] == (getattr(error, "idempotency_key", None) or None)
    if isinstance(error, APIError):
        assert document["idempotency_key"] == KEY
    expected_fields: dict[str, list[str]] = {}
    if isinstance(error, preo_client.BadRequestError):
        expected_fields = {"amount": ["Too big."]}
    elif isinstance(error, RefundValidationError):
        expected_fields = {"reason": [str(error).removeprefix("reason: ")]}
    assert document["field_errors"] == expected_fields


def test_cli_json_error_documents_from_the_sandbox(monkeypatch: pytest.MonkeyPatch) -> None:
    """End to end: real answers of the sandbox become documents with their request ids."""
    fake = FakePreo.demo(auto_purchases=True)
    monkeypatch.setattr(_cli, "_sync_client", lambda *args: fake.client())
    runner = CliRunner()
    base = ["refund", "pur_x1", "--reason", "sold_out", "--json", "--sandbox"]

    fake.inject(Fault.http_status(400, body=b'{"comment": ["Too long."]}'))
    document = json.loads(runner.invoke(_cli.cli, base).output)["error"]
    assert document["type"] == "BadRequestError"
    assert document["field_errors"] == {"comment": ["Too long."]}
    assert document["status_code"] == 400
    assert document["request_id"].startswith("req_")

    fake.inject(Fault.read_timeout())  # outcome unknown: not retried by default
    result = runner.invoke(_cli.cli, [*base, "--idempotency-key", "k-timeout"])
    document = json.loads(result.output)["error"]
    assert document["outcome_unknown"] is True
    assert document["idempotency_key"] == "k-timeout"
    assert result.exit_code == 1

    with fake.holding("k-busy"):
        document = json.loads(
            runner.invoke(_cli.cli, [*base, "--idempotency-key", "k-busy"]).output
        )["error"]
    assert document["type"] == "ConflictOutcomeUnknownError"
    assert "retry later with the same key" in document["message"]

    used = ["refund", "pur_x3", "--reason", "sold_out", "--json", "--sandbox"]
    assert runner.invoke(_cli.cli, [*used, "--idempotency-key", "k-used"]).exit_code == 0
    other = ["refund", "pur_x2", "--reason", "sold_out", "--json", "--sandbox"]
    document = json.loads(runner.invoke(_cli.cli, [*other, "--idempotency-key", "k-used"]).output)[
        "error"
    ]
    assert document["type"] == "UnprocessableEntityOutcomeUnknownError"
    assert document["outcome_unknown"] is True
    assert "already used with a different request body" in document["message"]
    assert "same key" not in document["message"].replace("with this key", "")

    document = json.loads(runner.invoke(_cli.cli, [*base, "--amount", "x"]).output)
    assert document["error"]["field_errors"]["amount"]


def test_error_document_of_a_usage_failure() -> None:
    assert error_document(2, "no API key") == {
        "type": "UsageError", "message": "no API key", "exit_code": 2, "status_code": None,
        "request_id": None, "idempotency_key": None, "outcome_unknown": False,
        "field_errors": {},
    }  # fmt: skip


# -- remedies and message hygiene ------------------------------------------------------------

DOUBLED_PUNCTUATION = re.compile(r"(?<!\.)\.\s*\.(?!\.)|[;:,]\s*[;:,.]|\.\s*[;:,]")
DOUBLED_FIELD = re.compile(r"\b([A-Za-z_]+): \1:")
SAME_KEY_ADVICE = re.compile(r"retry (later )?with (the same key|idempotency_key=)")


def assert_clean(message: str) -> None:
    assert not DOUBLED_PUNCTUATION.search(message), message
    assert not DOUBLED_FIELD.search(message), message
    assert "  " not in message, message


def test_422_for_a_reused_key_never_advises_the_same_key() -> None:
    error = mark_outcome_unknown(_status_error(422, "Idempotency key reused."))
    assert isinstance(error, RefundOutcomeUnknownError)
    assert "already used with a different request body" in str(error)
    assert not SAME_KEY_ADVICE.search(str(error)), str(error)
    assert error.idempotency_key == KEY
    assert_clean(str(error))


@pytest.mark.parametrize("marked", [False, True])
def test_409_for_a_key_in_flight_says_retry_later_with_the_same_key(marked: bool) -> None:
    error: APIError = _status_error(409, "In flight.")
    if marked:
        error = mark_outcome_unknown(error)
    assert str(error).count("retry later with the same key") == 1
    assert f"idempotency_key={KEY!r}" in str(error)
    assert_clean(str(error))


def _validation_errors() -> Iterator[tuple[str, Callable[[], object]]]:
    """Every refusal of an argument, through the public entry points."""
    client = FakePreo.demo().client()
    refund = client.purchases.refund
    cases: list[tuple[str, Callable[[], object]]] = [
        ("extra_headers name", lambda: refund("p", reason="sold_out", extra_headers={"a b": "x"})),
        ("extra_headers reserved", lambda: refund(
            "p", reason="sold_out", extra_headers={"Authorization": "x"})),
        ("extra_headers value", lambda: refund(
            "p", reason="sold_out", extra_headers={"X-A": "a\nb"})),
        ("timeout", lambda: refund("p", reason="sold_out", timeout=-1)),
        ("max_retries", lambda: refund("p", reason="sold_out", max_retries=-1)),
        ("reason", lambda: refund("p", reason="sold-out")),  # type: ignore[arg-type]
        ("scope", lambda: refund("p", reason="sold_out", scope="purchase_deposit")),
        ("amount", lambda: refund("p", reason="compensation", amount="1.234")),
        ("amount float", lambda: refund("p", reason="compensation", amount=0.1 + 0.2)),
        ("amount missing", lambda: refund("p", reason="compensation")),
        ("purchase_id", lambda: refund(" ", reason="sold_out")),
        ("comment", lambda: refund("p", reason="sold_out", comment=3)),  # type: ignore[arg-type]
        ("idempotency_key", lambda: refund("p", reason="sold_out", idempotency_key="a b")),
        ("base_url", lambda: preo_client.PreoClient(api_key="k", base_url="ftp://x")),
        ("api_key", lambda: preo_client.PreoClient(api_key="k\n", base_url="https://x")),
    ]  # fmt: skip
    yield from cases


@pytest.mark.parametrize("case", list(_validation_errors()), ids=lambda case: case[0])
def test_argument_refusals_name_the_field_once(case: tuple[str, Callable[[], object]]) -> None:
    with pytest.raises(PreoError) as caught:
        case[1]()
    assert_clean(str(caught.value))


# server details of every shape: words, with or without a final stop, field errors
_WORDS = st.lists(st.sampled_from(["Key", "in", "use", "Amount", "too", "big", "x"]), min_size=1)
_DETAIL = st.one_of(
    st.builds(lambda w, end: " ".join(w) + end, _WORDS, st.sampled_from(["", ".", "!", "?"])),
    st.builds(lambda f, w: {f: [" ".join(w) + "."]}, st.sampled_from(["amount", "scope"]), _WORDS),
)


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    status=st.sampled_from([400, 401, 403, 404, 409, 418, 422, 429, 500, 502, 503]),
    detail=_DETAIL,
    mark=st.booleans(),
    mark_twice=st.booleans(),
)
def test_status_error_messages_are_clean(
    status: int, detail: object, mark: bool, mark_twice: bool
) -> None:
    error: APIError = _status_error(status, detail)
    if mark:
        error = mark_outcome_unknown(error)
        if mark_twice:
            error = mark_outcome_unknown(error)
    message = str(error)
    assert_clean(message)
    if status == 422:
        assert not SAME_KEY_ADVICE.search(message), message
    if status == 409:
        assert message.count("retry later with the same key") == 1, message
    if mark:
        assert isinstance(error, RefundOutcomeUnknownError)
        assert isinstance(error.idempotency_key, str)
        assert error.idempotency_key == KEY
        assert message.count(KEY) <= 2, message


@pytest.mark.parametrize(
    "exc",
    [httpx.ConnectError("refused"), httpx.ReadTimeout("slow."), httpx.RemoteProtocolError("eof")],
    ids=type,
)
def test_transport_error_messages_are_clean(exc: Exception) -> None:
    failed = transport_failure(exc, _call())
    assert_clean(str(failed.error))
    assert_clean(str(deadline_failure(_call()).error))
    assert_clean(str(mark_outcome_unknown(failed.error)))


def test_every_example_error_message_is_clean() -> None:
    for cls in ERROR_CLASSES:
        assert_clean(str(example_error(cls)))


def test_outcome_unknown_key_is_typed_str() -> None:
    hints = inspect.get_annotations(RefundOutcomeUnknownError)
    assert hints["idempotency_key"] == "str"
    for cls in ERROR_CLASSES:
        if issubclass(cls, RefundOutcomeUnknownError):
            assert isinstance(example_error(cls).idempotency_key, str)  # type: ignore[attr-defined]


def test_decimal_amount_in_validation_message_is_clean() -> None:
    with pytest.raises(RefundValidationError) as caught:
        preo_client.plan_refund("compensation", amount=Decimal("-1"))
    assert_clean(str(caught.value))


def _bulk_document(tmp_path: Path, fake: FakePreo, *args: str, key: str | None = None) -> Any:
    source = tmp_path / "in.csv"
    source.write_text("purchase_id\npur_1\npur_2\n")
    with serve(fake) as server:
        result = CliRunner().invoke(
            _cli.cli,
            ["refund-bulk", str(source), "--json", "--overwrite", *args],
            env={"PREO_API_KEY": key or fake.api_key, "PREO_BASE_URL": server.url},
        )
    assert result.exception is None or isinstance(result.exception, SystemExit), result.output
    (line,) = [line for line in result.output.splitlines() if line.startswith("{")]
    document = json.loads(line)
    return result.exit_code, document["error"]


def test_refund_bulk_json_error_documents(tmp_path: Path) -> None:
    """`preo refund-bulk --json`: the same error document for a run that stops or never
    starts."""
    fake = FakePreo.demo(auto_purchases=True)
    code, document = _bulk_document(tmp_path, fake, "--reason", "sold_out", key="sk_wrong")
    assert code == 3
    assert tuple(document) == ERROR_FIELDS
    assert document["type"] == "AuthenticationError"
    assert document["status_code"] == 401
    assert document["request_id"].startswith("req_")
    assert document["idempotency_key"].startswith("preo-")

    fake.inject(*[Fault.http_status(429, retry_after="100000")] * 4)
    code, document = _bulk_document(tmp_path, fake, "--reason", "sold_out", "--max-pause", "1")
    assert code == 1
    assert document["type"] in ("RateLimitError", "RateLimitOutcomeUnknownError")
    assert document["status_code"] == 429

    code, document = _bulk_document(tmp_path, fake, "--reason", "sold-out")
    assert code == 2
    assert document["type"] == "RefundValidationError"
    assert document["field_errors"] == {"reason": [document["message"].split(": ", 1)[1]]}

    journal = tmp_path / "held.journal"
    from preo_client._journal import Journal

    held = Journal(journal)
    try:
        code, document = _bulk_document(
            tmp_path, fake, "--reason", "sold_out", "--journal", str(journal)
        )
    finally:
        held.close()
    assert code == 2
    assert document["type"] == "JournalError"
    assert "in use by another run" in document["message"]
