"""Client settings as one frozen value: API key, base URL, timeouts, retries, URL safety, logs."""

from __future__ import annotations

import dataclasses
import functools
import math
import os
import re
from collections.abc import Mapping
from types import MappingProxyType
from typing import Final, Literal, TypeAlias, TypeVar
from urllib.parse import urlsplit

import httpx

from ._exceptions import ConfigurationError, shown
from ._retry import Backoff
from ._version import __version__

__all__ = [
    "DEFAULT_BASE_URL",
    "DEFAULT_MAX_RETRIES",
    "DEFAULT_TIMEOUT",
    "NOT_GIVEN",
    "ClientSettings",
    "ConfigurationError",
    "NotGiven",
    "Timeout",
    "check_client_headers",
    "resolve_api_key",
    "resolve_base_url",
]

DEFAULT_BASE_URL: Final = "https://api.preo.dev"
DEFAULT_TIMEOUT: Final = httpx.Timeout(30.0, connect=5.0)
DEFAULT_MAX_RETRIES: Final = 2
USER_AGENT: Final = f"preo-client-python/{__version__}"
API_KEY_ENV: Final = "PREO_API_KEY"
BASE_URL_ENV: Final = "PREO_BASE_URL"
LOG_ENV: Final = "PREO_LOG"

Timeout: TypeAlias = "float | httpx.Timeout"
_VISIBLE_ASCII: Final = re.compile(r"[!-~]+")
_HEADER_VALUE: Final = re.compile(r"[\t -~]*")
_T = TypeVar("_T")


class NotGiven:
    """The type of :data:`NOT_GIVEN`: "use the client's setting" (``None`` may mean something)."""

    _instance: NotGiven | None = None

    def __new__(cls) -> NotGiven:
        if cls._instance is None:
            cls._instance = super().__new__(cls)
        return cls._instance

    def __bool__(self) -> Literal[False]:
        return False

    def __repr__(self) -> str:
        return "NOT_GIVEN"

    def __reduce__(self) -> str:
        return "NOT_GIVEN"


NOT_GIVEN: Final = NotGiven()


def given(value: _T | NotGiven, default: _T) -> _T:
    """``value`` unless it is :data:`NOT_GIVEN`, else ``default``."""
    return default if isinstance(value, NotGiven) else value


def resolve_api_key(api_key: str | None, environ: Mapping[str, str] = os.environ) -> str:
    """Explicit argument, else ``PREO_API_KEY``: 1+ visible ASCII characters; never echoed."""
    key = api_key if api_key is not None else environ.get(API_KEY_ENV)
    if key is None or key == "":
        raise ConfigurationError(
            "No API key: pass PreoClient(api_key=...) or set the PREO_API_KEY environment variable."
        )
    if not isinstance(key, str):
        raise ConfigurationError(f"api_key must be a string, not {type(key).__name__}")
    if not _VISIBLE_ASCII.fullmatch(key):
        raise ConfigurationError(
            "api_key must be visible ASCII characters only (no spaces, control or non-ASCII "
            "characters; check for a trailing newline or non-breaking space); it is not shown here."
        )
    return key


def _is_loopback(host: str) -> bool:
    """Exactly ``localhost``, ``127.0.0.0/8`` and ``::1`` (not ``*.localhost``)."""
    if host.lower() == "localhost":
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
    if base_url is not None and not base_url:
        raise ConfigurationError("base_url must not be empty (leave it out for the production API)")
    url = base_url or environ.get(BASE_URL_ENV) or DEFAULT_BASE_URL
    if not isinstance(url, str):
        raise ConfigurationError(f"base_url must be a string, not {type(url).__name__}")
    if len(url) > 2048:
        raise ConfigurationError("base_url must be at most 2048 characters")
    if not _VISIBLE_ASCII.fullmatch(url):
        raise ConfigurationError(
            f"base_url must be visible ASCII with no spaces or control characters, got {url!r}"
        )
    try:
        parts = urlsplit(url)
        hostname = parts.hostname
        parts.port  # noqa: B018 - raises ValueError on a bad port
    except ValueError as exc:
        raise ConfigurationError(f"base_url is not a valid URL ({exc}): {url!r}") from None
    if parts.scheme not in ("http", "https") or not hostname:
        raise ConfigurationError(f"base_url must be an http(s) URL with a host, got {url!r}")
    if parts.username or parts.password:
        raise ConfigurationError("base_url must not carry credentials; pass api_key instead")
    if "?" in url or "#" in url:
        raise ConfigurationError(f"base_url must not have a query or fragment, got {url!r}")
    if parts.scheme == "http" and not (allow_insecure_http or _is_loopback(hostname)):
        raise ConfigurationError(
            f"base_url {url!r} is plain http: use https, a loopback host, or pass "
            "allow_insecure_http=True"
        )
    try:
        httpx.URL(url)
    except httpx.InvalidURL as exc:
        raise ConfigurationError(f"base_url is not a valid URL ({exc}): {url!r}") from None
    return url.rstrip("/")


