"""Ports injected into the core: time and identifiers. Unit tests may fake these, nothing else."""

from __future__ import annotations

import secrets
import uuid
from collections.abc import Callable, Coroutine
from datetime import UTC, datetime
from typing import Any, Protocol


class Clock(Protocol):
    def now(self) -> datetime:
        """The current time, timezone-aware UTC."""
        ...


class SystemClock:
    def now(self) -> datetime:
        return datetime.now(UTC)


# Runs a coroutine in the background under a name, keeping a reference to it and logging its
# failure: `opendps.app.tasks.spawn`, handed down by app.wiring (layers below `app` may not
# import it). The engine uses it for registrations that wait on a webhook or a remote hub.
Spawn = Callable[[Coroutine[Any, Any, Any], str], object]


class IdGenerator(Protocol):
    def new_etag(self) -> str: ...

    def new_operation_id(self) -> str: ...

    def new_key(self) -> str:
        """A fresh base64 symmetric key."""
        ...


class RandomIdGenerator:
    def new_etag(self) -> str:
        # Azure's etags are opaque quoted GUID-like strings (protocol.md §7.2).
        return f'"{uuid.uuid4()}"'

    def new_operation_id(self) -> str:
        # Azure's look like `4.<16 hex>.<guid>`; clients only echo them back.
        return f"4.{secrets.token_hex(8)}.{uuid.uuid4()}"

    def new_key(self) -> str:
        import base64

        # Azure's generated keys are 64 random bytes (88 base64 characters).
        return base64.b64encode(secrets.token_bytes(64)).decode("ascii")


class EngineMetrics(Protocol):
    """What the engine counts (implemented by observability.metrics.Metrics, wired by app)."""

    def count_registration(self, outcome: str) -> None:
        """One registration reached a terminal outcome (assigned, failed, disabled, ...)."""
        ...

    def count_attestation_failure(self, reason: str) -> None:
        """A device was refused before attestation succeeded; `reason` is a fixed phrase."""
        ...


class UncountedMetrics:
    """For engines built without metrics (tools, tests that do not look at counters)."""

    def count_registration(self, outcome: str) -> None:
        pass

    def count_attestation_failure(self, reason: str) -> None:
        pass
