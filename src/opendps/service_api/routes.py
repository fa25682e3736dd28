"""HTTP glue of the DPS service API: routes, request reading and response writing.

No business rule lives here: each handler checks the api-version, authenticates, reads the
body into its schema, calls one function of `enrollments`, `groups` or `registrations`, and
writes the answer. Status codes are those the strict Python clients demand (clients.md §4b):
200 for create/update/get/query/bulk/attestation mechanism, 204 with no body for deletes.

Fixed path segments match case-insensitively (Node writes `/enrollmentGroups/` for CRUD but
`/enrollmentgroups/{id}/attestationmechanism`), Node's bulk call ends in a slash
(`POST /enrollments/`), and IDs arrive URL-encoded (aiohttp decodes them into `match_info`).
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import TypeVar

from aiohttp import web
from pydantic import BaseModel

from opendps.model.errors import BODY_TOO_LARGE, DpsError
from opendps.model.hub import AllocationPolicy
from opendps.model.ids import registration_key
from opendps.model.instance import Right
from opendps.service_api import enrollments, groups, registrations, schemas
from opendps.service_api.api_version import API_VERSION_PARAMETER, check_api_version
from opendps.service_api.auth import Caller, authenticate, require_right
from opendps.service_api.context import ServiceContext
from opendps.service_api.etag import IF_MATCH_HEADER
from opendps.service_api.http import JSON_CONTENT_TYPE, set_request_instance
from opendps.service_api.query import (
    CONTINUATION_HEADER,
    ITEM_TYPE_HEADER,
    MAX_ITEM_COUNT_HEADER,
    ItemType,
    PageRequest,
    QueryPage,
    parse_page_request,
)
from opendps.service_api.webhook_check import (
    WARNING_HEADER,
    enrollment_webhook_warning,
    header_value,
)

__all__ = ["add_service_routes"]

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]
M = TypeVar("M", bound=BaseModel)

# Fixed segments as case-insensitive patterns (Python's scoped inline flag `(?i:...)`).
_ENROLLMENTS = "{_enrollments:(?i:enrollments)}"
_GROUPS = "{_groups:(?i:enrollmentgroups)}"
_REGISTRATIONS = "{_registrations:(?i:registrations)}"
_ATTESTATION = "{_attestation:(?i:attestationmechanism)}"
_QUERY = "{_query:(?i:query)}"
_OPTIONAL_SLASH = "{_slash:/?}"


def add_service_routes(app: web.Application, ctx: ServiceContext) -> None:
    """Register the DPS service API routes (protocol.md §7.1) on `app`.

    The app should run under `http.create_http_middleware` (errors in DPS form) with
    `client_max_size` at least `ctx.limits.max_body_bytes`.
    """
    glue = _ServiceRoutes(ctx)
    table: list[tuple[str, str, Handler, str]] = [
        ("POST", f"/{_ENROLLMENTS}/{_QUERY}", glue.enrollment_query, "dps.enrollments.query"),
        ("POST", f"/{_ENROLLMENTS}{_OPTIONAL_SLASH}", glue.enrollment_bulk, "dps.enrollments.bulk"),
        ("PUT", f"/{_ENROLLMENTS}/{{id}}", glue.enrollment_put, "dps.enrollment.put"),
        ("GET", f"/{_ENROLLMENTS}/{{id}}", glue.enrollment_get, "dps.enrollment.get"),
        ("DELETE", f"/{_ENROLLMENTS}/{{id}}", glue.enrollment_delete, "dps.enrollment.delete"),
        (
            "POST",
            f"/{_ENROLLMENTS}/{{id}}/{_ATTESTATION}",
            glue.enrollment_attestation,
            "dps.enrollment.attestation",
        ),
        ("POST", f"/{_GROUPS}/{_QUERY}", glue.group_query, "dps.groups.query"),
        ("POST", f"/{_GROUPS}{_OPTIONAL_SLASH}", glue.group_bulk, "dps.groups.bulk"),
        ("PUT", f"/{_GROUPS}/{{id}}", glue.group_put, "dps.group.put"),
        ("GET", f"/{_GROUPS}/{{id}}", glue.group_get, "dps.group.get"),
        ("DELETE", f"/{_GROUPS}/{{id}}", glue.group_delete, "dps.group.delete"),
        (
            "POST",
            f"/{_GROUPS}/{{id}}/{_ATTESTATION}",
            glue.group_attestation,
            "dps.group.attestation",
        ),
        ("GET", f"/{_REGISTRATIONS}/{{id}}", glue.registration_get, "dps.registration.get"),
        (
            "DELETE",
            f"/{_REGISTRATIONS}/{{id}}",
            glue.registration_delete,
            "dps.registration.delete",
        ),
        (
            "POST",
            f"/{_REGISTRATIONS}/{{id}}/{_QUERY}",
            glue.registration_query,
            "dps.registrations.query",
        ),
    ]
    for method, path, handler, name in table:
        app.router.add_route(method, path, handler, name=name)


class _ServiceRoutes:
    def __init__(self, ctx: ServiceContext) -> None:
        self.ctx = ctx

    # -- individual enrollments -------------------------------------------------------------

    async def enrollment_put(self, request: web.Request) -> web.Response:
        caller = await self._caller(request, Right.ENROLLMENT_WRITE)
        wire = schemas.parse_body(schemas.IndividualEnrollment, await self._body(request))
        result = await enrollments.put_enrollment(
            self.ctx, caller, _id(request), wire, if_match=request.headers.get(IF_MATCH_HEADER)
        )
        response = _json(result)
        if result.allocation_policy is AllocationPolicy.CUSTOM:
            stored = await self.ctx.store.get_individual_enrollment(
                caller.instance.id, result.registration_id
            )
            if stored is not None:
                warning = await enrollment_webhook_warning(self.ctx, caller.instance, stored)
                _warn(response, warning)
        return response

    async def enrollment_get(self, request: web.Request) -> web.Response:
        caller = await self._caller(request, Right.ENROLLMENT_READ)
        return _json(await enrollments.get_enrollment(self.ctx, caller, _id(request)))

    async def enrollment_delete(self, request: web.Request) -> web.Response:
        caller = await self._caller(request, Right.ENROLLMENT_WRITE)
        await enrollments.delete_enrollment(
            self.ctx, caller, _id(request), if_match=request.headers.get(IF_MATCH_HEADER)
        )
        return _no_content()

    async def enrollment_attestation(self, request: web.Request) -> web.Response:
        caller = await self._caller(request, Right.ENROLLMENT_READ)
        return _json(await enrollments.get_attestation_mechanism(self.ctx, caller, _id(request)))

    async def enrollment_query(self, request: web.Request) -> web.Response:
        caller = await self._caller(request, Right.ENROLLMENT_READ)
        await self._query_specification(request)
        page = self._page(request, ItemType.ENROLLMENT)
        return _page(await enrollments.query_enrollments(self.ctx, caller, page))

    async def enrollment_bulk(self, request: web.Request) -> web.Response:
        caller = await self._caller(request, Right.ENROLLMENT_WRITE)
        operation = schemas.parse_body(schemas.BulkEnrollmentOperation, await self._body(request))
        return _json(await enrollments.run_bulk_operation(self.ctx, caller, operation))

    # -- enrollment groups ------------------------------------------------------------------

    async def group_put(self, request: web.Request) -> web.Response:
        caller = await self._caller(request, Right.ENROLLMENT_WRITE)
        wire = schemas.parse_body(schemas.EnrollmentGroup, await self._body(request))
        result = await groups.put_group(
            self.ctx, caller, _id(request), wire, if_match=request.headers.get(IF_MATCH_HEADER)
        )
        response = _json(result)
        if result.allocation_policy is AllocationPolicy.CUSTOM:
            stored = await self.ctx.store.get_enrollment_group(
                caller.instance.id, result.enrollment_group_id
            )
            if stored is not None:
                warning = await enrollment_webhook_warning(self.ctx, caller.instance, stored)
                _warn(response, warning)
        return response

    async def group_get(self, request: web.Request) -> web.Response:
        caller = await self._caller(request, Right.ENROLLMENT_READ)
        return _json(await groups.get_group(self.ctx, caller, _id(request)))

    async def group_delete(self, request: web.Request) -> web.Response:
        caller = await self._caller(request, Right.ENROLLMENT_WRITE)
        await groups.delete_group(
            self.ctx, caller, _id(request), if_match=request.headers.get(IF_MATCH_HEADER)
        )
        return _no_content()

    async def group_attestation(self, request: web.Request) -> web.Response:
        caller = await self._caller(request, Right.ENROLLMENT_READ)
        return _json(await groups.get_group_attestation_mechanism(self.ctx, caller, _id(request)))

    async def group_query(self, request: web.Request) -> web.Response:
        caller = await self._caller(request, Right.ENROLLMENT_READ)
        await self._query_specification(request)
        page = self._page(request, ItemType.ENROLLMENT_GROUP)
        return _page(await groups.query_groups(self.ctx, caller, page))

    async def group_bulk(self, request: web.Request) -> web.Response:
        caller = await self._caller(request, Right.ENROLLMENT_WRITE)
        operation = schemas.parse_body(
            schemas.BulkEnrollmentGroupOperation, await self._body(request)
        )
        return _json(await groups.run_group_bulk_operation(self.ctx, caller, operation))

    # -- registration states ----------------------------------------------------------------

    async def registration_get(self, request: web.Request) -> web.Response:
        caller = await self._caller(request, Right.REGISTRATION_STATUS_READ)
        return _json(await registrations.get_registration_state(self.ctx, caller, _id(request)))

    async def registration_delete(self, request: web.Request) -> web.Response:
        caller = await self._caller(request, Right.REGISTRATION_STATUS_WRITE)
        await registrations.delete_registration_state(
            self.ctx, caller, _id(request), if_match=request.headers.get(IF_MATCH_HEADER)
        )
        return _no_content()

    async def registration_query(self, request: web.Request) -> web.Response:
        # The body is optional and unused: the CLI and the Python client send none (§7.1).
        caller = await self._caller(request, Right.REGISTRATION_STATUS_READ)
        group_id = _id(request)
        page = self._page(request, ItemType.DEVICE_REGISTRATION, scope=registration_key(group_id))
        return _page(
            await registrations.query_group_registration_states(self.ctx, caller, group_id, page)
        )

    # -- shared steps -------------------------------------------------------------------------

    async def _caller(self, request: web.Request, right: Right) -> Caller:
        """api-version, then authentication, then the operation's right (all before the body)."""
        check_api_version(request.query.get(API_VERSION_PARAMETER))
        caller = await authenticate(
            self.ctx,
            authorization=request.headers.get("Authorization"),
            host=request.headers.get("Host"),
            path=request.path,
        )
        set_request_instance(request, caller.instance.name)
        require_right(caller, right)
        return caller

    async def _body(self, request: web.Request) -> bytes:
        limit = self.ctx.limits.max_body_bytes
        if request.content_length is not None and request.content_length > limit:
            raise _too_large(limit)
        body = await request.read()  # aiohttp refuses bodies over client_max_size with 413
        if len(body) > limit:
            raise _too_large(limit)
        return body

    async def _query_specification(self, request: web.Request) -> None:
        """Validate the QuerySpecification when one is sent; every query selects everything."""
        body = await self._body(request)
        if body.strip():
            schemas.parse_body(schemas.QuerySpecification, body)

    def _page(self, request: web.Request, item_type: ItemType, *, scope: str = "") -> PageRequest:
        return parse_page_request(
            item_type,
            max_item_count=request.headers.get(MAX_ITEM_COUNT_HEADER),
            continuation=request.headers.get(CONTINUATION_HEADER),
            limits=self.ctx.limits,
            scope=scope,
        )


