"""The SAS token a symmetric-key device signs for itself (protocol.md §2.1, §2.3)."""

from __future__ import annotations

from opendps.attestation.sas import build_sas_token
from opendps.attestation.symmetric import derive_device_key

# Device tokens name the key `registration` (protocol.md §2.1), as every Azure device SDK does.
DEVICE_KEY_NAME = "registration"
# The Node and Python device clients sign tokens valid for an hour (protocol.md §2.2).
DEVICE_TOKEN_TTL_SECONDS = 3600


def device_sas_token(id_scope: str, registration_id: str, device_key: str, *, now: float) -> str:
    """A token over `{idScope}/registrations/{registrationId}`, signed with the device's key.

    Raises ValueError (binascii.Error) when the key is not base64.
    """
    resource = f"{id_scope}/registrations/{registration_id}"
    expiry = int(now) + DEVICE_TOKEN_TTL_SECONDS
    return build_sas_token(resource, device_key, expiry, key_name=DEVICE_KEY_NAME)


def group_device_key(group_key: str, registration_id: str) -> str:
    """The device's own key from its group's (HMAC-SHA256, protocol.md §2.3)."""
    return derive_device_key(group_key, registration_id)
