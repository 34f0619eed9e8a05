"""A living plan on the time-skipping server: each revision rule, a refused revision that changes
nothing, update-with-start as "start or revise", and a run that continues as new mid-plan."""

from __future__ import annotations

import asyncio
import contextlib
import uuid
from datetime import timedelta

import pytest
from temporalio.client import (
    WithStartWorkflowOperation,
    WorkflowExecutionStatus,
    WorkflowHandle,
    WorkflowUpdateFailedError,
)
from temporalio.common import WorkflowIDConflictPolicy
from temporalio.exceptions import ApplicationError
from temporalio.service import RPCError
from temporalio.testing import WorkflowEnvironment

from autonomous_pipeline.cli.results import final_result
from autonomous_pipeline.models.results import RunProgress, TaskResult, TaskStatus
from autonomous_pipeline.models.revision import (
    REVISE,
    REVISION_REFUSED,
    ChangeKind,
    PlanRevision,
    RevisionReply,
)
from autonomous_pipeline.plan_parser import parse_plan
from autonomous_pipeline.workflows.plan import PlanWorkflow
from tests.conftest import md
from tests.workflows.conftest import Harness, plan_input, serving
from tests.workflows.fakes import Script

BEFORE = md(
    """
    # Living
    ## Batch 1: one
    **Dependencies:** None
    ### Task 1.1: first
    Write a.
    ### Task 1.2: slow
    Write b.
    ### Task 1.3: after
    **Depends on:** Task 1.2
    Write c.
    ### Task 1.4: doomed
    **Depends on:** Task 1.2
    Write d.
    """
)
# 1.1 (merged) and 1.2 (running) edited, 1.3 (pending) edited, 1.4 (pending) removed, 1.5 added.
AFTER = md(
    """
    # Living
    ## Batch 1: one
    **Dependencies:** None
    ### Task 1.1: first
    Write a, better.
    ### Task 1.2: slow
    Write b, better.
    ### Task 1.3: after
    **Depends on:** Task 1.2
    Write c, the new way.
    ### Task 1.5: added
    **Depends on:** Task 1.3
    Write e.
    """
)


def revision(markdown: str, digest: str | None = None) -> PlanRevision:
    return PlanRevision(
        plan=parse_plan(markdown), digest=digest or uuid.uuid4().hex, plan_file="PLAN.md"
    )


async def revise(handle: WorkflowHandle, rev: PlanRevision) -> RevisionReply:
    return await handle.execute_update(REVISE, rev, result_type=RevisionReply)


async def progress(handle: WorkflowHandle) -> dict[str, TaskResult]:
    p: RunProgress = await handle.query(PlanWorkflow.status_query)
    return {t.id: t for t in p.tasks}


async def wait_for(handle: WorkflowHandle, tid: str, *statuses: TaskStatus) -> None:
    for _ in range(600):
        # A query that meets the run as it continues as new is lost: asked again.
        with contextlib.suppress(RPCError):
            p: RunProgress = await handle.query(
                PlanWorkflow.status_query, rpc_timeout=timedelta(seconds=2)
            )
            if any(t.id == tid and t.status in statuses for t in p.tasks):
                return
        await asyncio.sleep(0.02)
    raise AssertionError(f"task {tid} never reached {statuses}")


