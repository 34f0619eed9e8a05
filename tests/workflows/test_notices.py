"""--notify: the events a run tells, each once, and a receiver that is down does not lose one."""

from __future__ import annotations

import asyncio

import pytest

from autonomous_pipeline.cli.results import final_result
from autonomous_pipeline.models.notify import NoticeKind, NotifyConfig
from autonomous_pipeline.models.results import RunStatus, TaskStatus
from autonomous_pipeline.models.run import Approval, CancelRequest
from tests.conftest import md
from tests.workflows.conftest import Harness, plan_input
from tests.workflows.fakes import Script
from tests.workflows.test_answers import wait_phase

PLAN = md(
    """
    # Told
    ## Batch 1: one
    ### Task 1.1: a
    ### Task 1.2: b
    """
)
TOLD = NotifyConfig(urls=["https://hooks.example/1", "env:TEAM_HOOK"], links="http://ui/wf/")


@pytest.mark.parametrize(
    "running", [Script(agent_fails={"1.2"}, notify_fails_once=True)], indirect=True
)
async def test_a_wait_for_approval_a_failure_and_the_end_are_each_told_once(
    running: Harness,
) -> None:
    # Unsigned decisions count in a run that records no approver (as before signing).
    handle = await running.start(plan_input(PLAN, approval=Approval.ALWAYS, notify=TOLD))
    waiting = await wait_phase(handle, f"{handle.id}/task-1.1", "awaiting approval")
    await running.client.get_workflow_handle(f"{handle.id}/task-1.1").signal("approve")
    result = await final_result(handle)
    assert result.status is RunStatus.FAILED
    notices = running.fakes.notices
    # Every first send failed (the receiver was down): each notice went again, and once only.
    assert len({n.id for n in running.fakes.notify_failed}) == len(notices)
    assert len({n.id for n in notices}) == len(notices)
    kinds = [n.kind for n in notices]
    assert kinds.count(NoticeKind.APPROVAL) == 1 and kinds.count(NoticeKind.TASK_FAILED) == 1
    assert kinds[-1] is NoticeKind.RUN_FINISHED and len(kinds) == 3
    approval = next(n for n in notices if n.kind is NoticeKind.APPROVAL)
    assert approval.task == "1.1" and approval.link == f"http://ui/wf/{handle.id}/task-1.1"
    assert waiting.approval_commit and waiting.approval_commit[:12] in approval.id
    assert f"starter.py approve {handle.id} 1.1" in approval.text
    failed = next(n for n in notices if n.kind is NoticeKind.TASK_FAILED)
    assert failed.task == "1.2" and f"starter.py retry {handle.id} 1.2" in failed.text
    end = notices[-1]
    assert end.run == handle.id and end.link == f"http://ui/wf/{handle.id}"
    assert end.counts == {"merged": 1, "failed": 1} and end.status == "failed"
    assert end.cost_usd == result.total_cost_usd and "not done: 1.2" in end.text


@pytest.mark.parametrize("running", [Script(agent_cost=0.25)], indirect=True)
async def test_a_spent_budget_is_told_once(running: Harness) -> None:
    plan = "## Batch 1: b\n" + "".join(f"### Task 1.{i}: t{i}\n" for i in range(1, 5))
    inp = plan_input(plan, budget_usd=0.4, max_concurrent=1, prepare_ahead=0, notify=TOLD)
    result = await running.run(inp)
    assert any(t.status is TaskStatus.MERGED for t in result.tasks)
    kinds = [n.kind for n in running.fakes.notices]
    assert kinds.count(NoticeKind.BUDGET) == 1 and kinds[-1] is NoticeKind.RUN_FINISHED
    budget = next(n for n in running.fakes.notices if n.kind is NoticeKind.BUDGET)
    assert "budget of $0.4 is spent" in budget.text and (budget.cost_usd or 0) >= 0.4


async def test_a_run_without_receivers_tells_no_one(running: Harness) -> None:
    result = await running.run(plan_input(PLAN))
    assert result.status is RunStatus.COMPLETED and running.fakes.notices == []


@pytest.mark.parametrize("running", [Script(notify_held={NoticeKind.RUN_FINISHED})], indirect=True)
async def test_a_cancel_while_the_end_is_told_keeps_the_runs_result(running: Harness) -> None:
    handle = await running.start(plan_input(PLAN, notify=TOLD))
    await asyncio.wait_for(running.fakes.notify_entered.wait(), 30)
    await handle.cancel()  # the run has ended its work: its result stands
    await asyncio.sleep(0.5)
    running.fakes.notify_gate.set()
    result = await final_result(handle)
    assert result.status is RunStatus.COMPLETED
    assert [t.status for t in result.tasks] == [TaskStatus.MERGED, TaskStatus.MERGED]


@pytest.mark.parametrize("running", [Script(notify_held={NoticeKind.APPROVAL})], indirect=True)
async def test_a_task_cancelled_while_its_notice_is_on_its_way_keeps_its_merge(
    running: Harness,
) -> None:
    one = "## Batch 1: one\n### Task 1.1: a\n"
    handle = await running.start(plan_input(one, approval=Approval.ALWAYS, notify=TOLD))
    await asyncio.wait_for(running.fakes.notify_entered.wait(), 30)
    child = running.client.get_workflow_handle(f"{handle.id}/task-1.1")
    await child.signal("approve")  # the person answers before the notice is confirmed
    await wait_merged(running)
    await handle.signal("cancel", CancelRequest(now=True))
    await asyncio.sleep(0.5)
    running.fakes.notify_gate.set()
    result = await final_result(handle)
    [task] = result.tasks
    assert task.status is TaskStatus.MERGED and task.commit == "m-1.1"
    assert result.target_commit == "m-1.1"
    assert NoticeKind.TASK_FAILED not in [n.kind for n in running.fakes.notices]


async def wait_merged(running: Harness) -> None:
    for _ in range(400):
        if running.fakes.merged_order:
            return
        await asyncio.sleep(0.05)
    raise TimeoutError("no merge")
