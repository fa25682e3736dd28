from __future__ import annotations

import asyncio
import gc
import logging

import pytest

from opendps.app import tasks


async def test_spawned_task_survives_garbage_collection_and_returns_its_result() -> None:
    release = asyncio.Event()

    async def work() -> int:
        await release.wait()
        return 7

    tasks.spawn(work(), "work")
    gc.collect()
    assert len(tasks.pending()) == 1
    release.set()
    [task] = tasks.pending()
    assert await task == 7
    assert tasks.pending() == []


async def test_a_failing_task_is_logged_with_its_name(caplog: pytest.LogCaptureFixture) -> None:
    async def boom() -> None:
        raise RuntimeError("broken")

    task = tasks.spawn(boom(), "boom-task")
    with caplog.at_level(logging.ERROR):
        await asyncio.wait([task])
        await asyncio.sleep(0)
    [record] = [r for r in caplog.records if r.getMessage() == "task.failed"]
    assert record.opendps_fields["task"] == "boom-task"  # type: ignore[attr-defined]
    assert record.exc_info is not None and isinstance(record.exc_info[1], RuntimeError)


async def test_cancel_pending_ends_running_tasks() -> None:
    started = asyncio.Event()

    async def forever() -> None:
        started.set()
        await asyncio.Event().wait()

    task = tasks.spawn(forever(), "forever")
    await started.wait()
    await tasks.cancel_pending(grace_seconds=1)
    assert task.cancelled()
    assert tasks.pending() == []


async def test_wait_pending_lets_spawned_work_finish_including_work_it_spawns() -> None:
    done: list[str] = []

    async def second() -> None:
        await asyncio.sleep(0.02)
        done.append("second")

    async def first() -> None:
        await asyncio.sleep(0.02)
        tasks.spawn(second(), "second")
        done.append("first")

    tasks.spawn(first(), "first")
    assert await tasks.wait_pending(timeout_seconds=5) is True
    assert done == ["first", "second"]
    assert tasks.pending() == []


async def test_wait_pending_gives_up_at_its_timeout() -> None:
    task = tasks.spawn(asyncio.Event().wait(), "forever")
    assert await tasks.wait_pending(timeout_seconds=0.05) is False
    assert not task.done()
    await tasks.cancel_pending(grace_seconds=1)