def _id(request: web.Request) -> str:
    return request.match_info["id"]


def _warn(response: web.Response, warning: str | None) -> None:
    # A header, not a body field: Azure's clients ignore unknown headers, and the body must
    # stay exactly Azure's shape (service_api/webhook_check.py).
    if warning is not None:
        response.headers[WARNING_HEADER] = header_value(warning)


def _json(model: BaseModel) -> web.Response:
    return web.Response(
        status=200, body=schemas.dump_json(model), content_type=JSON_CONTENT_TYPE, charset="utf-8"
    )


def _page(page: QueryPage[M]) -> web.Response:
    response = web.Response(
        status=200,
        body=schemas.dump_json(page.items),
        content_type=JSON_CONTENT_TYPE,
        charset="utf-8",
    )
    response.headers[ITEM_TYPE_HEADER] = str(page.item_type)
    response.headers[MAX_ITEM_COUNT_HEADER] = str(page.page_size)
    if page.continuation is not None:  # omitted on the last page (clients.md §4a)
        response.headers[CONTINUATION_HEADER] = page.continuation
    return response


def _no_content() -> web.Response:
    return web.Response(status=204)


def _too_large(limit: int) -> DpsError:
    return DpsError(BODY_TOO_LARGE, f"The request body is larger than {limit} bytes.")
