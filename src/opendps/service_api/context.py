"""What every service-API and admin-API handler needs, built once by app.wiring."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

from opendps.allocation.geo_latency import LatencyTable
from opendps.allocation.select import CustomAllocator
from opendps.engine.ports import Clock, IdGenerator
from opendps.store.interface import Store

# Azure's message size limit is 96 KB (protocol.md §9); enrollments with certificates and twins
# fit easily. Bodies above this get 413 with errorCode 413000 and change nothing.
DEFAULT_MAX_BODY_BYTES = 256 * 1024
# Azure bulk operations take at most 10 items (service.json); the admin import route has none.
BULK_MAX_ITEMS = 10
# Page size when a query gives no x-ms-max-item-count, and the most we return in one page.
DEFAULT_PAGE_SIZE = 100
MAX_PAGE_SIZE = 1000
# Service SAS tokens may be a few minutes past `se` when clocks drift.
DEFAULT_SAS_CLOCK_SKEW_SECONDS = 300


@dataclass(frozen=True, slots=True)
class ServiceLimits:
    max_body_bytes: int = DEFAULT_MAX_BODY_BYTES
    bulk_max_items: int = BULK_MAX_ITEMS
    default_page_size: int = DEFAULT_PAGE_SIZE
    max_page_size: int = MAX_PAGE_SIZE
    sas_clock_skew_seconds: int = DEFAULT_SAS_CLOCK_SKEW_SECONDS


@dataclass(slots=True)
class ServiceContext:
    """Dependencies of the administration APIs (DPS service API and OpenDPS admin API)."""

    store: Store
    clock: Clock
    ids: IdGenerator
    # Host names (no port) under which this deployment serves; a service SAS token's `sr` must
    # name one of them or the instance's own service host name.
    public_hosts: tuple[str, ...]
    # The instance used when neither the Host header nor the token picks one.
    default_instance_name: str = "default"
    # The deployment admin key (admin API, `Authorization: Bearer <key>`); kept in the data dir.
    admin_key: str = ""
    limits: ServiceLimits = field(default_factory=ServiceLimits)
    # Called with the instance id (None: deployment-wide) after every administrative change;
    # the provisioning engine registers its cache invalidation here.
    change_listeners: list[Callable[[str | None], None]] = field(default_factory=list)
    # The engine's custom-allocation webhook client (app.wiring), for the dry-run call made
    # when a webhook is saved and by `allocation explain`; None: custom allocation is off.
    custom_allocator: CustomAllocator | None = None
    # The engine's geoLatency table, so `allocation explain` decides as the engine does.
    allocation_latency: LatencyTable = field(default_factory=LatencyTable)
