"""Custom allocation: the Azure Functions webhook contract of protocol.md §8, over aiohttp.

The only module of `allocation` that does I/O. It renders the `AllocationRequest`, POSTs it
through an injected `aiohttp.ClientSession`, bounds the whole exchange by a timeout, and parses
the `AllocationResponse`. Every failure becomes a `DpsError` (the engine records a `failed`
registration); nothing here can hang or raise anything else. Messages never carry the URL
(its query holds the function key); the engine logs the failed registration once.
"""

from __future__ import annotations

import asyncio
import json
import ssl
from datetime import datetime
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import aiohttp

from opendps.allocation.select import CustomAllocation, CustomAllocationRequest
from opendps.model.enrollment import EnrollmentGroup, EnrollmentSpec, IndividualEnrollment
from opendps.model.errors import (
    CUSTOM_ALLOCATION_FAILED,
    CUSTOM_ALLOCATION_TIMEOUT,
    NO_HUB,
    DpsError,
    format_utc,
)
from opendps.model.json import JsonObject

# Azure does not document its webhook timeout (open question 5). Devices poll while the webhook
# runs (the engine answers 202), and both SDKs give each poll 30 s, so 10 s leaves a cold-started
# Azure Function time to answer without keeping a registration pending for long.
DEFAULT_WEBHOOK_TIMEOUT_SECONDS = 10.0
# An AllocationResponse is a hub name, a twin and a payload; Azure caps twins at 32 KiB and
# messages at 96 KiB (protocol.md §9). Anything longer is refused unread.
MAX_WEBHOOK_RESPONSE_BYTES = 256 * 1024
# Sent with dry-run requests (docs/allocation.md): a webhook with side effects (counting
# devices, reserving capacity) can answer without recording anything.
DRY_RUN_HEADER = "x-opendps-dry-run"


class WebhookAllocator:
    """`CustomAllocator` that calls the enrollment's (or instance's) webhook URL."""

    def __init__(
        self,
        session: aiohttp.ClientSession,
        *,
        timeout_seconds: float = DEFAULT_WEBHOOK_TIMEOUT_SECONDS,
        verify_tls: bool = True,
        ssl_context: ssl.SSLContext | None = None,
    ) -> None:
        self._session = session
        self._timeout = timeout_seconds
        # aiohttp: `False` skips certificate verification, a context verifies with its CAs,
        # `True` uses the system trust store.
        self._ssl: ssl.SSLContext | bool = ssl_context if ssl_context is not None else verify_tls

    async def allocate(self, request: CustomAllocationRequest) -> CustomAllocation:
        url = request.definition.webhook_url
        try:
            async with asyncio.timeout(self._timeout):
                status, raw = await self._post(
                    url, build_allocation_request(request), dry_run=request.dry_run
                )
        except TimeoutError:
            raise DpsError(
                CUSTOM_ALLOCATION_TIMEOUT,
                f"Custom allocation webhook did not answer within {self._timeout:g} s.",
            ) from None
        except (aiohttp.ClientError, OSError, ValueError) as err:
            raise DpsError(
                CUSTOM_ALLOCATION_FAILED,
                f"Custom allocation webhook could not be reached ({type(err).__name__}).",
            ) from None
        if not 200 <= status < 300:
            raise DpsError(
                CUSTOM_ALLOCATION_FAILED, f"Custom allocation webhook answered HTTP {status}."
            )
        return parse_allocation_response(raw, request)

    async def _post(self, url: str, body: JsonObject, *, dry_run: bool) -> tuple[int, bytes]:
        headers = {DRY_RUN_HEADER: "true"} if dry_run else None
        # Redirects are not followed: the answer must come from the configured URL.
        async with self._session.post(
            url, json=body, headers=headers, ssl=self._ssl, allow_redirects=False
        ) as response:
            raw = await response.content.read(MAX_WEBHOOK_RESPONSE_BYTES + 1)
            return response.status, raw


def build_allocation_request(request: CustomAllocationRequest) -> JsonObject:
    """The `AllocationRequest` body (protocol.md §8), enrollment keys omitted."""
    context: JsonObject = {"registrationId": request.registration_id}
    if request.current_hub is not None:
        context["currentIotHubHostName"] = request.current_hub
        if request.current_device_id is not None:
            context["currentDeviceId"] = request.current_device_id
    # Azure sends the attestation kind as an empty object for symmetric keys (keys never leave).
    context[str(request.attestation_type)] = {}
    context["payload"] = request.payload
    enrollment = request.enrollment
    key = (
        "individualEnrollment"
        if isinstance(enrollment, IndividualEnrollment)
        else "enrollmentGroup"
    )
    return {
        key: render_enrollment(enrollment),
        "deviceRuntimeContext": context,
        "linkedHubs": [hub.host_name for hub in request.candidates],
    }


