"""Request limits: body size before anything is read, then strict JSON before any validation."""

from __future__ import annotations

import email.message
import functools
from typing import Any

import orjson
from fastapi import Request
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from registry import MalformedRequest, PayloadTooLarge, UnsupportedMediaType

from .errors import error_response

JSON_DEPTH_LIMIT = 1024
"""orjson's own nesting limit; a request body never needs more than a few levels."""


def _too_large(limit: int) -> PayloadTooLarge:
    return PayloadTooLarge(
        f"the request body is larger than {limit} bytes (PREDICTQ_API_MAX_BODY_BYTES): "
        "send fewer rows per request, or use the batch endpoint in several requests"
    )


class BodyLimit:
    """ASGI middleware: 413 for bodies over ``max_bytes``, declared or streamed.

    A declared Content-Length is refused before one byte of the body is read; a chunked body
    is counted as it arrives, and reading stops at the limit.
    """

    def __init__(self, app: ASGIApp, max_bytes: int) -> None:
        self.app = app
        self.max_bytes = max_bytes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        declared = dict(scope["headers"]).get(b"content-length")
        if declared is not None:
            if not declared.isdigit():
                error = MalformedRequest("the Content-Length header is not a number")
                await error_response(error)(scope, receive, send)
                return
            if int(declared) > self.max_bytes:
                await error_response(_too_large(self.max_bytes))(scope, receive, send)
                return
        seen = 0

        async def counted() -> Message:
            nonlocal seen
            message = await receive()
            if message["type"] == "http.request":
                seen += len(message.get("body", b""))
                if seen > self.max_bytes:
                    # Raised inside the route's body read, so the app's handler renders it.
                    raise _too_large(self.max_bytes)
            return message

        await self.app(scope, counted, send)


# Callers send the same few Content-Type values; parsing one costs more than the rest of a check.
@functools.lru_cache(maxsize=256)
def _is_json(content_type: str | None) -> bool:
    if not content_type:
        return False
    parsed = email.message.Message()
    parsed["content-type"] = content_type
    charset = parsed.get_param("charset")
    if isinstance(charset, str) and charset.lower() not in ("utf-8", "utf8"):
        return False
    subtype = parsed.get_content_subtype()
    return parsed.get_content_maintype() == "application" and (
        subtype == "json" or subtype.endswith("+json")
    )


async def read_json(request: Request) -> Any:
    """The request body as strict JSON: 415 unless it is sent as JSON, 400 when it is not JSON.

    orjson refuses NaN and Infinity (JSON has neither) and nesting deeper than 1024 levels,
    where the standard library would accept the first and recurse on the second.
    """
    if not _is_json(request.headers.get("content-type")):
        raise UnsupportedMediaType(
            f"the body is sent as {request.headers.get('content-type') or 'nothing'!r}: "
            "send JSON with `Content-Type: application/json`"
        )
    body = await request.body()
    if not body.strip():
        raise MalformedRequest("the request body is empty: send a JSON object")
    try:
        return orjson.loads(body)
    except orjson.JSONDecodeError as e:
        reason = str(e)
        if "depth limit" in reason:
            reason = f"JSON nested deeper than {JSON_DEPTH_LIMIT} levels ({reason})"
        elif any(word in body for word in (b"NaN", b"Infinity")):
            reason = f"{reason}; NaN and Infinity are not JSON: send finite numbers"
        raise MalformedRequest(f"the request body is not valid JSON: {reason}") from e