@pytest.mark.parametrize("running", [Script(slow={"1.2": 1.5})], indirect=True)
async def test_a_revision_adds_changes_removes_and_keeps_what_ran(running: Harness) -> None:
    handle = await running.start(plan_input(BEFORE, max_concurrent=2))
    await wait_for(handle, "1.1", TaskStatus.MERGED)
    await wait_for(handle, "1.2", TaskStatus.RUNNING)

    reply = await revise(handle, revision(AFTER))

    kinds = {c.task: c.kind for c in reply.changes}
    assert kinds == {
        "1.1": ChangeKind.KEPT,
        "1.2": ChangeKind.KEPT,
        "1.3": ChangeKind.CHANGED,
        "1.4": ChangeKind.REMOVED,
        "1.5": ChangeKind.ADDED,
    }
    said = {c.task: c.message for c in reply.changes}
    assert "merged work is never redone" in said["1.1"]
    assert "is running" in said["1.2"]
    assert "waits for 1.3" in said["1.5"]
    assert reply.revision == 1 and reply.message.startswith("revision 1:")

    result = await final_result(handle)
    out = {t.id: t for t in result.tasks}
    assert out["1.4"].status is TaskStatus.SKIPPED and out["1.4"].error == "removed from the plan"
    assert out["1.5"].status is TaskStatus.MERGED
    assert out["1.3"].status is TaskStatus.MERGED
    assert result.revision == 1
    # Merged work is not redone; the running task went on as it started; the pending one and
    # the new one ran the revised text; the removed one never ran.
    ran = running.fakes.agent_runs
    assert ran["1.1"] == 1 and ran["1.2"] == 1 and "1.4" not in ran
    text = {i.task.id: i.task.instructions for i in running.fakes.agent_inputs}
    assert "Write b." in text["1.2"]
    assert "the new way" in text["1.3"]
    assert "Write e." in text["1.5"]
    # 1.5 waited for 1.3: its dependency came with it.
    order = running.fakes.merged_order
    assert order.index("1.3") < order.index("1.5")


@pytest.mark.parametrize("running", [Script(slow={"1.1": 1.5})], indirect=True)
async def test_a_broken_revision_is_refused_with_its_line_and_changes_nothing(
    running: Harness,
) -> None:
    handle = await running.start(plan_input(BEFORE, max_concurrent=1))
    await wait_for(handle, "1.1", TaskStatus.RUNNING)
    before = await progress(handle)

    # What the starter's parser would refuse, sent as is: the run checks for itself. 1.3
    # depends on 1.2, which this revision removes.
    removed_dep = revision(BEFORE)
    batch = removed_dep.plan.batches[0]
    batch.tasks = [t for t in batch.tasks if t.id != "1.2"]
    with pytest.raises(WorkflowUpdateFailedError) as err:
        await revise(handle, removed_dep)
    cause = err.value.cause
    assert isinstance(cause, ApplicationError) and cause.type == REVISION_REFUSED
    assert "PLAN.md:8: task 1.3 depends on task 1.2, which this revision removes from the plan" in (
        cause.message
    )
    assert "PLAN.md:11: task 1.4 depends on task 1.2" in cause.message
    assert [d["line"] for d in cause.details] == [8, 11]

    unknown = revision(BEFORE)
    unknown.plan.batches[0].tasks[3].depends_on = ["7.7"]
    with pytest.raises(WorkflowUpdateFailedError) as err:
        await revise(handle, unknown)
    assert "PLAN.md:11: task 1.4 depends on unknown task '7.7'" in str(err.value.cause)

    cycle = revision(BEFORE)
    cycle.plan.batches[0].tasks[1].depends_on = ["1.3"]
    with pytest.raises(WorkflowUpdateFailedError) as err:
        await revise(handle, cycle)
    assert "PLAN.md:6: dependency cycle: task 1.2 -> task 1.3 -> task 1.2" in str(err.value.cause)

    now: RunProgress = await handle.query(PlanWorkflow.status_query)
    assert now.revision == 0 and [t.id for t in now.tasks] == list(before)
    result = await final_result(handle)
    assert result.revision == 0
    assert all(t.status is TaskStatus.MERGED for t in result.tasks)
    # The plan as it was: nothing of the refused revisions ran.
    assert running.fakes.agent_runs == {"1.1": 1, "1.2": 1, "1.3": 1, "1.4": 1}


