"""Small asyncio helpers shared by the tests."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Callable, Coroutine
from typing import Any


@contextlib.asynccontextmanager
async def running(coro: Coroutine[Any, Any, None]) -> AsyncIterator[asyncio.Task[None]]:
    """Run `coro` (a link's or meter's `run()`) as a task for the block, then cancel and await it."""
    task = asyncio.create_task(coro)
    try:
        yield task
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task


async def eventually(condition: Callable[[], bool], timeout: float = 10) -> None:
    """Wait until `condition()` holds (polling; for state owned by another task): a condition, not a duration."""
    async with asyncio.timeout(timeout):
        while not condition():
            await asyncio.sleep(0.01)
