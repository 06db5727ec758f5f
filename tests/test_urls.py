"""The request URL built from a base parsed once is the URL httpx's own parser gives."""

from __future__ import annotations

from urllib.parse import quote

import httpx
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from preo_client import RefundValidationError
from preo_client._policy import check_purchase_id
from preo_client._urls import _PLAIN_PATH, fast_path_available, request_url

BASES = [
    "https://api.preo.dev",
    "https://API.Preo.DEV",
    "HTTPS://api.preo.dev",
    "https://api.preo.dev:443",
    "https://api.preo.dev:8443",
    "http://127.0.0.1:8080",
    "http://[::1]:9000",
    "http://localhost",
    "https://bücher.example",
    "https://xn--bcher-kva.example/prefix",
    "https://proxy.example/preo/v2",
    "https://proxy.example/a%20b",
    "https://proxy.example/prefix/",
    "https://proxy.example/x/../y",
    "https://proxy.example/x/./y",
]


def _path(purchase_id: str) -> str:
    """The path the generated endpoint builds for ``purchase_id``."""
    return "/v1/purchases/{id}/refund".format(id=quote(str(purchase_id), safe=""))


def _same(base: str, path: str) -> None:
    fast = request_url(base, path)
    slow = httpx.URL(base + path)
    assert fast == slow
    assert str(fast) == str(slow)
    assert fast.raw_path == slow.raw_path
    assert (fast.scheme, fast.host, fast.port) == (slow.scheme, slow.host, slow.port)
    assert fast._uri_reference == slow._uri_reference


def test_the_fast_path_is_taken_with_this_httpx() -> None:
    """Fails loudly when httpx's private parse result changes: then every call parses the
    whole URL again (still correct, about 8 us slower). Update ``_urls.py`` for the new httpx."""
    assert fast_path_available(), f"httpx {httpx.__version__}: request_url fell back to parsing"
    url = request_url("https://api.preo.dev", "/v1/purchases/pur_1/refund")
    assert str(url) == "https://api.preo.dev/v1/purchases/pur_1/refund"


@pytest.mark.parametrize("base", BASES)
def test_every_kind_of_base_gives_the_parsed_url(base: str) -> None:
    ids = ["pur_1", "a b", "ä", "a/b", "..a", "a..", "%2E", "~-._", "?#", "\U0001f600"]
    for purchase_id in ids:
        _same(base, _path(purchase_id))


@settings(max_examples=300, deadline=None)
@given(base=st.sampled_from(BASES), purchase_id=st.text(min_size=1, max_size=255))
def test_any_valid_purchase_id_gives_the_parsed_url(base: str, purchase_id: str) -> None:
    try:
        check_purchase_id(purchase_id)
    except RefundValidationError:
        return
    _same(base, _path(purchase_id))


@settings(max_examples=300, deadline=None)
@given(path=st.text(alphabet="/.%~-_aZ09?#:@ \x00é", max_size=40))
def test_any_path_gives_the_parsed_url_or_its_error(path: str) -> None:
    """Paths the fast route does not recognise go through httpx's parser, errors included."""
    base = "https://api.preo.dev"
    try:
        slow = httpx.URL(base + path)
    except httpx.InvalidURL:
        with pytest.raises(httpx.InvalidURL):
            request_url(base, path)
        return
    assert request_url(base, path) == slow
    if _PLAIN_PATH.fullmatch(path):
        assert request_url(base, path)._uri_reference == slow._uri_reference


def test_a_url_too_long_raises_as_httpx_does() -> None:
    with pytest.raises(httpx.InvalidURL):
        request_url("https://api.preo.dev", "/" + "a" * 70_000)
