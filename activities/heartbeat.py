"""Keep an activity's heartbeat going while it awaits something slow, with the latest progress note."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Callable

from temporalio import activity


@contextlib.asynccontextmanager
async def heartbeating(first_note: str) -> AsyncIterator[Callable[[str], None]]:
    """Heartbeat every third of the heartbeat timeout (or 5 s) until the block ends.

    Yields a setter for the note sent with the next heartbeat, so the Web UI shows what the agent
    is doing. A silent agent still heartbeats: a dead *worker* is what the timeout detects.
    """
    note = [first_note]
    timeout = activity.info().heartbeat_timeout
    interval = max(0.5, min(5.0, timeout.total_seconds() / 3)) if timeout else 5.0

    def set_note(text: str) -> None:
        note[0] = text

    async def beat() -> None:
        while True:
            activity.heartbeat(note[0])
            await asyncio.sleep(interval)

    ticker = asyncio.create_task(beat())
    try:
        yield set_note
    finally:
        ticker.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await ticker
