"""One bounded reader for everything a remote party sends (token responses, discovery).

The cap applies to *decoded* bytes as they are produced: the body is read raw and
decoded here, one chunk at a time, each layer stopping at the cap, so a compressed bomb
costs at most the cap in memory and a little CPU. Only identity, gzip and deflate are
read, at most two layers deep (no server sends more for a small JSON document).
"""

from __future__ import annotations

import sys
import zlib
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import anyio

from ._errors import MalformedTokenResponse
from ._http import BYTE_STREAMS
from ._redact import HiddenBytes

__all__ = [
    "MAX_DISCARD_BYTES",
    "MAX_LAYERS",
    "discard",
    "discard_sync",
    "open_stream",
    "read_bounded",
]

MAX_LAYERS = 2
#: Raw bytes read of a body that is thrown away (a 401 before its retry); no more is read.
MAX_DISCARD_BYTES = 64 * 1024
_WBITS = {"gzip": 16 + zlib.MAX_WBITS, "x-gzip": 16 + zlib.MAX_WBITS, "deflate": zlib.MAX_WBITS}


@asynccontextmanager
async def open_stream(
    client: Any, method: str, url: str, *, follow_redirects: bool = False, **kwargs: Any
) -> AsyncIterator[Any]:
    """`client.stream(...)`, whose response is closed even when the caller is cancelled.

    A close awaited in a cancelled scope is itself cancelled under trio, leaving the
    connection open until garbage collection (a ResourceWarning); the close is shielded,
    and bounded, since closing an unfinished response only drops its connection.
    """
    request = client.build_request(method, url, **kwargs)
    body = _BODIES.get(type(request.stream))
    if body is not None:
        request.stream = body(request.content)
    response = await client.send(request, stream=True, follow_redirects=follow_redirects)
    try:
        yield response
    finally:
        with anyio.move_on_after(5, shield=True):
            await response.aclose()


def _in_memory_body(base: type[Any]) -> type[Any]:
    """httpx's (or httpx2's) in-memory request body, iterated without an async generator.

    httpx's own yields from an async generator, which httpcore leaves suspended when the
    write fails or is cancelled; trio then warns when it is collected (a ResourceWarning,
    an error under ``-W error``). An iterator object leaves nothing to finalize.
    """

    class Body(base):  # type: ignore[misc]
        def __init__(self, data: bytes) -> None:
            super().__init__(data)
            self._data = data

        def __aiter__(self) -> AsyncIterator[bytes]:
            return _Once(self._data)

    return Body


_BODIES = {base: _in_memory_body(base) for base in BYTE_STREAMS}


class _Once:
    """Yields one chunk, as httpx's `ByteStream` does."""

    __slots__ = ("_data",)

    def __init__(self, data: bytes) -> None:
        self._data: bytes | None = data

    def __aiter__(self) -> _Once:
        return self

    async def __anext__(self) -> bytes:
        data, self._data = self._data, None
        if data is None:
            raise StopAsyncIteration
        return data


class _Layer:
    """One content-encoding layer, decoded with a bound on its output."""

    __slots__ = ("_decoder", "_raw_deflate_tried", "name")

    def __init__(self, name: str) -> None:
        self.name = name
        self._decoder = zlib.decompressobj(wbits=_WBITS[name])
        self._raw_deflate_tried = False

    def feed(self, data: bytes, limit: int) -> bytes | None:
        """Decode `data`; None when the output would pass `limit` bytes."""
        try:
            out = self._decoder.decompress(data, limit + 1)
        except zlib.error:
            if self.name != "deflate" or self._raw_deflate_tried:
                raise
            # "deflate" is zlib-wrapped by the RFC, raw by some servers: try raw once.
            self._raw_deflate_tried = True
            self._decoder = zlib.decompressobj(wbits=-zlib.MAX_WBITS)
            out = self._decoder.decompress(data, limit + 1)
        if len(out) > limit or self._decoder.unconsumed_tail:
            return None
        return out


def _layers(header: str, what: str) -> list[_Layer]:
    names = [part.strip().lower() for part in header.split(",")]
    names = [name for name in names if name and name != "identity"]
    if len(names) > MAX_LAYERS:
        raise MalformedTokenResponse(
            f"{what} sent a body with {len(names)} content-encoding layers; "
            f"tokenflight reads at most {MAX_LAYERS}"
        )
    for name in names:
        if name not in _WBITS:
            raise MalformedTokenResponse(
                f"{what} sent a body in content-encoding {name[:40]!r}; tokenflight reads "
                "identity, gzip and deflate"
            )
    return [_Layer(name) for name in reversed(names)]  # the last applied comes off first


