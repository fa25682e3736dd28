"""Transport-neutral inputs and outputs of the provisioning engine.

Every device transport (HTTP, MQTT, AMQP) parses its protocol into these records, calls a
`DeviceEngine` method, and renders what comes back; no wire shape (camelCase, status codes,
topics) appears here. Failures are raised as `DpsError` (model/errors.py), which each
transport translates in exactly one place.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Protocol, TypeAlias

from cryptography import x509

from opendps.attestation.sas import DEFAULT_CLOCK_SKEW_SECONDS
from opendps.model.enrollment import AttestationType, X509CertificateInfo
from opendps.model.json import JsonValue
from opendps.model.registration import RegistrationStatus, Substatus

# Clients wait `retry-after` seconds between polls (Node default 2 s, C 1 s, protocol.md §1.5).
# 2 s keeps a compliant client within Azure's polling limit of 5 per 10 s (protocol.md §9).
DEFAULT_RETRY_AFTER_SECONDS = 2
# Azure: device polling is limited to 5 requests per 10 s per device (protocol.md §9).
DEFAULT_POLL_LIMIT = 5
DEFAULT_POLL_WINDOW_SECONDS = 10.0
# Azure allows 1,000 registrations per minute per unit. A self-hosted node is not billed per
# unit, so the default is far higher (60x); it exists to keep one tenant from starving others.
DEFAULT_INSTANCE_REGISTRATIONS_PER_SECOND = 1000.0
DEFAULT_INSTANCE_REGISTRATION_BURST = 1000
# Remote hub connectors get this long per call before the registration fails (HUB_OPERATION_FAILED).
DEFAULT_HUB_TIMEOUT_SECONDS = 30.0
# An operation still `assigning` after this long was orphaned (its node stopped mid-way); polls
# then report it `failed`. Longer than webhook + three hub calls at their timeouts.
DEFAULT_ASSIGNING_DEADLINE_SECONDS = 120.0
# Instances and their linked hubs / group lists change rarely; nodes that did not make the
# change see it within this many seconds (ARCHITECTURE §4 step 3: "short TTL").
DEFAULT_CACHE_TTL_SECONDS = 5.0
# Long enough for a TPM device to import the key, register and poll a slow (webhook, remote
# hub) registration to its end; short enough that a leaked challenge is soon worthless.
DEFAULT_TPM_CHALLENGE_TTL_SECONDS = 600.0


@dataclass(frozen=True, slots=True)
class SasCredential:
    """A shared access signature: the `Authorization` header (HTTP), MQTT password or AMQP
    SASL PLAIN password, exactly as received."""

    token: str


@dataclass(frozen=True, slots=True)
class X509Credential:
    """The certificate chain the device presented in the TLS handshake, leaf first, exactly as
    sent (the TLS layer's `opendps.peer_chain`). Transports pass it when there is no SAS."""

    chain: tuple[x509.Certificate, ...]


# What a device can prove itself with; the engine refuses credentials it cannot check with 401.
# TPM devices sign SAS tokens with the key their TPM imported from our challenge (protocol.md
# §6.2), so once past the challenge they present a `SasCredential` too; the engine knows from
# the enrollment that the token must verify against the challenge's key.
Credential: TypeAlias = SasCredential | X509Credential


@dataclass(frozen=True, slots=True)
class TpmChallengeRequest:
    """A TPM device's opening move (protocol.md §6.2 step 1, §4.4 steps 1–3): its endorsement
    key and storage root key, raw `TPM2B_PUBLIC` bytes as the device sent them (the HTTP body's
    base64 decoded; the AMQP SASL frames as they are). No credential: that is what it asks for."""

    id_scope: str
    registration_id: str
    endorsement_key: bytes
    storage_root_key: bytes
    body_registration_id: str | None = None


@dataclass(frozen=True, slots=True)
class TpmTokenCheck:
    """AMQP TPM SASL's last step (protocol.md §4.4 step 6): the SAS token the device signed with
    the imported key, checked before the connection opens. The register message that follows
    presents the same token as a `SasCredential` and is attested again."""

    id_scope: str
    registration_id: str
    token: str


@dataclass(frozen=True, slots=True)
class RegisterRequest:
    """`PUT …/register` (HTTP), `iotdps-register` (MQTT), a register message (AMQP)."""

    id_scope: str
    registration_id: str  # from the path / MQTT username / AMQP address
    credential: Credential | None
    # The device's `payload` (any JSON value, forwarded verbatim to a custom webhook).
    payload: JsonValue = None
    # `registrationId` of the request body when it has one; must name the same device.
    body_registration_id: str | None = None


@dataclass(frozen=True, slots=True)
class OperationStatusRequest:
    """`GET …/operations/{operationId}` and its MQTT/AMQP equivalents."""

    id_scope: str
    registration_id: str
    operation_id: str
    credential: Credential | None


@dataclass(frozen=True, slots=True)
class DeviceStatusRequest:
    """`POST /{idScope}/registrations/{registrationId}`: the device reads its registration state."""

    id_scope: str
    registration_id: str
    credential: Credential | None
    body_registration_id: str | None = None


@dataclass(frozen=True, slots=True)
class RegistrationResult:
    """A device's registration state as devices see it (`DeviceRegistrationResult`)."""

    registration_id: str
    status: RegistrationStatus
    attestation_type: AttestationType | None = None
    enrollment_group_id: str | None = None
    assigned_hub: str | None = None
    device_id: str | None = None
    substatus: Substatus | None = None
    error_code: int | None = None
    error_message: str | None = None
    # What a custom allocation webhook returned for the device (None otherwise).
    payload: JsonValue = None
    etag: str | None = None
    created_at: datetime | None = None
    updated_at: datetime | None = None
    # X.509 devices (protocol.md §1.4 `x509` sub-result): the leaf the device presented on this
    # request, and the CA certificate that matched its group (or CA-backed enrollment).
    certificate_info: X509CertificateInfo | None = None
    signing_certificate_info: X509CertificateInfo | None = None
    # TPM devices, on `assigned` (protocol.md §6.2 step 6): the `authenticationKey` blob that
    # wraps the device's IoT hub key for its TPM, raw bytes (transports base64 it).
    tpm_authentication_key: bytes | None = None


@dataclass(frozen=True, slots=True)
class OperationStatus:
    """`RegistrationOperationStatus`: what a register or a poll answers.

    `status` is `assigning` (poll again after `retry_after` seconds) or terminal (`assigned`,
    `failed`, `disabled`); `registration` is None only in the first `assigning` answer.
    """

    operation_id: str
    status: RegistrationStatus
    registration: RegistrationResult | None = None
    retry_after: int | None = None

    @property
    def is_terminal(self) -> bool:
        return self.status is not RegistrationStatus.ASSIGNING


@dataclass(frozen=True, slots=True)
class EngineSettings:
    """Tunables of the engine, wired from the operator's configuration."""

    sas_clock_skew_seconds: int = DEFAULT_CLOCK_SKEW_SECONDS
    retry_after_seconds: int = DEFAULT_RETRY_AFTER_SECONDS
    poll_limit: int = DEFAULT_POLL_LIMIT
    poll_window_seconds: float = DEFAULT_POLL_WINDOW_SECONDS
    # None disables the per-instance registration rate limit.
    instance_registrations_per_second: float | None = DEFAULT_INSTANCE_REGISTRATIONS_PER_SECOND
    instance_registration_burst: int = DEFAULT_INSTANCE_REGISTRATION_BURST
    hub_timeout_seconds: float = DEFAULT_HUB_TIMEOUT_SECONDS
    assigning_deadline_seconds: float = DEFAULT_ASSIGNING_DEADLINE_SECONDS
    cache_ttl_seconds: float = DEFAULT_CACHE_TTL_SECONDS
    # How long a TPM device may take to answer its challenge and finish registering (engine/tpm.py).
    tpm_challenge_ttl_seconds: float = DEFAULT_TPM_CHALLENGE_TTL_SECONDS
    # geoLatency: the region this node runs in, and (region, region, milliseconds) entries.
    node_region: str | None = None
    region_latencies_ms: tuple[tuple[str, str, float], ...] = ()


class DeviceEngine(Protocol):
    """The registration pipeline as the transports see it."""

    async def register(self, request: RegisterRequest) -> OperationStatus:
        """Register a device. Returns a terminal status when the registration completed within
        the request (built-in hubs, no webhook), else `assigning` with an operation to poll.

        Raises DpsError: 400001/400004 (bad registration ID or body), 401002 (unknown ID scope,
        unknown device, wrong key, expired or mismatched token: indistinguishable on purpose),
        429001 (instance registration rate; nothing stored), 503000 (store unavailable).
        A device that is refused *after* attestation gets a terminal status instead:
        `disabled` (enrollment disabled) or `failed` (no hub, webhook or hub failure).
        """
        ...

    async def operation_status(self, request: OperationStatusRequest) -> OperationStatus:
        """Poll an operation. Raises DpsError 401002 as for register, 404208 (no such
        operation for this device), 429001 (more than the per-device polling limit)."""
        ...

    async def registration_status(self, request: DeviceStatusRequest) -> RegistrationResult:
        """The device's current registration state. Raises DpsError 401002, 404202 (never
        registered), 429001 (polling limit)."""
        ...

    async def tpm_challenge(self, request: TpmChallengeRequest) -> bytes:
        """Start TPM attestation: find the device's TPM enrollment, check that the endorsement
        key is the enrolled one, keep a fresh HMAC key server-side (in the store, with an
        expiry, so any node can finish the flow) and return the `authenticationKey` blob
        (protocol.md §6.3) that imports it into the device's TPM. A new challenge replaces the
        device's earlier one.

        A device that is refused (unknown ID scope or device, not a TPM enrollment, another
        endorsement key) gets a challenge all the same, for a key that is not kept: its token
        is then refused with 401002, so nobody learns from the challenge which devices are
        enrolled. Raises DpsError 400004 (keys that are not RSA-2048 TPM2B_PUBLIC structures),
        429001 (instance registration rate).
        """
        ...

    async def check_tpm_token(self, request: TpmTokenCheck) -> None:
        """Check a SAS token signed with the key of the device's current, unexpired challenge
        without using the challenge up. Raises DpsError 401002 otherwise."""
        ...
