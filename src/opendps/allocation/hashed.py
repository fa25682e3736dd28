"""Hashed allocation: weighted, deterministic per registration ID (protocol.md §7.3).

Azure's hash is undocumented (open question 8); any stable hash is compatible. We use weighted
rendezvous hashing (highest random weight): every (registration ID, hub) pair gets a score
`-weight / ln(u)` with `u` uniform in (0, 1) from SHA-256, and the highest score wins. Hub `i`
then wins with probability `weight_i / sum(weights)`, and adding or removing a hub moves only
the devices that hub gains or loses, so re-registrations stay put when the hub set changes.
"""

from __future__ import annotations

import hashlib
import math
from collections.abc import Sequence

from opendps.model.errors import NO_HUB, DpsError
from opendps.model.hub import LinkedHub
from opendps.model.ids import registration_key

# 53 bits: exactly what a float's mantissa holds, so `u` is uniform without rounding bias.
_MANTISSA_BITS = 53


def hub_score(registration_id: str, hub: LinkedHub) -> float:
    """The rendezvous score of `hub` for this device; higher wins. Case-insensitive in both."""
    material = f"{registration_key(registration_id)}\n{hub.host_name.lower()}".encode()
    bits = int.from_bytes(hashlib.sha256(material).digest()[:8], "big") >> (64 - _MANTISSA_BITS)
    # +0.5 keeps u strictly inside (0, 1): ln(u) is finite and negative.
    u = (bits + 0.5) / (1 << _MANTISSA_BITS)
    return -hub.allocation_weight / math.log(u)


def select_hashed(candidates: Sequence[LinkedHub], registration_id: str) -> LinkedHub:
    """The candidate with the highest weighted score. Hubs with weight ≤ 0 never win.

    Raises DpsError(NO_HUB) when no candidate has a positive weight.
    """
    weighted = [hub for hub in candidates if hub.allocation_weight > 0]
    if not weighted:
        raise DpsError(
            NO_HUB, "No IoT hub could be assigned: no candidate hub has a positive weight."
        )
    # The host name breaks (astronomically unlikely) score ties so the choice never depends on order.
    return max(weighted, key=lambda hub: (hub_score(registration_id, hub), hub.host_name.lower()))
