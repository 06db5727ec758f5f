"""FakePreo: state, amounts, idempotency, faults, the loopback server and its CLI."""

from __future__ import annotations

import json
import socket
import subprocess
import sys
import time
from decimal import Decimal

import httpx
import pytest

from preo_client import (
    APIResponseValidationError,
    APITimeoutError,
    AuthenticationError,
    BadRequestError,
    ConflictError,
    NotFoundError,
    PreoClient,
    RefundOutcomeUnknownError,
    UnprocessableEntityError,
)
from preo_client.testing import DEMO_API_KEY, FakePreo, Fault, serve


@pytest.fixture
def fake() -> FakePreo:
    fake = FakePreo()
    fake.add_purchase("ticket", price="49.00", fees="2.50", transaction_id="tx1")
    fake.add_purchase("cup", price="3.00", deposit="2.00", transaction_id="tx1")
    fake.add_purchase("locker", price="10.00", deposit="20.00")
    return fake


@pytest.fixture
def client(fake: FakePreo) -> PreoClient:
    return fake.client(max_retries=0)


@pytest.mark.parametrize(
    ("purchase", "kwargs", "amount", "scope"),
    [
        ("ticket", {"reason": "customer_request"}, "49.00", "purchase_price"),
        ("cup", {"reason": "deposit_reclaim"}, "2.00", "purchase_deposit"),
        ("ticket", {"reason": "sold_out"}, "51.50", "purchase_full"),
        ("cup", {"reason": "event_cancelled"}, "56.50", "transaction_full"),
        ("locker", {"reason": "rental_return", "scope": "purchase_custom", "amount": "12.5"},
         "12.50", "purchase_custom"),
        ("cup", {"reason": "overcharge", "scope": "transaction_custom", "amount": "53.00"},
         "53.00", "transaction_custom"),
    ],
)  # fmt: skip
def test_amounts_per_scope(
    fake: FakePreo, client: PreoClient, purchase: str, kwargs: dict[str, str], amount: str,
    scope: str,
) -> None:  # fmt: skip
    refund = client.purchases.refund(purchase, **kwargs)  # type: ignore[arg-type]
    assert refund.amount == Decimal(amount)
    assert refund.scope == scope
    assert refund.status == "requested"
    (record,) = fake.refunds_for(purchase)
    assert record.amount == Decimal(amount)
    assert record.idempotency_key == refund.idempotency_key
    assert refund.request_id is not None
    assert refund.request_id.startswith("req_")


def test_parts_cannot_be_refunded_twice(fake: FakePreo, client: PreoClient) -> None:
    client.purchases.refund("cup", reason="deposit_reclaim")
    with pytest.raises(BadRequestError) as info:
        client.purchases.refund("cup", reason="deposit_reclaim")
    assert info.value.field_errors == {"non_field_errors": ["Already refunded: deposit."]}
    client.purchases.refund("ticket", reason="sold_out")
    with pytest.raises(BadRequestError, match="Already refunded"):
        client.purchases.refund("cup", reason="event_cancelled")  # the ticket is in tx1
    with pytest.raises(BadRequestError, match=r"Already refunded: deposit\.$"):
        client.purchases.refund("cup", reason="sold_out")
    assert len(fake.refunds) == 2


def test_custom_amounts_cannot_exceed_what_is_left(fake: FakePreo, client: PreoClient) -> None:
    client.purchases.refund("locker", reason="compensation", amount="25.00")
    with pytest.raises(BadRequestError) as info:
        client.purchases.refund("locker", reason="compensation", amount="5.01")
    assert info.value.field_errors == {
        "amount": ["Refund amount 5.01 exceeds the refundable balance 5.00."]
    }
    client.purchases.refund("locker", reason="compensation", amount="5.00")
    with pytest.raises(BadRequestError, match="exceeds the refundable balance"):
        client.purchases.refund("locker", reason="deposit_reclaim")
    assert sum(r.amount for r in fake.refunds_for("locker")) == Decimal("30.00")


def test_transaction_custom_spreads_over_the_transaction(
    fake: FakePreo, client: PreoClient
) -> None:
    client.purchases.refund(
        "ticket", reason="overcharge", scope="transaction_custom", amount="56.50"
    )
    assert fake.purchases["ticket"].remaining == 0
    assert fake.purchases["cup"].remaining == 0
    with pytest.raises(BadRequestError):
        client.purchases.refund("cup", reason="overcharge", amount="0.01")


def test_unknown_purchase_and_bad_token(fake: FakePreo, client: PreoClient) -> None:
    with pytest.raises(NotFoundError):
        client.purchases.refund("nope", reason="sold_out")
    with pytest.raises(AuthenticationError, match="Invalid token"):
        client.with_options(api_key="sk_wrong").purchases.refund("ticket", reason="sold_out")
    assert fake.refunds == []


