"""Putting an attested device on its hub: identity, twin, and the move away from an old hub.

`prepare_assignment` is pure (plan + connectors); `run_assignment` talks to the hubs, each call
bounded by a timeout, and turns hub failures into DpsError (registration `failed`).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Sequence
from dataclasses import dataclass
from typing import TypeVar

from opendps.allocation.select import CustomAllocation
from opendps.attestation.x509 import certificate_info
from opendps.engine.lookup import AttestedDevice
from opendps.engine.reprovision import AssignmentPlan, TwinSource, plan_assignment
from opendps.hubs.interface import (
    DeviceIdentity,
    HubConnector,
    HubConnectors,
    HubError,
    InitialTwin,
)
from opendps.model.device import DeviceAuthKind
from opendps.model.enrollment import EnrollmentGroup, IndividualEnrollment
from opendps.model.errors import HUB_OPERATION_FAILED, HUB_UNAUTHORIZED, DpsError
from opendps.model.hub import LinkedHub
from opendps.model.json import JsonObject, JsonValue
from opendps.model.registration import RegistrationState, Substatus
from opendps.observability.logging import log_event

logger = logging.getLogger(__name__)
T = TypeVar("T")


@dataclass(frozen=True, slots=True)
class AssignmentJob:
    """Everything needed to put one device on one hub."""

    device: AttestedDevice
    hub: LinkedHub
    connector: HubConnector
    # The hub the device leaves (to read its twin from and delete it on), if still linked.
    old_connector: HubConnector | None
    plan: AssignmentPlan
    identity: DeviceIdentity
    previous_device_id: str | None
    custom: CustomAllocation | None

    @property
    def is_local(self) -> bool:
        """Whether every hub involved is served from our own store (so: fast, in-request)."""
        return self.connector.is_local and (
            self.old_connector is None or self.old_connector.is_local
        )


@dataclass(frozen=True, slots=True)
class Assigned:
    hub: str
    device_id: str
    substatus: Substatus
    previous_hubs: tuple[str, ...]
    payload: JsonValue


def device_id_for(device: AttestedDevice, previous: RegistrationState | None) -> str:
    """Individual: the enrollment's `deviceId`, else its registration ID. Group: the
    registration ID, keeping the spelling of an earlier registration (hub IDs are case-sensitive,
    registration IDs are not)."""
    enrollment = device.enrollment
    if isinstance(enrollment, IndividualEnrollment):
        return enrollment.device_id or enrollment.registration_id
    if (
        previous is not None
        and previous.device_id
        and previous.device_id.lower() == device.registration_id.lower()
    ):
        return previous.device_id
    return device.registration_id


def hub_authentication(device: AttestedDevice) -> tuple[DeviceAuthKind, JsonObject]:
    """How the device will authenticate to its hub (protocol.md §7.3): symmetric keys → its
    (derived) keys; X.509 by enrolled certificate → self-signed with the enrolled certificates'
    thumbprints (so the primary and the secondary both work); X.509 through a CA (group or
    CA-backed individual) → CA-signed, no per-device secret."""
    match = device.x509
    if match is None:
        primary, secondary = device.device_keys
        return DeviceAuthKind.SAS, {"primaryKey": primary, "secondaryKey": secondary}
    if match.signing_certificate is not None:
        return DeviceAuthKind.CERTIFICATE_AUTHORITY, {}
    leaf = certificate_info(match.leaf).sha256_thumbprint
    enrolled = _client_thumbprints(device.enrollment)
    primary = enrolled[0] or leaf
    return DeviceAuthKind.SELF_SIGNED, {
        "primaryThumbprint": primary,
        "secondaryThumbprint": enrolled[1] or primary,
    }


def _client_thumbprints(
    enrollment: IndividualEnrollment | EnrollmentGroup,
) -> tuple[str | None, str | None]:
    x509 = enrollment.spec.attestation.x509
    pair = x509.client_certificates if x509 is not None else None
    if pair is None:
        return None, None
    return (
        pair.primary.info.sha256_thumbprint if pair.primary is not None else None,
        pair.secondary.info.sha256_thumbprint if pair.secondary is not None else None,
    )


def prepare_assignment(
    device: AttestedDevice,
    previous: RegistrationState | None,
    hub: LinkedHub,
    linked: Sequence[LinkedHub],
    connectors: HubConnectors,
    custom: CustomAllocation | None = None,
) -> AssignmentJob:
    """Plan the assignment. Raises HubError when a hub's kind has no connector."""
    device_id = device_id_for(device, previous)
    plan = plan_assignment(previous, device.spec.reprovision_policy, hub.host_name, device_id)
    old_connector = None
    if plan.remove_from_hub is not None:
        old_hub = next(
            (h for h in linked if h.host_name.lower() == plan.remove_from_hub.lower()), None
        )
        old_connector = connectors.for_hub(old_hub) if old_hub is not None else None
    auth_kind, auth = hub_authentication(device)
    identity = DeviceIdentity(
        device_id=device_id, auth_kind=auth_kind, auth=auth, iot_edge=device.spec.iot_edge
    )
    previous_device_id = previous.device_id if previous is not None else None
    return AssignmentJob(
        device,
        hub,
        connectors.for_hub(hub),
        old_connector,
        plan,
        identity,
        previous_device_id,
        custom,
    )


