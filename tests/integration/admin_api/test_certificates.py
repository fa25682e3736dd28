"""CA certificates: upload in every form, limits, and proof of possession end to end."""

from __future__ import annotations

import base64
from datetime import UTC, datetime, timedelta

from cryptography.hazmat.primitives import serialization
from tests.integration.admin_api.conftest import AdminClient, issue

from opendps.model.certificate import MAX_CA_CERTIFICATES
from opendps.model.errors import (
    ALREADY_EXISTS,
    CA_CERTIFICATE_NOT_FOUND,
    CERTIFICATE_VERIFICATION_FAILED,
    ETAG_MISMATCH,
    INVALID_CERTIFICATE_FORMAT,
    QUOTA_EXCEEDED,
)

CERTIFICATES = "/instances/default/certificates"


async def test_uploaded_ca_is_unverified_until_proven_then_verified(admin: AdminClient) -> None:
    ca = issue("Contoso Root CA")
    uploaded = await admin.ok(
        "POST", CERTIFICATES, json={"name": "root", "certificate": ca.pem}, status=201
    )
    assert (uploaded["subject"], uploaded["isVerified"]) == ("CN=Contoso Root CA", False)
    assert uploaded["certificate"] == ca.pem
    code = await admin.ok("POST", CERTIFICATES + "/root/generate-verification-code")
    assert len(code["verificationCode"]) == 48 and code["isVerified"] is False
    proof = issue(code["verificationCode"], issuer=ca)
    verified = await admin.ok(
        "POST", CERTIFICATES + "/root/verify", json={"certificate": proof.pem}
    )
    assert verified["isVerified"] is True
    assert (await admin.ok("GET", CERTIFICATES + "/root"))["isVerified"] is True
    # The code is spent: the same proof does not verify twice.
    await admin.error("POST", CERTIFICATES + "/root/verify", CERTIFICATE_VERIFICATION_FAILED, json={
        "certificate": proof.pem})  # fmt: skip


async def test_proof_with_a_wrong_cn_or_signer_leaves_the_ca_unverified(admin: AdminClient) -> None:
    ca = issue("Contoso Root CA")
    await admin.ok("POST", CERTIFICATES, json={"name": "root", "certificate": ca.pem}, status=201)
    await admin.error("POST", CERTIFICATES + "/root/verify", CERTIFICATE_VERIFICATION_FAILED, json={
        "certificate": issue("anything", issuer=ca).pem})  # fmt: skip
    code = (await admin.ok("POST", CERTIFICATES + "/root/generate-verification-code"))[
        "verificationCode"
    ]
    impostor = issue(code, issuer=ca, sign_with=issue("Other CA").key)
    body = await admin.error("POST", CERTIFICATES + "/root/verify", CERTIFICATE_VERIFICATION_FAILED, json={
        "certificate": impostor.pem})  # fmt: skip
    assert "signature" in body["message"]
    expired = issue(code, issuer=ca, not_after=datetime.now(UTC) - timedelta(days=1))
    await admin.error("POST", CERTIFICATES + "/root/verify", CERTIFICATE_VERIFICATION_FAILED, json={
        "certificate": expired.pem})  # fmt: skip
    await admin.error("POST", CERTIFICATES + "/root/verify", CERTIFICATE_VERIFICATION_FAILED, json={
        "certificate": issue("not-the-code", issuer=ca).pem})  # fmt: skip
    assert (await admin.ok("GET", CERTIFICATES + "/root"))["isVerified"] is False
    # The right proof still works after the failures.
    await admin.ok(
        "POST", CERTIFICATES + "/root/verify", json={"certificate": issue(code, issuer=ca).pem}
    )


async def test_der_and_base64_pem_uploads_and_verified_on_upload(admin: AdminClient) -> None:
    ca = issue("DER CA")
    der = await admin.ok(
        "POST", CERTIFICATES, json={"name": "der", "certificate": ca.der_base64}, status=201
    )
    assert der["certificate"] == ca.pem
    b64 = base64.b64encode(issue("B64 CA").pem.encode()).decode()
    await admin.ok("POST", CERTIFICATES, json={"name": "b64", "certificate": b64}, status=201)
    verified = await admin.ok("POST", CERTIFICATES, status=201, json={
        "name": "self-attested", "certificate": issue("Trusted CA").pem, "isVerified": True})  # fmt: skip
    assert verified["isVerified"] is True
    listed = await admin.ok("GET", CERTIFICATES)
    assert sorted(c["name"] for c in listed["value"]) == ["b64", "der", "self-attested"]


async def test_bad_uploads_are_refused(admin: AdminClient) -> None:
    ca = issue("Root")
    await admin.ok("POST", CERTIFICATES, json={"name": "root", "certificate": ca.pem}, status=201)
    await admin.error(
        "POST", CERTIFICATES, ALREADY_EXISTS, json={"name": "ROOT", "certificate": issue("x").pem}
    )
    await admin.error(
        "POST",
        CERTIFICATES,
        INVALID_CERTIFICATE_FORMAT,
        json={"name": "junk", "certificate": "junk"},
    )
    key_pem = ca.key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    ).decode()
    body = await admin.error("POST", CERTIFICATES, INVALID_CERTIFICATE_FORMAT, json={
        "name": "with-key", "certificate": ca.pem + key_pem})  # fmt: skip
    assert key_pem.splitlines()[1] not in body["message"]


async def test_an_instance_holds_at_most_25_ca_certificates(admin: AdminClient) -> None:
    pem = issue("Many").pem
    for number in range(MAX_CA_CERTIFICATES):
        await admin.ok(
            "POST", CERTIFICATES, json={"name": f"ca-{number}", "certificate": pem}, status=201
        )
    await admin.error(
        "POST", CERTIFICATES, QUOTA_EXCEEDED, json={"name": "ca-26", "certificate": pem}
    )


async def test_delete_honours_if_match(admin: AdminClient) -> None:
    uploaded = await admin.ok(
        "POST", CERTIFICATES, json={"name": "root", "certificate": issue("R").pem}, status=201
    )
    await admin.error("DELETE", CERTIFICATES + "/root", ETAG_MISMATCH, headers={
        **admin.admin_headers, "If-Match": '"stale"'})  # fmt: skip
    await admin.ok("DELETE", CERTIFICATES + "/root", status=204, headers={
        **admin.admin_headers, "If-Match": uploaded["etag"]})  # fmt: skip
    await admin.error("GET", CERTIFICATES + "/root", CA_CERTIFICATE_NOT_FOUND)
    await admin.error("DELETE", CERTIFICATES + "/root", CA_CERTIFICATE_NOT_FOUND)
    await admin.error(
        "POST", CERTIFICATES + "/root/generate-verification-code", CA_CERTIFICATE_NOT_FOUND
    )


async def test_verification_code_generation_honours_if_match(admin: AdminClient) -> None:
    await admin.ok(
        "POST", CERTIFICATES, json={"name": "root", "certificate": issue("R").pem}, status=201
    )
    await admin.error("POST", CERTIFICATES + "/root/generate-verification-code", ETAG_MISMATCH, headers={
        **admin.admin_headers, "If-Match": '"stale"'})  # fmt: skip
