"""What a poll answers: operation and registration state → transport-neutral results.

Pure functions; the engine (register.py) does the reads and the authentication.
"""

from __future__ import annotations

from datetime import datetime

from opendps.engine.api import OperationStatus, RegistrationResult
from opendps.model.errors import INTERNAL_ERROR
from opendps.model.registration import Operation, RegistrationState, RegistrationStatus

ORPHANED_MESSAGE = "The registration did not complete; register again."


def to_result(state: RegistrationState) -> RegistrationResult:
    """A registration state as the device sees it."""
    return RegistrationResult(
        registration_id=state.registration_id,
        status=state.status,
        attestation_type=state.attestation_type,
        enrollment_group_id=state.enrollment_group_id,
        assigned_hub=state.assigned_hub,
        device_id=state.device_id,
        substatus=state.substatus if state.status is RegistrationStatus.ASSIGNED else None,
        error_code=state.error_code,
        error_message=state.error_message,
        payload=state.payload,
        etag=state.etag or None,
        created_at=state.created_at,
        updated_at=state.updated_at,
    )


def operation_outcome(
    operation: Operation,
    state: RegistrationState | None,
    *,
    now: datetime,
    in_progress_here: bool,
    assigning_deadline_seconds: float,
    retry_after: int,
) -> OperationStatus:
    """The answer to a poll of `operation`, given the device's current registration state.

    An `assigning` operation that no task on this node is completing and that has not moved
    for `assigning_deadline_seconds` was orphaned by a node that stopped: it is reported
    `failed` (500000) so the device registers again instead of polling forever.
    """
    if operation.status is RegistrationStatus.ASSIGNING:
        age = (now - operation.updated_at).total_seconds()
        if in_progress_here or age < assigning_deadline_seconds:
            pending = RegistrationResult(operation.registration_id, RegistrationStatus.ASSIGNING)
            return OperationStatus(operation.operation_id, operation.status, pending, retry_after)
        failed = RegistrationResult(
            operation.registration_id,
            RegistrationStatus.FAILED,
            error_code=INTERNAL_ERROR,
            error_message=ORPHANED_MESSAGE,
            updated_at=operation.updated_at,
        )
        return OperationStatus(operation.operation_id, RegistrationStatus.FAILED, failed)
    if state is not None and state.status is operation.status:
        return OperationStatus(operation.operation_id, operation.status, to_result(state))
    # The state was deleted or changed by a later registration: answer from the operation.
    result = RegistrationResult(
        operation.registration_id,
        operation.status,
        error_code=operation.error_code,
        error_message=operation.error_message,
        updated_at=operation.updated_at,
    )
    return OperationStatus(operation.operation_id, operation.status, result)
