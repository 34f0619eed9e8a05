"""Review, fix rounds, usage limits, approval, budget and cost: TaskWorkflow with fake activities."""

from __future__ import annotations

import asyncio
import uuid

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from autonomous_pipeline.cli.approval import public_key, sign_decision
from autonomous_pipeline.cli.results import final_result
from autonomous_pipeline.models.results import RunProgress, RunStatus, TaskResult, TaskStatus
from autonomous_pipeline.models.run import AgentConfig, Approval, ClaudeOptions, ReviewerConfig
from autonomous_pipeline.workflows.plan import PlanWorkflow
from tests.conftest import md
from tests.workflows.conftest import Harness, plan_input
from tests.workflows.fakes import Script

PLAN = md(
    """
    # Review plan
    ## Batch 1: one
    **Dependencies:** None
    ### Task 1.1: a
    **Verification:**
    - `pytest -q`
    ### Task 1.2: b
    """
)
CLAUDE_REVIEW = ReviewerConfig(backend="claude")


def tasks(result) -> dict[str, TaskResult]:
    return {t.id: t for t in result.tasks}


@pytest.mark.parametrize("running", [Script(reject_reviews={"1.1": 1})], indirect=True)
async def test_findings_trigger_a_fix_round_and_a_second_review(running: Harness) -> None:
    result = await running.run(plan_input(PLAN, reviewer=CLAUDE_REVIEW))
    t = tasks(result)["1.1"]
    assert t.status is TaskStatus.MERGED
    assert running.fakes.reviews["1.1"] == 2 and t.review_rounds == 2
    assert t.agent_runs == 2 and t.verdict is not None and t.verdict.approved
    fix = [i for i in running.fakes.agent_inputs if i.task.id == "1.1"][1]
    assert fix.fix is not None and fix.fix.findings[0].message == "missing edge case"
    assert fix.start_commit == "c-1.1-1"  # the fix builds on the task's commit
    first = next(i for i in running.fakes.agent_inputs if i.task.id == "1.1")
    assert fix.resume and not first.resume and fix.session_id == first.session_id
    assert ("merge_task", "1.1") in running.fakes.calls
    merged_from = [c for c in running.fakes.calls if c == ("verify_task", "1.1")]
    assert len(merged_from) == 2  # verified again after the fix


@pytest.mark.parametrize("running", [Script(reject_reviews={"1.1": 9})], indirect=True)
async def test_out_of_fix_rounds_fails_with_the_last_findings(running: Harness) -> None:
    result = await running.run(plan_input(PLAN, reviewer=CLAUDE_REVIEW, max_fix_rounds=2))
    t = tasks(result)["1.1"]
    assert t.status is TaskStatus.FAILED
    assert t.error == "not resolved after 2 fix round(s): [major] a.py: missing edge case"
    assert running.fakes.reviews["1.1"] == 3 and t.agent_runs == 3
    assert ("merge_task", "1.1") not in running.fakes.calls


@pytest.mark.parametrize("running", [Script(verify_fails_times={"1.1": 1})], indirect=True)
async def test_failing_verification_gets_a_fix_round(running: Harness) -> None:
    result = await running.run(plan_input(PLAN))
    assert tasks(result)["1.1"].status is TaskStatus.MERGED
    fix = [i for i in running.fakes.agent_inputs if i.task.id == "1.1"][1].fix
    assert fix is not None and fix.failing_checks == ["pytest -q"]


@pytest.mark.parametrize("running", [Script(conflict_once={"1.2"})], indirect=True)
async def test_merge_conflict_gets_one_fix_round_on_top_of_the_tip(running: Harness) -> None:
    result = await running.run(plan_input(PLAN))
    t = tasks(result)["1.2"]
    assert t.status is TaskStatus.MERGED and t.base_commit == "tip-1.2"
    fix = [i for i in running.fakes.agent_inputs if i.task.id == "1.2"][1]
    assert (
        fix.fix is not None and fix.fix.conflicts == ["shared.py"] and fix.start_commit == "tip-1.2"
    )


