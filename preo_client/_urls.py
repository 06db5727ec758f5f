"""A refund's request URL: the client's base URL parsed once, not again on every call.

``httpx.URL("https://api.preo.dev/v1/purchases/pur_1/refund")`` parses, validates and
normalises the whole text (about 8 µs, the largest single cost of building a request). The
base URL is the same for every call of a client; only the path changes, and the generated
endpoint percent-encodes its one variable segment. So :func:`request_url` parses the base once
and joins the path to its parsed form, which is what parsing the joined text gives for such a
path.

This uses two private names of httpx (``httpx._urlparse.ParseResult`` and
``URL._uri_reference``). Whenever either is missing or not what this module expects, or the
path is not plainly safe, it falls back to the public ``httpx.URL(text)``, so a change in
httpx costs speed, never correctness. ``tests/test_urls.py`` fails loudly when the fast path
stops being taken, and checks over generated ids and base URLs that it gives the very URL the
public parser gives.
"""

from __future__ import annotations

import functools
import re
from typing import Final

import httpx

__all__ = ["fast_path_available", "request_url"]

try:  # private: see the module docstring
    from httpx._urlparse import MAX_URL_LENGTH as _MAX_URL_LENGTH
    from httpx._urlparse import ParseResult as _ParseResult
except ImportError:  # pragma: no cover - a future httpx
    _ParseResult = None  # type: ignore[assignment,misc]
    _MAX_URL_LENGTH = 0

# An absolute path of percent-encoded segments (unreserved characters and %XX only), none of
# them a dot segment: httpx's parser leaves such a path exactly as it is.
_PLAIN_PATH: Final = re.compile(r"(?:/(?!\.\.?(?:/|\Z))(?:[A-Za-z0-9\-._~]|%[0-9A-F]{2})+)+")


@functools.lru_cache(maxsize=64)
def _parsed_base(base_url: str) -> _ParseResult | None:
    """The parsed form of ``base_url`` when paths can be joined to it, else None."""
    if _ParseResult is None:  # pragma: no cover - a future httpx
        return None
    reference = getattr(httpx.URL(base_url), "_uri_reference", None)
    if type(reference) is not _ParseResult:
        return None
    if reference.query is not None or reference.fragment is not None:
        return None
    if not reference.scheme or not reference.host or reference.path.endswith("/"):
        return None
    return reference


def request_url(base_url: str, path: str) -> httpx.URL:
    """``httpx.URL(base_url + path)``, without parsing the base again.

    Raises ``httpx.InvalidURL`` as ``httpx.URL`` does (e.g. when too long).
    """
    base = _parsed_base(base_url)
    if (
        base is None
        or len(base_url) + len(path) > _MAX_URL_LENGTH
        or _PLAIN_PATH.fullmatch(path) is None
    ):
        return httpx.URL(base_url + path)
    url = httpx.URL.__new__(httpx.URL)
    url._uri_reference = base._replace(path=base.path + path)
    return url


def fast_path_available() -> bool:
    """Whether :func:`request_url` joins paths without parsing (for the guard test)."""
    return _parsed_base("https://api.preo.dev") is not None