MAX_TIMEOUT: Final = 86_400.0


def _seconds(value: object, field: str) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise ConfigurationError(
            f"{field} must be a number of seconds or an httpx.Timeout, got {shown(value)}"
        )
    try:
        seconds = float(value)
    except OverflowError:
        seconds = math.inf
    if not (math.isfinite(seconds) and 0 < seconds <= MAX_TIMEOUT):
        raise ConfigurationError(
            f"{field} must be a number of seconds > 0 and at most {MAX_TIMEOUT:g}, "
            f"got {shown(value)}"
        )
    return seconds


def as_timeout(timeout: object, *, field: str = "timeout") -> httpx.Timeout:
    """A number of seconds or an ``httpx.Timeout``, checked; every limit set.

    A limit left unset (``None``) in an ``httpx.Timeout`` takes the largest one given, so no
    phase of an attempt can wait for ever.
    """
    if isinstance(timeout, httpx.Timeout):
        values = {
            "connect": timeout.connect,
            "read": timeout.read,
            "write": timeout.write,
            "pool": timeout.pool,
        }
        given_values = {k: _seconds(v, f"{field}.{k}") for k, v in values.items() if v is not None}
        if not given_values:
            raise ConfigurationError(f"{field} must set at least one limit")
        total = max(given_values.values())
        return httpx.Timeout(**{k: given_values.get(k, total) for k in values})
    return httpx.Timeout(_seconds(timeout, field))


def total_seconds(timeout: httpx.Timeout) -> float:
    """The wall-clock bound of one attempt: the largest of the timeout's limits."""
    return max(v for v in (timeout.connect, timeout.read, timeout.write, timeout.pool) if v)


# Far past any useful budget; a bound keeps every setting printable (repr of an int past
# Python's 4,300-digit limit raises ValueError, and repr(client) shows max_retries).
MAX_RETRIES: Final = 1_000_000


def check_max_retries(max_retries: object) -> int:
    """An int from 0 to :data:`MAX_RETRIES` (bool refused)."""
    if (
        isinstance(max_retries, bool)
        or not isinstance(max_retries, int)
        or not 0 <= max_retries <= MAX_RETRIES
    ):
        raise ConfigurationError(
            f"max_retries must be an int from 0 to {MAX_RETRIES:,}, got {shown(max_retries)}"
        )
    return max_retries


def check_headers(headers: Mapping[str, str] | None, *, field: str) -> Mapping[str, str]:
    """Header names and values a request may carry (no CR/LF, no reserved names); frozen."""
    if headers is None:
        return MappingProxyType({})
    if not isinstance(headers, Mapping):
        raise ConfigurationError(f"{field} must be a mapping of header names to values")
    checked: dict[str, str] = {}
    for name, value in headers.items():
        if not isinstance(name, str) or not _VISIBLE_ASCII.fullmatch(name) or ":" in name:
            raise ConfigurationError(f"{field}: invalid header name {shown(name)}")
        # CGI-style servers (WSGI, Django, PHP) read ``Idempotency_Key`` as ``Idempotency-Key``
        # and join the two values: an underscore spelling of a reserved name is that name.
        if name.lower().replace("_", "-") in RESERVED_HEADERS:
            raise ConfigurationError(
                f"{field}: {name!r} is set by the client and cannot be overridden (reserved, "
                f"also spelt with '_' for '-': {', '.join(sorted(RESERVED_HEADERS))})"
            )
        if not isinstance(value, str) or not _HEADER_VALUE.fullmatch(value):
            raise ConfigurationError(
                f"{field}: the value of {name!r} must be printable ASCII without CR/LF"
            )
        checked[name.lower()] = value
    return MappingProxyType(checked)


