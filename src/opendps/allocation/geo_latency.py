"""geoLatency allocation: the lowest-latency hub from this node, ties hashed (protocol.md §7.3).

Azure measures latency between its regions; a self-hosted node cannot. Instead the operator
configures the node's region and a latency table between regions (milliseconds, symmetric).
A hub's `location` is its region. Same region = 0 ms; a pair missing from the table, or a hub
without a location, costs `unknown_latency_ms`. All hubs at the minimum latency tie, and the
tie is broken by weighted hashing, so a single-site install (no region configured) behaves
exactly like `hashed`.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field

from opendps.allocation.hashed import select_hashed
from opendps.model.hub import LinkedHub

# Larger than any real one-way latency between regions on Earth (~300 ms), so a hub in a known
# region is always preferred to one whose latency nobody configured.
DEFAULT_UNKNOWN_LATENCY_MS = 1000.0


@dataclass(frozen=True, slots=True)
class LatencyTable:
    """Where this node runs and how far other regions are. Region names are case-insensitive."""

    node_region: str | None = None
    # Keys are (region, region) in lower case, stored in both orders.
    latencies_ms: Mapping[tuple[str, str], float] = field(default_factory=dict)
    unknown_latency_ms: float = DEFAULT_UNKNOWN_LATENCY_MS

    @classmethod
    def from_pairs(
        cls,
        node_region: str | None,
        pairs: Iterable[tuple[str, str, float]],
        *,
        unknown_latency_ms: float = DEFAULT_UNKNOWN_LATENCY_MS,
    ) -> LatencyTable:
        table: dict[tuple[str, str], float] = {}
        for a, b, latency in pairs:
            table[(a.lower(), b.lower())] = latency
            table[(b.lower(), a.lower())] = latency
        return cls(node_region, table, unknown_latency_ms)

    def latency_to(self, location: str | None) -> float:
        if self.node_region is None:
            return 0.0  # no geography configured: every hub is equally near
        if location is None:
            return self.unknown_latency_ms
        here, there = self.node_region.lower(), location.lower()
        if here == there:
            return 0.0
        return self.latencies_ms.get((here, there), self.unknown_latency_ms)


def select_geo_latency(
    candidates: Sequence[LinkedHub], registration_id: str, table: LatencyTable
) -> LinkedHub:
    """The nearest candidate; hubs at equal latency are chosen between by weighted hashing.

    Raises DpsError(NO_HUB) when no candidate has a positive weight.
    """
    usable = [hub for hub in candidates if hub.allocation_weight > 0]
    if not usable:
        return select_hashed(candidates, registration_id)  # raises NO_HUB with its message
    nearest = min(table.latency_to(hub.location) for hub in usable)
    return select_hashed(
        [hub for hub in usable if table.latency_to(hub.location) == nearest], registration_id
    )