def render_enrollment(enrollment: IndividualEnrollment | EnrollmentGroup) -> JsonObject:
    """The enrollment in its GET shape as the webhook sees it: no keys, webhook key masked."""
    body: JsonObject
    if isinstance(enrollment, IndividualEnrollment):
        body = {"registrationId": enrollment.registration_id}
        if enrollment.device_id is not None:
            body["deviceId"] = enrollment.device_id
        if enrollment.optional_device_information is not None:
            body["optionalDeviceInformation"] = enrollment.optional_device_information
    else:
        body = {"enrollmentGroupId": enrollment.enrollment_group_id}
    body.update(_render_spec(enrollment.spec))
    body["etag"] = enrollment.etag
    body.update(_timestamps(enrollment.created_at, enrollment.updated_at))
    return body


def _render_spec(spec: EnrollmentSpec) -> JsonObject:
    body: JsonObject = {
        "attestation": {"type": str(spec.attestation.type)},
        "capabilities": {"iotEdge": spec.iot_edge},
        "provisioningStatus": str(spec.provisioning_status),
        "reprovisionPolicy": {
            "updateHubAssignment": spec.reprovision_policy.update_hub_assignment,
            "migrateDeviceData": spec.reprovision_policy.migrate_device_data,
        },
    }
    if spec.initial_twin is not None:
        body["initialTwin"] = spec.initial_twin
    if spec.allocation_policy is not None:
        body["allocationPolicy"] = str(spec.allocation_policy)
    if spec.iot_hubs:
        body["iotHubs"] = list(spec.iot_hubs)
    if spec.iot_hub_host_name is not None:
        body["iotHubHostName"] = spec.iot_hub_host_name
    if spec.custom_allocation is not None:
        body["customAllocationDefinition"] = {
            "webhookUrl": _masked_url(spec.custom_allocation.webhook_url),
            "apiVersion": spec.custom_allocation.api_version,
        }
    return body


def _timestamps(created: datetime | None, updated: datetime | None) -> JsonObject:
    body: JsonObject = {}
    if created is not None:
        body["createdDateTimeUtc"] = format_utc(created)
    if updated is not None:
        body["lastUpdatedDateTimeUtc"] = format_utc(updated)
    return body


def _masked_url(url: str) -> str:
    """Azure shows webhook URLs with the query (the function key) replaced by `****`."""
    parts = urlsplit(url)
    return urlunsplit(parts._replace(query="****" if parts.query else "", fragment=""))


def parse_allocation_response(raw: bytes, request: CustomAllocationRequest) -> CustomAllocation:
    """Parse an `AllocationResponse`. Raises DpsError (CUSTOM_ALLOCATION_FAILED or NO_HUB)."""
    if len(raw) > MAX_WEBHOOK_RESPONSE_BYTES:
        raise DpsError(CUSTOM_ALLOCATION_FAILED, "Custom allocation webhook answer is too large.")
    try:
        body: Any = json.loads(raw)
    except ValueError:
        raise DpsError(
            CUSTOM_ALLOCATION_FAILED, "Custom allocation webhook answer is not JSON."
        ) from None
    if not isinstance(body, dict):
        raise DpsError(
            CUSTOM_ALLOCATION_FAILED, "Custom allocation webhook answer is not a JSON object."
        )
    # The docs spell it `iotHubHostName` in JSON and `iotHubHostname` in a table: accept any case.
    fields = {str(name).lower(): value for name, value in body.items()}
    hub_name = fields.get("iothubhostname")
    if not isinstance(hub_name, str) or not hub_name:
        raise DpsError(
            CUSTOM_ALLOCATION_FAILED, "Custom allocation webhook answer has no iotHubHostName."
        )
    hub = next((h for h in request.candidates if h.host_name.lower() == hub_name.lower()), None)
    if hub is None:
        raise DpsError(
            NO_HUB, f"Custom allocation webhook chose {hub_name}, which is not a linked hub."
        )
    twin = fields.get("initialtwin")
    if twin is not None and not isinstance(twin, dict):
        raise DpsError(
            CUSTOM_ALLOCATION_FAILED, "Custom allocation webhook initialTwin is not an object."
        )
    return CustomAllocation(hub=hub, initial_twin=twin, payload=fields.get("payload"))