# Headers the client sets, and those that change how the body is framed or decoded.
RESERVED_HEADERS: Final = frozenset(
    {
        "accept-encoding",
        "authorization",
        "connection",
        "content-encoding",
        "content-length",
        "content-type",
        "expect",
        "host",
        "idempotency-key",
        "keep-alive",
        "proxy-authorization",
        "te",
        "trailer",
        "transfer-encoding",
        "upgrade",
    }
)


@functools.cache
def _httpx_defaults() -> Mapping[str, str]:
    """The default headers httpx gives every client (``Accept-Encoding``, ``Connection``, ...)."""
    with httpx.Client(transport=httpx.BaseTransport(), trust_env=False) as plain:
        return MappingProxyType(dict(plain.headers))


# Reserved headers this client always sends itself, replacing an injected client's value
# of the same name: harmless on a client shared with other APIs (e.g. its own Authorization).
REPLACED_HEADERS: Final = frozenset(
    {"accept-encoding", "authorization", "content-type", "idempotency-key"}
)


def check_client_headers(headers: httpx.Headers) -> None:
    """Refuse an injected HTTP client whose own headers would go out on every refund with a
    reserved name (any spelling, ``_`` for ``-`` included): its ``Host``, ``Content-Length``,
    ``Transfer-Encoding``, ... would change where a refund goes or how it is framed. httpx's
    own defaults (``Connection: keep-alive``) pass, and so do the headers this client always
    replaces with its own (:data:`REPLACED_HEADERS`, spelt with ``-``)."""
    defaults = _httpx_defaults()
    for name, value in headers.items():
        spelt = name.lower()
        reserved = spelt.replace("_", "-")
        if reserved not in RESERVED_HEADERS or defaults.get(spelt) == value:
            continue
        if spelt in REPLACED_HEADERS:
            continue
        # CGI-style servers (WSGI, Django, PHP) join `Idempotency_Key` with ours
        cgi = f" ({reserved!r} to a CGI-style server)" if spelt != reserved else ""
        raise ConfigurationError(
            f"http_client: its default header {name!r}{cgi} is set by this client and cannot "
            "be overridden (reserved, also spelt with '_' for '-': "
            f"{', '.join(sorted(RESERVED_HEADERS))}); remove it from the httpx client's headers"
        )


@dataclasses.dataclass(frozen=True, slots=True, kw_only=True)
class ClientSettings:
    """Every setting of a client, checked once; ``with_options`` is ``dataclasses.replace``."""

    api_key: str = dataclasses.field(repr=False)
    base_url: str
    timeout: httpx.Timeout
    max_retries: int
    default_headers: Mapping[str, str]
    retry_unknown_outcome: bool
    allow_insecure_http: bool
    backoff: Backoff

    @classmethod
    def resolve(
        cls,
        *,
        api_key: str | None,
        base_url: str | None,
        timeout: object,
        max_retries: object,
        default_headers: Mapping[str, str] | None,
        retry_unknown_outcome: bool,
        allow_insecure_http: bool,
        backoff: Backoff,
    ) -> ClientSettings:
        """Check every argument (environment fallbacks included) and freeze them."""
        if not isinstance(backoff, Backoff):
            raise ConfigurationError(f"backoff must be a Backoff, got {type(backoff).__name__}")
        return cls(
            api_key=resolve_api_key(api_key),
            base_url=resolve_base_url(base_url, allow_insecure_http=allow_insecure_http),
            timeout=as_timeout(timeout),
            max_retries=check_max_retries(max_retries),
            default_headers=check_headers(default_headers, field="default_headers"),
            retry_unknown_outcome=bool(retry_unknown_outcome),
            allow_insecure_http=bool(allow_insecure_http),
            backoff=backoff,
        )
