"""The admin API's route table and its registration on the aiohttp application.

One table (`ADMIN_ROUTES`) says, per route, the handler, the bodies and the query parameters;
`add_admin_routes` registers it and `openapi.py` documents it, so the two cannot disagree.
Every route authenticates first (admin_api/auth.py); errors are `DpsError`s rendered by the
service API's HTTP middleware into the DPS error body.
"""

from __future__ import annotations

import json
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

from aiohttp import web

from opendps.admin_api import (
    audit,
    certificates,
    explain,
    hub_devices,
    hubs,
    imports,
    instances,
    metering,
    policies,
)
from opendps.admin_api import schemas as s
from opendps.admin_api.auth import AdminCaller, authenticate
from opendps.admin_api.openapi import build_openapi_document
from opendps.service_api.context import ServiceContext
from opendps.service_api.http import set_request_instance

ADMIN_BASE_PATH = "/admin/v1"
OPENAPI_PATH = "/openapi.json"
ROUTE_NAME_PREFIX = "admin."

Handler = Callable[[web.Request, ServiceContext, AdminCaller], Awaitable[web.StreamResponse]]

_INSTANCE = "/instances/{instance}"


@dataclass(frozen=True, slots=True)
class QueryParameter:
    name: str
    description: str
    schema: dict[str, Any] = field(default_factory=lambda: {"type": "string"})


@dataclass(frozen=True, slots=True)
class AdminRoute:
    method: str
    path: str  # below ADMIN_BASE_PATH, in aiohttp's `{name}` syntax
    handler: Handler
    summary: str
    tag: str
    request_body: type[s.WireModel] | None = None
    response: type[s.WireModel] | None = None
    status: int = 200
    query: tuple[QueryParameter, ...] = ()
    uses_if_match: bool = False
    # The body is a stream of DPS individual enrollments (JSON lines or a JSON array).
    streamed_enrollments: bool = False


