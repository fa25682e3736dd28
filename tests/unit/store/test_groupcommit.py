"""GroupCommitter without a database: batching, per-write outcomes, failure of a whole batch."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence

import pytest

from opendps.store.groupcommit import GroupCommitter


class Recorder:
    """A commit function that holds each batch until the test releases it."""

    def __init__(self) -> None:
        self.batches: list[list[str]] = []
        self.release = asyncio.Event()
        self.committing = asyncio.Event()
        self.fail_with: Exception | None = None

    async def commit(self, writes: Sequence[str]) -> Sequence[str | Exception]:
        self.batches.append(list(writes))
        self.committing.set()
        await self.release.wait()
        if self.fail_with is not None:
            raise self.fail_with
        return [f"stored {write}" if write != "orphan" else LookupError(write) for write in writes]


async def test_writes_arriving_during_a_commit_share_the_next_one() -> None:
    recorder = Recorder()
    committer = GroupCommitter(recorder.commit)
    first = asyncio.ensure_future(committer.submit("a"))
    await recorder.committing.wait()  # the flusher has taken "a" and is committing it
    later = [asyncio.ensure_future(committer.submit(name)) for name in ("b", "c", "d")]
    await asyncio.sleep(0)
    assert not first.done()  # not acknowledged before its commit succeeded
    recorder.release.set()
    assert await first == "stored a"
    assert await asyncio.gather(*later) == ["stored b", "stored c", "stored d"]
    assert recorder.batches == [["a"], ["b", "c", "d"]]
    assert committer.batches == 2 and committer.largest_batch == 3


async def test_batches_are_bounded() -> None:
    recorder = Recorder()
    recorder.release.set()
    committer = GroupCommitter(recorder.commit, max_batch=2)
    results = await asyncio.gather(*(committer.submit(str(n)) for n in range(5)))
    assert results == [f"stored {n}" for n in range(5)]
    assert [len(batch) for batch in recorder.batches] == [2, 2, 1]


async def test_a_failed_commit_fails_every_write_of_its_batch() -> None:
    recorder = Recorder()
    recorder.fail_with = RuntimeError("disk full")
    recorder.release.set()
    committer = GroupCommitter(recorder.commit)
    outcomes = await asyncio.gather(
        *(committer.submit(name) for name in ("a", "b", "c")), return_exceptions=True
    )
    assert [type(outcome) for outcome in outcomes] == [RuntimeError] * 3
    recorder.fail_with = None
    assert await committer.submit("d") == "stored d"  # the committer keeps working


async def test_a_write_settled_alone_fails_only_its_caller() -> None:
    recorder = Recorder()
    recorder.release.set()
    committer = GroupCommitter(recorder.commit)
    outcomes = await asyncio.gather(
        committer.submit("a"), committer.submit("orphan"), return_exceptions=True
    )
    assert outcomes[0] == "stored a" and isinstance(outcomes[1], LookupError)
    with pytest.raises(LookupError):
        await committer.submit("orphan")


async def test_wait_idle_returns_after_writes_of_cancelled_callers_committed() -> None:
    recorder = Recorder()
    committer = GroupCommitter(recorder.commit)
    caller = asyncio.ensure_future(committer.submit("a"))
    await recorder.committing.wait()
    caller.cancel()  # the caller stops waiting; its write is already in a transaction
    idle = asyncio.ensure_future(committer.wait_idle())
    await asyncio.sleep(0)
    assert not idle.done()
    recorder.release.set()
    await idle
    assert recorder.batches == [["a"]] and caller.cancelled()
