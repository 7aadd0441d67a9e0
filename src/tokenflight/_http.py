"""The HTTP stacks: httpx, its maintained fork httpx2 (same API), and the aiohttp transport.

Users bring either client library; the manager's own token requests run on httpx2 where it
is installed. Both libraries expose the same names, so the rest of the package is written
against httpx's types and takes the error classes of both from here.
"""

from __future__ import annotations

import functools
import os
import ssl
from collections.abc import AsyncIterator
from typing import TYPE_CHECKING, Any, Literal, TypeAlias, get_args

import httpx
import sniffio

from ._errors import ConfigurationError
from ._redact import cut_frames_holding

if TYPE_CHECKING:
    import httpx2
else:
    try:
        import httpx2
    except ImportError:  # pragma: no cover  (CI installs both stacks)
        httpx2 = None

__all__ = [
    "AUTH_BASES",
    "DEFAULT_ADMISSION",
    "DEFAULT_CLIENT_LIMITS",
    "fetch_defaults",
    "DEFAULT_TIMEOUT",
    "BYTE_STREAMS",
    "DECODING_ERRORS",
    "HTTP_STACKS",
    "HTTP_ERRORS",
    "TRANSPORT_ERRORS",
    "AnyClient",
    "HttpStack",
    "make_client",
    "pool_admission",
    "resolve_stack",
]

HttpStack = Literal["auto", "httpx", "httpx2", "aiohttp"]
HTTP_STACKS: tuple[str, ...] = get_args(HttpStack)

#: The pool of the manager's own client for token requests.
DEFAULT_TIMEOUT = httpx.Timeout(10.0, connect=5.0)
#: What `client()` makes: httpx's default pool size, every connection kept alive; its
#: admission finds how many of them to use (connections are opened on demand).
DEFAULT_CLIENT_LIMITS = httpx.Limits(max_connections=100, max_keepalive_connections=100)
#: The gate shared by `auth()` objects given none: a default httpx pool keeps 20
#: connections alive, so admitting at most 20 never opens and closes connections.
DEFAULT_ADMISSION = 20

#: Picks the stack of `http="auto"` (for example in CI, to run the suite on each stack).
STACK_ENV = "TOKENFLIGHT_HTTP"

AnyClient: TypeAlias = "httpx.AsyncClient | httpx2.AsyncClient"


def _both(name: str) -> tuple[type[Any], ...]:
    """A class of httpx and its httpx2 twin, for `isinstance` and `except`."""
    found = [getattr(httpx, name)]
    if httpx2 is not None:
        found.append(getattr(httpx2, name))
    return tuple(found)


TRANSPORT_ERRORS: tuple[type[Exception], ...] = _both("TransportError")
DECODING_ERRORS: tuple[type[Exception], ...] = _both("DecodingError")
HTTP_ERRORS: tuple[type[Exception], ...] = _both("HTTPError")
BYTE_STREAMS: tuple[type[Any], ...] = _both("ByteStream")
AUTH_BASES: tuple[type[Any], ...] = _both("Auth")


def resolve_stack(name: str) -> str:
    """The concrete stack (`httpx`, `httpx2` or `aiohttp`) that `name` asks for.

    `auto` is `$TOKENFLIGHT_HTTP` when set; else, the fastest installed stack that runs on
    the current event loop: aiohttp's transport on asyncio (with `tokenflight[aiohttp]`),
    then httpx2, then httpx. Outside an event loop, `auto` is left for later.

    Raises:
        ConfigurationError: An unknown name, or a stack that is not installed.
    """
    if name == "auto":
        name = os.environ.get(STACK_ENV, "").strip().lower() or _fastest()
    if name not in HTTP_STACKS:
        raise ConfigurationError(
            f"unknown HTTP stack {name!r} (from http=, stack= or ${STACK_ENV}): "
            "use 'auto', 'httpx', 'httpx2' or 'aiohttp'"
        )
    if name == "httpx2" and httpx2 is None:  # pragma: no cover  (CI installs both)
        raise ConfigurationError(
            "http='httpx2' needs httpx2, a dependency of tokenflight: reinstall tokenflight"
        )
    if name == "aiohttp":
        _aiohttp_transport_class()  # raises when the extra is missing
    return name


