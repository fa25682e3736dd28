"""CA certificates of an instance, verified by proof of possession (protocol.md §5).

Flow: upload (unverified) → generate a verification code → upload a certificate with CN = code
signed by the CA → verified. Or upload with `isVerified: true` (Azure's self-attestation).
Only verified CAs can back X.509 enrollment groups.
"""

from __future__ import annotations

from dataclasses import replace

from aiohttp import web

from opendps.admin_api.auth import AdminCaller, resolve_instance
from opendps.admin_api.schemas import (
    Certificate,
    CertificateList,
    CertificateUpload,
    ProofOfPossession,
    VerificationCode,
)
from opendps.admin_api.wire import if_match, no_content, read_model, respond
from opendps.attestation.ca_proof import (
    describe_certificate,
    generate_verification_code,
    load_certificate,
    verify_proof_of_possession,
)
from opendps.model.certificate import MAX_CA_CERTIFICATES, CaCertificate
from opendps.model.errors import (
    ALREADY_EXISTS,
    CA_CERTIFICATE_NOT_FOUND,
    CERTIFICATE_VERIFICATION_FAILED,
    QUOTA_EXCEEDED,
    DpsError,
)
from opendps.model.ids import parse_name
from opendps.model.instance import Instance
from opendps.service_api.audit import record_change
from opendps.service_api.context import ServiceContext


def render_certificate(certificate: CaCertificate) -> Certificate:
    return Certificate(
        name=certificate.name,
        subject=certificate.subject,
        thumbprint=certificate.sha1_thumbprint,
        sha256_thumbprint=certificate.sha256_thumbprint,
        not_before_utc=certificate.not_before_utc,
        not_after_utc=certificate.not_after_utc,
        is_verified=certificate.is_verified,
        etag=certificate.etag,
        certificate=certificate.certificate_pem,
        created_date_time_utc=certificate.created_at,
        last_updated_date_time_utc=certificate.updated_at,
    )


async def list_certificates(
    request: web.Request, ctx: ServiceContext, caller: AdminCaller
) -> web.Response:
    instance = await resolve_instance(ctx, caller, request.match_info["instance"])
    certificates = await ctx.store.list_ca_certificates(instance.id)
    return respond(CertificateList(value=[render_certificate(c) for c in certificates]))


async def show_certificate(
    request: web.Request, ctx: ServiceContext, caller: AdminCaller
) -> web.Response:
    instance = await resolve_instance(ctx, caller, request.match_info["instance"])
    certificate = await _get(ctx, instance, request.match_info["certificate"])
    return respond(render_certificate(certificate), etag=certificate.etag)


async def upload_certificate(
    request: web.Request, ctx: ServiceContext, caller: AdminCaller
) -> web.Response:
    instance = await resolve_instance(ctx, caller, request.match_info["instance"])
    body = await read_model(request, ctx, CertificateUpload)
    name = parse_name(body.name, "Certificate name")
    facts = describe_certificate(load_certificate(body.certificate))
    existing = await ctx.store.list_ca_certificates(instance.id)
    if any(c.name.lower() == name.lower() for c in existing):
        raise DpsError(ALREADY_EXISTS, f"Certificate {name!r} already exists.")
    if len(existing) >= MAX_CA_CERTIFICATES:
        raise DpsError(
            QUOTA_EXCEEDED, f"An instance holds at most {MAX_CA_CERTIFICATES} CA certificates."
        )
    now = ctx.clock.now()
    record = CaCertificate(
        instance_id=instance.id,
        name=name,
        certificate_pem=facts.certificate_pem,
        subject=facts.subject,
        sha1_thumbprint=facts.sha1_thumbprint,
        sha256_thumbprint=facts.sha256_thumbprint,
        not_before_utc=facts.not_before_utc,
        not_after_utc=facts.not_after_utc,
        is_verified=body.is_verified,
        etag=ctx.ids.new_etag(),
        created_at=now,
        updated_at=now,
    )
    stored = await ctx.store.put_ca_certificate(record, if_match=None, create_only=True)
    action = "certificate.create-verified" if body.is_verified else "certificate.create"
    await record_change(ctx, instance.id, caller.actor, action, f"certificates/{name}")
    return respond(render_certificate(stored), status=201, etag=stored.etag)


async def delete_certificate(
    request: web.Request, ctx: ServiceContext, caller: AdminCaller
) -> web.Response:
    instance = await resolve_instance(ctx, caller, request.match_info["instance"])
    certificate = await _get(ctx, instance, request.match_info["certificate"])
    deleted = await ctx.store.delete_ca_certificate(
        instance.id, certificate.name, if_match=if_match(request)
    )
    if not deleted:
        raise _not_found(certificate.name)
    await record_change(
        ctx, instance.id, caller.actor, "certificate.delete", f"certificates/{certificate.name}"
    )
    return no_content()


async def generate_code(
    request: web.Request, ctx: ServiceContext, caller: AdminCaller
) -> web.Response:
    instance = await resolve_instance(ctx, caller, request.match_info["instance"])
    certificate = await _get(ctx, instance, request.match_info["certificate"])
    verification_code = generate_verification_code()
    updated = replace(
        certificate,
        verification_code=verification_code,
        etag=ctx.ids.new_etag(),
        updated_at=ctx.clock.now(),
    )
    stored = await ctx.store.put_ca_certificate(
        updated, if_match=if_match(request) or certificate.etag
    )
    await record_change(
        ctx,
        instance.id,
        caller.actor,
        "certificate.generate-verification-code",
        f"certificates/{certificate.name}",
    )
    code = VerificationCode(
        name=stored.name,
        verification_code=verification_code,
        subject=stored.subject,
        is_verified=stored.is_verified,
        etag=stored.etag,
    )
    return respond(code, etag=stored.etag)


async def verify_certificate(
    request: web.Request, ctx: ServiceContext, caller: AdminCaller
) -> web.Response:
    instance = await resolve_instance(ctx, caller, request.match_info["instance"])
    body = await read_model(request, ctx, ProofOfPossession)
    certificate = await _get(ctx, instance, request.match_info["certificate"])
    if certificate.verification_code is None:
        raise DpsError(
            CERTIFICATE_VERIFICATION_FAILED,
            f"Certificate {certificate.name!r} has no verification code; generate one first.",
        )
    proof = load_certificate(body.certificate)
    ca = load_certificate(certificate.certificate_pem)
    verify_proof_of_possession(ca, proof, certificate.verification_code, ctx.clock.now())
    verified = replace(
        certificate,
        is_verified=True,
        # A code proves possession once; a new proof needs a new code.
        verification_code=None,
        etag=ctx.ids.new_etag(),
        updated_at=ctx.clock.now(),
    )
    stored = await ctx.store.put_ca_certificate(
        verified, if_match=if_match(request) or certificate.etag
    )
    await record_change(
        ctx, instance.id, caller.actor, "certificate.verify", f"certificates/{certificate.name}"
    )
    return respond(render_certificate(stored), etag=stored.etag)


async def _get(ctx: ServiceContext, instance: Instance, name: str) -> CaCertificate:
    certificate = await ctx.store.get_ca_certificate(instance.id, name)
    if certificate is None:
        raise _not_found(name)
    return certificate


def _not_found(name: str) -> DpsError:
    return DpsError(CA_CERTIFICATE_NOT_FOUND, f"Certificate {name!r} does not exist.")