async def read_bounded(response: Any, *, limit: int, what: str) -> HiddenBytes:
    """Read a streamed httpx or httpx2 response, at most `limit` decoded bytes.

    The body comes back as `HiddenBytes` (a token response carries tokens); an error is
    raised with the frames that held the body's chunks left off its traceback.

    Raises:
        MalformedTokenResponse: The body is larger than `limit` once decoded, is in an
            encoding tokenflight does not read, or does not decode.
    """
    status = response.status_code
    too_big = MalformedTokenResponse(
        f"{what} sent a response body over {limit} bytes", status_code=status
    )
    declared = response.headers.get("content-length", "")
    if declared.isascii() and declared.isdigit() and int(declared) > limit:
        raise too_big
    if response.is_stream_consumed:  # an in-memory response (a mock transport): read already
        if len(response.content) > limit:
            raise too_big
        return HiddenBytes(response.content)
    layers = _layers(response.headers.get("content-encoding", ""), what)
    raw = response.aiter_raw()
    try:
        return await _decode(raw, layers, limit, too_big)
    except zlib.error as exc:
        error = MalformedTokenResponse(
            f"{what} sent a body that could not be decoded: {exc}", status_code=status
        )
    except MalformedTokenResponse as exc:
        error = exc
    await _abandon(response, raw)
    raise error.with_traceback(None) from None  # not the frames that held the body


async def _decode(
    raw: AsyncIterator[bytes], layers: list[_Layer], limit: int, too_big: Exception
) -> HiddenBytes:
    """The body of `raw` through each of `layers`, or `too_big` once past `limit` bytes."""
    body = bytearray()
    async for chunk in raw:
        for layer in layers:
            if not chunk:
                break
            decoded = layer.feed(chunk, limit)
            if decoded is None:
                raise too_big
            chunk = decoded
        body += chunk
        if len(body) > limit:
            raise too_big
    return HiddenBytes(body)


async def _abandon(response: Any, body: AsyncIterator[bytes]) -> None:
    """Stop reading a body half-way without leaving httpx's nested generators suspended.

    Closing the response closes the stream under the generators, so one more step makes
    each of them finish (with an error or the end of the stream) instead of being
    garbage collected mid-iteration, which trio reports as a ResourceWarning.
    """
    await response.aclose()
    await _finish(body)


async def discard(response: Any) -> None:
    """Throw away an httpx or httpx2 response's body, reading at most `MAX_DISCARD_BYTES`.

    httpx reads the response that an auth flow answers with another request (`aread()`:
    whole and decoded, so a 300 MB gzip 401 would be inflated in memory). This reads the
    raw stream up to the cap (a small body lets the connection be reused), closes it, and
    leaves the response an empty body for httpx to read.
    """
    if response.is_stream_consumed or response.is_closed:  # read already (in memory)
        return
    stream = response.stream
    chunks = aiter(stream)
    read = 0
    try:
        async for chunk in chunks:
            read += len(chunk)
            if read > MAX_DISCARD_BYTES:
                break
    finally:
        await stream.aclose()
        await _finish(chunks)
    response.stream = _empty_stream(response)


async def _finish(chunks: AsyncIterator[bytes]) -> None:
    """Step a closed stream's iterator to its end, so that no nested generator of httpx
    is left suspended (trio reports one garbage collected mid-iteration)."""
    for _ in range(3):  # a well-behaved closed stream ends at once; never read on for long
        try:
            await chunks.__anext__()
        except Exception:  # StopAsyncIteration, or the closed stream's own error
            return


def discard_sync(response: Any) -> None:
    """`discard` for a response of a sync `Client`."""
    if response.is_stream_consumed or response.is_closed:
        return
    stream = response.stream
    chunks = iter(stream)
    read = 0
    try:
        for chunk in chunks:
            read += len(chunk)
            if read > MAX_DISCARD_BYTES:
                break
    finally:
        close = getattr(chunks, "close", None)
        if close is not None:
            close()
        stream.close()
    response.stream = _empty_stream(response)


def _empty_stream(response: Any) -> Any:
    """An empty body of the response's own library (httpx or httpx2)."""
    library = sys.modules[type(response).__module__.partition(".")[0]]
    return library.ByteStream(b"")
