"""What a run tells the people it notifies (`--notify`), and the telling. The notices are pure;
`tell` sends one through the `notify` activity, whose retries make a crash lose none.

Each notice has the id of its event, so that an event is told once: a task's try, its commit
waiting for approval, the run's end; each with the execution's run id, as `--retry-failed` runs
the same workflow id again."""

from __future__ import annotations

import asyncio
from datetime import timedelta

from temporalio import workflow
from temporalio.common import RetryPolicy
from temporalio.exceptions import ActivityError

with workflow.unsafe.imports_passed_through():
    from autonomous_pipeline.models.activity_refs import NOTIFY
    from autonomous_pipeline.models.notify import Notice, NoticeKind, NotifyConfig, NotifyIn
    from autonomous_pipeline.models.results import PlanResult, TaskResult
    from autonomous_pipeline.workflows.outcome import outcome_line

# A receiver that is down is tried for a while, never for ever: the run's end waits for its
# notice, and a notice a day late tells nobody anything.
RETRY = RetryPolicy(
    initial_interval=timedelta(seconds=2),
    backoff_coefficient=2.0,
    maximum_interval=timedelta(minutes=1),
    maximum_attempts=12,
)


# How long a cancelled workflow still waits for its notices.
CANCELLED_GRACE = timedelta(seconds=30)


def _link(config: NotifyConfig, workflow_id: str) -> str | None:
    return config.links + workflow_id if config.links else None


def approval_notice(
    config: NotifyConfig, run: str, task_wid: str, res: TaskResult, why: str, commit: str
) -> Notice:
    return Notice(
        id=f"{task_wid}#{workflow.info().run_id}#approval#{commit[:12]}",
        kind=NoticeKind.APPROVAL,
        run=run,
        task=res.id,
        title=f"Task {res.id} waits for approval: {res.title}",
        text=f"{why}. Approve or reject commit {commit[:12]}: "
        f"starter.py approve {run} {res.id} / starter.py reject {run} {res.id}",
        link=_link(config, task_wid),
        status="awaiting_approval",
        cost_usd=res.cost_usd,
    )


def failed_notice(config: NotifyConfig, run: str, res: TaskResult) -> Notice:
    task_wid = res.workflow_id or f"{run}/task-{res.id}"
    return Notice(
        id=f"{task_wid}#{workflow.info().run_id}#failed",
        kind=NoticeKind.TASK_FAILED,
        run=run,
        task=res.id,
        title=f"Task {res.id} failed: {res.title}",
        text=(res.error or "failed")[:1000] + f". Retry it: starter.py retry {run} {res.id}",
        link=_link(config, task_wid),
        status=res.status.value,
        cost_usd=res.cost_usd,
    )


def budget_notice(config: NotifyConfig, run: str, message: str, spent: float) -> Notice:
    return Notice(
        id=f"{run}#{workflow.info().run_id}#budget",
        kind=NoticeKind.BUDGET,
        run=run,
        title="The run's budget is spent",
        text=message,
        link=_link(config, run),
        cost_usd=spent,
    )


def finished_notice(config: NotifyConfig, result: PlanResult) -> Notice:
    counts: dict[str, int] = {}
    for t in result.tasks:
        counts[t.status.value] = counts.get(t.status.value, 0) + 1
    return Notice(
        id=f"{result.workflow_id}#{workflow.info().run_id}#finished",
        kind=NoticeKind.RUN_FINISHED,
        run=result.workflow_id,
        title=f"Run {result.status.value}: {result.workflow_id}",
        text=outcome_line(result),
        link=_link(config, result.workflow_id),
        status=result.status.value,
        cost_usd=result.total_cost_usd,
        counts=counts,
    )


async def delivered(notices: list[asyncio.Task[None]]) -> None:
    """Wait for the notices on their way, before the workflow ends (an ended workflow's
    activities are dropped). The outcome is decided by then: a cancel that arrives meanwhile
    (the run's, `skip`, `cancel --now`) ends the wait and changes nothing else."""
    if not notices:
        return
    try:
        await asyncio.shield(asyncio.gather(*notices))
    except asyncio.CancelledError:
        # A moment more for the notices on their way (their activities go on), not for ever:
        # whoever cancelled wants the workflow to end.
        try:
            await workflow.wait_condition(
                lambda: all(t.done() for t in notices), timeout=CANCELLED_GRACE
            )
        except TimeoutError:
            workflow.logger.info("ended before %d notices were confirmed", len(notices))


async def tell(config: NotifyConfig | None, notice: Notice) -> None:
    """Send `notice` to the run's receivers; one that cannot be told is logged, never fatal."""
    if config is None or not config.urls:
        return
    try:
        await workflow.execute_activity(
            NOTIFY.name,
            NotifyIn(urls=config.urls, notice=notice),
            result_type=NOTIFY.result,
            start_to_close_timeout=timedelta(seconds=60),
            retry_policy=RETRY,
            summary=f"notify: {notice.title}"[:200],
        )
    except ActivityError as exc:
        workflow.logger.warning("notice %s was not delivered: %s", notice.id, exc.cause or exc)
