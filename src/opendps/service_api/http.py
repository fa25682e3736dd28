"""The aiohttp middleware every HTTP route of the process runs under.

It is the one place where HTTP errors take their wire form (STYLE §3.4 habit 6): a `DpsError`
becomes a `ProvisioningServiceErrorDetails` body (protocol.md §1.6) with headers
`x-ms-error-code` and `x-ms-request-id`; aiohttp's own 404/405/413 and malformed JSON get the
same form, and an unexpected exception becomes 500000, logged once with its stack trace.
It also gives each request its tracking id (the `request_id` of every log line) and writes one
`http.request` log line per request. The Authorization header is never logged.
"""

from __future__ import annotations

import json
import logging
import time
import uuid
from collections.abc import Awaitable, Callable, Mapping
from typing import Any

from aiohttp import web
from aiohttp.typedefs import Middleware

from opendps.engine.ports import Clock
from opendps.model.errors import (
    BAD_REQUEST,
    BODY_TOO_LARGE,
    INTERNAL_ERROR,
    INVALID_BODY,
    METHOD_NOT_ALLOWED,
    NOT_FOUND,
    UNSUPPORTED_MEDIA_TYPE,
    DpsError,
    error_body,
    format_utc,
)
from opendps.observability.logging import log_event, request_id

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]

__all__ = [
    "ERROR_CODE_HEADER",
    "INSTANCE_KEY",
    "REQUEST_ID_HEADER",
    "create_http_middleware",
    "error_response",
    "set_request_instance",
]


ERROR_CODE_HEADER = "x-ms-error-code"
REQUEST_ID_HEADER = "x-ms-request-id"
JSON_CONTENT_TYPE = "application/json"
# Where a handler notes the instance a request addressed, for the request log line.
INSTANCE_KEY = web.RequestKey("opendps_instance", str)

# aiohttp's own refusals, in DPS form. Other 4xx/5xx statuses map to `status * 1000`.
_HTTP_STATUS_CODES = {
    400: (BAD_REQUEST, "Bad request."),
    404: (NOT_FOUND, "Not found."),
    405: (METHOD_NOT_ALLOWED, "Method not allowed."),
    413: (BODY_TOO_LARGE, "The request body is too large."),
    415: (UNSUPPORTED_MEDIA_TYPE, "Unsupported media type."),
}
# Headers of an aiohttp HTTPException worth keeping on the DPS error (405's Allow, 401's
# WWW-Authenticate, 429's Retry-After); the body-describing ones are replaced.
_DROPPED_EXCEPTION_HEADERS = frozenset({"content-type", "content-length", "content-encoding"})


def set_request_instance(request: web.Request, instance_name: str) -> None:
    """Name the instance a request addressed in its `http.request` log line."""
    request[INSTANCE_KEY] = instance_name


def create_http_middleware(clock: Clock, *, logger: logging.Logger | None = None) -> Middleware:
    """The middleware for `web.Application(middlewares=[...])`.

    `clock` stamps error bodies (`timestampUtc`); `logger` defaults to `opendps.http`.
    """
    log = logger or logging.getLogger("opendps.http")

    @web.middleware
    async def middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
        tracking_id = str(uuid.uuid4())
        token = request_id.set(tracking_id)
        started = time.perf_counter()
        try:
            error: DpsError | None = None
            exception_headers: Mapping[str, str] = {}
            try:
                response = await handler(request)
            except web.HTTPException as exc:
                error = _from_http_exception(exc)
                if error is None:  # a redirect or other non-error: aiohttp sends it as is
                    _log_request(log, request, exc.status, started, None)
                    raise
                exception_headers = exc.headers
            except Exception as exc:  # CancelledError is a BaseException and passes through
                error = _from_exception(exc, request, log)
            if error is not None:
                response = error_response(
                    error, tracking_id=tracking_id, timestamp=format_utc(clock.now())
                )
                _copy_exception_headers(exception_headers, response)
            elif not response.prepared:
                response.headers.setdefault(REQUEST_ID_HEADER, tracking_id)
            _log_request(log, request, response.status, started, error)
            return response
        finally:
            request_id.reset(token)

    return middleware


def _from_exception(exc: Exception, request: web.Request, log: logging.Logger) -> DpsError:
    if isinstance(exc, DpsError):
        return exc
    if isinstance(exc, (json.JSONDecodeError, UnicodeDecodeError)):
        # A handler's `await request.json()` on a body that is not JSON.
        return DpsError(INVALID_BODY, "Request body is not valid JSON.")
    # The one log line for an unexpected failure, with its stack trace; the client learns
    # only the tracking id (x-ms-request-id), which finds this line.
    log_event(
        log,
        logging.ERROR,
        "http.unhandled_exception",
        method=request.method,
        route=_route(request),
        exc_info=exc,
    )
    return DpsError(INTERNAL_ERROR, "Internal server error.")


def error_response(error: DpsError, *, tracking_id: str, timestamp: str) -> web.Response:
    """The HTTP form of a DPS error: status = errorCode // 1000, JSON body, x-ms headers."""
    body = error_body(error, tracking_id=tracking_id, timestamp_utc=timestamp)
    response = web.Response(
        status=error.http_status,
        body=json.dumps(body).encode(),
        content_type=JSON_CONTENT_TYPE,
        charset="utf-8",
    )
    response.headers[ERROR_CODE_HEADER] = str(error.error_code)
    response.headers[REQUEST_ID_HEADER] = tracking_id
    if error.retry_after is not None:
        response.headers["Retry-After"] = str(error.retry_after)
    return response


def _from_http_exception(exc: web.HTTPException) -> DpsError | None:
    """The DPS error for an aiohttp HTTPException, or None to let it through (1xx-3xx)."""
    if exc.status < 400:
        return None
    code, message = _HTTP_STATUS_CODES.get(exc.status, (exc.status * 1000, exc.reason or "Error."))
    return DpsError(code, message)


def _copy_exception_headers(headers: Mapping[str, str], response: web.Response) -> None:
    for name, value in headers.items():
        if name.lower() not in _DROPPED_EXCEPTION_HEADERS:
            response.headers[name] = value


def _route(request: web.Request) -> str:
    """The matched route's name or pattern (low cardinality, no IDs)."""
    route = request.match_info.route
    if route.name:
        return route.name
    if route.resource is not None:
        return route.resource.canonical
    return "<unmatched>"


def _log_request(
    log: logging.Logger, request: web.Request, status: int, started: float, error: DpsError | None
) -> None:
    fields: dict[str, Any] = {
        "method": request.method,
        "route": _route(request),
        "status": status,
        "duration_ms": round((time.perf_counter() - started) * 1000, 2),
        "instance": request.get(INSTANCE_KEY),
    }
    if error is not None:
        fields["error_code"] = error.error_code
    log_event(log, logging.INFO, "http.request", **fields)
