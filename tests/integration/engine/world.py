"""A provisioning world on a real SQLite store: one instance, hubs, enrollments, an engine.

Only the Clock is faked (tokens and time move together); ids are the real RandomIdGenerator,
background work runs on the real `app.tasks.spawn`.
"""

from __future__ import annotations

import asyncio
import base64
from dataclasses import dataclass, field, replace
from typing import Any

from tests.unit.engine.manual_clock import ManualClock

from opendps.allocation.select import CustomAllocator
from opendps.app import tasks
from opendps.attestation.sas import build_sas_token
from opendps.attestation.symmetric import derive_device_key
from opendps.engine.api import (
    EngineSettings,
    OperationStatus,
    OperationStatusRequest,
    RegisterRequest,
    SasCredential,
)
from opendps.engine.ports import RandomIdGenerator
from opendps.engine.register import ProvisioningEngine
from opendps.hubs.builtin import builtin_connector_factory
from opendps.hubs.interface import HubConnectors
from opendps.model.enrollment import (
    Attestation,
    AttestationType,
    EnrollmentGroup,
    EnrollmentSpec,
    IndividualEnrollment,
    SymmetricKeyAttestation,
    TpmAttestation,
)
from opendps.model.hub import AllocationPolicy, HubKind, LinkedHub
from opendps.model.instance import Instance
from opendps.observability.metrics import Metrics
from opendps.store.interface import Store

ID_SCOPE = "0ne00000ABC"
PRIMARY = base64.b64encode(bytes(range(32))).decode()
SECONDARY = base64.b64encode(bytes(range(32, 64))).decode()
TOKEN_LIFETIME = 3600


def tpm_spec(endorsement_key: str, **kwargs: Any) -> EnrollmentSpec:
    attestation = Attestation(AttestationType.TPM, tpm=TpmAttestation(endorsement_key))
    return EnrollmentSpec(attestation, **kwargs)


def symmetric_spec(
    primary: str = PRIMARY, secondary: str = SECONDARY, **kwargs: Any
) -> EnrollmentSpec:
    attestation = Attestation(
        AttestationType.SYMMETRIC_KEY, symmetric_key=SymmetricKeyAttestation(primary, secondary)
    )
    return EnrollmentSpec(attestation, **kwargs)


@dataclass
class World:
    store: Store
    clock: ManualClock
    instance: Instance
    ids: RandomIdGenerator = field(default_factory=RandomIdGenerator)
    metrics: Metrics = field(default_factory=Metrics)
    engine: ProvisioningEngine = field(init=False)

    def __post_init__(self) -> None:
        self.engine = self.make_engine()

    def make_engine(
        self, settings: EngineSettings | None = None, custom: CustomAllocator | None = None
    ) -> ProvisioningEngine:
        hubs = HubConnectors(
            {HubKind.BUILTIN: builtin_connector_factory(self.store, self.clock, self.ids)}
        )
        return ProvisioningEngine(
            self.store,
            hubs,
            clock=self.clock,
            ids=self.ids,
            spawn=tasks.spawn,
            settings=settings,
            custom_allocator=custom,
            metrics=self.metrics,
        )

    def use(
        self, settings: EngineSettings | None = None, custom: CustomAllocator | None = None
    ) -> ProvisioningEngine:
        self.engine = self.make_engine(settings, custom)
        return self.engine

    async def add_hub(self, host_name: str, **kwargs: Any) -> LinkedHub:
        hub = LinkedHub(self.instance.id, host_name, kwargs.pop("kind", HubKind.BUILTIN), **kwargs)
        stored = await self.store.put_linked_hub(hub)
        self.engine.invalidate_caches(self.instance.id)
        return stored

    async def remove_hub(self, host_name: str) -> None:
        await self.store.delete_linked_hub(self.instance.id, host_name)
        self.engine.invalidate_caches(self.instance.id)

    async def add_individual(
        self, registration_id: str, spec: EnrollmentSpec | None = None, **kwargs: Any
    ) -> IndividualEnrollment:
        now = self.clock.now()
        enrollment = IndividualEnrollment(
            self.instance.id,
            registration_id,
            spec or symmetric_spec(),
            etag=self.ids.new_etag(),
            created_at=now,
            updated_at=now,
            **kwargs,
        )
        return await self.store.put_individual_enrollment(enrollment, if_match=None)

    async def add_group(self, group_id: str, spec: EnrollmentSpec | None = None) -> EnrollmentGroup:
        now = self.clock.now()
        group = EnrollmentGroup(
            self.instance.id,
            group_id,
            spec or symmetric_spec(),
            etag=self.ids.new_etag(),
            created_at=now,
            updated_at=now,
        )
        return await self.store.put_enrollment_group(group, if_match=None)

    async def set_instance_policy(self, policy: AllocationPolicy, **kwargs: Any) -> None:
        self.instance = await self.store.update_instance(
            replace(self.instance, allocation_policy=policy, etag=self.ids.new_etag(), **kwargs),
            if_match=None,
        )
        self.engine.invalidate_caches()

    def credential(
        self,
        registration_id: str,
        key: str = PRIMARY,
        *,
        encode: bool = True,
        expiry: int | None = None,
        scope: str = ID_SCOPE,
    ) -> SasCredential:
        se = expiry if expiry is not None else int(self.clock.now().timestamp()) + TOKEN_LIFETIME
        resource = f"{scope}/registrations/{registration_id}"
        return SasCredential(
            build_sas_token(resource, key, se, key_name="registration", encode_sr=encode)
        )

    def group_credential(
        self, registration_id: str, group_key: str = PRIMARY, *, encode: bool = True
    ) -> SasCredential:
        return self.credential(
            registration_id, derive_device_key(group_key, registration_id), encode=encode
        )

    async def register(
        self,
        registration_id: str,
        credential: SasCredential | None = None,
        *,
        payload: Any = None,
        scope: str = ID_SCOPE,
    ) -> OperationStatus:
        return await self.engine.register(
            RegisterRequest(
                scope,
                registration_id,
                credential or self.credential(registration_id),
                payload=payload,
            )
        )

    async def settle(self) -> None:
        """Wait until background registrations of this loop are done."""
        while running := tasks.pending():
            await asyncio.wait(running, timeout=5)

    async def poll(
        self, registration_id: str, operation_id: str, credential: SasCredential | None = None
    ) -> OperationStatus:
        self.clock.advance(2)  # as a compliant client does: stays under the polling limit
        return await self.engine.operation_status(
            OperationStatusRequest(
                ID_SCOPE,
                registration_id,
                operation_id,
                credential or self.credential(registration_id),
            )
        )
