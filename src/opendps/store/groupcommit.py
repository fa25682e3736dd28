"""Group commit: writes that arrive while a commit is in progress share the next transaction.

A registration ends with a few small writes (store.record_registration). Committed one
transaction each, a busy node spends most of its write time on commit overhead (an fsync on
SQLite, a round trip and a WAL flush on PostgreSQL), and on SQLite every writer queues for the
single write slot anyway. `GroupCommitter` lets one flusher task commit whatever has queued up
as one batch; callers that arrive meanwhile join the following batch. No timer is involved: a
lone write is committed at once, batching only happens under concurrency.

Guarantees to each caller of `submit`:
- its await returns only after the transaction holding its write committed;
- if that transaction fails, it gets the exception (every caller of the batch gets one); a
  failed batch committed nothing, since the whole batch is one transaction.
`commit` may also settle writes one by one, returning an exception in the place of a write
whose own row failed (store/sql.py does so when one registration's instance was deleted, so
that it does not fail the registrations of other instances batched with it).
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Sequence
from typing import Any, Generic, TypeVar

W = TypeVar("W")
R = TypeVar("R")

# A batch is one transaction: bounded, so that a burst cannot hold the write slot (SQLite) or
# row locks (PostgreSQL) for long; the rest waits for the next batch.
MAX_BATCH = 256


class GroupCommitter(Generic[W, R]):
    """Queue of writes committed in batches by `commit(batch) -> outcomes`.

    `commit` returns one outcome per write, in order: its result, or the exception for that
    write's caller alone; it raises when the batch as a whole failed.
    """

    def __init__(
        self,
        commit: Callable[[Sequence[W]], Awaitable[Sequence[R | Exception]]],
        *,
        max_batch: int = MAX_BATCH,
    ) -> None:
        self._commit = commit
        self._max_batch = max_batch
        self._queue: list[tuple[W, asyncio.Future[R]]] = []
        self._flusher: asyncio.Task[None] | None = None
        # Committed or failed batches and their sizes; tests and figures read them.
        self.batches = 0
        self.largest_batch = 0

    async def submit(self, write: W) -> R:
        """Queue `write`; return its result once the transaction holding it has committed."""
        future: asyncio.Future[R] = asyncio.get_running_loop().create_future()
        # A caller cancelled while waiting never reads its outcome; reading it here keeps
        # asyncio from logging "exception was never retrieved".
        future.add_done_callback(_consume)
        self._queue.append((write, future))
        if self._flusher is None:
            # Not app.tasks.spawn (the store sits below app): the reference is kept here, and
            # whatever the flusher raises reaches every waiter of its batch.
            self._flusher = asyncio.create_task(self._flush(), name="group-commit")  # noqa: TID251
        # shield: a caller that is cancelled stops waiting, but its write stays in the batch
        # (as a cancelled single write already sent to the database would commit too).
        return await asyncio.shield(future)

    async def wait_idle(self) -> None:
        """Return once every queued write is committed or failed (before closing the store)."""
        while self._flusher is not None:
            # wait(), not await: the flusher's own end (even a cancellation) is not ours.
            await asyncio.wait([self._flusher])

    async def _flush(self) -> None:
        try:
            while self._queue:
                batch = self._queue[: self._max_batch]
                del self._queue[: self._max_batch]
                await self._run(batch)
        finally:
            self._flusher = None
            # Left over only when the flusher was cancelled: those writes were never sent.
            for _, future in self._queue:
                future.cancel()
            self._queue.clear()

    async def _run(self, batch: list[tuple[W, asyncio.Future[R]]]) -> None:
        self.batches += 1
        self.largest_batch = max(self.largest_batch, len(batch))
        try:
            outcomes = await self._commit([write for write, _ in batch])
            if len(outcomes) != len(batch):
                raise RuntimeError(f"commit gave {len(outcomes)} outcomes for {len(batch)} writes")
        except Exception as error:
            for _, future in batch:
                if not future.done():
                    future.set_exception(error)
            return
        except BaseException:
            # The flusher itself was cancelled (loop shutting down): nobody learns of a commit.
            for _, future in batch:
                future.cancel()
            raise
        for (_, future), outcome in zip(batch, outcomes, strict=True):
            if future.done():
                continue
            if isinstance(outcome, Exception):
                future.set_exception(outcome)
            else:
                future.set_result(outcome)


def _consume(future: asyncio.Future[Any]) -> None:
    if not future.cancelled():
        future.exception()
