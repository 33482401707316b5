"""Reading a request body without ever buffering more than a fixed limit."""

from __future__ import annotations

from fastapi import HTTPException, Request, status


async def read_limited_body(request: Request, limit: int) -> bytes:
    """Return the raw body, or answer 413 as soon as it is known to exceed ``limit`` bytes.

    A declared ``Content-Length`` over the limit is refused before reading anything; a chunked or
    lying body is refused as soon as the running total passes the limit.
    """
    declared = request.headers.get("content-length")
    if declared is not None:
        if not (declared.isascii() and declared.isdigit()):
            raise HTTPException(status.HTTP_400_BAD_REQUEST, "Invalid Content-Length header")
        if int(declared) > limit:
            raise _too_large(limit)
    chunks: list[bytes] = []
    size = 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            raise _too_large(limit)
        chunks.append(chunk)
    return b"".join(chunks)


def _too_large(limit: int) -> HTTPException:
    return HTTPException(413, f"Request body is larger than {limit} bytes")
