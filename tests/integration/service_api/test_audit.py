"""`record_change`: the audit entry and the meter every administrative write leaves."""

from __future__ import annotations

from tests.integration.service_api.conftest import NOW, Service

from opendps.model.audit import MeterKind
from opendps.service_api.audit import record_change


async def test_an_enrollment_change_is_audited_and_metered_as_an_enrollment_change(
    service: Service,
) -> None:
    await record_change(
        service.ctx, service.a.id, "owner", "enrollmentGroup.update", "enrollmentGroups/g"
    )
    entries = await service.store.list_audit(instance_id=service.a.id, before_id=None, limit=5)
    assert [(e.at, e.actor, e.action, e.target) for e in entries] == [
        (NOW, "owner", "enrollmentGroup.update", "enrollmentGroups/g")
    ]
    meters = await service.store.list_meters(service.a.id)
    assert [(m.day, m.kind, m.count) for m in meters] == [
        (NOW.date(), MeterKind.ENROLLMENT_CHANGE, 1)
    ]


async def test_other_changes_count_as_service_operations_unless_told_otherwise(
    service: Service,
) -> None:
    await record_change(service.ctx, service.a.id, "admin", "policy.regenerate-key", "policies/p")
    await record_change(
        service.ctx,
        service.a.id,
        "admin",
        "import.batch",
        "enrollments",
        meter=MeterKind.ENROLLMENT_CHANGE,
    )
    meters = {m.kind: m.count for m in await service.store.list_meters(service.a.id)}
    assert meters == {MeterKind.SERVICE_OPERATION: 1, MeterKind.ENROLLMENT_CHANGE: 1}


async def test_deployment_changes_are_audited_but_not_metered(service: Service) -> None:
    await record_change(service.ctx, None, "admin", "instance.create", "instances/new")
    entries = await service.store.list_audit(instance_id=None, before_id=None, limit=5)
    assert entries[0].instance_id is None and entries[0].action == "instance.create"
    assert await service.store.list_meters(service.a.id) == []
    assert await service.store.list_meters(service.b.id) == []
