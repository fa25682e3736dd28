"""Background tasks that are neither lost nor silent.

`asyncio.create_task` is banned elsewhere (ruff TID251): the event loop keeps only a weak
reference to a task, so a task nobody holds can be garbage-collected mid-flight, and an
exception in a task nobody awaits is only reported when it is collected, if ever. `spawn`
keeps a strong reference until the task is done and logs its failure at once.

The reference set is module-level on purpose: it is bookkeeping against the garbage collector
(the pattern the asyncio documentation recommends), not configuration, and it holds only
running tasks. `cancel_pending()` ends the tasks of the current event loop at shutdown, so
servers on different loops (tests) do not touch each other's tasks.

Layers below `app` may not import this module (import-linter); they receive `spawn` as a
callable (`opendps.engine.ports.Spawn`) from app.wiring.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Coroutine
from typing import Any, TypeVar

from opendps.observability.logging import log_event

T = TypeVar("T")

logger = logging.getLogger(__name__)
_running: set[asyncio.Task[Any]] = set()


def spawn(coro: Coroutine[Any, Any, T], name: str) -> asyncio.Task[T]:
    """Run `coro` as a task named `name`; keep it referenced until done; log its failure."""
    task = asyncio.get_running_loop().create_task(coro, name=name)
    _running.add(task)
    task.add_done_callback(_finished)
    return task


def _finished(task: asyncio.Task[Any]) -> None:
    _running.discard(task)
    if task.cancelled():
        return
    error = task.exception()
    if error is not None:
        log_event(
            logger,
            logging.ERROR,
            "task.failed",
            task=task.get_name(),
            error=type(error).__name__,
            exc_info=error,
        )


def pending() -> list[asyncio.Task[Any]]:
    """Spawned tasks of the running loop that have not finished."""
    loop = asyncio.get_running_loop()
    return [task for task in _running if task.get_loop() is loop and not task.done()]


async def wait_pending(timeout_seconds: float) -> bool:
    """Wait until the running loop's spawned tasks (but not the caller's own) have finished,
    including any spawned meanwhile; False if `timeout_seconds` passed first.

    Used at shutdown so that registrations already under way (MQTT and AMQP requests, webhook
    allocations) commit and answer before their connections close.
    """
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout_seconds
    current = asyncio.current_task()
    while waiting := [task for task in pending() if task is not current]:
        remaining = deadline - loop.time()
        if remaining <= 0:
            return False
        await asyncio.wait(waiting, timeout=remaining)
    return True


async def cancel_pending(grace_seconds: float) -> None:
    """Cancel the running loop's spawned tasks (but not the caller's own) and wait up to
    `grace_seconds` for them to end."""
    current = asyncio.current_task()
    tasks = [task for task in pending() if task is not current]
    for task in tasks:
        task.cancel()
    if tasks:
        await asyncio.wait(tasks, timeout=grace_seconds)
