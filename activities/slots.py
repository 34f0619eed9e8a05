"""Give the run's agent slot back as the agent exits, before the step has collected its change."""

from __future__ import annotations

import asyncio
from datetime import timedelta

from temporalio import activity
from temporalio.exceptions import ApplicationError
from temporalio.service import RPCError

from autonomous_pipeline.models.activity_io import AGENT_EXITED, SLOT_GONE, SlotGrant

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
    except (TimeoutError, RPCError) as exc:  # the run closed; the server is away
        activity.logger.warning(
            "task %s: could not give the run its slot back early: %s", grant.task_id, exc
        )


def giving_back(grant: SlotGrant | None) -> asyncio.Task[None] | None:
    """`give_back` beside what the step does next (collecting the change): awaited before the
    step returns, so the run hears of it before it hears of the step's end."""
    return asyncio.create_task(give_back(grant)) if grant is not None else None


def check_retry(grant: SlotGrant | None) -> None:
    """Refuse a retried attempt of a step that gives its slot back early: an earlier attempt may
    have given it back as its agent exited, and running the agent again here could exceed the
    run's slots. The task asks the run for a slot, then runs the step again (holding the slot to
    its end). The error says how many attempts came before."""
    attempt = activity.info().attempt
    if grant is not None and attempt > 1:
        raise ApplicationError(
            f"task {grant.task_id}: the agent step is retried; its slot may be gone",
            attempt - 1,
            type=SLOT_GONE,
            non_retryable=True,
        )
