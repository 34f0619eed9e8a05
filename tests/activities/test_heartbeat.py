"""One heartbeat mechanism: the activity's ticker sends the latest progress note on its own clock,
whatever the backend does (a silent agent still heartbeats; a chatty one sends no more)."""

from __future__ import annotations

import asyncio
import dataclasses
from datetime import timedelta

from temporalio.testing import ActivityEnvironment

from autonomous_pipeline.activities.heartbeat import heartbeating


async def test_the_ticker_sends_the_latest_note_and_only_on_its_clock() -> None:
    env = ActivityEnvironment()
    env.info = dataclasses.replace(env.info, heartbeat_timeout=timedelta(seconds=1.5))
    sent: list[str] = []
    env.on_heartbeat = lambda *details: sent.append(details[0])

    async def step() -> None:
        async with heartbeating("starting") as note:
            await asyncio.sleep(0.7)  # silent: the ticker beats anyway (every 0.5 s)
            for i in range(5000):  # chatty: many notes, no more beats
                note(f"line {i}")
            await asyncio.sleep(0.7)

    await env.run(step)
    assert sent[0] == "starting" and sent[-1] == "line 4999"
    assert 2 <= len(sent) <= 5, sent
    assert not [s for s in sent if s.startswith("line") and s != "line 4999"]
