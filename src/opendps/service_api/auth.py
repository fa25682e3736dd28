"""Service API authentication: shared access policies, SAS tokens and rights (protocol.md §7.4).

A request carries `Authorization: SharedAccessSignature sr=<host>&sig=…&se=…&skn=<policy>`.
The instance it addresses is chosen by the Host header, else by the policy whose key signed
the token, else the default instance (ARCHITECTURE §2). Tenant isolation follows: a token is
only ever checked against the keys of the instance it addresses, so a valid signature made with
instance A's key is refused on instance B.

`sr` is compared URL-decoded and case-insensitively (protocol.md §2.2 rule 2): Node writes the
raw host, Python `quote_plus`es it, and either may carry the connection string's `:port` or, when
a Python user passes a full endpoint URL, an `https://` prefix (clients.md §4).
"""

from __future__ import annotations

from dataclasses import dataclass
from urllib.parse import urlsplit

from opendps.attestation.sas import SasToken, check_expiry, parse_sas_token, verify_with_keys
from opendps.model.errors import RIGHT_MISSING, UNAUTHORIZED, DpsError
from opendps.model.instance import RIGHT_NAMES, AccessPolicy, Instance, Right
from opendps.service_api.context import ServiceContext

__all__ = ["Caller", "authenticate", "host_without_port", "require_right"]


@dataclass(frozen=True, slots=True)
class Caller:
    """Who a service request acts as: the instance it addresses and the policy that signed it."""

    instance: Instance
    actor: str  # the policy name, recorded in the audit log
    rights: Right


async def authenticate(
    ctx: ServiceContext, *, authorization: str | None, host: str | None, path: str
) -> Caller:
    """Authenticate a service API request.

    `host` is the Host header (any port is ignored) and `path` the request path (for tokens
    whose `sr` names a path). Returns the Caller; raises DpsError(UNAUTHORIZED) for a missing,
    malformed, expired or forged token, a token naming another service, an unknown policy, or
    an Entra ID bearer token (not supported). Rights are checked per operation with
    `require_right`.
    """
    if not authorization:
        raise _unauthorized("the Authorization header is missing")
    if authorization.strip().lower().startswith("bearer "):
        raise _unauthorized("Entra ID bearer tokens are not supported; use a shared access policy")
    token = parse_sas_token(authorization)
    check_expiry(token, ctx.clock.now().timestamp(), skew_seconds=ctx.limits.sas_clock_skew_seconds)
    if not token.key_name:
        raise _unauthorized("the SAS token names no shared access policy (skn)")
    request_host = host_without_port(host or "")
    instance, policy = await _resolve(ctx, token, request_host)
    if not _resource_names_service(
        token.resource, path, _service_hosts(ctx, request_host, instance)
    ):
        raise _unauthorized("the SAS token's resource (sr) does not name this service")
    return Caller(instance=instance, actor=policy.name, rights=policy.rights)


async def _resolve(
    ctx: ServiceContext, token: SasToken, request_host: str
) -> tuple[Instance, AccessPolicy]:
    key_name = token.key_name or ""
    by_host = await ctx.store.get_instance_by_service_host(request_host) if request_host else None
    if by_host is not None:
        policy = await ctx.store.get_access_policy(by_host.id, key_name)
        if policy is None or not _signed_by(token, policy):
            raise _unauthorized("the SAS token is not signed by a policy of this service")
        return by_host, policy
    # No instance claims this host name: the policy whose key signed the token picks it.
    signers = [
        p for p in await ctx.store.list_access_policies_named(key_name) if _signed_by(token, p)
    ]
    if not signers:
        raise _unauthorized("the SAS token is not signed by a known shared access policy")
    default = await ctx.store.get_instance_by_name(ctx.default_instance_name)
    chosen = next((p for p in signers if default is not None and p.instance_id == default.id), None)
    if chosen is None and len(signers) == 1:
        chosen = signers[0]
    instance = await ctx.store.get_instance(chosen.instance_id) if chosen is not None else None
    if chosen is None or instance is None:
        # Two instances share a policy name *and* key: only their host names can tell them apart.
        raise _unauthorized("the SAS token matches several services; address one by its host name")
    return instance, chosen


def _signed_by(token: SasToken, policy: AccessPolicy) -> bool:
    return verify_with_keys(token, [policy.primary_key, policy.secondary_key])


def _service_hosts(ctx: ServiceContext, request_host: str, instance: Instance) -> set[str]:
    hosts = {host_without_port(h) for h in ctx.public_hosts}
    hosts.add(host_without_port(instance.service_host_name))
    if request_host:
        hosts.add(request_host)
    hosts.discard("")
    return hosts


def _resource_names_service(resource: str, path: str, hosts: set[str]) -> bool:
    """`sr` = `[scheme://]host[:port][/path]`; the host must be ours, and a path (rare, but the
    docs allow scoped tokens) must be a segment prefix of the request path."""
    text = resource.strip()
    if "://" not in text:
        text = "//" + text
    try:
        parts = urlsplit(text)
        host = (parts.hostname or "").lower()
        parts.port  # noqa: B018 -- validates the port; a malformed one raises ValueError
    except ValueError:
        return False
    if host not in hosts:
        return False
    scope = parts.path.strip("/").lower()
    wanted = path.strip("/").lower()
    return not scope or wanted == scope or wanted.startswith(scope + "/")


def host_without_port(host: str) -> str:
    """`Host` header or `sr` host in lower case without its port (`[::1]:443` → `::1`)."""
    text = host.strip().lower()
    if "://" in text:
        text = text.split("://", 1)[1]
    text = text.split("/", 1)[0]
    if text.startswith("["):
        return text[1:].split("]", 1)[0]
    if text.count(":") == 1:
        return text.split(":", 1)[0]
    return text


def require_right(caller: Caller, right: Right) -> None:
    """Raise DpsError(RIGHT_MISSING, 401) unless the caller's policy grants `right`."""
    if right not in caller.rights:
        raise DpsError(
            RIGHT_MISSING,
            f"Unauthorized: the shared access policy '{caller.actor}' lacks the "
            f"{RIGHT_NAMES[right]} right.",
        )


def _unauthorized(reason: str) -> DpsError:
    return DpsError(UNAUTHORIZED, f"Unauthorized: {reason}.")
