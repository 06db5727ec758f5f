"""A reserved header can't be sent under another spelling (adversary round 4, r20).

CGI-style servers (WSGI, Django, PHP) turn ``Idempotency_Key`` into the same variable as
``Idempotency-Key`` and join the values, so ``{"Idempotency_Key": "x"}`` beside ours made the
server act on ``x,<our key>`` while the client reported ``<our key>``.
"""

from __future__ import annotations

from typing import Any

import httpx
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from preo_client import ConfigurationError, PreoClient, RefundValidationError
from preo_client._config import REPLACED_HEADERS, RESERVED_HEADERS

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


def _injected(kind: str, how: str, headers: dict[str, str]) -> None:
    """Make a client (``kind``) that uses an httpx client with ``headers`` (``how``: given to
    the constructor, or to ``with_options``)."""
    from preo_client import AsyncPreoClient

    make: Any = PreoClient if kind == "sync" else AsyncPreoClient
    http: Any = httpx.Client if kind == "sync" else httpx.AsyncClient
    if how == "constructor":
        make(api_key=KEY, http_client=http(headers=headers))
    else:
        make(api_key=KEY).with_options(http_client=http(headers=headers))


def _reserved_value(name: str) -> str:
    """A value for ``name`` that is not httpx's own default for it."""
    return "identity" if name == "accept-encoding" else "evil.example" if name == "host" else "x"


@pytest.mark.parametrize("how", ["constructor", "with_options"])
@pytest.mark.parametrize("kind", ["sync", "async"])
@pytest.mark.parametrize("name", sorted(RESERVED_HEADERS - REPLACED_HEADERS))
def test_an_injected_client_with_a_reserved_header_is_refused(
    name: str, kind: str, how: str
) -> None:
    """Review round 4 (r5): an injected client's own ``Transfer-Encoding``, ``Content-Length``,
    ``Content-Encoding``, ``Host``, ... went out on every refund. ``Host`` would send the
    refund to another site behind the same address: no value may change where it goes."""
    with pytest.raises(ConfigurationError, match="cannot be overridden") as caught:
        _injected(kind, how, {name.title(): _reserved_value(name)})
    assert repr(name) in str(caught.value)


@settings(max_examples=100, deadline=None)
@given(
    data=st.data(),
    reserved=st.sampled_from(sorted(RESERVED_HEADERS)),
    kind=st.sampled_from(["sync", "async"]),
    how=st.sampled_from(["constructor", "with_options"]),
)
def test_no_spelling_of_a_reserved_header_on_an_injected_client_is_accepted(
    data: st.DataObject, reserved: str, kind: str, how: str
) -> None:
    name = data.draw(spellings(reserved))
    if reserved in REPLACED_HEADERS and "_" not in name:
        _injected(kind, how, {name: _reserved_value(reserved)})  # ours replaces it: accepted
        return
    with pytest.raises(ConfigurationError, match="cannot be overridden") as caught:
        _injected(kind, how, {name: _reserved_value(reserved)})
    assert repr(reserved) in str(caught.value)


@pytest.mark.parametrize("how", ["constructor", "with_options"])
@pytest.mark.parametrize("kind", ["sync", "async"])
def test_httpx_default_headers_and_other_names_are_accepted(kind: str, how: str) -> None:
    """Every httpx client has ``Accept-Encoding`` and ``Connection`` (reserved names) with
    httpx's own values: those pass, as do ``Accept``, ``User-Agent`` and any other name."""
    _injected(kind, how, {})
    _injected(kind, how, {"Accept": "text/plain", "User-Agent": "mine", "X-Trace": "t1"})
    with httpx.Client() as plain:
        _injected(kind, how, {"Accept-Encoding": plain.headers["accept-encoding"]})


def test_an_accepted_injected_client_sends_only_our_framing() -> None:
    """What an accepted injected client adds reaches the wire; framing and Host are httpx's own,
    from the body and the base URL."""
    sent: list[httpx.Request] = []

    def answer(request: httpx.Request) -> httpx.Response:
        sent.append(request)
        return httpx.Response(503)

    http = httpx.Client(headers={"X-Trace": "t1"}, transport=httpx.MockTransport(answer))
    client = PreoClient(api_key=KEY, max_retries=0, http_client=http)
    with pytest.raises(Exception):  # noqa: B017, PT011 - the 503; what matters is the request
        client.purchases.refund("pur_1", reason="sold_out")
    (request,) = sent
    assert request.headers["x-trace"] == "t1"
    assert request.headers["host"] == "api.preo.dev"
    assert request.headers["content-length"] == str(len(request.content))
    assert "transfer-encoding" not in request.headers
    assert "content-encoding" not in request.headers


@pytest.mark.parametrize("kind", ["sync", "async"])
@pytest.mark.parametrize("name", sorted(REPLACED_HEADERS))
def test_a_shared_clients_own_value_of_a_header_we_set_is_replaced(kind: str, name: str) -> None:
    """A client shared with other APIs may carry its own ``Authorization`` (or ``Content-Type``,
    ``Idempotency-Key``, ``Accept-Encoding``): accepted, and the refund carries ours."""
    import asyncio

    from preo_client import AsyncPreoClient

    sent: list[httpx.Request] = []

    def answer(request: httpx.Request) -> httpx.Response:
        sent.append(request)
        return httpx.Response(503)

    headers = {name.title(): "theirs"}
    transport = httpx.MockTransport(answer)
    if kind == "sync":
        client = PreoClient(
            api_key=KEY,
            max_retries=0,
            http_client=httpx.Client(headers=headers, transport=transport),
        )
        with pytest.raises(Exception):  # noqa: B017, PT011 - the 503; the request matters
            client.purchases.refund("pur_1", reason="sold_out", idempotency_key="k-1")
    else:

        async def main() -> None:
            http = httpx.AsyncClient(headers=headers, transport=transport)
            aclient = AsyncPreoClient(api_key=KEY, max_retries=0, http_client=http)
            with pytest.raises(Exception):  # noqa: B017, PT011
                await aclient.purchases.refund("pur_1", reason="sold_out", idempotency_key="k-1")

        asyncio.run(main())
    (request,) = sent
    assert request.headers.get_list(name) != ["theirs"]
    assert len(request.headers.get_list(name)) == 1
    assert request.headers["authorization"] == f"Bearer {KEY}"
    assert request.headers["idempotency-key"] == "k-1"
    assert request.headers["content-type"] == "application/json"
    assert request.headers["accept-encoding"] == "gzip, deflate"


def test_only_encodings_the_body_reader_decodes_are_asked_for(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """With brotli/zstandard installed httpx offers ``br``/``zstd``; the body reader decodes
    gzip and deflate only, so a refund answered in ``br`` would be unreadable: the SDK asks for
    what it reads, whatever httpx's default."""
    sent: list[httpx.Request] = []

    def answer(request: httpx.Request) -> httpx.Response:
        sent.append(request)
        return httpx.Response(503)

    http = httpx.Client(transport=httpx.MockTransport(answer))
    http.headers["Accept-Encoding"] = "gzip, deflate, br, zstd"  # as httpx with both installed
    client = PreoClient(api_key=KEY, max_retries=0, http_client=http)
    with pytest.raises(Exception):  # noqa: B017, PT011
        client.purchases.refund("pur_1", reason="sold_out")
    assert sent[0].headers["accept-encoding"] == "gzip, deflate"
    own = PreoClient(api_key=KEY)
    assert own._headers["accept-encoding"] == "gzip, deflate"
