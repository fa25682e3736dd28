"""What every simulator transport takes and returns.

Each transport module (`https.py`, `mqtt.py`) exposes one coroutine taking `DeviceParams` and
returning `RegistrationOutcome`; the CLI picks it from a table keyed by transport name. These
two records are shared by every transport, so they stay stable.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from opendps.model.json import JsonObject, JsonValue


@dataclass(frozen=True, slots=True)
class TpmSettings:
    """How to reach the device's TPM: a tpm2-tss TCTI string such as
    `swtpm:host=127.0.0.1,port=2321`, `mssim:host=…,port=…` or `device:/dev/tpmrm0`."""

    tcti: str


@dataclass(frozen=True, slots=True)
class DeviceParams:
    """Where to register and how the device proves itself.

    Exactly one credential is set: `sas_token` (symmetric key, already signed by the caller),
    `certificate` + `key` (PEM files presented as the TLS client chain, protocol.md §3) or
    `tpm` (the device's TPM signs for it, protocol.md §6; HTTPS and AMQP only).
    """

    host: str
    port: int
    id_scope: str
    registration_id: str
    sas_token: str | None
    certificate: Path | None
    key: Path | None
    # The device's `payload` (any JSON value), forwarded to a custom allocation webhook.
    payload: JsonValue
    # CA bundle to verify the server with; None uses the system trust store.
    ca_file: Path | None
    # The TPM that attests the device, or None for the other credentials.
    tpm: TpmSettings | None = None


@dataclass(frozen=True, slots=True)
class RegistrationOutcome:
    """The last answer of a registration: the final operation status body when the server
    answered one (`status` is `assigned`, `failed` or `disabled`), else the error body.

    `status_code` is the HTTP status of that answer, or None when the transport has none
    (MQTT carries a status in its topic; a connection failure has no status at all).
    """

    status_code: int | None
    body: JsonObject
    # A TPM device that was assigned: the persistent handle now holding its IoT-hub key (the
    # final answer's `registrationState.tpm.authenticationKey`, imported into the TPM).
    tpm_hub_key_handle: int | None = None

    @property
    def status(self) -> str | None:
        """The registration status of the final answer (`assigned`, `failed`, ...), if any."""
        value = self.body.get("status")
        return value if isinstance(value, str) else None

    @property
    def assigned(self) -> bool:
        return self.status == "assigned"
