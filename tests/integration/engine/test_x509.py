"""X.509 attestation through the engine on a real SQLite store (protocol.md §5, §7.3)."""

from __future__ import annotations

from dataclasses import replace
from typing import Any

import pytest
from tests.integration.engine.world import ID_SCOPE, World
from tests.unit.attestation.x509_pki import Issued, device, intermediate, root

from opendps.engine.api import (
    DeviceStatusRequest,
    OperationStatus,
    OperationStatusRequest,
    RegisterRequest,
    X509Credential,
)
from opendps.engine.refusal import AttestationRefused
from opendps.model.certificate import CaCertificate
from opendps.model.device import DeviceAuthKind
from opendps.model.enrollment import (
    Attestation,
    AttestationType,
    EnrollmentSpec,
    ProvisioningStatus,
    X509Attestation,
    X509CaReferences,
    X509CertificatePair,
)
from opendps.model.errors import UNAUTHORIZED, DpsError
from opendps.model.registration import RegistrationStatus

HUB = "hub-1.example.net"


def x509_spec(attestation: X509Attestation, **kwargs: Any) -> EnrollmentSpec:
    return EnrollmentSpec(Attestation(AttestationType.X509, x509=attestation), **kwargs)


def clients(leaf: Issued) -> EnrollmentSpec:
    return x509_spec(X509Attestation(client_certificates=X509CertificatePair(leaf.record)))


def signing(ca: Issued, **kwargs: Any) -> EnrollmentSpec:
    return x509_spec(X509Attestation(signing_certificates=X509CertificatePair(ca.record)), **kwargs)


def chain(*issued: Issued) -> X509Credential:
    return X509Credential(tuple(i.certificate for i in issued))


async def register(world: World, rid: str, credential: X509Credential) -> OperationStatus:
    return await world.engine.register(RegisterRequest(ID_SCOPE, rid, credential))


async def upload_ca(world: World, name: str, ca: Issued, *, verified: bool) -> CaCertificate:
    info = ca.record.info
    record = CaCertificate(
        instance_id=world.instance.id,
        name=name,
        certificate_pem=ca.pem,
        subject=info.subject_name,
        sha1_thumbprint=info.sha1_thumbprint,
        sha256_thumbprint=info.sha256_thumbprint,
        not_before_utc=info.not_before_utc,
        not_after_utc=info.not_after_utc,
        is_verified=verified,
        etag=world.ids.new_etag(),
    )
    stored = await world.store.put_ca_certificate(record, if_match=None)
    world.engine.invalidate_caches(world.instance.id)
    return stored


async def refusal(world: World, rid: str, credential: X509Credential | None) -> DpsError:
    with pytest.raises(DpsError) as caught:
        await world.engine.register(RegisterRequest(ID_SCOPE, rid, credential))
    return caught.value


@pytest.fixture
async def hub(world: World) -> str:
    await world.add_hub(HUB)
    return HUB


async def test_self_signed_individual_is_assigned_with_thumbprint_identity_on_the_hub(
    world: World, hub: str
) -> None:
    leaf = device("Dev-Self")
    await world.add_individual("dev-self", clients(leaf), device_id="hub-dev-self")

    status = await world.engine.register(RegisterRequest(ID_SCOPE, "Dev-Self", chain(leaf)))

    assert status.status is RegistrationStatus.ASSIGNED
    result = status.registration
    assert result is not None and result.device_id == "hub-dev-self"
    assert result.registration_id == "Dev-Self"  # the device's spelling is kept
    assert result.certificate_info == leaf.record.info
    assert result.signing_certificate_info is None
    on_hub = await world.store.get_hub_device(hub, "hub-dev-self")
    assert on_hub is not None and on_hub.auth_kind is DeviceAuthKind.SELF_SIGNED
    assert on_hub.auth["primaryThumbprint"] == leaf.record.info.sha256_thumbprint


async def test_group_via_intermediate_assigns_the_cn_as_device_id_with_ca_identity(
    world: World, hub: str
) -> None:
    top = root()
    mid = intermediate(top)
    leaf = device("fleet-7", mid)
    await world.add_group("fleet", signing(mid))

    status = await register(world, "fleet-7", chain(leaf, mid))

    assert status.status is RegistrationStatus.ASSIGNED
    result = status.registration
    assert result is not None
    assert result.device_id == "fleet-7" and result.enrollment_group_id == "fleet"
    assert result.signing_certificate_info == mid.record.info
    on_hub = await world.store.get_hub_device(hub, "fleet-7")
    assert on_hub is not None and on_hub.auth_kind is DeviceAuthKind.CERTIFICATE_AUTHORITY
    state = await world.store.get_registration_state(world.instance.id, "fleet-7")
    assert state is not None and state.attestation_type is AttestationType.X509


