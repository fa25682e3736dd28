"""Reading request bodies and writing JSON responses for the admin API handlers."""

from __future__ import annotations

from aiohttp import web

from opendps.admin_api.schemas import M, WireModel, parse_body, to_json
from opendps.model.errors import BODY_TOO_LARGE, DpsError
from opendps.service_api.context import ServiceContext

JSON_CONTENT_TYPE = "application/json"


async def read_body(request: web.Request, ctx: ServiceContext) -> bytes:
    """The whole body, refused with 413 above `ctx.limits.max_body_bytes` (nothing changes)."""
    limit = ctx.limits.max_body_bytes
    if request.content_length is not None and request.content_length > limit:
        raise _too_large(limit)
    chunks: list[bytes] = []
    size = 0
    async for chunk in request.content.iter_any():
        size += len(chunk)
        if size > limit:
            raise _too_large(limit)
        chunks.append(chunk)
    return b"".join(chunks)


def _too_large(limit: int) -> DpsError:
    return DpsError(BODY_TOO_LARGE, f"The body is larger than {limit} bytes.")


async def read_model(request: web.Request, ctx: ServiceContext, model: type[M]) -> M:
    return parse_body(model, await read_body(request, ctx))


def respond(model: WireModel, *, status: int = 200, etag: str | None = None) -> web.Response:
    response = web.Response(
        text=to_json(model), status=status, content_type=JSON_CONTENT_TYPE, charset="utf-8"
    )
    if etag:
        response.headers["ETag"] = etag
    return response


def no_content() -> web.Response:
    return web.Response(status=204)


def if_match(request: web.Request) -> str | None:
    """The `If-Match` header as sent (an etag or `*`), or None."""
    value = request.headers.get("If-Match")
    return value.strip() if value and value.strip() else None
