"""Linked hubs and allocation policies."""

from __future__ import annotations

import enum
from dataclasses import dataclass, field
from datetime import datetime

from opendps.model.json import JsonObject

# Azure: at most 50 linked hubs per instance (protocol.md §9).
MAX_LINKED_HUBS = 50


class AllocationPolicy(enum.StrEnum):
    HASHED = "hashed"
    GEO_LATENCY = "geoLatency"
    STATIC = "static"
    CUSTOM = "custom"


class HubKind(enum.StrEnum):
    BUILTIN = "builtin"
    AZURE = "azure"
    MOSQUITTO = "mosquitto"
    WEBHOOK = "webhook"


@dataclass(frozen=True, slots=True)
class LinkedHub:
    """A hub an instance may assign devices to."""

    instance_id: str
    host_name: str
    kind: HubKind
    allocation_weight: int = 1
    apply_allocation_policy: bool = True
    location: str | None = None
    # Connector settings, credentials included: never logged, never returned in full.
    connection: JsonObject = field(default_factory=dict)
    etag: str = ""
    created_at: datetime | None = None
    updated_at: datetime | None = None
