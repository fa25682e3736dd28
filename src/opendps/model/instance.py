"""Instances (tenants) and their shared access policies."""

from __future__ import annotations

import enum
from dataclasses import dataclass
from datetime import datetime

from opendps.model.enrollment import CustomAllocationDefinition
from opendps.model.errors import INVALID_BODY, DpsError
from opendps.model.hub import AllocationPolicy

OWNER_POLICY_NAME = "provisioningserviceowner"


class Right(enum.Flag):
    """Access rights of a shared access policy (Azure's `AccessRightsDescription`)."""

    NONE = 0
    SERVICE_CONFIG = enum.auto()
    ENROLLMENT_READ = enum.auto()
    ENROLLMENT_WRITE = enum.auto()
    DEVICE_CONNECT = enum.auto()
    REGISTRATION_STATUS_READ = enum.auto()
    REGISTRATION_STATUS_WRITE = enum.auto()


ALL_RIGHTS = (
    Right.SERVICE_CONFIG
    | Right.ENROLLMENT_READ
    | Right.ENROLLMENT_WRITE
    | Right.DEVICE_CONNECT
    | Right.REGISTRATION_STATUS_READ
    | Right.REGISTRATION_STATUS_WRITE
)

# Wire names as Azure spells them (ARM and the portal); the only place they appear.
RIGHT_NAMES: dict[Right, str] = {
    Right.SERVICE_CONFIG: "ServiceConfig",
    Right.ENROLLMENT_READ: "EnrollmentRead",
    Right.ENROLLMENT_WRITE: "EnrollmentWrite",
    Right.DEVICE_CONNECT: "DeviceConnect",
    Right.REGISTRATION_STATUS_READ: "RegistrationStatusRead",
    Right.REGISTRATION_STATUS_WRITE: "RegistrationStatusWrite",
}
_RIGHTS_BY_LOWER_NAME = {name.lower(): right for right, name in RIGHT_NAMES.items()}


def format_rights(rights: Right) -> list[str]:
    return [name for right, name in RIGHT_NAMES.items() if right in rights]


def parse_rights(names: list[str] | str) -> Right:
    """Parse `["EnrollmentRead", ...]` or Azure's comma-separated form into flags."""
    if isinstance(names, str):
        names = [part for part in names.replace(" ", "").split(",") if part]
    rights = Right.NONE
    for name in names:
        try:
            rights |= _RIGHTS_BY_LOWER_NAME[name.lower()]
        except KeyError:
            allowed = ", ".join(RIGHT_NAMES.values())
            raise DpsError(
                INVALID_BODY, f"Unknown right {name!r}; expected some of {allowed}."
            ) from None
    return rights


@dataclass(frozen=True, slots=True)
class AccessPolicy:
    """A shared access policy: a name, two base64 keys and the rights they grant."""

    instance_id: str
    name: str
    primary_key: str
    secondary_key: str
    rights: Right


@dataclass(frozen=True, slots=True)
class Instance:
    """A provisioning service instance: the tenant boundary, named by its ID scope."""

    id: str
    name: str
    id_scope: str
    # Host name clients use for the service API of this instance (matched on the Host header).
    service_host_name: str
    allocation_policy: AllocationPolicy
    custom_allocation: CustomAllocationDefinition | None
    etag: str
    created_at: datetime
    updated_at: datetime
