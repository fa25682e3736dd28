"""TPM attestation in the engine (protocol.md §6.2): issue challenges, check tokens, use them up.

1. The device sends its endorsement key (EK) and storage root key (SRK) with no credential.
   If the device's individual enrollment is a TPM one with that EK, a fresh HMAC key is
   wrapped for the device's TPM (attestation/tpm.py) and kept in the store as the device's
   challenge, with an expiry; the blob goes back to the device (HTTP 401 body, AMQP SASL).
2. Only that TPM can import the key, so a SAS token signed with it proves the device holds the
   enrolled EK. Registration uses the challenge up (a replayed token cannot register again) and
   records the hub key the device is given; polls of that registration may still use it until
   it expires.
3. On `assigned`, the answer wraps the hub key for the same TPM (a second blob).

Refusals are the same 401 as every other attestation failure (lookup.py); the reason is logged.
"""

from __future__ import annotations

import base64
import secrets
from dataclasses import dataclass, replace
from datetime import timedelta

from opendps.attestation.sas import SasToken, verify_with_keys
from opendps.attestation.tpm import (
    TpmPublicKey,
    build_authentication_key,
    new_hmac_key,
    parse_tpm_public,
    parse_tpm_public_base64,
    same_key,
)
from opendps.engine.ports import Clock
from opendps.engine.refusal import refuse
from opendps.model.enrollment import AttestationType, IndividualEnrollment
from opendps.model.errors import DpsError
from opendps.model.instance import Instance
from opendps.model.tpm import TpmChallenge
from opendps.store.interface import Store

CHALLENGE_ID_BYTES = 16


@dataclass(frozen=True, slots=True)
class TpmKeys:
    """A device's parsed EK and SRK."""

    endorsement_key: TpmPublicKey
    storage_root_key: TpmPublicKey

    @classmethod
    def parse(cls, endorsement_key: bytes, storage_root_key: bytes) -> TpmKeys:
        """Raises DpsError(400004) for anything but RSA-2048 storage keys."""
        return cls(
            parse_tpm_public(endorsement_key, "tpm.endorsementKey"),
            parse_tpm_public(storage_root_key, "tpm.storageRootKey"),
        )


def enrolled_endorsement_key(enrollment: IndividualEnrollment) -> TpmPublicKey | None:
    """The EK of a TPM enrollment; None for other attestations (or an EK we cannot read)."""
    tpm = enrollment.spec.attestation.tpm
    if enrollment.spec.attestation.type is not AttestationType.TPM or tpm is None:
        return None
    try:
        return parse_tpm_public_base64(tpm.endorsement_key, "attestation.tpm.endorsementKey")
    except DpsError:
        return None


class TpmChallenges:
    """Issues, checks and uses up TPM challenges, kept in the store."""

    def __init__(self, store: Store, clock: Clock, ttl_seconds: float) -> None:
        self._store = store
        self._clock = clock
        self._ttl = timedelta(seconds=ttl_seconds)

    async def issue(
        self,
        instance: Instance,
        registration_id: str,
        enrollment: IndividualEnrollment | None,
        keys: TpmKeys,
        raw: tuple[bytes, bytes],
    ) -> bytes:
        """Keep a new challenge for the device (replacing its earlier one); return the blob."""
        enrolled = enrolled_endorsement_key(enrollment) if enrollment is not None else None
        if enrolled is None:
            raise refuse(
                "no TPM enrollment", id_scope=instance.id_scope, registration_id=registration_id
            )
        if not same_key(enrolled, keys.endorsement_key):
            raise refuse(
                "endorsement key differs from the enrolled one",
                id_scope=instance.id_scope,
                registration_id=registration_id,
            )
        key = new_hmac_key()
        blob = build_authentication_key(keys.endorsement_key, keys.storage_root_key, key)
        now = self._clock.now()
        await self._store.put_tpm_challenge(
            TpmChallenge(
                instance_id=instance.id,
                registration_id=registration_id,
                challenge_id=secrets.token_urlsafe(CHALLENGE_ID_BYTES),
                endorsement_key=raw[0],
                storage_root_key=raw[1],
                key=key,
                created_at=now,
                expires_at=now + self._ttl,
            )
        )
        return blob

    async def verify(
        self,
        instance: Instance,
        registration_id: str,
        enrollment: IndividualEnrollment,
        token: SasToken,
        *,
        unused: bool,
    ) -> TpmChallenge:
        """The device's current challenge, if the token verifies with its key, it has not
        expired, it was issued for the EK enrolled now, and (`unused`) no registration used it.
        Raises the 401 refusal otherwise."""

        def refused(reason: str) -> DpsError:
            return refuse(reason, id_scope=instance.id_scope, registration_id=registration_id)

        challenge = await self._store.get_tpm_challenge(instance.id, registration_id)
        if challenge is None:
            raise refused("no TPM challenge issued")
        if challenge.expires_at <= self._clock.now():
            raise refused("TPM challenge expired")
        enrolled = enrolled_endorsement_key(enrollment)
        try:
            issued_for = parse_tpm_public(challenge.endorsement_key, "tpm.endorsementKey")
        except DpsError:
            raise refused("stored TPM challenge unreadable") from None
        # The enrollment's EK may have changed since the challenge was issued.
        if enrolled is None or not same_key(enrolled, issued_for):
            raise refused("endorsement key changed since the TPM challenge")
        if not verify_with_keys(token, [_b64(challenge.key)]):
            raise refused("token not signed with the TPM challenge key")
        if unused and challenge.used_at is not None:
            raise refused("TPM challenge already used")
        return challenge

    async def use(
        self, instance: Instance, challenge: TpmChallenge, hub_key: bytes
    ) -> TpmChallenge:
        """Use the challenge up for a registration that gives the device `hub_key`. Raises the
        401 refusal if a concurrent registration (or a replay) used it first."""
        now = self._clock.now()
        used = await self._store.use_tpm_challenge(
            challenge.instance_id,
            challenge.registration_id,
            challenge.challenge_id,
            used_at=now,
            hub_key=hub_key,
        )
        if not used:
            raise refuse(
                "TPM challenge already used",
                id_scope=instance.id_scope,
                registration_id=challenge.registration_id,
            )
        return replace(challenge, used_at=now, hub_key=hub_key)


def decoy_challenge(keys: TpmKeys) -> bytes:
    """A challenge for the device's own keys that wraps a key no one keeps (see the engine)."""
    return build_authentication_key(keys.endorsement_key, keys.storage_root_key, new_hmac_key())


def hub_key_blob(challenge: TpmChallenge) -> bytes | None:
    """The final answer's blob: the device's hub key wrapped for its TPM (None before a
    registration gave it one)."""
    if challenge.hub_key is None:
        return None
    keys = TpmKeys.parse(challenge.endorsement_key, challenge.storage_root_key)
    return build_authentication_key(keys.endorsement_key, keys.storage_root_key, challenge.hub_key)


def hub_keys(challenge: TpmChallenge) -> tuple[str, str]:
    """The hub identity's symmetric keys (protocol.md §6.2 step 6: primaryKey = the hub key;
    the secondary is the same, so no key exists that the device cannot use)."""
    key = _b64(challenge.hub_key or b"")
    return key, key


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii")
