"""The one storage interface. SQLite and PostgreSQL implement it (store/sql.py over an engine).

Every method is one named transaction. Conditional writes take `if_match`:
- `None`: unconditional create-or-replace / delete;
- `"*"`: the record must exist;
- anything else: must equal the stored etag, else `DpsError(ETAG_MISMATCH)` (412).
Writers pass the new etag and timestamps in the record; `put_*` keeps the stored
`created_at` when the record already exists and returns what is now stored.
Lists are keyset-paginated: `after` is the last key of the previous page (case-folded id),
the result is `Page(items, next_after)` with `next_after = None` on the last page.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date, datetime
from typing import Generic, Protocol, TypeVar

from opendps.model.audit import AuditEntry, MeterCount, MeterKind
from opendps.model.certificate import CaCertificate
from opendps.model.device import HubDevice
from opendps.model.enrollment import EnrollmentGroup, IndividualEnrollment
from opendps.model.hub import LinkedHub
from opendps.model.instance import AccessPolicy, Instance
from opendps.model.registration import Operation, RegistrationState
from opendps.model.tpm import TpmChallenge

T = TypeVar("T")


@dataclass(frozen=True, slots=True)
class Page(Generic[T]):
    items: list[T]
    next_after: str | None


@dataclass(frozen=True, slots=True)
class BulkResult:
    """Per-item outcome of a bulk write: the id and the DPS error, for failed items only."""

    failures: list[tuple[str, int, str]]  # (id, error_code, message)


@dataclass(frozen=True, slots=True)
class DeviceRecords:
    """What a registration needs about one device, read in one transaction
    (Store.get_device_records)."""

    state: RegistrationState | None
    individual: IndividualEnrollment | None
    group: EnrollmentGroup | None  # the group asked for; None if not asked for or absent


class Store(Protocol):
    """Async persistence for every OpenDPS record. One instance per process, shared."""

    async def close(self) -> None: ...

    # -- instances ---------------------------------------------------------------------
    async def create_instance(
        self, instance: Instance, policies: list[AccessPolicy], hubs: list[LinkedHub]
    ) -> Instance:
        """Create an instance with its first policies and hubs atomically.

        Raises DpsError(ALREADY_EXISTS) if the name or ID scope is taken.
        """
        ...

    async def get_instance(self, instance_id: str) -> Instance | None: ...

    async def get_instance_by_name(self, name: str) -> Instance | None: ...

    async def get_instance_by_id_scope(self, id_scope: str) -> Instance | None: ...

    async def get_instance_by_service_host(self, host_name: str) -> Instance | None:
        """Case-insensitive match on Instance.service_host_name."""
        ...

    async def list_instances(self) -> list[Instance]: ...

    async def update_instance(self, instance: Instance, *, if_match: str | None) -> Instance: ...

    async def delete_instance(self, instance_id: str) -> bool:
        """Delete the instance and everything it owns. False if it did not exist."""
        ...

    # -- access policies -------------------------------------------------------------------
    async def put_access_policy(self, policy: AccessPolicy) -> AccessPolicy: ...

    async def get_access_policy(self, instance_id: str, name: str) -> AccessPolicy | None:
        """Policy names are matched case-insensitively."""
        ...

    async def list_access_policies(self, instance_id: str) -> list[AccessPolicy]: ...

    async def list_access_policies_named(self, name: str) -> list[AccessPolicy]:
        """Policies of that name across all instances (to find the instance a token signs for)."""
        ...

    async def delete_access_policy(self, instance_id: str, name: str) -> bool: ...

    # -- linked hubs -----------------------------------------------------------------------
    async def put_linked_hub(self, hub: LinkedHub, *, if_match: str | None = None) -> LinkedHub: ...

    async def get_linked_hub(self, instance_id: str, host_name: str) -> LinkedHub | None: ...

    async def list_linked_hubs(self, instance_id: str) -> list[LinkedHub]: ...

    async def delete_linked_hub(self, instance_id: str, host_name: str) -> bool: ...

    # -- individual enrollments ----------------------------------------------------------------
    async def put_individual_enrollment(
        self, enrollment: IndividualEnrollment, *, if_match: str | None, create_only: bool = False
    ) -> IndividualEnrollment:
        """Create or replace. `create_only` raises DpsError(ALREADY_EXISTS) if it exists."""
        ...

    async def get_individual_enrollment(
        self, instance_id: str, registration_id: str
    ) -> IndividualEnrollment | None: ...

    async def delete_individual_enrollment(
        self, instance_id: str, registration_id: str, *, if_match: str | None
    ) -> bool:
        """False if it did not exist (and if_match is None); 412 on a stale if_match."""
        ...

    async def list_individual_enrollments(
        self, instance_id: str, *, after: str | None, limit: int
    ) -> Page[IndividualEnrollment]: ...

    async def count_individual_enrollments(self, instance_id: str) -> int: ...

    async def import_individual_enrollments(self, enrollments: list[IndividualEnrollment]) -> int:
        """Fast path for bulk import: insert-or-replace many in one transaction; returns count."""
        ...

    # -- enrollment groups -------------------------------------------------------------------
    async def put_enrollment_group(
        self, group: EnrollmentGroup, *, if_match: str | None, create_only: bool = False
    ) -> EnrollmentGroup: ...

    async def get_enrollment_group(
        self, instance_id: str, group_id: str
    ) -> EnrollmentGroup | None: ...

    async def delete_enrollment_group(
        self, instance_id: str, group_id: str, *, if_match: str | None
    ) -> bool: ...

    async def list_enrollment_groups(
        self, instance_id: str, *, after: str | None, limit: int
    ) -> Page[EnrollmentGroup]: ...

    # -- registration states and operations -----------------------------------------------------
    async def put_registration_state(self, state: RegistrationState) -> RegistrationState: ...

    async def get_registration_state(
        self, instance_id: str, registration_id: str
    ) -> RegistrationState | None: ...

    async def get_device_records(
        self, instance_id: str, registration_id: str, *, group_id: str | None
    ) -> DeviceRecords:
        """The device's registration state and individual enrollment, and the enrollment group
        `group_id` when given, all in one read transaction."""
        ...

    async def delete_registration_state(
        self, instance_id: str, registration_id: str, *, if_match: str | None
    ) -> bool: ...

    async def list_registration_states_by_group(
        self, instance_id: str, group_id: str, *, after: str | None, limit: int
    ) -> Page[RegistrationState]: ...

    async def list_registration_states(
        self, instance_id: str, *, after: str | None, limit: int
    ) -> Page[RegistrationState]: ...

    async def put_operation(self, operation: Operation) -> None: ...

    async def record_registration(
        self, state: RegistrationState, operation: Operation, *, meter_day: date
    ) -> RegistrationState:
        """Store a concluded registration in one transaction: `state` (as put_registration_state,
        whose result it returns), `operation` (as put_operation) and one REGISTRATION meter
        count of the instance on `meter_day` (as add_meter).

        Concurrent calls may share a transaction (group commit); each returns once the one
        holding its writes committed. Raises DpsError(INSTANCE_NOT_FOUND) like the three.
        """
        ...

    async def get_operation(self, instance_id: str, operation_id: str) -> Operation | None: ...

    async def delete_operations_before(self, before: datetime, *, limit: int = 10_000) -> int:
        """Prune operations last updated before `before` (devices stopped polling them long ago).

        Deletes at most `limit` rows, oldest first, so one call stays a short transaction;
        returns how many were deleted (call again while it returns `limit`).
        """
        ...

    # -- CA certificates -----------------------------------------------------------------------
    async def put_ca_certificate(
        self, certificate: CaCertificate, *, if_match: str | None, create_only: bool = False
    ) -> CaCertificate: ...

    async def get_ca_certificate(self, instance_id: str, name: str) -> CaCertificate | None: ...

    async def list_ca_certificates(self, instance_id: str) -> list[CaCertificate]: ...

    async def delete_ca_certificate(
        self, instance_id: str, name: str, *, if_match: str | None
    ) -> bool: ...

    # -- built-in hub devices --------------------------------------------------------------------
    async def put_hub_device(self, device: HubDevice) -> HubDevice: ...

    async def create_hub_device(self, device: HubDevice) -> HubDevice | None:
        """Insert `device` unless its hub already has a device of that ID (any spelling);
        the stored device, or None when one existed (then nothing is written)."""
        ...

    async def get_hub_device(self, hub_host_name: str, device_id: str) -> HubDevice | None: ...

    async def list_hub_devices(
        self, hub_host_name: str, *, after: str | None, limit: int
    ) -> Page[HubDevice]: ...

    async def delete_hub_device(self, hub_host_name: str, device_id: str) -> bool: ...

    # -- TPM challenges (model/tpm.py) ---------------------------------------------------------
    async def put_tpm_challenge(self, challenge: TpmChallenge) -> None:
        """Create or replace the device's challenge."""
        ...

    async def get_tpm_challenge(
        self, instance_id: str, registration_id: str
    ) -> TpmChallenge | None: ...

    async def use_tpm_challenge(
        self,
        instance_id: str,
        registration_id: str,
        challenge_id: str,
        *,
        used_at: datetime,
        hub_key: bytes,
    ) -> bool:
        """Mark that challenge used, with the hub key given to the device. False if it is not
        the device's current challenge or was used already (a replay, or a race lost to a
        concurrent registration): the caller must then refuse."""
        ...

    async def delete_tpm_challenge(self, instance_id: str, registration_id: str) -> bool: ...

    async def delete_tpm_challenges_expired_before(
        self, before: datetime, *, limit: int = 10_000
    ) -> int:
        """Prune challenges that expired before `before`; returns how many went."""
        ...

    # -- audit and metering ------------------------------------------------------------------
    async def append_audit(self, entry: AuditEntry) -> None: ...

    async def list_audit(
        self, *, instance_id: str | None, before_id: int | None, limit: int
    ) -> list[AuditEntry]:
        """Newest first; `before_id` pages backwards."""
        ...

    async def add_meter(
        self, instance_id: str, day: date, kind: MeterKind, count: int = 1
    ) -> None: ...

    async def list_meters(
        self, instance_id: str, *, since: date | None = None
    ) -> list[MeterCount]: ...
