"""Registration states (one per registration ID) and the operations devices poll."""

from __future__ import annotations

import enum
from dataclasses import dataclass
from datetime import datetime

from opendps.model.enrollment import AttestationType
from opendps.model.json import JsonValue


class RegistrationStatus(enum.StrEnum):
    UNASSIGNED = "unassigned"
    ASSIGNING = "assigning"
    ASSIGNED = "assigned"
    FAILED = "failed"
    DISABLED = "disabled"


class Substatus(enum.StrEnum):
    INITIAL_ASSIGNMENT = "initialAssignment"
    DEVICE_DATA_MIGRATED = "deviceDataMigrated"
    DEVICE_DATA_RESET = "deviceDataReset"
    REPROVISIONED_TO_INITIAL_ASSIGNMENT = "reprovisionedToInitialAssignment"


@dataclass(frozen=True, slots=True)
class RegistrationState:
    """The record of a device's provisioning. Written only by the service, never by operators."""

    instance_id: str
    registration_id: str
    attestation_type: AttestationType
    status: RegistrationStatus
    enrollment_group_id: str | None = None
    substatus: Substatus | None = None
    assigned_hub: str | None = None
    device_id: str | None = None
    error_code: int | None = None
    error_message: str | None = None
    payload: JsonValue = None
    # Hubs this device was assigned to before, oldest first (for reprovisionedToInitialAssignment).
    previous_hubs: tuple[str, ...] = ()
    etag: str = ""
    created_at: datetime | None = None
    updated_at: datetime | None = None


@dataclass(frozen=True, slots=True)
class Operation:
    """The unit of work a device polls by operationId."""

    operation_id: str
    instance_id: str
    registration_id: str
    status: RegistrationStatus
    created_at: datetime
    updated_at: datetime
    error_code: int | None = None
    error_message: str | None = None
