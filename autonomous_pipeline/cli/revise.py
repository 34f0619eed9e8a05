"""Start a run or revise the one open for the same plan file: one atomic call (update-with-start,
USE_EXISTING), and what it changed in the operator's words."""

from __future__ import annotations

import asyncio
from typing import Any

from rich.console import Console
from temporalio.client import (
    Client,
    WithStartWorkflowOperation,
    WorkflowUpdateFailedError,
)
from temporalio.common import WorkflowIDConflictPolicy, WorkflowIDReusePolicy
from temporalio.exceptions import ApplicationError, WorkflowAlreadyStartedError
from temporalio.service import RPCError, RPCStatusCode

from autonomous_pipeline.cli.connect import TASK_QUEUE
from autonomous_pipeline.cli.terminal import safe
from autonomous_pipeline.errors import PlanError, UsageError
from autonomous_pipeline.models.plan import PlanIssue
from autonomous_pipeline.models.revision import (
    REVISE,
    REVISION_REFUSED,
    PlanRevision,
    RevisionReply,
)
from autonomous_pipeline.models.run import PlanRunInput
from autonomous_pipeline.workflows.plan import PlanWorkflow

# How long the starter waits for a worker to take the call. A new run is started by then in any
# case (the server starts it at once); a revision is applied only when a worker takes it.
ANSWER_WAIT_S = 60.0
SENDS = 3  # a revision the server dropped (the run continued as new meanwhile) is sent again


class RevisionRefused(PlanError):
    """The run refused the revision: its problems, each with its line in the plan file."""

    def __init__(self, errors: list[PlanIssue], workflow_id: str) -> None:
        super().__init__(errors)
        self.workflow_id = workflow_id


class NoAnswer(Exception):
    """No worker took the call within ANSWER_WAIT_S."""


async def start_or_revise(
    client: Client,
    inp: PlanRunInput,
    workflow_id: str,
    plan_file: str,
    start: dict[str, Any],
    seen_open: bool = False,
    outside: frozenset[str] = frozenset(),
) -> RevisionReply:
    """Start the run with `inp`, or, when it is open, send it `inp`'s plan as a revision.
    `start`: the rest of the start's options (summary, memo, timeouts). `seen_open`: the run was
    open a moment ago; if it has closed since, nothing starts (a new run of a closed one is
    started with what it merged, which the caller did not look up)."""
    assert inp.plan_digest is not None
    reuse = (
        WorkflowIDReusePolicy.REJECT_DUPLICATE
        if seen_open
        else WorkflowIDReusePolicy.ALLOW_DUPLICATE
    )
    operation = WithStartWorkflowOperation(
        PlanWorkflow.run,
        inp,
        id=workflow_id,
        task_queue=TASK_QUEUE,
        id_conflict_policy=WorkflowIDConflictPolicy.USE_EXISTING,
        id_reuse_policy=reuse,
        **start,
    )
    revision = PlanRevision(
        plan=inp.plan, digest=inp.plan_digest, plan_file=plan_file, outside=sorted(outside)
    )

    async def call() -> RevisionReply:
        reply: RevisionReply = await client.execute_update_with_start_workflow(
            REVISE, revision, start_workflow_operation=operation, result_type=RevisionReply
        )
        return reply

    try:
        for _ in range(SENDS - 1):
            try:
                return await asyncio.wait_for(call(), ANSWER_WAIT_S)
            except RPCError as exc:
                # The run continued as new as the revision arrived: the server dropped it, and
                # the run under this id is the new one. Sent again (an applied one answers
                # "unchanged").
                if exc.status != RPCStatusCode.NOT_FOUND:
                    raise
        return await asyncio.wait_for(call(), ANSWER_WAIT_S)
    except TimeoutError:
        raise NoAnswer() from None
    except WorkflowAlreadyStartedError:
        raise UsageError(
            f"run {workflow_id} ended while this command ran; run it again to see its result "
            "(or to start the plan as it now reads)"
        ) from None
    except WorkflowUpdateFailedError as exc:
        cause = exc.cause
        if isinstance(cause, ApplicationError) and cause.type == REVISION_REFUSED and cause.details:
            issues = [PlanIssue.model_validate(d) for d in cause.details]
            raise RevisionRefused(issues, workflow_id) from None
        message = cause.message if isinstance(cause, ApplicationError) else str(cause or exc)
        if not seen_open and "handler" in message.lower():
            # Started by this call, on workers from before revisions: the run has no `revise`,
            # and its start needs none.
            raise NoAnswer() from None
        raise UsageError(f"run {workflow_id} refused the revision: {message}") from None


async def start_only(
    client: Client, inp: PlanRunInput, workflow_id: str, start: dict[str, Any]
) -> None:
    """Start the run without waiting for a worker (none is running to take a revision)."""
    await client.start_workflow(
        PlanWorkflow.run,
        inp,
        id=workflow_id,
        task_queue=TASK_QUEUE,
        id_conflict_policy=WorkflowIDConflictPolicy.USE_EXISTING,
        id_reuse_policy=WorkflowIDReusePolicy.ALLOW_DUPLICATE,
        **start,
    )


def print_reply(reply: RevisionReply, workflow_id: str, err: Console) -> None:
    """What a revision changed, a line per task."""
    if reply.unchanged:
        err.print(f"attaching to run {workflow_id}, already in progress (the plan is unchanged)")
        return
    err.print(f"revised run {workflow_id}: {reply.message}", markup=False)
    for change in reply.changes:
        err.print(f"  {change.kind.value:<11} {safe(change.message)}", markup=False)
