"""What the run tells the operator: steering answered (taken, or refused with why), a run and a
task that did not succeed ending failed with their result, the memo read without a worker, a
change already on the target, and fix rounds that carry the failing output."""

from __future__ import annotations

import asyncio
import uuid

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from temporalio.api.enums.v1 import EventType
from temporalio.client import (
    WorkflowExecutionStatus,
    WorkflowFailureError,
    WorkflowHandle,
    WorkflowUpdateFailedError,
)
from temporalio.exceptions import ApplicationError

from autonomous_pipeline.cli.approval import public_key, sign_decision
from autonomous_pipeline.cli.results import final_result
from autonomous_pipeline.models.results import (
    ProgressMemo,
    RunProgress,
    RunStatus,
    TaskResult,
    TaskStatus,
)
from autonomous_pipeline.models.run import Approval
from autonomous_pipeline.models.steer import DecideRequest, SteerKind, SteerReply, SteerRequest
from autonomous_pipeline.workflows.outcome import RUN_FAILED, TASK_FAILED
from autonomous_pipeline.workflows.plan import PlanWorkflow
from tests.conftest import md
from tests.workflows.conftest import Harness, plan_input
from tests.workflows.fakes import Script

THREE = md(
    """
    # Three
    ## Batch 1: one
    **Dependencies:** None
    ### Task 1.1: a
    ### Task 1.2: b
    ### Task 1.3: c
    """
)
ONE = md(
    """
    # One
    ## Batch 1: one
    **Dependencies:** None
    ### Task 1.1: a
    """
)
CHAIN = md(
    """
    # Chain
    ## Batch 1: one
    **Dependencies:** None
    ### Task 1.1: a
    **Verification:**
    - `pytest -q`
    ### Task 1.2: b
    **Depends on:** Task 1.1
    """
)


def tasks(result) -> dict[str, TaskResult]:
    return {t.id: t for t in result.tasks}


async def steer(handle: WorkflowHandle, kind: SteerKind, task: str | None = None) -> str:
    reply = await handle.execute_update(
        "steer", SteerRequest(kind=kind, task=task), result_type=SteerReply
    )
    return reply.message


async def refused(handle: WorkflowHandle, name: str, req: object) -> str:
    with pytest.raises(WorkflowUpdateFailedError) as info:
        await handle.execute_update(name, req, result_type=SteerReply)
    cause = info.value.cause
    assert isinstance(cause, ApplicationError)
    return cause.message


async def wait_status(handle: WorkflowHandle, tid: str, status: TaskStatus) -> None:
    for _ in range(400):
        progress = await handle.query("status", result_type=RunProgress)
        if {t.id: t.status for t in progress.tasks}[tid] is status:
            return
        await asyncio.sleep(0.05)
    raise TimeoutError(f"{tid} never {status}")


async def wait_phase(handle: WorkflowHandle, child_id: str, prefix: str) -> TaskResult:
    child = handle._client.get_workflow_handle(child_id)
    for _ in range(400):
        try:
            res = await child.query("status", result_type=TaskResult)
        except Exception:
            res = None
        if res is not None and res.phase.startswith(prefix):
            return res
        await asyncio.sleep(0.05)
    raise TimeoutError(prefix)


async def accepted_updates(handle: WorkflowHandle) -> int:
    events = [e async for e in handle.fetch_history_events()]
    return sum(
        1 for e in events if e.event_type == EventType.EVENT_TYPE_WORKFLOW_EXECUTION_UPDATE_ACCEPTED
    )


@pytest.mark.parametrize("running", [Script(slow={"1.1": 3.0})], indirect=True)
async def test_steering_is_answered_and_refusals_change_nothing(running: Harness) -> None:
    # Nothing prepared ahead: 1.2 is still pending.
    handle = await running.start(plan_input(THREE, max_concurrent=1, prepare_ahead=0))
    # Its agent running, not just its task: a pause holds back a task whose agent has not
    # started (it goes back to pending), and a loaded machine may take a while to claim it.
    await wait_phase(handle, f"{handle.id}/task-1.1", "agent")
    assert "no new task starts" in await steer(handle, SteerKind.PAUSE)
    assert await refused(handle, "steer", SteerRequest(kind=SteerKind.PAUSE)) == (
        "the run is already paused"
    )
    why = await refused(handle, "steer", SteerRequest(kind=SteerKind.SKIP, task="9.9"))
    assert why.startswith("this run has no task '9.9' (its tasks: 1.1, 1.2, 1.3")
    why = await refused(handle, "steer", SteerRequest(kind=SteerKind.RETRY, task="1.1"))
    assert why == "task 1.1 is still running"
    why = await refused(handle, "steer", SteerRequest(kind=SteerKind.RETRY, task="1.2"))
    assert "has not started yet" in why
    why = await refused(handle, "steer", SteerRequest(kind=SteerKind.SKIP))
    assert why == "skip needs a task id"
    assert await steer(handle, SteerKind.SKIP, "1.3") == "task 1.3 will not run; it ends skipped"
    await wait_status(handle, "1.3", TaskStatus.SKIPPED)
    why = await refused(handle, "steer", SteerRequest(kind=SteerKind.SKIP, task="1.3"))
    assert why == "task 1.3 has already ended: skipped"
    assert await steer(handle, SteerKind.RESUME) == "the run goes on"
    assert await refused(handle, "steer", SteerRequest(kind=SteerKind.RESUME)) == (
        "the run is not paused"
    )
    result = await final_result(handle)
    t = tasks(result)
    assert (t["1.1"].status, t["1.2"].status, t["1.3"].status) == (
        TaskStatus.MERGED,
        TaskStatus.MERGED,
        TaskStatus.SKIPPED,
    )
    # A refused request leaves no trace in the run's history; each taken one is recorded once.
    assert await accepted_updates(handle) == 3
    # The operator chose to skip 1.3: nothing failed, and the run completed.
    assert result.status is RunStatus.COMPLETED
    assert (await handle.describe()).status == WorkflowExecutionStatus.COMPLETED


