"""The one registration pipeline every device transport uses (ARCHITECTURE §4).

register: check the token (form, `sr`, expiry) → resolve the instance by ID scope (cached) →
per-instance rate limit → read the previous registration state, find the enrollment and
verify the key (lookup.py, one read transaction in the common case) → disabled? → reprovision policy (reprovision.py) → allocate
(allocation/) → create or update the device and twin on the hub (assign.py) → persist the
registration state and operation → count it for metering → result.

When 200 and when 202 (docs/device-api.md): a registration whose hubs are all served from our
own store (the built-in hub) and that needs no webhook completes inside the request and answers
its terminal status. One that must wait on a custom allocation webhook or a remote hub is
recorded as `assigning`, answered at once with an operation to poll, and completed by a
background task; any node can answer the polls, because the result is in the store.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Sequence
from dataclasses import dataclass, replace
from datetime import datetime

from opendps.allocation.geo_latency import LatencyTable
from opendps.allocation.select import (
    CustomAllocation,
    CustomAllocator,
)
from opendps.attestation.sas import SasToken
from opendps.attestation.tpm import new_hmac_key
from opendps.attestation.x509 import certificate_info
from opendps.engine.allocate import (
    choose_hub,
    custom_allocation_request,
    effective_policy,
)
from opendps.engine.api import (
    Credential,
    DeviceStatusRequest,
    EngineSettings,
    OperationStatus,
    OperationStatusRequest,
    RegisterRequest,
    RegistrationResult,
    SasCredential,
    TpmChallengeRequest,
    TpmTokenCheck,
    X509Credential,
)
from opendps.engine.assign import AssignmentJob, prepare_assignment, run_assignment
from opendps.engine.locks import KeyedLocks
from opendps.engine.lookup import AttestedDevice, EnrollmentLookup, check_device_credential
from opendps.engine.ports import Clock, EngineMetrics, IdGenerator, Spawn, UncountedMetrics
from opendps.engine.refusal import AttestationRefused, refuse
from opendps.engine.reprovision import needs_allocation
from opendps.engine.status import operation_outcome, to_result
from opendps.engine.throttle import SlidingWindowLimiter, TokenBucketLimiter
from opendps.engine.tpm import TpmKeys, decoy_challenge
from opendps.engine.tpm import hub_key_blob as tpm_hub_key_blob
from opendps.engine.tpm import hub_keys as tpm_hub_keys
from opendps.hubs.interface import HubConnectors, HubError
from opendps.model.enrollment import AttestationType, ProvisioningStatus
from opendps.model.errors import (
    CUSTOM_ALLOCATION_FAILED,
    CUSTOM_ALLOCATION_TIMEOUT,
    HUB_OPERATION_FAILED,
    INTERNAL_ERROR,
    INVALID_BODY,
    NO_HUB,
    OPERATION_NOT_FOUND,
    REGISTRATION_NOT_FOUND,
    THROTTLED,
    DpsError,
)
from opendps.model.hub import AllocationPolicy, LinkedHub
from opendps.model.ids import parse_registration_id, registration_key
from opendps.model.instance import Instance
from opendps.model.json import JsonValue
from opendps.model.registration import Operation, RegistrationState, RegistrationStatus, Substatus
from opendps.observability.logging import log_event
from opendps.store.interface import Store

logger = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class _Outcome:
    """How a registration ended, before it becomes a registration state."""

    status: RegistrationStatus
    hub: str | None = None
    device_id: str | None = None
    substatus: Substatus | None = None
    payload: JsonValue = None
    error: DpsError | None = None
    previous_hubs: tuple[str, ...] = ()


class ProvisioningEngine:
    """`DeviceEngine` (engine/api.py) over a `Store` and the hub connectors."""

    def __init__(
        self,
        store: Store,
        hubs: HubConnectors,
        *,
        clock: Clock,
        ids: IdGenerator,
        spawn: Spawn,
        settings: EngineSettings | None = None,
        custom_allocator: CustomAllocator | None = None,
        metrics: EngineMetrics | None = None,
    ) -> None:
        self._store = store
        self._metrics = metrics or UncountedMetrics()
        self._hubs = hubs
        self._clock = clock
        self._ids = ids
        self._spawn = spawn
        self._settings = settings = settings or EngineSettings()
        self._custom = custom_allocator
        self._lookup = EnrollmentLookup(store, clock, settings)
        self._latency = LatencyTable.from_pairs(settings.node_region, settings.region_latencies_ms)
        self._polls = SlidingWindowLimiter(clock, settings.poll_limit, settings.poll_window_seconds)
        rate = settings.instance_registrations_per_second
        self._rate = (
            TokenBucketLimiter(clock, rate, settings.instance_registration_burst) if rate else None
        )
        self._locks = KeyedLocks()
        # Registrations completing in a background task on this node: device key -> operation ID.
        self._in_flight: dict[tuple[str, str], str] = {}

    def invalidate_caches(self, instance_id: str | None = None) -> None:
        """Call after changing an instance, its linked hubs or its groups (None: everything)."""
        self._lookup.invalidate(instance_id)

    # -- register ------------------------------------------------------------------------------

    async def register(self, request: RegisterRequest) -> OperationStatus:
        try:
            return await self._register(request)
        except AttestationRefused as refused:
            self._metrics.count_attestation_failure(refused.reason)
            raise
        except DpsError as err:
            if err.error_code == THROTTLED:
                self._metrics.count_registration("throttled")
            raise

    async def _register(self, request: RegisterRequest) -> OperationStatus:
        registration_id = _checked_ids(request.registration_id, request.body_registration_id)
        instance, token = await self._open(request.id_scope, registration_id, request.credential)
        if self._rate is not None:
            self._rate.check(instance.id, "registrations")
        key = (instance.id, registration_key(registration_id))
        async with self._locks.hold(key):
            device, previous = await self._lookup.attest(instance, registration_id, token)
            running = self._in_flight.get(key)
            if running is not None:  # a background registration of this device is under way
                return OperationStatus(
                    running,
                    RegistrationStatus.ASSIGNING,
                    retry_after=self._settings.retry_after_seconds,
                )
            if device.tpm is not None:
                device = await self._use_tpm_challenge(device)
            status = await self._provision(device, previous, request.payload)
            return _with_device_results(status, device)

    async def _use_tpm_challenge(self, device: AttestedDevice) -> AttestedDevice:
        """A TPM device's registration uses its challenge up and gives it a fresh hub key."""
        assert device.tpm is not None
        challenge = await self._lookup.tpm.use(device.instance, device.tpm, new_hmac_key())
        return replace(device, tpm=challenge, device_keys=tpm_hub_keys(challenge))

    # -- TPM challenges ----------------------------------------------------------------------------

    async def tpm_challenge(self, request: TpmChallengeRequest) -> bytes:
        registration_id = _checked_ids(request.registration_id, request.body_registration_id)
        keys = TpmKeys.parse(request.endorsement_key, request.storage_root_key)
        try:
            instance = await self._lookup.instance(request.id_scope)
            if instance is None:
                raise refuse(
                    "unknown ID scope", id_scope=request.id_scope, registration_id=registration_id
                )
            if self._rate is not None:
                self._rate.check(instance.id, "registrations")
            enrollment = await self._store.get_individual_enrollment(instance.id, registration_id)
            return await self._lookup.tpm.issue(
                instance,
                registration_id,
                enrollment,
                keys,
                (request.endorsement_key, request.storage_root_key),
            )
        except AttestationRefused as refused:
            self._metrics.count_attestation_failure(refused.reason)
            # A refused device still gets a well-formed challenge, for a key nobody keeps: its
            # token is then refused like any other (401). An immediate refusal would tell an
            # attacker which registration IDs and EKs are enrolled, and the Node SDK over AMQP
            # never reports a refusal that comes before the first challenge (it waits forever).
            return decoy_challenge(keys)

    async def check_tpm_token(self, request: TpmTokenCheck) -> None:
        try:
            registration_id = parse_registration_id(request.registration_id)
            instance, token = await self._open(
                request.id_scope, registration_id, SasCredential(request.token)
            )
            assert not isinstance(token, X509Credential)  # a SasCredential gives a token
            enrollment = await self._store.get_individual_enrollment(instance.id, registration_id)
            if enrollment is None or enrollment.spec.attestation.type is not AttestationType.TPM:
                raise refuse(
                    "no TPM enrollment", id_scope=instance.id_scope, registration_id=registration_id
                )
            await self._lookup.tpm.verify(instance, registration_id, enrollment, token, unused=True)
        except AttestationRefused as refused:
            self._metrics.count_attestation_failure(refused.reason)
            raise

    async def _open(
        self, id_scope: str, registration_id: str, credential: Credential | None
    ) -> tuple[Instance, SasToken | X509Credential]:
        """Check what needs no store first (so garbage costs no reads), then the ID scope."""
        now = self._clock.now()
        skew = self._settings.sas_clock_skew_seconds
        token = check_device_credential(credential, id_scope, registration_id, now, skew)
        instance = await self._lookup.instance(id_scope)
        if instance is None:
            raise refuse("unknown ID scope", id_scope=id_scope, registration_id=registration_id)
        return instance, token

    async def _provision(
        self, device: AttestedDevice, previous: RegistrationState | None, payload: JsonValue
    ) -> OperationStatus:
        spec = device.spec
        if spec.provisioning_status is ProvisioningStatus.DISABLED:
            return await self._conclude(
                device, previous, _kept(previous, RegistrationStatus.DISABLED)
            )
        policy = effective_policy(device.enrollment, device.instance)
        if policy is AllocationPolicy.CUSTOM and needs_allocation(
            previous, spec.reprovision_policy
        ):
            return await self._start_background(device, previous, None, payload)
        try:
            hub, linked = await self._pick_hub(device, previous, policy)
            job = prepare_assignment(device, previous, hub, linked, self._hubs)
        except DpsError as err:
            return await self._conclude(
                device, previous, _kept(previous, RegistrationStatus.FAILED, err)
            )
        except HubError as err:
            failure = DpsError(HUB_OPERATION_FAILED, err.message)
            return await self._conclude(
                device, previous, _kept(previous, RegistrationStatus.FAILED, failure)
            )
        if not job.is_local:
            return await self._start_background(device, previous, job, payload)
        return await self._conclude(device, previous, await self._assign(job, previous))

    async def _pick_hub(
        self, device: AttestedDevice, previous: RegistrationState | None, policy: AllocationPolicy
    ) -> tuple[LinkedHub, tuple[LinkedHub, ...]]:
        """The hub and the linked-hub list it was chosen from. Raises DpsError(NO_HUB)."""
        linked = await self._lookup.linked_hubs(device.instance.id)
        try:
            return self._choose_hub(device, previous, linked, policy), linked
        except DpsError as err:
            if err.error_code != NO_HUB:
                raise
        # The cached list may predate a hub linked a moment ago (on any node): look once more
        # before failing the registration.
        linked = await self._lookup.linked_hubs(device.instance.id, fresh=True)
        return self._choose_hub(device, previous, linked, policy), linked

    def _choose_hub(
        self,
        device: AttestedDevice,
        previous: RegistrationState | None,
        linked: Sequence[LinkedHub],
        policy: AllocationPolicy,
    ) -> LinkedHub:
        """The allocated hub, or the current one when the reprovision policy keeps it."""
        return choose_hub(
            device.enrollment, device.registration_id, previous, linked, policy, self._latency
        )

    async def _assign(self, job: AssignmentJob, previous: RegistrationState | None) -> _Outcome:
        try:
            done = await run_assignment(job, self._settings.hub_timeout_seconds)
        except DpsError as err:
            return _kept(previous, RegistrationStatus.FAILED, err)
        return _Outcome(
            RegistrationStatus.ASSIGNED,
            hub=done.hub,
            device_id=done.device_id,
            substatus=done.substatus,
            payload=done.payload,
            previous_hubs=done.previous_hubs,
        )

    # -- slow path: webhook or remote hub ------------------------------------------------------

    async def _start_background(
        self,
        device: AttestedDevice,
        previous: RegistrationState | None,
        job: AssignmentJob | None,
        payload: JsonValue,
    ) -> OperationStatus:
        """Record `assigning`, hand the rest to a background task, answer with the operation."""
        now = self._clock.now()
        operation = Operation(
            operation_id=self._ids.new_operation_id(),
            instance_id=device.instance.id,
            registration_id=device.registration_id,
            status=RegistrationStatus.ASSIGNING,
            created_at=now,
            updated_at=now,
        )
        # Order matters for polls on other nodes: the state first, then the operation they poll.
        await self._store.put_registration_state(
            self._state(device, previous, _kept(previous, RegistrationStatus.ASSIGNING), now)
        )
        await self._store.put_operation(operation)
        key = (device.instance.id, registration_key(device.registration_id))
        self._in_flight[key] = operation.operation_id
        self._spawn(
            self._complete(device, previous, job, payload, operation),
            f"register {device.instance.id_scope}/{device.registration_id}",
        )
        return OperationStatus(
            operation.operation_id,
            RegistrationStatus.ASSIGNING,
            retry_after=self._settings.retry_after_seconds,
        )

    async def _complete(
        self,
        device: AttestedDevice,
        previous: RegistrationState | None,
        job: AssignmentJob | None,
        payload: JsonValue,
        operation: Operation,
    ) -> None:
        key = (device.instance.id, registration_key(device.registration_id))
        try:
            try:
                outcome = await self._complete_outcome(device, previous, job, payload)
            except Exception as err:  # a bug; the device must still hear an end, not poll forever
                log_event(
                    logger,
                    logging.ERROR,
                    "registration.background_failed",
                    id_scope=device.instance.id_scope,
                    registration_id=device.registration_id,
                    exc_info=err,
                )
                outcome = _kept(
                    previous, RegistrationStatus.FAILED, DpsError(INTERNAL_ERROR, "Internal error.")
                )
            await self._conclude(device, previous, outcome, operation)
        finally:
            self._in_flight.pop(key, None)

    async def _complete_outcome(
        self,
        device: AttestedDevice,
        previous: RegistrationState | None,
        job: AssignmentJob | None,
        payload: JsonValue,
    ) -> _Outcome:
        """Allocate through the webhook if no job was prepared (custom policy), then assign."""
        if job is None:
            try:
                # A webhook call costs far more than a fresh read of the linked hubs.
                linked = await self._lookup.linked_hubs(device.instance.id, fresh=True)
                allocation = await self._allocate_custom(device, previous, linked, payload)
                job = prepare_assignment(
                    device, previous, allocation.hub, linked, self._hubs, allocation
                )
            except DpsError as err:
                return _kept(previous, RegistrationStatus.FAILED, err)
            except HubError as err:
                failure = DpsError(HUB_OPERATION_FAILED, err.message)
                return _kept(previous, RegistrationStatus.FAILED, failure)
        return await self._assign(job, previous)

    async def _allocate_custom(
        self,
        device: AttestedDevice,
        previous: RegistrationState | None,
        linked: Sequence[LinkedHub],
        payload: JsonValue,
    ) -> CustomAllocation:
        request = custom_allocation_request(
            device.enrollment,
            device.instance,
            device.registration_id,
            device.attestation_type,
            previous,
            linked,
            payload,
        )
        if self._custom is None:
            raise DpsError(
                CUSTOM_ALLOCATION_FAILED, "Custom allocation is not enabled on this server."
            )
        try:
            # The allocator bounds its own call; this is the engine's guarantee of an end.
            async with asyncio.timeout(self._settings.hub_timeout_seconds):
                return await self._custom.allocate(request)
        except TimeoutError:
            raise DpsError(
                CUSTOM_ALLOCATION_TIMEOUT, "Custom allocation webhook did not answer in time."
            ) from None

    # -- persistence -----------------------------------------------------------------------------

    async def _conclude(
        self,
        device: AttestedDevice,
        previous: RegistrationState | None,
        outcome: _Outcome,
        operation: Operation | None = None,
    ) -> OperationStatus:
        """Persist the registration state and its operation, count it, and log it once."""
        now = self._clock.now()
        concluded = self._state(device, previous, outcome, now)
        error = outcome.error
        done = Operation(
            operation_id=operation.operation_id
            if operation is not None
            else self._ids.new_operation_id(),
            instance_id=device.instance.id,
            registration_id=device.registration_id,
            status=outcome.status,
            created_at=operation.created_at if operation is not None else now,
            updated_at=now,
            error_code=error.error_code if error is not None else None,
            error_message=error.message if error is not None else None,
        )
        # One transaction for the three writes, shared with concurrent registrations.
        state = await self._store.record_registration(concluded, done, meter_day=now.date())
        self._metrics.count_registration(str(outcome.status))
        log_event(
            logger,
            logging.INFO if error is None else logging.WARNING,
            "registration.completed",
            id_scope=device.instance.id_scope,
            registration_id=device.registration_id,
            enrollment_group_id=device.enrollment_group_id,
            status=str(outcome.status),
            substatus=str(outcome.substatus) if outcome.substatus else None,
            hub=outcome.hub,
            error_code=error.error_code if error is not None else None,
            error=error.message if error is not None else None,
        )
        return OperationStatus(done.operation_id, outcome.status, to_result(state))

    def _state(
        self,
        device: AttestedDevice,
        previous: RegistrationState | None,
        outcome: _Outcome,
        now: datetime,
    ) -> RegistrationState:
        error = outcome.error
        return RegistrationState(
            instance_id=device.instance.id,
            registration_id=device.registration_id,
            attestation_type=device.attestation_type,
            status=outcome.status,
            enrollment_group_id=device.enrollment_group_id,
            substatus=outcome.substatus,
            assigned_hub=outcome.hub,
            device_id=outcome.device_id,
            error_code=error.error_code if error is not None else None,
            error_message=error.message if error is not None else None,
            payload=outcome.payload,
            previous_hubs=outcome.previous_hubs,
            etag=self._ids.new_etag(),
            created_at=previous.created_at if previous is not None and previous.created_at else now,
            updated_at=now,
        )

    # -- polls ------------------------------------------------------------------------------

    async def operation_status(self, request: OperationStatusRequest) -> OperationStatus:
        registration_id = parse_registration_id(request.registration_id)
        device, state, key = await self._authenticate_poll(
            request.id_scope, registration_id, request.credential
        )
        instance = device.instance
        operation = await self._store.get_operation(instance.id, request.operation_id)
        if operation is None or operation.registration_id.lower() != registration_id.lower():
            raise DpsError(OPERATION_NOT_FOUND, "No such operation for this device.")
        outcome = operation_outcome(
            operation,
            state,
            now=self._clock.now(),
            in_progress_here=self._in_flight.get(key) == operation.operation_id,
            assigning_deadline_seconds=self._settings.assigning_deadline_seconds,
            retry_after=self._settings.retry_after_seconds,
        )
        return _with_device_results(outcome, device)

    async def registration_status(self, request: DeviceStatusRequest) -> RegistrationResult:
        registration_id = _checked_ids(request.registration_id, request.body_registration_id)
        device, state, _ = await self._authenticate_poll(
            request.id_scope, registration_id, request.credential
        )
        if state is None:
            raise DpsError(REGISTRATION_NOT_FOUND, "The device has not registered.")
        return _device_result(to_result(state), device)

    async def _authenticate_poll(
        self, id_scope: str, registration_id: str, credential: Credential | None
    ) -> tuple[AttestedDevice, RegistrationState | None, tuple[str, str]]:
        """Authenticate like a registration, then count the poll against the device's limit
        (only authenticated polls count, so nobody can use up another device's allowance)."""
        try:
            instance, token = await self._open(id_scope, registration_id, credential)
            device, state = await self._lookup.attest(instance, registration_id, token)
        except AttestationRefused as refused:
            self._metrics.count_attestation_failure(refused.reason)
            raise
        key = (instance.id, registration_key(registration_id))
        self._polls.check(key, "status requests")
        return device, state, key