async def run_assignment(job: AssignmentJob, timeout_seconds: float) -> Assigned:
    """Create/update the device on its hub with the right twin, then remove the old entry.

    Raises DpsError(HUB_UNAUTHORIZED or HUB_OPERATION_FAILED) when the new hub fails; a failure
    to delete the old entry is logged and does not fail the registration (the device already
    works on its new hub).
    """
    twin, replace_twin = await _twin_for(job, timeout_seconds)
    await _hub_call(
        job.connector.register_device(job.identity, twin, replace_twin=replace_twin),
        job.hub.host_name,
        timeout_seconds,
    )
    plan = job.plan
    if job.old_connector is not None and plan.remove_device_id is not None:
        try:
            await _hub_call(
                job.old_connector.delete_device(plan.remove_device_id),
                job.old_connector.host_name,
                timeout_seconds,
            )
        except DpsError as err:
            log_event(
                logger,
                logging.WARNING,
                "hub.old_entry_kept",
                hub=job.old_connector.host_name,
                device_id=plan.remove_device_id,
                error=err.message,
            )
    payload = job.custom.payload if job.custom is not None else None
    return Assigned(
        job.hub.host_name, job.identity.device_id, plan.substatus, plan.previous_hubs, payload
    )


async def _twin_for(job: AssignmentJob, timeout_seconds: float) -> tuple[InitialTwin, bool]:
    """The twin to give the device, and whether it replaces one the hub already has."""
    if job.custom is not None and job.custom.initial_twin is not None:
        return InitialTwin.from_json(job.custom.initial_twin), True  # the webhook's twin wins (§8)
    initial = InitialTwin.from_json(job.device.spec.initial_twin)
    source = job.plan.twin
    if source is TwinSource.MIGRATE and job.old_connector is not None and job.previous_device_id:
        old = await _hub_call(
            job.old_connector.get_twin(job.previous_device_id),
            job.old_connector.host_name,
            timeout_seconds,
        )
        return (old.as_initial() if old is not None else initial), True
    return initial, source is not TwinSource.KEEP


async def _hub_call(call: Awaitable[T], host_name: str, timeout_seconds: float) -> T:
    try:
        async with asyncio.timeout(timeout_seconds):
            return await call
    except TimeoutError:
        raise DpsError(HUB_OPERATION_FAILED, f"Hub {host_name} did not answer in time.") from None
    except HubError as err:
        code = HUB_UNAUTHORIZED if err.unauthorized else HUB_OPERATION_FAILED
        raise DpsError(code, f"Hub {host_name}: {err.message}") from None
