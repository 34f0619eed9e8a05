"""Give the run's agent slot back as the agent exits, before the step has collected its change."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from datetime import timedelta

from temporalio import activity
from temporalio.exceptions import ApplicationError

from autonomous_pipeline.models.activity_io import AGENT_EXITED, SLOT_GONE, SlotGrant
from autonomous_pipeline.models.results import Spend

# A run that does not hear in this time gets the slot back when the step ends, as without this.
SIGNAL_TIMEOUT = timedelta(seconds=5)


async def give_back(grant: SlotGrant) -> None:
    """Tell the run its slot is free. Best effort: the step's own end frees it anyway."""
    try:
        client = activity.client()
    except RuntimeError:  # run without a worker's client (a test's activity environment)
        return
    try:
        await client.get_workflow_handle(grant.workflow_id, run_id=grant.run_id).signal(
            AGENT_EXITED, grant, rpc_timeout=SIGNAL_TIMEOUT
        )
    except Exception as exc:  # the run closed, the server is away: best effort, never fatal
        activity.logger.warning(
            "task %s: could not give the run its slot back early: %s", grant.task_id, exc
        )


@contextlib.asynccontextmanager
async def giving_back(
    grant: SlotGrant | None, task_id: str, attempts: int, spent: Spend
) -> AsyncIterator[None]:
    """`give_back` beside the block (collecting the change), which the run need not wait for;
    awaited before the block is left, so the run hears of it before it hears of the step's end.
    A failure in the block is then `slot_gone`. Without a grant, only the block."""
    told = asyncio.create_task(give_back(grant)) if grant is not None else None
    try:
        yield
    except Exception as exc:
        if told is None:
            raise
        raise slot_gone(task_id, attempts, spent) from exc
    finally:
        if told is not None:
            await told


def slot_gone(task_id: str, attempts: int, spent: Spend) -> ApplicationError:
    """The error of a step that gave its slot back as its agent exited, then failed (its change
    not collected): not retried in place, where its agent would run again beside the one that
    took the slot. The task asks the run for a slot and runs the step again. `attempts`: those
    of the step so far, each of which ran the agent; `spent`: what this one's agent spent, which
    counts towards the task's budget like any other run's."""
    return ApplicationError(
        f"task {task_id}: the change could not be collected after the agent gave its slot back",
        attempts,
        spent.model_dump(mode="json"),
        type=SLOT_GONE,
        non_retryable=True,
    )
