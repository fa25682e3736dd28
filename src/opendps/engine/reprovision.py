"""Re-provisioning decisions (protocol.md §7.3): pure functions of the previous registration,
the enrollment's reprovision policy and the hub allocation chose.

| previous hub | updateHubAssignment | new hub       | substatus                          | twin on the new hub | old hub entry |
|--------------|---------------------|---------------|------------------------------------|---------------------|---------------|
| none         | any                 | allocated     | initialAssignment                  | initial             | –             |
| A            | false               | A (no alloc.) | previous (initialAssignment first) | kept                | –             |
| A            | true                | A             | previous                           | kept                | –             |
| A            | true, migrate=true  | B             | deviceDataMigrated                 | copied from A       | deleted       |
| A            | true, migrate=false | B             | deviceDataReset                    | initial             | deleted       |
| A            | true                | B, held before| reprovisionedToInitialAssignment   | per migrate flag    | deleted       |

"Previous hub" is the hub recorded in the registration state, whatever its status (a failed or
disabled re-registration leaves the device where it was). Deleting the registration state
makes the next registration an initial assignment.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass

from opendps.model.enrollment import ReprovisionPolicy
from opendps.model.hub import MAX_LINKED_HUBS
from opendps.model.registration import RegistrationState, Substatus

# The history of earlier hubs only matters for hubs that are still linked: at most 50.
MAX_PREVIOUS_HUBS = MAX_LINKED_HUBS


class TwinSource(enum.Enum):
    INITIAL = "initial"  # the enrollment's initial twin (or the webhook's), replacing any other
    MIGRATE = "migrate"  # the twin read from the old hub
    KEEP = "keep"  # leave the hub's twin as it is (created from the initial twin if missing)


@dataclass(frozen=True, slots=True)
class AssignmentPlan:
    substatus: Substatus
    twin: TwinSource
    # The (hub, device ID) entry to delete after the device exists on its new hub.
    remove_from_hub: str | None
    remove_device_id: str | None
    # What the registration state records as earlier hubs, oldest first.
    previous_hubs: tuple[str, ...]


def current_hub(previous: RegistrationState | None) -> str | None:
    return previous.assigned_hub if previous is not None else None


def needs_allocation(previous: RegistrationState | None, policy: ReprovisionPolicy) -> bool:
    """Run allocation unless the device already has a hub it must keep."""
    return current_hub(previous) is None or policy.update_hub_assignment


def plan_assignment(
    previous: RegistrationState | None,
    policy: ReprovisionPolicy,
    new_hub: str,
    new_device_id: str,
) -> AssignmentPlan:
    """What to do to put the device on `new_hub` as `new_device_id`, and how to report it."""
    old_hub = current_hub(previous)
    if previous is None or old_hub is None:
        history = previous.previous_hubs if previous is not None else ()
        return AssignmentPlan(Substatus.INITIAL_ASSIGNMENT, TwinSource.INITIAL, None, None, history)
    if old_hub.lower() == new_hub.lower():
        moved_id = previous.device_id is not None and previous.device_id != new_device_id
        return AssignmentPlan(
            previous.substatus or Substatus.INITIAL_ASSIGNMENT,
            TwinSource.KEEP,
            old_hub if moved_id else None,
            previous.device_id if moved_id else None,
            previous.previous_hubs,
        )
    returning = any(hub.lower() == new_hub.lower() for hub in previous.previous_hubs)
    if returning:
        substatus = Substatus.REPROVISIONED_TO_INITIAL_ASSIGNMENT
    elif policy.migrate_device_data:
        substatus = Substatus.DEVICE_DATA_MIGRATED
    else:
        substatus = Substatus.DEVICE_DATA_RESET
    return AssignmentPlan(
        substatus,
        TwinSource.MIGRATE if policy.migrate_device_data else TwinSource.INITIAL,
        old_hub,
        previous.device_id,
        _remember(previous.previous_hubs, old_hub, new_hub),
    )


def _remember(history: tuple[str, ...], left: str, arrived: str) -> tuple[str, ...]:
    """Append the hub just left; drop the one arrived at (it is current again); keep it short."""
    kept = [hub for hub in history if hub.lower() not in (left.lower(), arrived.lower())]
    return tuple([*kept, left][-MAX_PREVIOUS_HUBS:])
