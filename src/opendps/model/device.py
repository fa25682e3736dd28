"""Device identities held by the built-in hub."""

from __future__ import annotations

import enum
from dataclasses import dataclass, field
from datetime import datetime

from opendps.model.json import JsonObject


class DeviceAuthKind(enum.StrEnum):
    SAS = "sas"
    SELF_SIGNED = "selfSigned"  # X.509 individual: thumbprints
    CERTIFICATE_AUTHORITY = "certificateAuthority"  # X.509 group: CA-signed


@dataclass(frozen=True, slots=True)
class HubDevice:
    hub_host_name: str
    device_id: str
    instance_id: str
    auth_kind: DeviceAuthKind
    # Keys (sas) or thumbprints (selfSigned); secrets never logged.
    auth: JsonObject = field(default_factory=dict)
    iot_edge: bool = False
    status: str = "enabled"
    tags: JsonObject = field(default_factory=dict)
    desired: JsonObject = field(default_factory=dict)
    reported: JsonObject = field(default_factory=dict)
    desired_version: int = 1
    reported_version: int = 1
    etag: str = ""
    created_at: datetime | None = None
    updated_at: datetime | None = None