@pytest.mark.parametrize("running", [Script(slow={"1.1": 1.5})], indirect=True)
async def test_decide_says_what_the_task_is_doing_and_refuses_unsigned(running: Harness) -> None:
    key = Ed25519PrivateKey.generate().private_bytes_raw()
    inp = plan_input(ONE, approval=Approval.ALWAYS)
    inp.approver = public_key(key)
    wid = f"plan-{uuid.uuid4().hex[:8]}"
    handle = await running.client.start_workflow(
        PlanWorkflow.run, inp, id=wid, task_queue=running.queue
    )
    await wait_phase(handle, f"{wid}/task-1.1", "agent")
    child = running.client.get_workflow_handle(f"{wid}/task-1.1")
    why = await refused(child, "decide", DecideRequest(approved=True, token=""))
    assert why == "task 1.1 is not waiting for approval: it is running the agent"
    waiting = await wait_phase(handle, f"{wid}/task-1.1", "awaiting approval")
    assert waiting.approval_commit is not None
    # What the person deciding looks at: the diffstat and the branch, not an empty list.
    assert waiting.branch == "b/1.1"
    unsigned = await refused(child, "decide", DecideRequest(approved=True, token="x"))
    assert unsigned.startswith("the decision is not signed by this run's operator key")
    token = sign_decision(key, True, wid, "1.1", waiting.approval_commit)
    reply = await child.execute_update(
        "decide", DecideRequest(approved=True, token=token), result_type=SteerReply
    )
    assert reply.message.endswith("the task goes on to merge")
    result = await final_result(handle)
    assert tasks(result)["1.1"].status is TaskStatus.MERGED


@pytest.mark.parametrize("running", [Script(agent_fails={"1.1"})], indirect=True)
async def test_a_failed_run_and_task_end_failed_carrying_their_results(running: Harness) -> None:
    handle = await running.start(plan_input(CHAIN))
    with pytest.raises(WorkflowFailureError) as info:
        await handle.result()
    cause = info.value.cause
    assert isinstance(cause, ApplicationError) and cause.type == RUN_FAILED
    assert cause.message.startswith("failed: 1 failed, 1 skipped (not done: 1.1)")
    assert (await handle.describe()).status == WorkflowExecutionStatus.FAILED
    result = await final_result(handle)  # what the starter reads, failure or not
    t = tasks(result)
    assert t["1.1"].status is TaskStatus.FAILED and t["1.2"].status is TaskStatus.SKIPPED
    assert t["1.2"].blocked_by == "1.1"
    child = running.client.get_workflow_handle(f"{handle.id}/task-1.1")
    assert (await child.describe()).status == WorkflowExecutionStatus.FAILED
    with pytest.raises(WorkflowFailureError) as child_info:
        await child.result()
    assert isinstance(child_info.value.cause, ApplicationError)
    assert child_info.value.cause.type == TASK_FAILED
    # The memo holds the end state, for `status` and `runs` with no worker at all.
    memo = await (await handle.describe()).memo_value("progress", type_hint=ProgressMemo)
    assert memo.status is RunStatus.FAILED
    assert {c.status: c.count for c in memo.counts} == {
        TaskStatus.FAILED: 1,
        TaskStatus.SKIPPED: 1,
    }
    assert [m.id for m in memo.tasks] == ["1.1", "1.2"]


@pytest.mark.parametrize(
    "running", [Script(verify_fails={"1.1"}, fix_no_change={"1.1"})], indirect=True
)
async def test_a_fix_round_that_changes_nothing_is_not_verified_again(running: Harness) -> None:
    result = await running.run(plan_input(CHAIN, max_fix_rounds=2))
    t = tasks(result)["1.1"]
    assert t.status is TaskStatus.FAILED
    # Two fix rounds ran; neither changed anything, so nothing was verified after them.
    assert running.fakes.agent_runs["1.1"] == 3
    assert running.fakes.verifies["1.1"] == 1
    assert "after 2 fix round(s), 2 of which changed nothing" in (t.error or ""), t.error
    # Each fix round was told what failed and how, not only that it did.
    fixes = [i.fix for i in running.fakes.agent_inputs if i.task.id == "1.1" and i.fix]
    assert len(fixes) == 2
    assert fixes[0].failed[0].command == "pytest -q"
    assert fixes[0].failed[0].output_tail == "FAILED test_1.1: assert 1 == 2"
    assert fixes[1].unchanged_rounds == 1


@pytest.mark.parametrize("running", [Script(on_target={"1.1"})], indirect=True)
async def test_a_change_already_on_the_target_is_its_own_status(running: Harness) -> None:
    result = await running.run(plan_input(CHAIN))
    t = tasks(result)
    assert t["1.1"].status is TaskStatus.ON_TARGET and t["1.1"].commit == "other-work"
    # It satisfies its dependants: the change is there.
    assert t["1.2"].status is TaskStatus.MERGED
    assert result.status is RunStatus.COMPLETED