async def test_a_group_on_a_verified_uploaded_root_registers_a_device_that_sent_leaf_and_intermediate(
    world: World, hub: str
) -> None:
    top = root()
    mid = intermediate(top)
    await upload_ca(world, "fleet-root", top, verified=True)
    await world.add_group(
        "by-ca", x509_spec(X509Attestation(ca_references=X509CaReferences("fleet-root")))
    )

    status = await register(world, "car-1", chain(device("car-1", mid), mid))

    assert status.status is RegistrationStatus.ASSIGNED


async def test_an_unverified_ca_cannot_back_a_group_until_it_is_verified(
    world: World, hub: str
) -> None:
    top = root()
    mid = intermediate(top)
    ca = await upload_ca(world, "fleet-root", top, verified=False)
    await world.add_group(
        "by-ca", x509_spec(X509Attestation(ca_references=X509CaReferences("fleet-root")))
    )
    credential = chain(device("car-2", mid), mid)

    error = await refusal(world, "car-2", credential)
    assert error.error_code == UNAUTHORIZED and error.message == "Unauthorized"
    assert (
        isinstance(error, AttestationRefused)
        and error.reason == "no enrollment for the certificate chain"
    )

    # Verification takes effect at once: CA certificates are re-read, never trusted from a cache.
    await world.store.put_ca_certificate(replace(ca, is_verified=True), if_match=None)
    assert (await register(world, "car-2", credential)).status is RegistrationStatus.ASSIGNED


async def test_a_disabled_group_answers_disabled_and_does_not_fall_through(
    world: World, hub: str
) -> None:
    top = root()
    mid = intermediate(top)
    await world.add_group("specific", signing(mid, provisioning_status=ProvisioningStatus.DISABLED))
    await world.add_group("broad", signing(top))

    status = await register(world, "dev-d", chain(device("dev-d", mid), mid, top))

    assert status.status is RegistrationStatus.DISABLED


async def test_a_disabled_individual_beats_an_enabled_group(world: World, hub: str) -> None:
    mid = intermediate(root())
    leaf = device("dev-i", mid)
    await world.add_individual(
        "dev-i", replace(clients(leaf), provisioning_status=ProvisioningStatus.DISABLED)
    )
    await world.add_group("g", signing(mid))

    status = await register(world, "dev-i", chain(leaf, mid))

    assert status.status is RegistrationStatus.DISABLED


async def test_wrong_cn_unenrolled_ca_and_no_chain_are_refused_and_counted(
    world: World, hub: str
) -> None:
    mid = intermediate(root())
    await world.add_group("g", signing(mid))
    stranger = intermediate(root("Stranger Root"), "Stranger")

    wrong_cn = await refusal(world, "dev-x", chain(device("dev-y", mid), mid))
    unenrolled = await refusal(world, "dev-z", chain(device("dev-z", stranger), stranger))
    nothing = await refusal(world, "dev-z", X509Credential(()))

    assert {wrong_cn.error_code, unenrolled.error_code, nothing.error_code} == {UNAUTHORIZED}
    assert await world.store.get_registration_state(world.instance.id, "dev-z") is None


async def test_a_sas_token_on_an_x509_enrollment_is_refused(world: World, hub: str) -> None:
    leaf = device("dev-s")
    await world.add_individual("dev-s", clients(leaf))

    with pytest.raises(DpsError) as caught:
        await world.register("dev-s")  # the world signs a SAS token

    assert caught.value.error_code == UNAUTHORIZED


async def test_a_chain_on_a_symmetric_enrollment_is_refused(world: World, hub: str) -> None:
    await world.add_individual("dev-k")

    error = await refusal(world, "dev-k", chain(device("dev-k")))

    assert error.error_code == UNAUTHORIZED


async def test_a_group_created_after_the_index_was_cached_is_found_at_once(
    world: World, hub: str
) -> None:
    mid = intermediate(root())
    await world.add_group("early", signing(intermediate(root("Other"))))
    await refusal(world, "late-1", chain(device("late-1", mid), mid))  # caches the index

    await world.add_group("late", signing(mid))  # no invalidation: as if on another node

    assert (await register(world, "late-1", chain(device("late-1", mid), mid))).status is (
        RegistrationStatus.ASSIGNED
    )


async def test_polls_and_status_lookups_authenticate_with_the_same_chain(
    world: World, hub: str
) -> None:
    mid = intermediate(root())
    leaf = device("dev-p", mid)
    await world.add_group("g", signing(mid))
    credential = chain(leaf, mid)
    first = await register(world, "dev-p", credential)
    world.clock.advance(2)

    polled = await world.engine.operation_status(
        OperationStatusRequest(ID_SCOPE, "dev-p", first.operation_id, credential)
    )
    looked_up = await world.engine.registration_status(
        DeviceStatusRequest(ID_SCOPE, "dev-p", credential)
    )

    assert polled.registration is not None
    assert polled.registration.signing_certificate_info == mid.record.info
    assert looked_up.certificate_info == leaf.record.info
    with pytest.raises(DpsError):
        await world.engine.registration_status(
            DeviceStatusRequest(ID_SCOPE, "dev-p", chain(device("dev-p", intermediate(root()))))
        )
