"""The task's steps as few round trips (runs since "fused-steps"): a claim that prepares the
worktree, and checks, merge and cleanup as one step where nobody looks at the change between
them. With a reviewer or an approval, the steps stay apart."""

from __future__ import annotations

import asyncio
import contextlib

import pytest
from temporalio import workflow
from temporalio.api.enums.v1 import EventType
from temporalio.service import RPCError
from temporalio.testing import WorkflowEnvironment
from temporalio.worker import UnsandboxedWorkflowRunner

from autonomous_pipeline.cli.results import final_result
from autonomous_pipeline.models.results import TaskStatus
from autonomous_pipeline.models.run import Approval, CancelRequest, ReviewerConfig
from autonomous_pipeline.workflows.task import TaskWorkflow
from tests.conftest import md
from tests.workflows.conftest import Harness, plan_input, serving
from tests.workflows.fakes import Script

PLAN = md(
    """
    # Fused plan
    ## Batch 1: one
    **Dependencies:** None
    ### Task 1.1: a
    **Verification:**
    - `pytest -q`
    """
)


async def activities_of(running: Harness, workflow_id: str) -> list[str]:
    handle = running.client.get_workflow_handle(workflow_id)
    return [
        e.activity_task_scheduled_event_attributes.activity_type.name
        async for e in handle.fetch_history_events()
        if e.event_type == EventType.EVENT_TYPE_ACTIVITY_TASK_SCHEDULED
    ]


async def end(handle) -> None:
    """Cancel the run and wait for it to close: nothing of it may outlive the test (a run left
    waiting holds the time-skipping server's clock for the tests after it)."""
    await handle.signal("cancel", CancelRequest(now=True))
    result = await final_result(handle)
    assert all(t.status.terminal for t in result.tasks)


async def scheduled_until(running: Harness, workflow_id: str, name: str) -> list[str]:
    """The activities the workflow scheduled, once `name` is among them."""
    names: list[str] = []
    for _ in range(250):
        with contextlib.suppress(RPCError):  # not started yet
            names = await activities_of(running, workflow_id)
            if name in names:
                return names
        await asyncio.sleep(0.02)
    raise TimeoutError(f"{workflow_id} never scheduled {name}: {names}")


async def test_an_unreviewed_task_takes_three_steps(running: Harness) -> None:
    result = await running.run(plan_input(PLAN))
    [task] = result.tasks
    assert task.status is TaskStatus.MERGED and task.commit == "m-1.1"
    assert task.checks and task.checks[0].passed
    assert await activities_of(running, task.workflow_id or "") == [
        "claim_workspace",
        "run_agent",
        "finish_task",
    ]
    assert running.fakes.cleaned == ["1.1"]  # once, by the finishing step
    assert task.branch is None  # merged: nothing kept to look at


async def test_the_run_hears_of_the_agents_end_and_the_merge_in_one_signal(
    running: Harness,
) -> None:
    result = await running.run(plan_input(PLAN))
    [task] = result.tasks
    handle = running.client.get_workflow_handle(task.workflow_id or "")
    sent = [
        e.signal_external_workflow_execution_initiated_event_attributes.signal_name
        async for e in handle.fetch_history_events()
        if e.event_type == EventType.EVENT_TYPE_SIGNAL_EXTERNAL_WORKFLOW_EXECUTION_INITIATED
    ]
    assert sent == ["task_ready", "task_merging"]


async def test_a_reviewed_task_keeps_its_steps_apart(running: Harness) -> None:
    result = await running.run(plan_input(PLAN, reviewer=ReviewerConfig(backend="claude")))
    [task] = result.tasks
    assert task.status is TaskStatus.MERGED
    assert await activities_of(running, task.workflow_id or "") == [
        "claim_workspace",
        "run_agent",
        "verify_task",
        "review_task",
        "merge_task",
        "cleanup_workspace",
    ]


async def test_a_run_that_asks_for_approval_keeps_its_steps_apart(running: Harness) -> None:
    handle = await running.start(plan_input(PLAN, approval=Approval.ALWAYS))
    # Waits for a person: the review step measured the change, no merge has happened.
    names = await scheduled_until(running, f"{handle.id}/task-1.1", "review_task")
    assert names[:4] == ["claim_workspace", "run_agent", "verify_task", "review_task"]
    assert "finish_task" not in names
    await end(handle)


@pytest.mark.parametrize(
    "running", [Script(moved_base={"1.1"}, verify_fails_times={"1.1": 1})], indirect=True
)
async def test_a_check_failing_where_the_change_was_moved_is_fixed_there(running: Harness) -> None:
    result = await running.run(plan_input(PLAN))
    [task] = result.tasks
    assert task.status is TaskStatus.MERGED and task.agent_runs == 2
    first, fix = running.fakes.agent_inputs
    # The first agent finds the worktree as the claim checked it; the fix round's is its own.
    assert first.prepared and not fix.prepared
    # The fix round starts from the moved change, on the tip it was moved onto.
    assert (fix.base_commit, fix.start_commit) == ("tip2-1.1", "c-1.1-1-moved")
    assert fix.fix is not None and fix.fix.failing_checks == ["pytest -q"]
    # The second finish goes on from there: the fix's commit, on the moved base.
    assert [(f.base_commit, f.commit) for f in running.fakes.finishes] == [
        (first.base_commit, "c-1.1-1"),
        ("tip2-1.1", "c-1.1-2"),
    ]
    assert task.base_commit == "tip2-1.1"


@pytest.mark.parametrize("running", [Script(unasked_deletions={"1.1": 50})], indirect=True)
async def test_deleting_many_unnamed_files_still_waits_for_a_person(running: Harness) -> None:
    handle = await running.start(plan_input(PLAN))
    child = running.client.get_workflow_handle(f"{handle.id}/task-1.1")
    await scheduled_until(running, child.id, "verify_task")
    for _ in range(250):
        phase = (await child.query(TaskWorkflow.status)).phase
        if phase.startswith("awaiting approval"):
            break
        await asyncio.sleep(0.02)
    assert phase.startswith("awaiting approval: deletes 50 files the task does not name"), phase
    names = await activities_of(running, child.id)
    assert "finish_task" not in names and "merge_task" not in names
    await end(handle)


async def test_a_run_from_before_slots_per_agent_gives_its_new_tasks_fix_rounds(
    env: WorkflowEnvironment, monkeypatch: pytest.MonkeyPatch
) -> None:
    # A run started before "slot-per-agent" holds a task's slot until it merges; tasks it starts
    # after the upgrade take their steps fused. A failed check's fix round must not wait for a
    # slot the run never hands back (it waited for ever).
    real = workflow.patched
    monkeypatch.setattr(workflow, "patched", lambda id: id != "slot-per-agent" and real(id))
    script = Script(verify_fails_times={"1.1": 1})
    # Unsandboxed, so that the workflows see the patch above.
    async with serving(env, script, workflow_runner=UnsandboxedWorkflowRunner()) as harness:
        handle = await harness.start(plan_input(PLAN))
        result = await asyncio.wait_for(final_result(handle), 30)
    [task] = result.tasks
    assert task.status is TaskStatus.MERGED and task.agent_runs == 2, task
    assert "claim_workspace" in await activities_of(harness, f"{handle.id}/task-1.1")
