"""Audit entries (every administrative change) and metering counters."""

from __future__ import annotations

import enum
from dataclasses import dataclass
from datetime import date, datetime


@dataclass(frozen=True, slots=True)
class AuditEntry:
    """One administrative change. Never carries a secret."""

    at: datetime
    instance_id: str | None
    actor: str  # access policy name, or "admin" for the deployment admin key
    action: str  # e.g. "enrollment.create", "policy.regenerate-key"
    target: str  # e.g. "enrollments/sensor-001"
    id: int | None = None


class MeterKind(enum.StrEnum):
    """What is counted per instance per day (the operation/billing unit)."""

    REGISTRATION = "registration"
    ENROLLMENT_CHANGE = "enrollmentChange"
    SERVICE_OPERATION = "serviceOperation"


@dataclass(frozen=True, slots=True)
class MeterCount:
    instance_id: str
    day: date
    kind: MeterKind
    count: int
