"""`opendps cert create-root|create-intermediate|create-device|create-verification`.

Local certificate tooling for X.509 attestation, one command per step of the Azure samples'
certificate scripts: a root CA, intermediates, device certificates whose CN is the
registration ID (protocol.md §5), and the proof-of-possession certificate whose CN is a
verification code. Nothing here talks to a server (`opendps certificate …` uploads and verifies
CA certificates on an instance). ECDSA P-256 by default, RSA-2048 with `--rsa`; PEM files;
private keys mode 0600, never overwritten unless `--force`.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Annotated

import typer
from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa

from opendps.app.devpki import (
    PrivateKey,
    Profile,
    issue_certificate,
    new_private_key,
    write_certificates,
    write_private_key,
)
from opendps.cli.certificates import issue_proof_certificate
from opendps.cli.client import CliError
from opendps.cli.options import Invocation, operator_command
from opendps.model.errors import DpsError
from opendps.model.ids import parse_registration_id

app = typer.Typer(
    help="Local X.509 tooling: create test CAs, device and verification certificates "
    "(files only; `opendps certificate` manages CA certificates on an instance).",
    no_args_is_help=True,
)

# RSA-2048 is what every device TLS stack that lacks ECDSA supports; larger keys only slow
# handshakes on small devices.
RSA_KEY_BITS = 2048
# A test CA lives as long as a fleet of test devices may; a device certificate a year, the
# lifetime the Azure samples' scripts give their device certificates.
CA_DAYS = 3650
DEVICE_DAYS = 365
# X.509 limits a CN to 64 characters (ub-common-name), so X.509 registration IDs are ≤ 64 (§5).
MAX_DEVICE_CN_LENGTH = 64

OutOption = Annotated[
    Path, typer.Option("--out", help="Directory to write the files to.", file_okay=False)
]
RsaOption = Annotated[bool, typer.Option("--rsa", help="RSA-2048 instead of ECDSA P-256.")]
ForceOption = Annotated[bool, typer.Option("--force", help="Overwrite existing files.")]
CaOption = Annotated[
    Path,
    typer.Option("--ca", help="Issuing CA certificate (PEM).", exists=True, dir_okay=False),
]
CaKeyOption = Annotated[
    Path,
    typer.Option(
        "--ca-key", help="Issuing CA private key (unencrypted PEM).", exists=True, dir_okay=False
    ),
]


@operator_command(app, "create-root", connected=False)
def create_root(
    invocation: Invocation,
    common_name: Annotated[str, typer.Option("--cn", help="Subject CN.")] = "OpenDPS Test Root CA",
    name: Annotated[str, typer.Option(help="File name stem: NAME.pem, NAME.key.")] = "root",
    days: Annotated[int, typer.Option(min=1, help="Validity in days.")] = CA_DAYS,
    out: OutOption = Path("."),
    use_rsa: RsaOption = False,
    force: ForceOption = False,
) -> None:
    """Create a self-signed root CA (upload it with `opendps certificate create`)."""
    key = _new_key(use_rsa)
    certificate = _issue(common_name, key, None, Profile.CA, days, path_length=None)
    _report(invocation, _write(out, name, certificate, key, force=force))


@operator_command(app, "create-intermediate", connected=False)
def create_intermediate(
    invocation: Invocation,
    ca: CaOption,
    ca_key: CaKeyOption,
    common_name: Annotated[
        str, typer.Option("--cn", help="Subject CN.")
    ] = "OpenDPS Test Intermediate CA",
    name: Annotated[str, typer.Option(help="File name stem: NAME.pem, NAME.key.")] = "intermediate",
    days: Annotated[int, typer.Option(min=1, help="Validity in days.")] = CA_DAYS,
    out: OutOption = Path("."),
    use_rsa: RsaOption = False,
    force: ForceOption = False,
) -> None:
    """Create an intermediate CA signed by --ca (an enrollment group's signing certificate)."""
    issuer = _load_issuer(ca, ca_key)
    key = _new_key(use_rsa)
    certificate = _issue(common_name, key, issuer, Profile.CA, days, path_length=None)
    _report(invocation, _write(out, name, certificate, key, force=force))


@operator_command(app, "create-device", connected=False)
def create_device(
    invocation: Invocation,
    registration_id: Annotated[
        str, typer.Option(help="The device's registration ID: the certificate's CN.")
    ],
    ca: Annotated[
        Path | None,
        typer.Option(
            "--ca",
            help="Issuing CA certificate (PEM); omit for a self-signed device.",
            exists=True,
            dir_okay=False,
        ),
    ] = None,  # fmt: skip
    ca_key: Annotated[
        Path | None,
        typer.Option(
            "--ca-key", help="Issuing CA private key (with --ca).", exists=True, dir_okay=False
        ),
    ] = None,
    days: Annotated[int, typer.Option(min=1, help="Validity in days.")] = DEVICE_DAYS,
    out: OutOption = Path("."),
    use_rsa: RsaOption = False,
    force: ForceOption = False,
) -> None:
    """Create a device certificate (CN = registration ID): ID.pem, ID.key and ID-chain.pem
    (the leaf followed by the intermediates of --ca, what the device presents)."""
    _check_device_cn(registration_id)
    if (ca is None) != (ca_key is None):
        raise CliError("give both --ca and --ca-key, or neither for a self-signed device")
    issuer = _load_issuer(ca, ca_key) if ca is not None and ca_key is not None else None
    key = _new_key(use_rsa)
    certificate = _issue(registration_id, key, issuer, Profile.CLIENT, days)
    files = _write(out, registration_id, certificate, key, force=force)
    intermediates = [c for c in _read_certificates(ca) if c.subject != c.issuer] if ca else []
    chain = out / f"{registration_id}-chain.pem"
    _check_free(chain, force)
    write_certificates(chain, [certificate, *intermediates])
    _report(invocation, {**files, "chain": str(chain)})


@operator_command(app, "create-verification", connected=False)
def create_verification(
    invocation: Invocation,
    code: Annotated[str, typer.Option(help="The verification code the server generated.")],
    ca: CaOption,
    ca_key: CaKeyOption,
    name: Annotated[str, typer.Option(help="File name stem: NAME.pem.")] = "verification",
    out: OutOption = Path("."),
    force: ForceOption = False,
) -> None:
    """Create the proof-of-possession certificate (CN = code, signed by the CA); upload it
    with `opendps certificate verify NAME --path FILE`."""
    if not code.strip():
        raise CliError("--code must not be empty")
    certificate, key = _load_issuer(ca, ca_key)
    proof = issue_proof_certificate(certificate, key, code)
    path = out / f"{name}.pem"
    _check_free(path, force)
    out.mkdir(parents=True, exist_ok=True)
    write_certificates(path, [x509.load_pem_x509_certificate(proof.encode("ascii"))])
    _report(invocation, {"certificate": str(path)})


def _new_key(use_rsa: bool) -> PrivateKey:
    if use_rsa:
        return rsa.generate_private_key(public_exponent=65537, key_size=RSA_KEY_BITS)
    return new_private_key()


def _issue(
    common_name: str,
    key: PrivateKey,
    issuer: tuple[x509.Certificate, PrivateKey] | None,
    profile: Profile,
    days: int,
    *,
    path_length: int | None = 0,
) -> x509.Certificate:
    return issue_certificate(
        common_name=common_name,
        public_key=key.public_key(),
        issuer=issuer,
        signing_key=issuer[1] if issuer is not None else key,
        profile=profile,
        now=datetime.now(UTC),
        validity=timedelta(days=days),
        ca_path_length=path_length,
    )


def _check_device_cn(registration_id: str) -> None:
    try:
        parse_registration_id(registration_id)
    except DpsError as err:
        raise CliError(err.message) from None
    if len(registration_id) > MAX_DEVICE_CN_LENGTH:
        raise CliError(f"an X.509 registration ID is at most {MAX_DEVICE_CN_LENGTH} characters")


def _load_issuer(ca: Path, ca_key: Path) -> tuple[x509.Certificate, PrivateKey]:
    certificates = _read_certificates(ca)
    try:
        key = serialization.load_pem_private_key(ca_key.read_bytes(), password=None)
    except (OSError, ValueError, TypeError) as err:
        raise CliError(
            f"cannot read {ca_key} (unencrypted PEM expected): {type(err).__name__}"
        ) from None
    if not isinstance(key, ec.EllipticCurvePrivateKey | rsa.RSAPrivateKey):
        raise CliError(f"{ca_key} is neither an ECDSA nor an RSA key")
    # The file may hold a chain (issuer first): the issuer is the one whose key this is.
    public = key.public_key().public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    for certificate in certificates:
        spki = certificate.public_key().public_bytes(
            serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
        )
        if spki == public:
            return certificate, key
    raise CliError(f"{ca_key} is not the private key of the certificate in {ca}")


def _read_certificates(path: Path) -> list[x509.Certificate]:
    try:
        return x509.load_pem_x509_certificates(path.read_bytes())
    except (OSError, ValueError) as err:
        raise CliError(f"cannot read PEM certificates from {path}: {err}") from None


def _write(
    out: Path, stem: str, certificate: x509.Certificate, key: PrivateKey, *, force: bool
) -> dict[str, str]:
    cert_path, key_path = out / f"{stem}.pem", out / f"{stem}.key"
    for path in (cert_path, key_path):
        _check_free(path, force)
    out.mkdir(parents=True, exist_ok=True)
    write_private_key(key_path, key)
    write_certificates(cert_path, [certificate])
    return {"certificate": str(cert_path), "key": str(key_path)}


def _check_free(path: Path, force: bool) -> None:
    if path.exists() and not force:
        raise CliError(f"{path} exists; pass --force to overwrite it")


def _report(invocation: Invocation, files: dict[str, str]) -> None:
    invocation.done("\n".join(f"{kind}: {path}" for kind, path in files.items()), files)