def test_missing_token_and_policy_errors_use_the_clients_words(
    fake: FakePreo, no_contract_request_check: None
) -> None:
    raw = httpx.Client(transport=fake.transport(), base_url="https://sandbox.preo.test")
    url = "/v1/purchases/ticket/refund"
    assert raw.post(url, json={"reason": "sold_out"}).status_code == 401
    auth = {"authorization": f"Bearer {DEMO_API_KEY}"}
    cases = [
        ({"reason": "sold-out"}, "reason", "Did you mean 'sold_out'?"),
        ({"reason": "sold_out", "scope": "purchase_custom"}, "scope", "not allowed"),
        ({"reason": "compensation"}, "amount", "is required"),
        ({"reason": "compensation", "amount": 1.005}, "amount", "at most 2 decimal places"),
        ({"scope": "purchase_full"}, "reason", "This field is required."),
        ({"reason": "sold_out", "pickup_point_id": ""}, "pickup_point_id", "non-empty"),
    ]
    for body, field, words in cases:
        response = raw.post(url, json=body, headers=auth)
        assert response.status_code == 400
        errors = response.json()
        assert list(errors) == [field]
        assert words in errors[field][0]
    assert raw.post(url, content=b"{", headers=auth).status_code == 400
    assert raw.get(url, headers=auth).status_code == 405
    assert raw.post("/v1/other", json={}, headers=auth).status_code == 404
    assert fake.refunds == []


def test_idempotency_replay_conflict_and_in_flight(fake: FakePreo, client: PreoClient) -> None:
    first = client.purchases.refund("ticket", reason="sold_out", idempotency_key="k1")
    again = client.purchases.refund("ticket", reason="sold_out", idempotency_key="k1")
    assert (first.replayed, again.replayed) == (False, True)
    assert again.id == first.id
    assert again.http_response.headers["idempotent-replayed"] == "true"
    with pytest.raises(UnprocessableEntityError):
        client.purchases.refund("ticket", reason="customer_request", idempotency_key="k1")
    with fake.holding("k2"), pytest.raises(ConflictError):
        client.purchases.refund("cup", reason="deposit_reclaim", idempotency_key="k2")
    client.purchases.refund("cup", reason="deposit_reclaim", idempotency_key="k2")
    assert [r.idempotency_key for r in fake.refunds] == ["k1", "k2"]


def test_faults_are_consumed_in_order(fake: FakePreo, client: PreoClient) -> None:
    fake.inject(Fault.read_timeout(), Fault.malformed_json(), Fault.truncated_json())
    with pytest.raises(APITimeoutError) as info:
        client.purchases.refund("ticket", reason="customer_request")
    assert isinstance(info.value, RefundOutcomeUnknownError)
    assert len(fake.refunds) == 1  # recorded before the timeout struck
    for purchase in ("cup", "locker"):
        with pytest.raises(APIResponseValidationError, match="not valid JSON"):
            client.purchases.refund(purchase, reason="deposit_reclaim")
    assert len(fake.refunds) == 3
    assert len(fake.requests) == 3
    client.purchases.refund("ticket", reason="overcharge", amount="1.00")  # queue is empty


def test_demo_seed() -> None:
    fake = FakePreo.demo()
    assert set(fake.purchases) == {
        "pur_demo_ticket", "pur_demo_cup", "pur_demo_beer", "pur_demo_locker",
    }  # fmt: skip


def test_loopback_server_with_real_http() -> None:
    fake = FakePreo.demo()
    with serve(fake) as server:
        assert server.port > 0
        with PreoClient(api_key=DEMO_API_KEY, base_url=server.url, max_retries=0) as client:
            refund = client.purchases.refund("pur_demo_cup", reason="deposit_reclaim")
            assert refund.amount == Decimal("2.00")
            with pytest.raises(NotFoundError):
                client.purchases.refund("pur_missing", reason="sold_out")
            fake.inject(Fault.connection_reset())
            with pytest.raises(RefundOutcomeUnknownError):
                client.purchases.refund("pur_demo_beer", reason="sold_out")
    assert [r.purchase_id for r in fake.refunds] == ["pur_demo_cup", "pur_demo_beer"]


def test_serve_command_on_a_free_port() -> None:
    proc = subprocess.Popen(
        [sys.executable, "-m", "preo_client.testing", "serve", "--port", "0"],
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert proc.stdout is not None
        line = proc.stdout.readline()
        assert line.startswith("serving on http://127.0.0.1:")
        url = line.rsplit(" ", 1)[1].strip()
        deadline = time.monotonic() + 10
        while True:
            try:
                response = httpx.post(
                    f"{url}/v1/purchases/pur_demo_ticket/refund",
                    json={"reason": "sold_out", "scope": "purchase_full"},
                    headers={"authorization": f"Bearer {DEMO_API_KEY}", "idempotency-key": "cli-1"},
                )
                break
            except httpx.ConnectError:
                assert time.monotonic() < deadline
                time.sleep(0.05)
        assert response.status_code == 201
        assert json.loads(response.content)["amount"] == 51.5
    finally:
        proc.terminate()
        proc.wait(timeout=10)
        if proc.stdout is not None:
            proc.stdout.close()


def test_server_answers_and_closes_on_control_characters_in_headers() -> None:
    body = b'{"reason": "deposit_reclaim"}'
    with serve(FakePreo.demo()) as server:
        for value in (b"a\x00b", b"a\rb", b"\xd7\xf8\x9b"):
            with socket.create_connection(("127.0.0.1", server.port), timeout=5) as sock:
                sock.sendall(
                    b"POST /v1/purchases/pur_demo_locker/refund HTTP/1.1\r\nHost: x\r\n"
                    b"Idempotency-Key: " + value + b"\r\n"
                    b"Authorization: Bearer " + DEMO_API_KEY.encode() + b"\r\n"
                    b"Content-Length: " + str(len(body)).encode() + b"\r\n\r\n" + body
                )
                answer = b""
                while chunk := sock.recv(4096):  # the server closes: recv returns b""
                    answer += chunk
            assert answer.startswith(b"HTTP/1.1 400 "), (value, answer[:40])
        assert server.fake.refunds == []
