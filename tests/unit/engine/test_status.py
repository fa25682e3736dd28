from __future__ import annotations

from datetime import UTC, datetime, timedelta

from opendps.engine.api import OperationStatus
from opendps.engine.status import ORPHANED_MESSAGE, operation_outcome, to_result
from opendps.model.enrollment import AttestationType
from opendps.model.errors import INTERNAL_ERROR, NO_HUB
from opendps.model.registration import Operation, RegistrationState, RegistrationStatus, Substatus

T0 = datetime(2026, 1, 1, tzinfo=UTC)


def op(status: RegistrationStatus, **kwargs: object) -> Operation:
    return Operation("op-1", "inst", "Dev-1", status, T0, T0, **kwargs)  # type: ignore[arg-type]


def state(status: RegistrationStatus, **kwargs: object) -> RegistrationState:
    return RegistrationState("inst", "Dev-1", AttestationType.SYMMETRIC_KEY, status, **kwargs)  # type: ignore[arg-type]


def outcome(
    operation: Operation, current: RegistrationState | None, *, after: float = 1, here: bool = False
) -> OperationStatus:
    return operation_outcome(
        operation,
        current,
        now=T0 + timedelta(seconds=after),
        in_progress_here=here,
        assigning_deadline_seconds=120,
        retry_after=2,
    )


def test_assigning_operation_says_poll_again_with_retry_after() -> None:
    result = outcome(op(RegistrationStatus.ASSIGNING), state(RegistrationStatus.ASSIGNING))
    assert (result.status, result.retry_after, result.is_terminal) == (
        RegistrationStatus.ASSIGNING,
        2,
        False,
    )
    assert result.registration is not None and result.registration.registration_id == "Dev-1"


def test_orphaned_assigning_operation_is_reported_failed_after_the_deadline() -> None:
    result = outcome(op(RegistrationStatus.ASSIGNING), None, after=121)
    assert result.status is RegistrationStatus.FAILED and result.retry_after is None
    assert result.registration is not None
    assert (result.registration.error_code, result.registration.error_message) == (
        INTERNAL_ERROR,
        ORPHANED_MESSAGE,
    )


def test_an_old_assigning_operation_still_running_here_is_not_orphaned() -> None:
    assert (
        outcome(op(RegistrationStatus.ASSIGNING), None, after=500, here=True).status
        is RegistrationStatus.ASSIGNING
    )


def test_terminal_operation_answers_with_the_registration_state() -> None:
    current = state(
        RegistrationStatus.ASSIGNED,
        assigned_hub="hub",
        device_id="Dev-1",
        substatus=Substatus.INITIAL_ASSIGNMENT,
        etag='"e"',
    )
    result = outcome(op(RegistrationStatus.ASSIGNED), current)
    assert result.is_terminal and result.registration == to_result(current)


def test_terminal_operation_whose_state_moved_on_answers_from_the_operation() -> None:
    result = outcome(
        op(RegistrationStatus.FAILED, error_code=NO_HUB, error_message="no hub"),
        state(RegistrationStatus.ASSIGNED),
    )
    assert result.status is RegistrationStatus.FAILED
    assert result.registration is not None and result.registration.error_code == NO_HUB


def test_substatus_is_only_shown_for_assigned() -> None:
    assert (
        to_result(
            state(RegistrationStatus.FAILED, substatus=Substatus.INITIAL_ASSIGNMENT)
        ).substatus
        is None
    )
