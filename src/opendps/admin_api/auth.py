"""Who is calling the admin API, and which instances they may touch.

Two credentials are accepted (docs/admin-api.md):
- `Authorization: Bearer <deployment admin key>`: every instance, and the deployment-wide
  operations (create and delete instances, the audit log of every instance);
- `Authorization: SharedAccessSignature …` signed with an instance access policy that has the
  `ServiceConfig` right (protocol.md §7.4): that one instance only.
"""

from __future__ import annotations

import hmac
from dataclasses import dataclass

from aiohttp import web

from opendps.model.errors import INSTANCE_NOT_FOUND, RIGHT_MISSING, UNAUTHORIZED, DpsError
from opendps.model.instance import Instance, Right
from opendps.service_api.auth import authenticate as authenticate_service_caller
from opendps.service_api.auth import require_right
from opendps.service_api.context import ServiceContext

ADMIN_ACTOR = "admin"
_BEARER_PREFIX = "bearer "


@dataclass(frozen=True, slots=True)
class AdminCaller:
    """The authenticated caller. `actor` is what the audit log records (never a secret)."""

    actor: str
    # None for the deployment admin; otherwise the one instance the policy belongs to.
    instance_id: str | None

    @property
    def is_deployment_admin(self) -> bool:
        return self.instance_id is None


async def authenticate(request: web.Request, ctx: ServiceContext) -> AdminCaller:
    """Identify the caller from the Authorization header, or raise DpsError(401…)."""
    header = request.headers.get("Authorization", "").strip()
    if not header:
        raise DpsError(UNAUTHORIZED, "Unauthorized: the Authorization header is missing.")
    if header[: len(_BEARER_PREFIX)].lower() == _BEARER_PREFIX:
        return _admin_from_bearer(header[len(_BEARER_PREFIX) :].strip(), ctx)
    return await _caller_from_policy_token(header, request, ctx)


def _admin_from_bearer(key: str, ctx: ServiceContext) -> AdminCaller:
    # An unset admin key must never match an empty bearer token.
    expected = ctx.admin_key.encode()
    if not expected or not hmac.compare_digest(key.encode(), expected):
        raise DpsError(UNAUTHORIZED, "Unauthorized: the admin key is not valid.")
    return AdminCaller(actor=ADMIN_ACTOR, instance_id=None)


async def _caller_from_policy_token(
    header: str, request: web.Request, ctx: ServiceContext
) -> AdminCaller:
    # The service API's checks (signature, expiry, `sr`, which instance the policy belongs to)
    # hold for the admin API as they are; only the right differs.
    caller = await authenticate_service_caller(
        ctx, authorization=header, host=request.host, path=request.path
    )
    require_right(caller, Right.SERVICE_CONFIG)
    return AdminCaller(actor=caller.actor, instance_id=caller.instance.id)


def require_deployment_admin(caller: AdminCaller) -> None:
    """Creating and deleting instances needs the deployment admin key."""
    if not caller.is_deployment_admin:
        raise DpsError(
            RIGHT_MISSING,
            "Unauthorized: this operation needs the deployment admin key, not an access policy.",
        )


async def resolve_instance(ctx: ServiceContext, caller: AdminCaller, name: str) -> Instance:
    """The instance named in the path, if the caller may use it.

    The admin gets 404 for an unknown name; a policy caller gets the same 401 for an unknown
    instance as for another tenant's, so names of other tenants are not revealed.
    """
    instance = await ctx.store.get_instance_by_name(name)
    if caller.is_deployment_admin:
        if instance is None:
            raise DpsError(INSTANCE_NOT_FOUND, f"Instance {name!r} does not exist.")
        return instance
    if instance is None or instance.id != caller.instance_id:
        raise DpsError(
            UNAUTHORIZED, f"Unauthorized: the access policy is not valid for instance {name!r}."
        )
    return instance
