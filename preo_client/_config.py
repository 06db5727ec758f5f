"""Client settings: API key and base URL from arguments or environment, timeouts, URL safety."""

from __future__ import annotations

import os
from collections.abc import Mapping
from typing import Final
from urllib.parse import urlsplit

import httpx

from ._exceptions import PreoError
from ._version import __version__

__all__ = [
    "DEFAULT_BASE_URL",
    "DEFAULT_MAX_RETRIES",
    "DEFAULT_TIMEOUT",
    "resolve_api_key",
    "resolve_base_url",
]

DEFAULT_BASE_URL: Final = "https://api.preo.dev"
DEFAULT_TIMEOUT: Final = httpx.Timeout(30.0, connect=5.0)
DEFAULT_MAX_RETRIES: Final = 2
USER_AGENT: Final = f"preo-client-python/{__version__}"
API_KEY_ENV: Final = "PREO_API_KEY"
BASE_URL_ENV: Final = "PREO_BASE_URL"


class ConfigurationError(PreoError, ValueError):
    """A client setting that cannot work (no API key, unsafe base URL, ...)."""


def resolve_api_key(api_key: str | None, environ: Mapping[str, str] = os.environ) -> str:
    """Explicit argument, else ``PREO_API_KEY``; never echoes the key in an error."""
    key = api_key if api_key is not None else environ.get(API_KEY_ENV)
    if not key:
        raise ConfigurationError(
            "No API key: pass PreoClient(api_key=...) or set the PREO_API_KEY environment variable."
        )
    if not isinstance(key, str):
        raise ConfigurationError(f"api_key must be a string, not {type(key).__name__}")
    if any(ord(c) < 0x21 or ord(c) == 0x7F for c in key):
        raise ConfigurationError(
            "api_key contains whitespace or control characters (CR/LF?); it is not shown here."
        )
    return key


def _is_loopback(host: str) -> bool:
    if host == "localhost" or host.endswith(".localhost"):
        return True
    import ipaddress  # only when a client is made with a plain-http URL

    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def resolve_base_url(
    base_url: str | None,
    *,
    allow_insecure_http: bool = False,
    environ: Mapping[str, str] = os.environ,
) -> str:
    """Explicit argument, else ``PREO_BASE_URL``, else the production API; ``https`` enforced.

    ``http://`` is accepted only for a loopback host (``localhost``, ``127.0.0.0/8``, ``::1``) or
    when ``allow_insecure_http=True``, so a typo cannot send the API key in clear text.
    """
    url = base_url or environ.get(BASE_URL_ENV) or DEFAULT_BASE_URL
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise ConfigurationError(f"base_url must be an http(s) URL with a host, got {url!r}")
    if parts.username or parts.password:
        raise ConfigurationError("base_url must not carry credentials; pass api_key instead")
    if parts.query or parts.fragment:
        raise ConfigurationError(f"base_url must not have a query or fragment, got {url!r}")
    if parts.scheme == "http" and not (allow_insecure_http or _is_loopback(parts.hostname)):
        raise ConfigurationError(
            f"base_url {url!r} is plain http: use https, a loopback host, or pass "
            "allow_insecure_http=True"
        )
    return url.rstrip("/")