#: The fastest stack installed that runs on any event loop.
_PORTABLE = "httpx2" if httpx2 is not None else "httpx"


def _loop_library() -> str | None:
    """The running event loop's library (asyncio, trio), or None outside one."""
    try:
        return sniffio.current_async_library()
    except sniffio.AsyncLibraryNotFoundError:
        return None


def _fastest() -> str:
    """The fastest stack installed for the running loop ("auto" outside a loop)."""
    library = _loop_library()
    if library is None:
        return "auto"
    if library == "asyncio" and _has_aiohttp_transport():
        return "aiohttp"
    return _PORTABLE


def _has_aiohttp_transport() -> bool:
    try:
        _aiohttp_transport_class()
    except ConfigurationError:  # pragma: no cover  (CI installs the extra)
        return False
    return True


@functools.cache
def _aiohttp_transport_class() -> type[Any]:
    try:
        import aiohttp
        import aiohttp.http_exceptions
        from httpx_aiohttp.httpx2 import AiohttpTransport
    except ImportError as exc:  # pragma: no cover  (CI installs the extra)
        raise ConfigurationError(
            "http='aiohttp' needs the aiohttp transport: pip install 'tokenflight[aiohttp]'"
        ) from exc

    class Transport(AiohttpTransport):
        """aiohttp's transport, its errors without the frames that hold a request's secrets.

        aiohttp's session and the transport keep the request's headers and body as plain
        locals; an error reporter would record them (the Authorization value, the form
        with the client secret). Those frames are cut from the errors' tracebacks.
        """

        async def handle_async_request(self, request: Any) -> Any:
            try:
                response = await super().handle_async_request(request)
            except Exception as exc:
                cut_frames_holding(exc, request_secrets(request))
                _raise_as_protocol_error(exc, aiohttp)
                raise
            response.stream = Stream(response.stream)
            return response

    class Stream(httpx2.AsyncByteStream):
        """An aiohttp response body whose malformed framing raises `RemoteProtocolError`,
        and that ends, unread, once closed.

        aiohttp answers a read of a released response with one module-level exception
        object (`ClientConnectionError("Connection closed")`); each raise adds its frames
        to that object's traceback, which keeps them, and with them the response's
        unread buffer (about 110 KiB of a large body), for the life of the process.
        A body dropped half-way (`discard`) would pin one buffer per response.
        """

        def __init__(self, inner: Any) -> None:
            self._inner = inner
            self._closed = False

        async def __aiter__(self) -> AsyncIterator[bytes]:
            chunks = aiter(self._inner)
            try:
                while not self._closed:
                    try:
                        chunk = await anext(chunks)
                    except StopAsyncIteration:
                        return
                    except Exception as exc:
                        _raise_as_protocol_error(exc, aiohttp)
                        raise
                    yield chunk
            finally:
                await chunks.aclose()  # httpx-aiohttp's body is an async generator

        async def aclose(self) -> None:
            self._closed = True
            await self._inner.aclose()

    return Transport


def _raise_as_protocol_error(exc: Exception, aiohttp: Any) -> None:
    """Raise httpx2's `RemoteProtocolError` for aiohttp's "not valid HTTP" errors.

    httpx and httpx2 raise `RemoteProtocolError` (a transport error, retried) for a bad
    status line, a header without a colon, an oversized header, a bad chunk or an
    overflowing Content-Length; aiohttp raises `ClientResponseError` (status 400, which
    the server never sent), `ClientPayloadError` or its parser's `HttpProcessingError`,
    which httpx-aiohttp lets through (its `ClientPayloadError` mapping covers the body
    only). Returns for any other error.
    """
    protocol = (
        aiohttp.ClientResponseError,
        aiohttp.ClientPayloadError,
        aiohttp.http_exceptions.HttpProcessingError,
    )
    if isinstance(exc, protocol):
        text = str(getattr(exc, "message", "") or exc).strip().splitlines()
        summary = text[0].rstrip(":") if text else type(exc).__name__
        raise httpx2.RemoteProtocolError(f"malformed HTTP response: {summary[:200]}") from exc


