"""Static allocation: the one hub the enrollment names (protocol.md §7.3)."""

from __future__ import annotations

from collections.abc import Sequence

from opendps.model.errors import NO_HUB, DpsError
from opendps.model.hub import LinkedHub


def select_static(
    linked: Sequence[LinkedHub], candidates: Sequence[LinkedHub], named_hub: str | None
) -> LinkedHub:
    """The linked hub named by the enrollment (`iotHubs[0]`, else legacy `iotHubHostName`).

    A named hub may be any linked hub, whether or not the instance-level policy applies to it:
    naming it is the operator's explicit choice. Without a name, static allocation has nothing
    to go on unless exactly one candidate exists, which is then the only possible answer.
    Raises DpsError(NO_HUB) otherwise.
    """
    if named_hub is not None:
        wanted = named_hub.lower()
        for hub in linked:
            if hub.host_name.lower() == wanted:
                return hub
        raise DpsError(NO_HUB, f"No IoT hub could be assigned: {named_hub} is not a linked hub.")
    if len(candidates) == 1:
        return candidates[0]
    raise DpsError(
        NO_HUB,
        "No IoT hub could be assigned: static allocation needs a hub named in the enrollment.",
    )
