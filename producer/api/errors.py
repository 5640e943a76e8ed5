"""Every error the gateway answers, in one JSON shape: ``{code, message, errors?}``."""

from __future__ import annotations

import logging
from typing import Any

import redis
from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, Response
from fastapi.routing import APIRoute
from starlette.exceptions import HTTPException

from registry import InvalidInput, NotReplicated, Overloaded, PredictqError, RedisUnavailable

from ..admission import is_oom, out_of_memory
from .schemas import ErrorBody, FieldError

log = logging.getLogger("predictq.api")

_HTTP_CODES = {
    400: "malformed_request",
    404: "not_found",
    405: "method_not_allowed",
    413: "payload_too_large",
    415: "unsupported_media_type",
}


def error_response(
    error: PredictqError,
    errors: list[FieldError] | None = None,
    headers: dict[str, str] | None = None,
) -> JSONResponse:
    """The response for ``error``: its HTTP status and its ``to_dict()``, plus field errors."""
    body = ErrorBody(code=error.code, message=error.message, errors=errors)
    if error.http_status == 401:
        headers = {**(headers or {}), "WWW-Authenticate": 'Bearer realm="predictq"'}
    if isinstance(error, Overloaded | NotReplicated):
        headers = {**(headers or {}), "Retry-After": str(error.retry_after)}
    return JSONResponse(
        body.model_dump(exclude_none=True), status_code=error.http_status, headers=headers
    )


def field_errors(raw: list[Any]) -> list[FieldError]:
    """pydantic's errors without their input values: a bad body is never echoed back."""
    return [
        FieldError(loc=[str(p) if not isinstance(p, int) else p for p in e["loc"]],
                   msg=e["msg"], type=e["type"])
        for e in raw
    ]  # fmt: skip


def _summary(errors: list[FieldError]) -> str:
    first = errors[0]
    where = ".".join(str(p) for p in first.loc) or "request"
    more = f" (and {len(errors) - 1} more)" if len(errors) > 1 else ""
    return f"{where}: {first.msg}{more}"


async def _predictq(_: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, PredictqError)
    # Refusing work under overload is the service working: one log line per refusal would flood.
    if exc.http_status >= 500 and not isinstance(exc, Overloaded):
        log.error("%s: %s", exc.code, exc.message)
    return error_response(exc)


async def _validation(_: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, RequestValidationError)
    errors = field_errors(list(exc.errors()))
    return error_response(InvalidInput(_summary(errors)), errors)


def _allowed(request: Request) -> str:
    """Every method some route serves on this path (Starlette names only the first route's)."""
    path = request.url.path
    methods: set[str] = set()
    for route in request.app.router.routes:
        if isinstance(route, APIRoute) and route.path_regex.match(path):
            methods |= route.methods or set()
    return ", ".join(sorted(methods))


async def _http(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, HTTPException)
    error = PredictqError(str(exc.detail))
    error.code = _HTTP_CODES.get(exc.status_code, "http_error")
    error.http_status = exc.status_code
    headers = dict(exc.headers or {})
    if exc.status_code == 405:
        headers["Allow"] = _allowed(request)
    return error_response(error, headers=headers)


async def _redis(_: Request, exc: Exception) -> JSONResponse:
    if is_oom(exc):
        # Any write a route makes (claiming job IDs, say) is refused as the client's would be.
        return error_response(out_of_memory())
    log.error("redis error: %s", exc)
    return error_response(RedisUnavailable("Redis is unavailable: try again shortly"))


async def _unexpected(_: Request, exc: Exception) -> JSONResponse:
    # Not logged here: Starlette re-raises it after this answer, and uvicorn logs the traceback.
    return error_response(PredictqError("internal error: the server log has the details"))


async def render(request: Request, exc: Exception) -> Response:
    """The answer the app's handlers give ``exc`` (for requests served outside FastAPI)."""
    if isinstance(exc, PredictqError):
        return await _predictq(request, exc)
    if isinstance(exc, RequestValidationError):
        return await _validation(request, exc)
    if isinstance(exc, redis.RedisError):
        return await _redis(request, exc)
    log.error("internal error", exc_info=exc)
    return await _unexpected(request, exc)


def install_handlers(app: FastAPI) -> None:
    """Map every exception to the one error shape; nothing else leaks a traceback."""
    app.add_exception_handler(PredictqError, _predictq)
    app.add_exception_handler(RequestValidationError, _validation)
    app.add_exception_handler(HTTPException, _http)
    app.add_exception_handler(redis.RedisError, _redis)
    app.add_exception_handler(Exception, _unexpected)
