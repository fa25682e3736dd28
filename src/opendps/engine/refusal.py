"""The one refusal every failed attestation shows a device (as Azure: a device cannot learn
whether the ID scope, the enrollment or the key was wrong); the reason stays on the server."""

from __future__ import annotations

import logging

from opendps.model.errors import UNAUTHORIZED, DpsError
from opendps.observability.logging import log_event

logger = logging.getLogger(__name__)


class AttestationRefused(DpsError):
    """The 401 every refusal shows the device; `reason` stays on the server (logs, metrics)."""

    def __init__(self, reason: str) -> None:
        super().__init__(UNAUTHORIZED, "Unauthorized")
        self.reason = reason


def refuse(reason: str, *, id_scope: str, registration_id: str) -> AttestationRefused:
    """Log why a device was refused; return the one error every refusal shows the device."""
    log_event(
        logger,
        logging.INFO,
        "device.unauthorized",
        reason=reason,
        id_scope=id_scope,
        registration_id=registration_id,
    )
    return AttestationRefused(reason)
