"""A reserved header can't be sent under another spelling (adversary round 4, r20).

CGI-style servers (WSGI, Django, PHP) turn ``Idempotency_Key`` into the same variable as
``Idempotency-Key`` and join the values, so ``{"Idempotency_Key": "x"}`` beside ours made the
server act on ``x,<our key>`` while the client reported ``<our key>``.
"""

from __future__ import annotations

import httpx
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from preo_client import ConfigurationError, PreoClient, RefundValidationError
from preo_client._config import RESERVED_HEADERS

KEY = "sk_test_reserved"


def spellings(name: str) -> st.SearchStrategy[str]:
    """``name`` with each letter in either case and each '-' as '-' or '_'."""
    parts = [
        st.sampled_from(["-", "_"]) if c == "-" else st.sampled_from([c.lower(), c.upper()])
        for c in name
    ]
    return st.tuples(*parts).map("".join)


@settings(max_examples=300, deadline=None)
@given(data=st.data(), reserved=st.sampled_from(sorted(RESERVED_HEADERS)))
def test_no_spelling_of_a_reserved_header_is_accepted(data: st.DataObject, reserved: str) -> None:
    name = data.draw(spellings(reserved))
    sent: list[httpx.Request] = []
    client = PreoClient(
        api_key=KEY,
        http_client=httpx.Client(
            transport=httpx.MockTransport(lambda r: sent.append(r) or httpx.Response(500))
        ),
    )
    with pytest.raises(RefundValidationError, match="cannot be overridden"):
        client.purchases.refund("pur_1", reason="sold_out", extra_headers={name: "x"})
    assert sent == []  # refused before anything is sent
    with pytest.raises(ConfigurationError, match="cannot be overridden"):
        PreoClient(api_key=KEY, default_headers={name: "x"})


def test_other_underscored_names_still_go_through() -> None:
    sent: list[httpx.Request] = []

    def answer(request: httpx.Request) -> httpx.Response:
        sent.append(request)
        return httpx.Response(503)

    client = PreoClient(
        api_key=KEY,
        max_retries=0,
        http_client=httpx.Client(transport=httpx.MockTransport(answer)),
    )
    with pytest.raises(Exception):  # noqa: B017, PT011 - the 503; what matters is the request
        client.purchases.refund("pur_1", reason="sold_out", extra_headers={"X_Trace": "t1"})
    assert sent[0].headers["x_trace"] == "t1"
    assert sent[0].headers.get_list("idempotency-key") == [sent[0].headers["idempotency-key"]]


@pytest.mark.parametrize("async_", [False, True])
@pytest.mark.parametrize("name", ["Idempotency_Key", "IDEMPOTENCY_KEY", "Content_Length"])
def test_an_injected_client_with_an_underscore_spelling_is_refused(async_: bool, name: str) -> None:
    """Adversary round 3 (w1): the injected httpx client's own default headers were sent
    beside ours; a CGI-style server then saw ``evil,<our key>`` as the key."""
    from preo_client import AsyncPreoClient

    if async_:
        with pytest.raises(ConfigurationError, match="cannot be overridden"):
            AsyncPreoClient(api_key=KEY, http_client=httpx.AsyncClient(headers={name: "evil"}))
    else:
        with pytest.raises(ConfigurationError, match="cannot be overridden"):
            PreoClient(api_key=KEY, http_client=httpx.Client(headers={name: "evil"}))
