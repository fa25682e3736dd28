"""A TPM device's pending attestation challenge (protocol.md §6.2).

The challenge is the HMAC key we wrapped for the device's TPM: the device proves itself by
signing a SAS token with it. It lives in the store, not in a node's memory, so the node that
answers the second request need not be the one that issued the challenge; it expires, and a
registration uses it up (a replayed token cannot register again).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime


@dataclass(frozen=True, slots=True)
class TpmChallenge:
    """One per device: a new challenge replaces the previous one."""

    instance_id: str
    registration_id: str
    # Random, so that a registration uses up exactly the challenge whose key signed its token.
    challenge_id: str
    # The device's keys as it sent them (raw TPM2B_PUBLIC): the final answer wraps the device's
    # hub key for the same TPM, and a poll over HTTP carries no body to take them from.
    endorsement_key: bytes
    storage_root_key: bytes
    # The HMAC key the blob imports into the TPM: a secret, never logged.
    key: bytes
    created_at: datetime
    expires_at: datetime
    # Set by the registration that used the challenge, with the hub key it gave the device.
    used_at: datetime | None = None
    hub_key: bytes | None = None

    def __repr__(self) -> str:  # keep the keys out of any debug output
        return (
            f"TpmChallenge(instance_id={self.instance_id!r}, "
            f"registration_id={self.registration_id!r}, challenge_id={self.challenge_id!r})"
        )