#: Headers whose values are credentials.
_SECRET_HEADERS = ("authorization", "proxy-authorization", "dpop", "cookie")


def request_secrets(request: Any) -> list[str]:
    """The credentials an httpx or httpx2 request carries: secret headers, and its body."""
    found = [value for name in _SECRET_HEADERS for value in request.headers.get_list(name)]
    try:
        body: bytes = request.content
    except RuntimeError:  # RequestNotRead: a streamed body, which no frame holds whole
        return found
    return [*found, body.decode("latin-1")]


def pool_admission(limits: httpx.Limits) -> int:
    """The admission bound that matches a pool: its `max_connections`."""
    return limits.max_connections or DEFAULT_ADMISSION


def make_client(
    stack: str,
    *,
    limits: httpx.Limits,
    timeout: httpx.Timeout,
    verify: ssl.SSLContext | bool = True,
    **kwargs: Any,
) -> httpx.AsyncClient:
    """A new `AsyncClient` of a resolved stack that never follows redirects by itself.

    `limits` and `timeout` may be of either library; they are copied field by field.
    The aiohttp transport runs on asyncio only (aiohttp is asyncio's).

    Raises:
        ConfigurationError: The aiohttp stack under trio.
    """
    kwargs.setdefault("follow_redirects", False)
    if stack == "auto":  # made outside an event loop: the fastest that runs on any loop
        stack = _PORTABLE
    if stack == "httpx":
        return httpx.AsyncClient(
            limits=_copy(httpx.Limits, limits), timeout=timeout, verify=verify, **kwargs
        )
    limits2 = _copy(httpx2.Limits, limits)
    timeout2 = httpx2.Timeout(
        connect=timeout.connect, read=timeout.read, write=timeout.write, pool=timeout.pool
    )
    if stack == "aiohttp":
        _require_asyncio()
        transport = _aiohttp_transport_class()(verify=verify, limits=limits2)
        kwargs.setdefault("transport", transport)
    client: Any = httpx2.AsyncClient(limits=limits2, timeout=timeout2, verify=verify, **kwargs)
    return client  # type: ignore[no-any-return]


def _copy(cls: type[Any], limits: Any) -> Any:
    """`limits` as the given library's `Limits`."""
    return cls(
        max_connections=limits.max_connections,
        max_keepalive_connections=limits.max_keepalive_connections,
        keepalive_expiry=limits.keepalive_expiry,
    )


def _require_asyncio() -> None:
    library = _loop_library()  # outside a loop: aiohttp itself complains if used elsewhere
    if library not in (None, "asyncio"):
        raise ConfigurationError(
            f"the aiohttp transport runs on asyncio only, not {library}: "
            "use http='httpx2' (or 'auto') under trio"
        )


def fetch_defaults(
    stack: str, total: int | None, per_origin: int | None, limits: httpx.Limits | None
) -> tuple[int, int, httpx.Limits]:
    """Fetch concurrency, per provider and in all, and the token client's pool, by stack.

    Measured on a cold start of 2,000 tenants on one provider (20 callers each): httpx2 and
    aiohttp's transport are fastest at 64 requests at once; httpx (httpcore 1.0) at 20.
    """
    if total is None:
        total = 20 if stack in ("httpx", "auto") else 64
    if per_origin is None:
        per_origin = max(1, total * 3 // 4)
    if limits is None:
        limits = httpx.Limits(max_connections=total, max_keepalive_connections=total)
    return total, min(per_origin, total), limits
