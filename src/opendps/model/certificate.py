"""CA certificates uploaded to an instance, with proof of possession."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

# Azure: at most 25 CA certificates per instance (protocol.md §9).
MAX_CA_CERTIFICATES = 25


@dataclass(frozen=True, slots=True)
class CaCertificate:
    instance_id: str
    name: str
    certificate_pem: str
    subject: str
    sha1_thumbprint: str
    sha256_thumbprint: str
    not_before_utc: datetime
    not_after_utc: datetime
    is_verified: bool
    # Set by "generate verification code"; the proof certificate's CN must equal it.
    verification_code: str | None = None
    etag: str = ""
    created_at: datetime | None = None
    updated_at: datetime | None = None
