"""A minimal HTTP/1.1 server connection on anyio and h11, for the bundled identity provider."""

from __future__ import annotations

import contextlib
import json
import logging
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from email.utils import formatdate
from http import HTTPStatus

import anyio
import anyio.abc
import h11

__all__ = ["Request", "Response", "json_response", "serve_connection"]

logger = logging.getLogger("tokenflight.testing")

_MAX_BODY = 1 << 20
_RECEIVE_SIZE = 65536
_SERVER = ("Server", "tokenflight-idp")
_STREAM_ERRORS = (
    anyio.BrokenResourceError,
    anyio.ClosedResourceError,
    anyio.EndOfStream,
    OSError,
)


@dataclass(slots=True)
class Request:
    """A received request: lower-cased header names (repeated ones joined by ``", "``)."""

    method: str
    path: str
    query: str
    headers: dict[str, str]
    body: bytes


@dataclass(slots=True)
class Response:
    """A response to send, or an instruction to drop the connection.

    ``drop`` closes the connection without answering; ``partial`` (with ``drop``) first
    sends the status line and part of the headers.
    """

    status: int
    headers: Sequence[tuple[str, str]] = ()
    body: bytes = b""
    content_type: str = "application/json"
    drop: bool = False
    partial: bool = False


Handler = Callable[[Request], Awaitable[Response]]


def json_response(
    status: int, payload: object, headers: Sequence[tuple[str, str]] = ()
) -> Response:
    """A JSON response."""
    body = json.dumps(payload, separators=(",", ":")).encode()
    return Response(status, headers, body)


class _Closed(Exception):
    """The peer closed the connection or broke the protocol."""


async def serve_connection(stream: anyio.abc.ByteStream, handler: Handler) -> None:
    """Serve requests on one connection, with keep-alive, until either side closes it."""
    conn = h11.Connection(h11.SERVER, max_incomplete_event_size=64 * 1024)
    async with stream:
        while True:
            try:
                request = await _receive_request(conn, stream)
            except _Closed:
                return
            except h11.RemoteProtocolError as exc:
                await _send_protocol_error(conn, stream, exc)
                return
            if request is None:
                return
            try:
                response = await handler(request)
            except Exception:
                logger.exception(
                    "identity provider failed to answer %s %s", request.method, request.path
                )
                response = json_response(500, {"error": "server_error"})
            if response.drop:
                if response.partial:
                    await _send_partial(stream, response)
                return
            if not await _send_response(conn, stream, response):
                return
            if conn.our_state is not h11.DONE or conn.their_state is not h11.DONE:
                return
            conn.start_next_cycle()


async def _receive_request(conn: h11.Connection, stream: anyio.abc.ByteStream) -> Request | None:
    event = await _next_event(conn, stream)
    if isinstance(event, h11.ConnectionClosed):
        return None
    if not isinstance(event, h11.Request):
        raise _Closed
    headers: dict[str, str] = {}
    for name, value in event.headers:
        key = name.decode("latin-1")
        text = value.decode("latin-1")
        headers[key] = f"{headers[key]}, {text}" if key in headers else text
    method = event.method.decode("latin-1")
    path, _, query = event.target.decode("latin-1").partition("?")
    chunks: list[bytes] = []
    size = 0
    while True:
        event = await _next_event(conn, stream)
        if isinstance(event, h11.Data):
            size += len(event.data)
            if size > _MAX_BODY:
                raise h11.RemoteProtocolError("request body too large", error_status_hint=413)
            chunks.append(event.data)
        elif isinstance(event, h11.EndOfMessage):
            break
        else:
            raise _Closed
    return Request(method, path, query, headers, b"".join(chunks))


async def _next_event(conn: h11.Connection, stream: anyio.abc.ByteStream) -> object:
    while True:
        event = conn.next_event()
        if event is not h11.NEED_DATA:
            return event
        try:
            data = await stream.receive(_RECEIVE_SIZE)
        except _STREAM_ERRORS:
            data = b""
        conn.receive_data(data)


async def _send_response(
    conn: h11.Connection, stream: anyio.abc.ByteStream, response: Response
) -> bool:
    headers = [
        _SERVER,
        ("Date", formatdate(usegmt=True)),
        ("Content-Type", response.content_type),
        ("Content-Length", str(len(response.body))),
        *response.headers,
    ]
    reason = _reason(response.status)
    try:
        data = conn.send(h11.Response(status_code=response.status, headers=headers, reason=reason))
        data = (data or b"") + (conn.send(h11.Data(data=response.body)) or b"")
        data += conn.send(h11.EndOfMessage()) or b""
        await stream.send(data)
    except _STREAM_ERRORS:
        return False
    return True


async def _send_partial(stream: anyio.abc.ByteStream, response: Response) -> None:
    head = f"HTTP/1.1 {response.status} {_reason(response.status).decode()}\r\n"
    head += f"Content-Type: {response.content_type}\r\nContent-Len"
    with contextlib.suppress(*_STREAM_ERRORS):
        await stream.send(head.encode("latin-1"))


async def _send_protocol_error(
    conn: h11.Connection, stream: anyio.abc.ByteStream, exc: h11.RemoteProtocolError
) -> None:
    if conn.our_state is not h11.SEND_RESPONSE:
        return
    status = exc.error_status_hint
    response = json_response(status, {"error": "invalid_request", "error_description": str(exc)})
    response.headers = [("Connection", "close")]
    await _send_response(conn, stream, response)


def _reason(status: int) -> bytes:
    try:
        return HTTPStatus(status).phrase.encode()
    except ValueError:
        return b""
