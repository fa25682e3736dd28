"""`opendps certificate create|list|show|delete|generate-verification-code|verify`.

CA certificates back X.509 enrollment groups once verified by proof of possession
(protocol.md §5): generate a code, sign a certificate whose CN is the code with the CA's key,
upload it with `verify --path`. `verify --ca-key` does the signing here, with a CA key that
never leaves this machine.
"""

from __future__ import annotations

import base64
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Annotated, Any
from urllib.parse import quote

import typer
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed448, ed25519, rsa
from cryptography.x509.oid import NameOID

from opendps.admin_api.schemas import CertificateUpload, ProofOfPossession
from opendps.cli.client import CliError, request_body
from opendps.cli.options import Invocation, operator_command
from opendps.cli.output import details, field, table

app = typer.Typer(
    help="CA certificates of an instance, with proof of possession.", no_args_is_help=True
)

# The proof certificate only has to be valid while it is checked; a day tolerates clock drift.
PROOF_VALIDITY = timedelta(days=1)
PROOF_BACKDATE = timedelta(minutes=5)

_COLUMNS = [
    ("Name", field("name")),
    ("Subject", field("subject")),
    ("Verified", field("isVerified")),
    ("Expires", field("notAfterUtc")),
    ("Thumbprint", field("thumbprint")),
]
_ROWS = [*_COLUMNS, ("SHA-256 thumbprint", field("sha256Thumbprint")), ("ETag", field("etag"))]

NameArgument = Annotated[str, typer.Argument(help="Certificate name.")]
EtagOption = Annotated[
    str | None,
    typer.Option(help="Only if the certificate's etag is still this.", show_default=False),
]
FileOption = Annotated[
    Path,
    typer.Option(
        "--path", help="Certificate file: PEM or DER (.cer).", exists=True, dir_okay=False
    ),
]


def read_certificate_file(path: Path) -> str:
    """PEM text as it is; anything else (DER) base64-encoded, one of the forms the API takes."""
    try:
        data = path.read_bytes()
    except OSError as err:
        raise CliError(f"cannot read {path}: {err.strerror}") from None
    if b"-----BEGIN" in data:
        return data.decode("ascii", errors="replace")
    return base64.b64encode(data).decode("ascii")


def _path(invocation: Invocation, name: str) -> str:
    return invocation.client.instance_path() + "/certificates/" + quote(name, safe="")


def _show(invocation: Invocation, certificate: Any) -> None:
    invocation.emit(certificate, lambda item: details(item, _ROWS))


@operator_command(app, "create")
def create(
    invocation: Invocation,
    name: NameArgument,
    path: FileOption,
    verified: Annotated[
        bool, typer.Option("--verified", help="Mark verified without proof of possession.")
    ] = False,
) -> None:
    """Upload a CA certificate (public part only); unverified unless --verified."""
    body = request_body(
        CertificateUpload, name=name, certificate=read_certificate_file(path), is_verified=verified
    )
    _show(
        invocation,
        invocation.client.admin(
            "POST", invocation.client.instance_path() + "/certificates", body=body
        ),
    )


@operator_command(app, "list")
def list_certificates(invocation: Invocation) -> None:
    """List the CA certificates of the instance."""
    answer = invocation.client.admin("GET", invocation.client.instance_path() + "/certificates")
    invocation.emit(
        answer["value"], lambda items: table(items, _COLUMNS, empty="No CA certificates.")
    )


@operator_command(app, "show")
def show(invocation: Invocation, name: NameArgument) -> None:
    """Show a CA certificate."""
    _show(invocation, invocation.client.admin("GET", _path(invocation, name)))


@operator_command(app, "delete")
def delete(invocation: Invocation, name: NameArgument, etag: EtagOption = None) -> None:
    """Delete a CA certificate."""
    invocation.client.admin("DELETE", _path(invocation, name), if_match=etag)
    invocation.done(f"Deleted certificate {name}.")


@operator_command(app, "generate-verification-code")
def generate_verification_code(
    invocation: Invocation, name: NameArgument, etag: EtagOption = None
) -> None:
    """Get a verification code: sign a certificate with CN = code using the CA's key."""
    answer = invocation.client.admin(
        "POST", _path(invocation, name) + "/generate-verification-code", if_match=etag
    )
    invocation.emit(
        answer,
        lambda item: details(
            item, [("Verification code", field("verificationCode")), ("ETag", field("etag"))]
        ),
    )


@operator_command(app, "verify")
def verify(
    invocation: Invocation,
    name: NameArgument,
    path: Annotated[
        Path | None,
        typer.Option(
            "--path",
            help="Proof certificate (CN = verification code, signed by the CA).",
            exists=True,
            dir_okay=False,
        ),
    ] = None,
    ca_key: Annotated[
        Path | None,
        typer.Option(
            help="Instead of --path: the CA's private key (PEM) to sign a proof here.",
            exists=True,
            dir_okay=False,
        ),
    ] = None,
    etag: EtagOption = None,
) -> None:
    """Prove possession of the CA's private key; the certificate becomes verified."""
    if path is not None and ca_key is None:
        proof = read_certificate_file(path)
    elif ca_key is not None and path is None:
        proof = _sign_proof(invocation, name, ca_key)
        etag = None  # generating the code changed the etag
    else:
        raise CliError(
            "give exactly one of --path (a proof certificate) or --ca-key (sign one here)"
        )
    body = request_body(ProofOfPossession, certificate=proof)
    _show(
        invocation,
        invocation.client.admin(
            "POST", _path(invocation, name) + "/verify", body=body, if_match=etag
        ),
    )


def _sign_proof(invocation: Invocation, name: str, ca_key_file: Path) -> str:
    ca_key = _load_private_key(ca_key_file)
    ca_pem = invocation.client.admin("GET", _path(invocation, name))["certificate"]
    code = invocation.client.admin("POST", _path(invocation, name) + "/generate-verification-code")[
        "verificationCode"
    ]
    return issue_proof_certificate(x509.load_pem_x509_certificate(ca_pem.encode()), ca_key, code)


def _load_private_key(path: Path) -> Any:
    try:
        key = serialization.load_pem_private_key(path.read_bytes(), password=None)
    except (OSError, ValueError, TypeError) as err:
        raise CliError(
            f"cannot read the CA private key {path} (unencrypted PEM expected): {type(err).__name__}"
        ) from None
    if not isinstance(
        key,
        rsa.RSAPrivateKey
        | ec.EllipticCurvePrivateKey
        | ed25519.Ed25519PrivateKey
        | ed448.Ed448PrivateKey,
    ):
        raise CliError(f"{path} holds a key type that cannot sign certificates")
    return key


def issue_proof_certificate(
    ca: x509.Certificate, ca_key: Any, code: str, *, now: datetime | None = None
) -> str:
    """A certificate with CN = `code`, issued by `ca` and signed with `ca_key` (PEM)."""
    moment = now or datetime.now(UTC)
    key = ec.generate_private_key(ec.SECP256R1())  # the proof's own key is thrown away
    algorithm = (
        None
        if isinstance(ca_key, ed25519.Ed25519PrivateKey | ed448.Ed448PrivateKey)
        else hashes.SHA256()
    )
    certificate = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, code)]))
        .issuer_name(ca.subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(moment - PROOF_BACKDATE)
        .not_valid_after(moment + PROOF_VALIDITY)
        .sign(ca_key, algorithm)
    )
    return certificate.public_bytes(serialization.Encoding.PEM).decode("ascii")