@pytest.mark.parametrize(
    "running", [Script(rate_limited={"1.1": 2}, overloaded={"1.2": 1})], indirect=True
)
async def test_usage_limits_wait_on_durable_timers_then_resume(running: Harness, env) -> None:
    before = await env.get_current_time()
    result = await running.run(plan_input(PLAN))
    after = await env.get_current_time()
    t = tasks(result)
    assert t["1.1"].status is TaskStatus.MERGED and t["1.2"].status is TaskStatus.MERGED
    assert t["1.1"].agent_runs == 3 and t["1.2"].agent_runs == 2
    # Two waits until the reported reset (an hour each): time skipped, not slept.
    assert (after - before).total_seconds() >= 2 * 3600
    runs = [i for i in running.fakes.agent_inputs if i.task.id == "1.1"]
    assert [i.resume for i in runs] == [False, True, True]
    assert len({i.session_id for i in runs}) == 1


async def test_costs_are_summed_exactly(running: Harness) -> None:
    running.fakes.script.agent_cost = 0.1
    result = await running.run(plan_input(PLAN, reviewer=CLAUDE_REVIEW))
    t = tasks(result)
    # Exactly: a plain float sum would drift (0.1 + 0.05 is 0.15000000000000002).
    assert 0.1 + 0.05 != 0.15
    assert t["1.1"].cost_usd == 0.15 and t["1.1"].tokens_in == 1000
    assert result.total_cost_usd == 0.3


@pytest.mark.parametrize("running", [Script(auth_fails={"1.1"})], indirect=True)
async def test_auth_failure_is_not_retried(running: Harness) -> None:
    result = await running.run(plan_input(PLAN))
    t = tasks(result)["1.1"]
    assert t.status is TaskStatus.FAILED and "AgentAuthError" in (t.error or "")
    assert running.fakes.agent_runs["1.1"] == 1


async def _wait_phase(handle, tid: str, prefix: str, client) -> None:
    for _ in range(300):
        child = client.get_workflow_handle(f"{handle.id}/task-{tid}")
        try:
            res = await child.query("status", result_type=TaskResult)
        except Exception:
            res = None
        if res is not None and res.phase.startswith(prefix):
            return
        await asyncio.sleep(0.05)
    raise TimeoutError(prefix)


async def test_approval_always_waits_for_the_signal(running: Harness) -> None:
    handle = await running.start(plan_input(PLAN, approval=Approval.ALWAYS))
    await _wait_phase(handle, "1.1", "awaiting approval", running.client)
    await _wait_phase(handle, "1.2", "awaiting approval", running.client)
    assert ("merge_task", "1.1") not in running.fakes.calls
    await handle.signal("approve", "1.1")
    await handle.signal("reject", "1.2")
    result = await final_result(handle)
    t = tasks(result)
    assert t["1.1"].status is TaskStatus.MERGED
    assert t["1.2"].status is TaskStatus.FAILED and t["1.2"].error == "rejected"


@pytest.mark.parametrize("running", [Script(large_diff={"1.2"})], indirect=True)
async def test_approval_large_only_stops_large_changes(running: Harness) -> None:
    handle = await running.start(plan_input(PLAN, approval=Approval.LARGE))
    await _wait_phase(
        handle, "1.2", "awaiting approval: 40 files, 500 deleted lines (large)", running.client
    )
    # 1.1 is small: it merges without anyone's approval while 1.2 waits.
    for _ in range(300):
        progress = await handle.query("status", result_type=RunProgress)
        if {t.id: t.status for t in progress.tasks}["1.1"] is TaskStatus.MERGED:
            break
        await asyncio.sleep(0.05)
    assert {t.id: t.status for t in progress.tasks}["1.2"] is TaskStatus.RUNNING
    await handle.signal("approve", "1.2")
    assert (await final_result(handle)).status is RunStatus.COMPLETED


@pytest.mark.parametrize(
    "running", [Script(unasked_deletions={"1.1": 11, "1.2": 10})], indirect=True
)
async def test_deleting_many_unnamed_files_waits_for_approval_even_without_approval(
    running: Harness,
) -> None:
    handle = await running.start(plan_input(PLAN, approval=Approval.NEVER))
    await _wait_phase(
        handle, "1.1", "awaiting approval: deletes 11 files the task does not name", running.client
    )
    # 1.2 deletes 10, the threshold itself: it merges unattended.
    for _ in range(300):
        progress = await handle.query("status", result_type=RunProgress)
        if {t.id: t.status for t in progress.tasks}["1.2"] is TaskStatus.MERGED:
            break
        await asyncio.sleep(0.05)
    assert {t.id: t.status for t in progress.tasks}["1.2"] is TaskStatus.MERGED
    assert ("merge_task", "1.1") not in running.fakes.calls
    await handle.signal("reject", "1.1")
    t = tasks(await final_result(handle))
    assert t["1.1"].status is TaskStatus.FAILED and t["1.1"].error == "rejected"