ADMIN_ROUTES: tuple[AdminRoute, ...] = (
    # instances
    AdminRoute("GET", "/instances", instances.list_instances, "List instances", "instances",
               response=s.InstanceList),
    AdminRoute("POST", "/instances", instances.create_instance,
               "Create an instance with its owner policy and built-in hub (admin key only)",
               "instances", request_body=s.InstanceCreate, response=s.InstanceCreated, status=201),
    AdminRoute("GET", _INSTANCE, instances.show_instance, "Show an instance", "instances",
               response=s.InstanceDetail),
    AdminRoute("DELETE", _INSTANCE, instances.delete_instance,
               "Delete an instance and everything it owns (admin key only)", "instances",
               status=204),
    AdminRoute("GET", _INSTANCE + "/allocation-policy", instances.show_allocation_policy,
               "Show the instance allocation policy", "instances",
               response=s.AllocationPolicySettings),
    AdminRoute("PUT", _INSTANCE + "/allocation-policy", instances.set_allocation_policy,
               "Set the instance allocation policy", "instances",
               request_body=s.AllocationPolicySettings, response=s.AllocationPolicySaved,
               uses_if_match=True),
    AdminRoute("POST", _INSTANCE + "/allocation/explain", explain.explain_allocation,
               "Dry-run the allocation of a registration ID: enrollment, policy, hubs, "
               "chosen hub and why, webhook answer (nothing is registered)", "instances",
               request_body=s.ExplainRequest, response=s.AllocationExplanation),
    # linked hubs
    AdminRoute("GET", _INSTANCE + "/hubs", hubs.list_hubs, "List linked hubs", "hubs",
               response=s.HubList),
    AdminRoute("POST", _INSTANCE + "/hubs", hubs.add_hub, "Link a hub", "hubs",
               request_body=s.HubCreate, response=s.Hub, status=201),
    AdminRoute("GET", _INSTANCE + "/hubs/{hub}", hubs.show_hub, "Show a linked hub", "hubs",
               response=s.Hub),
    AdminRoute("PATCH", _INSTANCE + "/hubs/{hub}", hubs.update_hub, "Update a linked hub",
               "hubs", request_body=s.HubUpdate, response=s.Hub, uses_if_match=True),
    AdminRoute("DELETE", _INSTANCE + "/hubs/{hub}", hubs.delete_hub, "Unlink a hub", "hubs",
               status=204),
    AdminRoute("GET", _INSTANCE + "/hubs/{hub}/devices", hub_devices.list_devices,
               "List the devices of a built-in hub", "hubs", response=s.HubDevicePage,
               query=(QueryParameter("limit", "Devices per page", {"type": "integer"}),
                      QueryParameter("after", "The nextAfter of the previous page"))),
    AdminRoute("GET", _INSTANCE + "/hubs/{hub}/devices/{device}", hub_devices.show_device,
               "Show a device of a built-in hub with its twin (keys masked)", "hubs",
               response=s.HubDevice),
    AdminRoute("DELETE", _INSTANCE + "/hubs/{hub}/devices/{device}", hub_devices.delete_device,
               "Delete a device from a built-in hub", "hubs", status=204),
    # access policies
    AdminRoute("GET", _INSTANCE + "/policies", policies.list_policies,
               "List access policies (without keys)", "policies", response=s.PolicyList),
    AdminRoute("POST", _INSTANCE + "/policies", policies.create_policy,
               "Create an access policy", "policies", request_body=s.PolicyCreate,
               response=s.PolicyWithKeys, status=201),
    AdminRoute("GET", _INSTANCE + "/policies/{policy}", policies.show_policy,
               "Show an access policy with its keys and connection strings", "policies",
               response=s.PolicyWithKeys),
    AdminRoute("POST", _INSTANCE + "/policies/{policy}/regenerate-key", policies.regenerate_key,
               "Regenerate the primary or secondary key", "policies",
               request_body=s.KeyRegeneration, response=s.PolicyWithKeys),
    AdminRoute("DELETE", _INSTANCE + "/policies/{policy}", policies.delete_policy,
               "Delete an access policy (not the last one with ServiceConfig)", "policies",
               status=204),
    # CA certificates
    AdminRoute("GET", _INSTANCE + "/certificates", certificates.list_certificates,
               "List CA certificates", "certificates", response=s.CertificateList),
    AdminRoute("POST", _INSTANCE + "/certificates", certificates.upload_certificate,
               "Upload a CA certificate (unverified unless isVerified)", "certificates",
               request_body=s.CertificateUpload, response=s.Certificate, status=201),
    AdminRoute("GET", _INSTANCE + "/certificates/{certificate}", certificates.show_certificate,
               "Show a CA certificate", "certificates", response=s.Certificate),
    AdminRoute("DELETE", _INSTANCE + "/certificates/{certificate}",
               certificates.delete_certificate, "Delete a CA certificate", "certificates",
               status=204, uses_if_match=True),
    AdminRoute("POST", _INSTANCE + "/certificates/{certificate}/generate-verification-code",
               certificates.generate_code, "Generate a verification code for proof of possession",
               "certificates", response=s.VerificationCode, uses_if_match=True),
    AdminRoute("POST", _INSTANCE + "/certificates/{certificate}/verify",
               certificates.verify_certificate,
               "Verify the CA with a certificate whose CN is the code, signed by the CA",
               "certificates", request_body=s.ProofOfPossession, response=s.Certificate,
               uses_if_match=True),
    # metering, audit, import
    AdminRoute("GET", _INSTANCE + "/metering", metering.show_metering,
               "Counts per day and kind", "metering", response=s.Metering,
               query=(QueryParameter("since", "First day to include (YYYY-MM-DD)",
                                     {"type": "string", "format": "date"}),)),
    AdminRoute("GET", "/audit", audit.list_audit, "Audit log, newest first", "audit",
               response=s.AuditPage,
               query=(QueryParameter("instance", "Only this instance (policies: always theirs)"),
                      QueryParameter("limit", "Entries per page", {"type": "integer"}),
                      QueryParameter("before", "Entries older than this id (nextBefore)",
                                     {"type": "integer"}))),
    AdminRoute("POST", _INSTANCE + "/enrollments/import", imports.import_enrollments,
               "Import individual enrollments (JSON lines or a JSON array; no item limit)",
               "enrollments", response=s.ImportResult, streamed_enrollments=True),
)  # fmt: skip


def add_admin_routes(app: web.Application, ctx: ServiceContext) -> None:
    """Register every admin route under `/admin/v1`, and `GET /openapi.json`."""
    for route in ADMIN_ROUTES:
        app.router.add_route(
            route.method,
            ADMIN_BASE_PATH + route.path,
            _endpoint(route.handler, ctx),
            # Metrics and request logs label requests by route name, never by concrete path.
            name=ROUTE_NAME_PREFIX + route.handler.__name__,
        )
    document = json.dumps(build_openapi_document(ADMIN_ROUTES, base_path=ADMIN_BASE_PATH))
    app.router.add_get(OPENAPI_PATH, _serve_text(document), name="openapi")


def _endpoint(
    handler: Handler, ctx: ServiceContext
) -> Callable[[web.Request], Awaitable[web.StreamResponse]]:
    async def endpoint(request: web.Request) -> web.StreamResponse:
        if "instance" in request.match_info:
            set_request_instance(request, request.match_info["instance"])
        caller = await authenticate(request, ctx)
        return await handler(request, ctx, caller)

    return endpoint


def _serve_text(document: str) -> Callable[[web.Request], Awaitable[web.StreamResponse]]:
    # The document holds no secret and describes every route, so it needs no credentials.
    async def serve(request: web.Request) -> web.StreamResponse:
        return web.Response(text=document, content_type="application/json", charset="utf-8")

    return serve
