"""The TPM device's side of a registration (protocol.md §6.2), shared by HTTPS and AMQP.

Both flows send the EK and SRK, receive an `authenticationKey` (in a 401 body over HTTPS, in
SASL challenges over AMQP), unwrap it into the TPM, sign a SAS token with the TPM's HMAC and,
once `assigned`, import the second blob that carries the IoT-hub key. The TPM calls block
(a real TPM takes tenths of a second for RSA), so they run in a worker thread.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import contextlib
from collections.abc import AsyncIterator
from typing import Protocol
from urllib.parse import quote

from opendps.attestation.sas import SAS_PREFIX
from opendps.model.json import JsonObject
from opendps.simulator.api import RegistrationOutcome, TpmSettings
from opendps.simulator.channels import failure
from opendps.simulator.credentials import DEVICE_KEY_NAME, DEVICE_TOKEN_TTL_SECONDS
from opendps.simulator.tpm_device import (
    DEVICE_KEY_HANDLE,
    TpmDevice,
    TpmError,
    TpmPublicKeys,
)

# The HTTP status of the first, unauthenticated TPM register: the challenge (protocol.md §6.2).
CHALLENGE_STATUS = 401


class TpmSigner(Protocol):
    async def sign(self, data: bytes) -> bytes: ...


class AsyncTpm:
    """A `TpmDevice` for coroutines: each call runs in a worker thread, one at a time."""

    def __init__(self, device: TpmDevice) -> None:
        self._device = device

    async def ensure_keys(self) -> TpmPublicKeys:
        return await asyncio.to_thread(self._device.ensure_keys)

    async def activate_and_import(self, blob: bytes) -> None:
        await asyncio.to_thread(self._device.activate_and_import, blob)

    async def sign(self, data: bytes) -> bytes:
        return await asyncio.to_thread(self._device.sign, data)


@contextlib.asynccontextmanager
async def open_tpm(settings: TpmSettings) -> AsyncIterator[AsyncTpm]:
    """The device's TPM, open for one registration. Raises TpmError."""
    device = await asyncio.to_thread(TpmDevice, settings.tcti)
    try:
        yield AsyncTpm(device)
    finally:
        await asyncio.to_thread(device.close)


def tpm_attestation_body(keys: TpmPublicKeys) -> JsonObject:
    """The `tpm` member of a `DeviceRegistration` (protocol.md §1.3)."""
    return {
        "endorsementKey": base64.b64encode(keys.endorsement_key).decode("ascii"),
        "storageRootKey": base64.b64encode(keys.storage_root_key).decode("ascii"),
    }


async def tpm_sas_token(tpm: TpmSigner, id_scope: str, registration_id: str, *, now: float) -> str:
    """The token a TPM device signs with the imported key: `sr` URL-encoded as C and Node
    write it, the signature over exactly that text, `skn=registration` (protocol.md §2.2)."""
    sr = quote(f"{id_scope}/registrations/{registration_id}", safe="")
    expiry = int(now) + DEVICE_TOKEN_TTL_SECONDS
    signature = await tpm.sign(f"{sr}\n{expiry}".encode())
    sig = quote(base64.b64encode(signature).decode("ascii"), safe="")
    return f"{SAS_PREFIX}sr={sr}&sig={sig}&se={expiry}&skn={DEVICE_KEY_NAME}"


def challenge_key(status: int, body: JsonObject) -> bytes | None:
    """The `authenticationKey` of the server's 401 challenge, or None when the answer is not a
    challenge (the caller reports it as it is). TpmError when the key is not base64."""
    encoded = body.get("authenticationKey")
    if status != CHALLENGE_STATUS or encoded is None:
        return None
    return _decode_key(encoded, "the challenge's authenticationKey")


async def install_hub_key(tpm: AsyncTpm, outcome: RegistrationOutcome) -> RegistrationOutcome:
    """Once assigned, import `registrationState.tpm.authenticationKey` (the IoT-hub key) into
    the TPM, as C and Node do (§6.2); other outcomes pass through unchanged."""
    if not outcome.assigned:
        return outcome
    state = outcome.body.get("registrationState")
    tpm_result = state.get("tpm") if isinstance(state, dict) else None
    encoded = tpm_result.get("authenticationKey") if isinstance(tpm_result, dict) else None
    if encoded is None:
        return failure(
            "assigned, but without registrationState.tpm.authenticationKey (the hub key a TPM"
            " device must import, protocol.md §1.4)"
        )
    await tpm.activate_and_import(_decode_key(encoded, "registrationState.tpm.authenticationKey"))
    return RegistrationOutcome(outcome.status_code, outcome.body, DEVICE_KEY_HANDLE)


def _decode_key(value: object, what: str) -> bytes:
    if not isinstance(value, str):
        raise TpmError(f"{what} is not a base64 string")
    try:
        return base64.b64decode(value, validate=True)
    except (binascii.Error, ValueError):
        raise TpmError(f"{what} is not base64") from None