async def test_run_budget_stops_new_tasks_and_says_so(running: Harness) -> None:
    running.fakes.script.agent_cost = 1.0
    plan = "## Batch 1: b\n" + "".join(f"### Task 1.{i}: t\n" for i in range(1, 6))
    result = await running.run(plan_input(plan, budget_usd=1.5, max_concurrent=1))
    statuses = [t.status for t in result.tasks]
    assert statuses[:2] == [TaskStatus.MERGED, TaskStatus.MERGED]
    assert statuses[2:] == [TaskStatus.SKIPPED] * 3
    assert "budget of $1.5 is spent" in result.message and result.status is RunStatus.FAILED
    assert result.total_cost_usd == pytest.approx(2.0)


@pytest.mark.parametrize(
    "running", [Script(reject_reviews={"1.1": 9}, agent_cost=1.0)], indirect=True
)
async def test_task_budget_spans_fix_rounds(running: Harness) -> None:
    agent = AgentConfig(backend="claude", claude=ClaudeOptions(max_budget_usd=1.5))
    result = await running.run(
        plan_input(PLAN, agent=agent, reviewer=CLAUDE_REVIEW, max_fix_rounds=5)
    )
    t = tasks(result)["1.1"]
    assert t.status is TaskStatus.FAILED and t.error is not None and t.error.startswith("budget:")
    runs = [i for i in running.fakes.agent_inputs if i.task.id == "1.1"]
    # Each run is given what is left of the task's budget; none starts once it is spent.
    assert [i.agent.claude.max_budget_usd for i in runs] == [1.5, 0.45]


async def test_a_decision_counts_only_when_the_operator_signed_it_for_that_commit(
    running: Harness,
) -> None:
    # Attack 2 at the control plane itself: whoever reaches it (an agent that got out, a script)
    # sends approve unsigned, signed with another key, or with a signature it saw used before.
    key, other = Ed25519PrivateKey.generate(), Ed25519PrivateKey.generate()
    raw = key.private_bytes_raw()
    inp = plan_input(PLAN, approval=Approval.ALWAYS)
    wid = f"plan-{uuid.uuid4().hex[:8]}"
    inp.approver = public_key(raw)
    handle = await running.client.start_workflow(
        PlanWorkflow.run, inp, id=wid, task_queue=running.queue
    )
    await _wait_phase(handle, "1.1", "awaiting approval", running.client)
    await _wait_phase(handle, "1.2", "awaiting approval", running.client)
    child = running.client.get_workflow_handle(f"{wid}/task-1.1")
    waiting = await child.query("status", result_type=TaskResult)
    assert waiting is not None and waiting.approval_commit is not None
    commit = waiting.approval_commit
    await handle.signal("approve", args=["1.1"])
    await handle.signal("approve", args=["1.1", sign_decision(raw, True, wid, "1.2", commit)])
    await handle.signal("approve", args=["1.1", sign_decision(raw, True, wid, "1.1", "f" * 40)])
    await handle.signal("approve", args=["1.1", sign_decision(raw, False, wid, "1.1", commit)])
    forged = other.private_bytes_raw()
    await handle.signal("approve", args=["1.1", sign_decision(forged, True, wid, "1.1", commit)])
    await child.signal("approve")  # straight to the task, past the run
    other_commit = (await running.client.get_workflow_handle(f"{wid}/task-1.2").query(
        "status", result_type=TaskResult
    )).approval_commit  # fmt: skip
    assert other_commit is not None
    await handle.signal("reject", args=["1.2", sign_decision(raw, False, wid, "1.2", other_commit)])
    for _ in range(300):
        progress = await handle.query("status", result_type=RunProgress)
        if {t.id: t.status for t in progress.tasks}["1.2"] is TaskStatus.FAILED:
            break
        await asyncio.sleep(0.05)
    for _ in range(20):  # whatever reached 1.1 by now was ignored: it still waits
        status = await child.query("status", result_type=TaskResult)
        assert status is not None and status.phase.startswith("awaiting approval")
        await asyncio.sleep(0.05)
    assert ("merge_task", "1.1") not in running.fakes.calls
    await handle.signal("approve", args=["1.1", sign_decision(raw, True, wid, "1.1", commit)])
    t = tasks(await final_result(handle))
    assert t["1.1"].status is TaskStatus.MERGED
    assert t["1.2"].status is TaskStatus.FAILED and t["1.2"].error == "rejected"