def _with_device_results(status: OperationStatus, device: AttestedDevice) -> OperationStatus:
    """Add the X.509 or TPM sub-result (protocol.md §1.4, §6.2) to a status that carries a
    registration."""
    if status.registration is None:
        return status
    return replace(status, registration=_device_result(status.registration, device))


def _device_result(result: RegistrationResult, device: AttestedDevice) -> RegistrationResult:
    if device.tpm is not None and result.status is RegistrationStatus.ASSIGNED:
        return replace(result, tpm_authentication_key=tpm_hub_key_blob(device.tpm))
    match = device.x509
    if match is None or result.status is RegistrationStatus.ASSIGNING:
        return result
    signing = match.signing_certificate
    return replace(
        result,
        certificate_info=certificate_info(match.leaf),
        signing_certificate_info=certificate_info(signing) if signing is not None else None,
    )


def _checked_ids(path_id: str, body_id: str | None) -> str:
    """The registration ID of the path, checked; the body's must name the same device (§1.3)."""
    registration_id = parse_registration_id(path_id)
    if body_id is not None and body_id.lower() != registration_id.lower():
        raise DpsError(
            INVALID_BODY, "registrationId in the body does not match the one in the path."
        )
    return registration_id


def _kept(
    previous: RegistrationState | None, status: RegistrationStatus, error: DpsError | None = None
) -> _Outcome:
    """An outcome that leaves the device where it was (refused, failed, or still assigning)."""
    if previous is None:
        return _Outcome(status, error=error)
    return _Outcome(
        status,
        hub=previous.assigned_hub,
        device_id=previous.device_id,
        error=error,
        previous_hubs=previous.previous_hubs,
    )