@pytest.mark.parametrize("running", [Script(slow={"1.1": 1.0})], indirect=True)
async def test_update_with_start_starts_once_then_revises_the_same_run(running: Harness) -> None:
    inp = plan_input(BEFORE, max_concurrent=1)
    inp.plan_digest = "first"
    wid = f"plan-{uuid.uuid4().hex[:8]}"

    def start() -> WithStartWorkflowOperation:
        return WithStartWorkflowOperation(
            PlanWorkflow.run,
            inp,
            id=wid,
            task_queue=running.queue,
            id_conflict_policy=WorkflowIDConflictPolicy.USE_EXISTING,
        )

    first = start()
    reply = await running.client.execute_update_with_start_workflow(
        REVISE, revision(BEFORE, "first"), start_workflow_operation=first, result_type=RevisionReply
    )
    assert reply.unchanged and reply.message == "the plan is unchanged"
    handle = await first.workflow_handle()
    running.started.append(handle)
    await wait_for(handle, "1.1", TaskStatus.RUNNING)

    second = start()
    reply = await running.client.execute_update_with_start_workflow(
        REVISE,
        revision(AFTER, "second"),
        start_workflow_operation=second,
        result_type=RevisionReply,
    )
    assert reply.revision == 1 and {c.task for c in reply.changes} >= {"1.4", "1.5"}
    # One run: the second call found the first and revised it.
    assert (await second.workflow_handle()).result_run_id == handle.result_run_id

    result = await final_result(handle)
    assert result.plan_digest == "second"
    assert {t.id for t in result.tasks if t.status is TaskStatus.MERGED} == {
        "1.1",
        "1.2",
        "1.3",
        "1.5",
    }


CHAIN = md(
    """
    # Long
    ## Batch 1: one
    **Dependencies:** None
    ### Task 1.1: a
    ### Task 1.2: b
    **Depends on:** Task 1.1
    ### Task 1.3: c
    **Depends on:** Task 1.2
    ### Task 1.4: d
    **Depends on:** Task 1.3
    """
)


async def test_a_long_run_continues_as_new_with_its_state_and_revisions(
    dev_env: WorkflowEnvironment,
) -> None:
    """A history limit a task's events pass: the run continues as new between tasks, carrying
    what ended, what it cost, and the plan as revised; it ends as one run would. On a dev server:
    the time-skipping one drops every update sent to a run that continued as new."""
    async with serving(dev_env, Script(slow={"1.3": 1.0})) as running:
        started = await running.start(plan_input(CHAIN, history_limit=30, max_concurrent=1))
        first_run = started.result_run_id
        # The run's id, not its first execution's: queries and updates go to the newest run.
        handle = running.client.get_workflow_handle(started.id)
        await wait_for(handle, "1.3", TaskStatus.RUNNING)
        # It has continued as new by now (a task's events pass the limit), and takes a revision.
        assert (await handle.describe()).run_id != first_run
        added = CHAIN + "### Task 1.5: e\n**Depends on:** Task 1.4\n"
        reply = await revise(handle, revision(added))
        assert [c.task for c in reply.changes] == ["1.5"]

        result = await final_result(handle)
        assert [t.status for t in result.tasks] == [TaskStatus.MERGED] * 5
        assert result.revision == 1
        # What each task cost is counted once, across the runs of the chain.
        assert result.total_cost_usd == pytest.approx(5 * 0.25)
        assert running.fakes.agent_runs == {f"1.{i}": 1 for i in range(1, 6)}
        # The target was prepared once: a continued run carries its commit.
        assert [c for c in running.fakes.calls if c[0] == "prepare_run"] == [("prepare_run", "")]
        old = running.client.get_workflow_handle(handle.id, run_id=first_run)
        assert (await old.describe()).status is WorkflowExecutionStatus.CONTINUED_AS_NEW


@pytest.mark.parametrize("running", [Script(slow={"1.1": 1.5})], indirect=True)
async def test_a_run_being_cancelled_takes_the_same_plan_but_refuses_a_new_one(
    running: Harness,
) -> None:
    inp = plan_input(BEFORE, max_concurrent=1)
    inp.plan_digest = "same"
    handle = await running.start(inp)
    await wait_for(handle, "1.1", TaskStatus.RUNNING)
    await handle.signal(PlanWorkflow.cancel)
    # The same command again attaches: the same plan is never refused.
    same = await revise(handle, revision(BEFORE, "same"))
    assert same.unchanged
    with pytest.raises(WorkflowUpdateFailedError) as err:
        await revise(handle, revision(AFTER))
    assert "the run is being cancelled; no revision can run" in str(err.value.cause)
    result = await final_result(handle)
    assert result.revision == 0 and "1.5" not in {t.id for t in result.tasks}
