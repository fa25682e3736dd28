"""Housekeeping while the server runs: prune what devices no longer need.

Operations are what devices poll; a device that has not polled its operation for a day never
will. TPM challenges expire (engine/tpm.py); a device keeps at most one, but a fleet that stops
registering would leave them behind. Every node prunes (the deletes are idempotent), in
bounded batches so that no transaction holds the database for long.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import timedelta

from opendps.engine.ports import Clock
from opendps.observability.logging import log_event
from opendps.store.interface import Store

logger = logging.getLogger(__name__)

# Devices poll an operation within minutes (retry-after is 2 s); a day is generous.
DEFAULT_OPERATION_RETENTION_SECONDS = 86_400.0
PRUNE_INTERVAL_SECONDS = 300.0
PRUNE_BATCH_ROWS = 10_000


@dataclass(frozen=True, slots=True)
class Pruned:
    operations: int
    tpm_challenges: int


async def prune_once(store: Store, clock: Clock, *, operation_retention_seconds: float) -> Pruned:
    """Delete operations untouched for the retention and expired TPM challenges, in batches."""
    now = clock.now()
    operations = await _drain(
        lambda: store.delete_operations_before(
            now - timedelta(seconds=operation_retention_seconds), limit=PRUNE_BATCH_ROWS
        )
    )
    challenges = await _drain(
        lambda: store.delete_tpm_challenges_expired_before(now, limit=PRUNE_BATCH_ROWS)
    )
    if operations or challenges:
        log_event(
            logger,
            logging.INFO,
            "store.pruned",
            operations=operations,
            tpm_challenges=challenges,
        )
    return Pruned(operations, challenges)


async def prune_forever(store: Store, clock: Clock, *, operation_retention_seconds: float) -> None:
    """`prune_once` every PRUNE_INTERVAL_SECONDS until cancelled; failures are logged, not fatal
    (a database that is down for a while must not stop the server)."""
    while True:
        await asyncio.sleep(PRUNE_INTERVAL_SECONDS)
        try:
            await prune_once(store, clock, operation_retention_seconds=operation_retention_seconds)
        except Exception as err:  # logged; the next round tries again
            log_event(logger, logging.WARNING, "store.prune_failed", error=str(err))


async def _drain(delete_batch: Callable[[], Awaitable[int]]) -> int:
    total = 0
    while True:
        deleted = await delete_batch()
        total += deleted
        if deleted < PRUNE_BATCH_ROWS:
            return total
