"""`POST /admin/v1/instances/{instance}/allocation/explain`: the allocation dry run.

The decision itself is engine/explain.py; this renders it. Nothing is registered; a custom
allocation webhook is called once per explained enrollment, marked as a dry run.
"""

from __future__ import annotations

from aiohttp import web

from opendps.admin_api.auth import AdminCaller, resolve_instance
from opendps.admin_api.schemas import (
    AllocationExplanation,
    ExplainedDecision,
    ExplainedHub,
    ExplainedRegistration,
    ExplainedReprovisioning,
    ExplainedWebhook,
    ExplainRequest,
)
from opendps.admin_api.wire import read_model, respond
from opendps.engine import explain
from opendps.model.ids import parse_registration_id
from opendps.model.registration import RegistrationState
from opendps.service_api.context import ServiceContext


async def explain_allocation(
    request: web.Request, ctx: ServiceContext, caller: AdminCaller
) -> web.Response:
    instance = await resolve_instance(ctx, caller, request.match_info["instance"])
    body = await read_model(request, ctx, ExplainRequest)
    registration_id = parse_registration_id(body.registration_id)
    result = await explain.explain_allocation(
        ctx.store,
        instance,
        registration_id,
        body.payload,
        custom_allocator=ctx.custom_allocator,
        latency=ctx.allocation_latency,
    )
    return respond(render_explanation(result))


def render_explanation(result: explain.AllocationExplanation) -> AllocationExplanation:
    return AllocationExplanation(
        registration_id=result.registration_id,
        dry_run=True,
        summary=result.summary,
        previous_registration=_previous(result.previous),
        decisions=[_decision(d) for d in result.decisions],
    )


def _previous(state: RegistrationState | None) -> ExplainedRegistration | None:
    if state is None:
        return None
    return ExplainedRegistration(
        status=str(state.status),
        assigned_hub=state.assigned_hub,
        device_id=state.device_id,
        enrollment_group_id=state.enrollment_group_id,
        substatus=str(state.substatus) if state.substatus is not None else None,
        previous_hubs=list(state.previous_hubs),
    )


def _decision(decision: explain.Decision) -> ExplainedDecision:
    webhook = decision.webhook
    plan = decision.reprovisioning
    return ExplainedDecision(
        enrollment_kind=str(decision.enrollment_kind),
        enrollment_id=decision.enrollment_id,
        attestation_type=str(decision.attestation_type),
        provisioning_status=str(decision.provisioning_status),
        matched_by=decision.matched_by,
        allocation_policy=decision.policy,
        policy_source=str(decision.policy_source),
        hubs=[
            ExplainedHub(
                host_name=hub.host_name,
                allocation_weight=hub.allocation_weight,
                apply_allocation_policy=hub.apply_allocation_policy,
                location=hub.location,
                candidate=hub.candidate,
            )
            for hub in decision.hubs
        ],
        outcome=str(decision.outcome),
        reason=decision.reason,
        assigned_hub=decision.hub,
        device_id=decision.device_id,
        initial_twin=decision.initial_twin,
        reprovisioning=(
            ExplainedReprovisioning(
                substatus=str(plan.substatus),
                twin=plan.twin,
                removes_from_hub=plan.removes_from_hub,
                removes_device_id=plan.removes_device_id,
            )
            if plan is not None
            else None
        ),
        webhook=(
            ExplainedWebhook(
                iot_hub_host_name=webhook.hub,
                initial_twin=webhook.initial_twin,
                payload=webhook.payload,
                error_code=webhook.error_code,
                error_message=webhook.error_message,
            )
            if webhook is not None
            else None
        ),
        error_code=decision.error_code,
        error_message=decision.error_message,
    )
