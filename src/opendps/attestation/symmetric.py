"""Symmetric-key attestation: group key derivation (protocol.md §2.3)."""

from __future__ import annotations

import base64
import hmac


def derive_device_key(group_key_b64: str, registration_id: str) -> str:
    """base64(HMAC-SHA256(base64decode(groupKey), UTF-8(registrationId)))."""
    key = base64.b64decode(group_key_b64)
    digest = hmac.digest(key, registration_id.encode("utf-8"), "sha256")
    return base64.b64encode(digest).decode("ascii")
