"""PlanWorkflow and TaskWorkflow on the time-skipping server, activities replaced by fakes."""

from __future__ import annotations

import asyncio
import contextlib

import pytest
from temporalio.api.enums.v1 import EventType
from temporalio.client import WorkflowExecutionStatus

from autonomous_pipeline.cli.results import final_result
from autonomous_pipeline.models.results import RunProgress, RunStatus, TaskStatus
from autonomous_pipeline.models.run import CancelRequest
from autonomous_pipeline.workflows.plan import PlanWorkflow
from autonomous_pipeline.workflows.task import TaskWorkflow
from tests.conftest import md
from tests.workflows.conftest import Harness, checked, plan_input, wide
from tests.workflows.fakes import Script

PLAN = md(
    """
    # Test plan
    ## Batch 1: first
    **Dependencies:** None
    ### Task 1.1: a
    **Verification:**
    - `true`
    ### Task 1.2: b
    ## Batch 2: second
    **Dependencies:** Batch 1
    ### Task 2.1: c
    ### Task 2.2: d
    **Depends on:** Task 2.1
    ## Batch 3: independent
    **Dependencies:** None
    ### Task 3.1: e
    """
)


def statuses(result) -> dict[str, TaskStatus]:
    return {t.id: t.status for t in result.tasks}


async def test_every_task_merged_in_dependency_order(running: Harness) -> None:
    result = await running.run(plan_input(PLAN))
    assert result.status is RunStatus.COMPLETED
    assert statuses(result) == dict.fromkeys(["1.1", "1.2", "2.1", "2.2", "3.1"], TaskStatus.MERGED)
    order = running.fakes.merged_order
    assert order.index("2.1") > max(order.index("1.1"), order.index("1.2"))
    assert order.index("2.2") > order.index("2.1")
    # Exactly once: one agent run per task, one cleanup per task.
    assert dict(running.fakes.agent_runs) == dict.fromkeys(["1.1", "1.2", "2.1", "2.2", "3.1"], 1)
    assert sorted(running.fakes.cleaned) == ["1.1", "1.2", "2.1", "2.2", "3.1"]
    assert result.target_commit and result.target_commit.startswith("m-")
    by_id = {t.id: t for t in result.tasks}
    assert by_id["1.1"].checks[0].command == "true" and by_id["1.1"].commit == "m-1.1"


@pytest.mark.parametrize("running", [Script(agent_fails={"1.2"})], indirect=True)
async def test_failure_skips_dependants_and_lets_the_rest_run(running: Harness) -> None:
    result = await running.run(plan_input(PLAN))
    s = statuses(result)
    assert s["1.2"] is TaskStatus.FAILED
    assert s["2.1"] is TaskStatus.SKIPPED and s["2.2"] is TaskStatus.SKIPPED
    assert s["1.1"] is TaskStatus.MERGED and s["3.1"] is TaskStatus.MERGED
    skipped = {t.id: t.error for t in result.tasks}
    assert skipped["2.1"] == "dependency 1.2 ended failed"
    assert skipped["2.2"] == "dependency 1.2 ended failed"  # 2.2 waits on batch 1 itself too
    assert result.status is RunStatus.FAILED
    assert "2.1" not in running.fakes.agent_runs
    assert "1.2" in running.fakes.cleaned


CHAIN = """
## Batch 1: one
### Task 1.1: a
## Batch 2: two
**Dependencies:** Batch 1
### Task 2.1: b
## Batch 3: three
**Dependencies:** Batch 2
### Task 3.1: c
"""


@pytest.mark.parametrize("running", [Script(agent_fails={"1.1"})], indirect=True)
async def test_a_failure_skips_a_chain_of_dependants_each_with_its_reason(
    running: Harness,
) -> None:
    # Nothing else runs when 1.1 fails: its dependants' dependants are skipped for the task
    # they wait on, not as "never satisfiable".
    result = await running.run(plan_input(CHAIN))
    errors = {t.id: t.error for t in result.tasks}
    assert errors["2.1"] == "dependency 1.1 ended failed"
    assert errors["3.1"] == "dependency 2.1 ended skipped"


@pytest.mark.parametrize(
    "running", [Script(no_op={"1.1"}, verify_fails={"3.1"}, conflict={"1.2"})], indirect=True
)
async def test_no_op_verify_failure_and_conflict(running: Harness) -> None:
    result = await running.run(
        plan_input(
            PLAN.replace("### Task 3.1: e", "### Task 3.1: e\n**Verification:**\n- `make check`")
        )
    )
    by_id = {t.id: t for t in result.tasks}
    assert by_id["1.1"].status is TaskStatus.NO_OP
    assert by_id["3.1"].status is TaskStatus.FAILED
    assert by_id["3.1"].error == "not resolved after 2 fix round(s): `make check` fails"
    assert (
        by_id["1.2"].status is TaskStatus.FAILED
        and by_id["1.2"].error == "merge conflict in shared.py"
    )
    assert ("merge_task", "1.1") not in running.fakes.calls  # nothing to merge


async def test_done_tasks_are_not_run(running: Harness) -> None:
    result = await running.run(plan_input(PLAN.replace("### Task 1.2: b", "### Task 1.2: b ✅")))
    assert statuses(result)["1.2"] is TaskStatus.DONE_BEFORE
    assert "1.2" not in running.fakes.agent_runs
    assert result.status is RunStatus.COMPLETED


async def test_recorded_results_of_an_earlier_run_are_not_redone(running: Harness) -> None:
    inp = plan_input(PLAN)
    inp.merged_before = ["1.1", "2.1"]
    result = await running.run(inp)
    assert statuses(result)["2.1"] is TaskStatus.DONE_BEFORE
    assert set(running.fakes.agent_runs) == {"1.2", "2.2", "3.1"}


@pytest.mark.parametrize("running", [Script(agent_seconds=0.3)], indirect=True)
async def test_max_concurrent_is_respected(running: Harness) -> None:
    many = "## Batch 1: wide\n" + "".join(f"### Task 1.{i}: t{i}\n" for i in range(1, 9))
    result = await running.run(plan_input(many, max_concurrent=3))
    assert result.status is RunStatus.COMPLETED
    assert running.fakes.max_running == 3


@pytest.mark.parametrize("running", [Script(agent_seconds=0.2, merge_seconds=1.0)], indirect=True)
async def test_a_merging_task_frees_its_slot_for_the_next_agent(running: Harness) -> None:
    three = "## Batch 1: wide\n" + "".join(f"### Task 1.{i}: t{i}\n" for i in range(1, 4))
    result = await running.run(plan_input(three, max_concurrent=1))
    assert result.status is RunStatus.COMPLETED
    calls = running.fakes.calls
    # 1.2's agent starts while 1.1 is still merging, and so on down the line.
    assert calls.index(("run_agent", "1.2")) < calls.index(("merged", "1.1"))
    assert calls.index(("run_agent", "1.3")) < calls.index(("merged", "1.2"))
    assert running.fakes.max_running == 1  # agents themselves still one at a time


@pytest.mark.parametrize("running", [Script(agent_seconds=0.5)], indirect=True)
async def test_the_next_task_gets_its_worktree_ready_while_the_slot_is_busy(
    running: Harness,
) -> None:
    result = await running.run(plan_input(wide(3), max_concurrent=1, prepare_ahead=1))
    assert result.status is RunStatus.COMPLETED
    calls = running.fakes.calls
    # 1.1 and 1.2 start together; the slot goes to 1.1, first in the plan, whichever worktree
    # is ready first.
    first, second = [t for name, t in calls if name == "run_agent"][:2]
    assert (first, second) == ("1.1", "1.2")
    # The other is claimed and prepared during that agent; its own agent waits for the slot.
    assert calls.index(("prepare_workspace", second)) < calls.index(("agent_ended", first))
    assert calls.index(("run_agent", second)) > calls.index(("agent_ended", first))
    # One ahead, no more: 1.3 starts when the first has left its slot.
    assert calls.index(("prepare_workspace", "1.3")) > calls.index(("agent_ended", first))
    assert running.fakes.max_running == 1


@pytest.mark.parametrize("running", [Script(agent_seconds=0.3)], indirect=True)
async def test_nothing_prepared_ahead_when_asked_so(running: Harness) -> None:
    result = await running.run(plan_input(wide(2), max_concurrent=1, prepare_ahead=0))
    assert result.status is RunStatus.COMPLETED
    calls = running.fakes.calls
    assert calls.index(("prepare_workspace", "1.2")) > calls.index(("agent_ended", "1.1"))


@pytest.mark.parametrize("running", [Script(agent_seconds=0.3)], indirect=True)
async def test_slots_hold_at_width_with_tasks_ahead(running: Harness) -> None:
    result = await running.run(plan_input(wide(9), max_concurrent=3, prepare_ahead=3))
    assert result.status is RunStatus.COMPLETED
    assert running.fakes.max_running == 3
    assert dict(running.fakes.agent_runs) == {f"1.{i}": 1 for i in range(1, 10)}


@pytest.mark.parametrize(
    "running", [Script(agent_seconds=0.3, prepare_seconds={"1.1": 1.0})], indirect=True
)
async def test_no_slot_idles_while_an_earlier_worktree_is_built(running: Harness) -> None:
    # Three slots, three tasks: the later ones need not wait for 1.1's slow worktree.
    result = await running.run(plan_input(wide(3), max_concurrent=3, prepare_ahead=0))
    assert result.status is RunStatus.COMPLETED
    calls = running.fakes.calls
    assert calls.index(("run_agent", "1.2")) < calls.index(("prepare_workspace", "1.1"))
    assert calls.index(("run_agent", "1.3")) < calls.index(("prepare_workspace", "1.1"))


@pytest.mark.parametrize(
    "running", [Script(agent_seconds=0.3, prepare_seconds={"1.2": 1.0})], indirect=True
)
async def test_a_task_ready_first_does_not_take_the_slot_of_an_earlier_one(
    running: Harness,
) -> None:
    # One slot free when 1.1's agent ends, two tasks ahead: 1.3 is ready first, but 1.2 comes
    # first in the plan, and gets it once its worktree is built.
    result = await running.run(plan_input(wide(3), max_concurrent=1, prepare_ahead=2))
    assert result.status is RunStatus.COMPLETED
    agents = [t for name, t in running.fakes.calls if name == "run_agent"]
    assert agents == ["1.1", "1.2", "1.3"]
    assert running.fakes.calls.index(("prepare_workspace", "1.3")) < running.fakes.calls.index(
        ("prepare_workspace", "1.2")
    )


@pytest.mark.parametrize(
    "running", [Script(agent_seconds=0.2, verify_seconds={"1.1": 1.0})], indirect=True
)
async def test_the_next_agent_starts_while_the_last_change_is_checked(running: Harness) -> None:
    result = await running.run(plan_input(checked(2), max_concurrent=1, prepare_ahead=1))
    assert result.status is RunStatus.COMPLETED
    calls = running.fakes.calls
    # The slot is the agent's: 1.1's checks do not keep 1.2's agent waiting.
    assert calls.index(("run_agent", "1.2")) < calls.index(("verified", "1.1"))
    assert running.fakes.max_running == 1


@pytest.mark.parametrize(
    "running", [Script(verify_seconds={"1.1": 0.6, "1.2": 0.6, "1.3": 0.6})], indirect=True
)
async def test_checks_bound_the_tasks_started_behind_them(running: Harness) -> None:
    result = await running.run(plan_input(checked(3), max_concurrent=1, prepare_ahead=0))
    assert result.status is RunStatus.COMPLETED
    calls = running.fakes.calls
    # 1.1 is being checked: 1.2 starts and runs its agent meanwhile ...
    assert calls.index(("run_agent", "1.2")) < calls.index(("verified", "1.1"))
    # ... but running tasks stay under --max-concurrent + --prepare-ahead + --max-concurrent
    # (here 2, merging included): 1.3 starts only when 1.1 has left, however free the slot.
    assert calls.index(("claim_worker", "1.3")) > calls.index(("verified", "1.1"))


@pytest.mark.parametrize("checkouts", [None, 3])
@pytest.mark.parametrize("running", [Script(merge_seconds=1.0)], indirect=True)
async def test_max_checkouts_bounds_the_worktrees_held_at_once(
    running: Harness, checkouts: int | None
) -> None:
    # Agents end fast and merges are slow: changes waiting to merge hold their worktrees while
    # new tasks start, up to 2 x --max-concurrent + --prepare-ahead (5), or --max-checkouts.
    opts = {"max_concurrent": 2, "prepare_ahead": 1, "max_checkouts": checkouts}
    result = await running.run(plan_input(checked(8), **opts))
    assert statuses(result) == {f"1.{i}": TaskStatus.MERGED for i in range(1, 9)}
    held = running.fakes.max_checkouts
    assert (held == checkouts) if checkouts else (3 < held <= 5), held


@pytest.mark.parametrize(
    "running",
    [Script(verify_fails_times={"1.1": 1, "1.2": 1}, verify_seconds={"1.1": 0.3, "1.2": 0.3})],
    indirect=True,
)
async def test_a_fix_round_waits_for_a_slot_like_any_agent(running: Harness) -> None:
    result = await running.run(plan_input(checked(2), max_concurrent=1, prepare_ahead=1))
    assert statuses(result) == dict.fromkeys(["1.1", "1.2"], TaskStatus.MERGED)
    # Each task's checks fail once. While one is checked the other's agent has the slot, so
    # their agents take turns (x, y, x, y), one at a time; a slot held until the merge would
    # give x, x, y, y. Which of the two goes first depends on whose worktree is ready first.
    agents = [tid for name, tid in running.fakes.calls if name == "run_agent"]
    assert len(agents) == 4 and agents[0] != agents[1] and agents[2:] == agents[:2], agents
    assert running.fakes.max_running == 1


@pytest.mark.parametrize("running", [Script(rate_limited={"1.1": 1})], indirect=True)
async def test_a_task_waiting_out_a_usage_limit_keeps_its_slot(running: Harness) -> None:
    result = await running.run(plan_input(wide(2), max_concurrent=1, prepare_ahead=1))
    assert statuses(result) == dict.fromkeys(["1.1", "1.2"], TaskStatus.MERGED)
    # Another agent would hit the same account's limit: nothing runs between 1.1's two runs.
    agents = [tid for name, tid in running.fakes.calls if name == "run_agent"]
    assert agents in (["1.1", "1.1", "1.2"], ["1.2", "1.1", "1.1"]), agents


async def _phase(running: Harness, handle, tid: str, phase: str) -> None:
    child = running.client.get_workflow_handle(f"{handle.id}/task-{tid}")
    for _ in range(400):
        with contextlib.suppress(Exception):
            if (await child.query(TaskWorkflow.status)).phase == phase:
                return
        await asyncio.sleep(0.02)
    raise TimeoutError(f"{tid} never reached phase {phase}")


@pytest.mark.parametrize(
    "running", [Script(verify_fails_times={"1.1": 1}, verify_seconds={"1.1": 0.5})], indirect=True
)
async def test_a_paused_run_lets_a_checked_task_finish_its_fix_round(running: Harness) -> None:
    # 1.2 waits for 1.1's merge, so no agent of its own can be under way when the run pauses.
    plan = checked(2).replace("### Task 1.2: t2\n", "### Task 1.2: t2\n**Depends on:** Task 1.1\n")
    handle = await running.start(plan_input(plan, max_concurrent=1, prepare_ahead=0))
    await _phase(running, handle, "1.1", "checks and merge")
    await handle.signal("pause")
    # 1.1's agent has run: it is not held back, and its fix round gets the slot while paused.
    for _ in range(300):
        p = await handle.query(PlanWorkflow.status_query)
        if [t.status for t in p.tasks] == [TaskStatus.MERGED, TaskStatus.PENDING]:
            break
        await asyncio.sleep(0.02)
    assert [t.status for t in p.tasks] == [TaskStatus.MERGED, TaskStatus.PENDING], p.tasks
    assert running.fakes.agent_runs["1.1"] == 2 and "1.2" not in running.fakes.agent_runs
    await handle.signal("resume")
    assert statuses(await final_result(handle))["1.2"] is TaskStatus.MERGED


async def _waiting_for_slot(running: Harness, handle, tid: str) -> None:
    child = running.client.get_workflow_handle(f"{handle.id}/task-{tid}")
    for _ in range(400):
        with contextlib.suppress(Exception):
            if (await child.query(TaskWorkflow.status)).phase == "slot":
                return
        await asyncio.sleep(0.02)
    raise TimeoutError(f"{tid} never waited for a slot")


async def test_cancel_ends_a_task_waiting_for_its_slot_without_its_agent(
    running: Harness,
) -> None:
    running.fakes.script.slow["1.1"] = 1.0
    handle = await running.start(plan_input(wide(2), max_concurrent=1, prepare_ahead=1))
    await _waiting_for_slot(running, handle, "1.2")
    await handle.signal("cancel", CancelRequest())
    result = await final_result(handle)
    by_id = {t.id: t for t in result.tasks}
    assert by_id["1.1"].status is TaskStatus.MERGED  # it was working: allowed to finish
    assert by_id["1.2"].status is TaskStatus.CANCELLED
    assert by_id["1.2"].error == "the run was cancelled before its agent started"
    assert "1.2" not in running.fakes.agent_runs
    assert "1.2" in running.fakes.cleaned  # its prepared worktree is given back


async def test_pause_sends_a_task_prepared_ahead_back_to_pending(running: Harness) -> None:
    running.fakes.script.slow["1.1"] = 0.5
    handle = await running.start(plan_input(wide(2), max_concurrent=1, prepare_ahead=1))
    await _waiting_for_slot(running, handle, "1.2")
    await handle.signal("pause")
    # Paused, nothing runs: 1.1 finishes, 1.2 (ready, its agent not started) is back in line.
    for _ in range(300):
        p = await handle.query(PlanWorkflow.status_query)
        if [t.status for t in p.tasks] == [TaskStatus.MERGED, TaskStatus.PENDING]:
            break
        await asyncio.sleep(0.02)
    assert [t.status for t in p.tasks] == [TaskStatus.MERGED, TaskStatus.PENDING], p.tasks
    assert "1.2" not in running.fakes.agent_runs and "1.2" in running.fakes.cleaned
    await handle.signal("resume")
    result = await final_result(handle)
    assert statuses(result)["1.2"] is TaskStatus.MERGED
    assert running.fakes.agent_runs["1.2"] == 1


@pytest.mark.parametrize("running", [Script(agent_fails_once={"1.2"})], indirect=True)
async def test_retry_signal_runs_a_failed_task_again_and_releases_its_dependants(
    running: Harness,
) -> None:
    plan = PLAN.replace("### Task 3.1: e", "### Task 3.1: e\n**Depends on:** Task 1.1")
    # Keep the run open while we look: 3.1 waits on a slow 1.1.
    running.fakes.script.slow["1.1"] = 1.5
    handle = await running.start(plan_input(plan))
    for _ in range(200):
        p = await handle.query("status", result_type=RunProgress)
        if {t.id: t.status for t in p.tasks}["1.2"] is TaskStatus.FAILED:
            break
        await asyncio.sleep(0.02)
    await handle.signal("retry", "1.2")
    result = await final_result(handle)
    s = statuses(result)
    assert s["1.2"] is TaskStatus.MERGED and s["2.1"] is TaskStatus.MERGED
    assert running.fakes.agent_runs["1.2"] == 2
    assert {t.id: t.attempts for t in result.tasks}["1.2"] == 2


async def test_pause_holds_new_tasks_until_resume(running: Harness) -> None:
    running.fakes.script.slow["1.1"] = 0.5
    handle = await running.start(plan_input(PLAN, max_concurrent=1))
    await handle.signal("pause")
    # The run decides what to start in the workflow task that takes a task's end: once the task
    # that was running has ended, its status is the decision, with no time to wait out.
    for _ in range(500):
        p = await handle.query(PlanWorkflow.status_query)
        if not [t for t in p.tasks if t.status is TaskStatus.RUNNING]:
            break
        await asyncio.sleep(0.02)
    assert p.paused
    assert [t.status for t in p.tasks].count(TaskStatus.MERGED) <= 1
    assert {t.status for t in p.tasks} <= {TaskStatus.MERGED, TaskStatus.PENDING}, p.tasks
    started = {tid for name, tid in running.fakes.calls if name == "run_agent"}
    assert len(started) <= 1
    await handle.signal("resume")
    result = await final_result(handle)
    assert result.status is RunStatus.COMPLETED


async def test_graceful_cancel_finishes_running_tasks_and_cancels_the_rest(
    running: Harness,
) -> None:
    running.fakes.script.slow["1.1"] = 3.0
    handle = await running.start(plan_input(PLAN, max_concurrent=1))
    for _ in range(200):  # 1.1's agent runs: cancel while it works, whatever the machine's load
        if ("run_agent", "1.1") in running.fakes.calls:
            break
        await asyncio.sleep(0.02)
    await handle.signal("cancel", CancelRequest())
    result = await final_result(handle)
    s = statuses(result)
    assert result.status is RunStatus.CANCELLED
    assert s["1.1"] is TaskStatus.MERGED  # it was running: allowed to finish
    assert all(s[t] is TaskStatus.CANCELLED for t in ("1.2", "2.1", "2.2", "3.1")), s


async def test_cancel_now_cancels_running_agents(running: Harness) -> None:
    running.fakes.script.slow["1.1"] = 30
    handle = await running.start(plan_input(PLAN, max_concurrent=1))
    for _ in range(200):
        if ("run_agent", "1.1") in running.fakes.calls:
            break
        await asyncio.sleep(0.02)
    await handle.signal("cancel", CancelRequest(now=True))
    result = await final_result(handle)
    assert statuses(result)["1.1"] is TaskStatus.CANCELLED
    assert running.fakes.cancelled == ["1.1"]
    assert "1.1" in running.fakes.cleaned  # cleanup ran although the task was cancelled


@pytest.mark.parametrize("running", [Script(cleanup_seconds={"1.1": 1.0})], indirect=True)
async def test_cancel_now_waits_for_every_task_to_clean_up(running: Harness) -> None:
    # Two tasks end at different moments: the first one's end must not cut the wait for the
    # other short (a second cancel of a task already cancelling did: the run tried to close
    # while that task was still cleaning up).
    running.fakes.script.slow["1.1"] = 30
    handle = await running.start(plan_input(PLAN, max_concurrent=1, prepare_ahead=1))
    await _waiting_for_slot(running, handle, "1.2")
    await handle.signal("cancel", CancelRequest(now=True))
    result = await final_result(handle)
    assert statuses(result)["1.1"] is TaskStatus.CANCELLED
    assert {"1.1", "1.2"} <= set(running.fakes.cleaned)  # both cleanups ran to the end
    child = running.client.get_workflow_handle(f"{handle.id}/task-1.1")
    assert (await child.describe()).status == WorkflowExecutionStatus.FAILED  # ended, not killed
    # The run never tried to close while a task was open: each of its workflow tasks completed
    # (a close the server refuses leaves one started and never completed).
    kinds = [e.event_type async for e in handle.fetch_history_events()]
    started = kinds.count(EventType.EVENT_TYPE_WORKFLOW_TASK_STARTED)
    assert started == kinds.count(EventType.EVENT_TYPE_WORKFLOW_TASK_COMPLETED)


async def test_skip_signal(running: Harness) -> None:
    running.fakes.script.slow["1.1"] = 0.5
    handle = await running.start(plan_input(PLAN, max_concurrent=1))
    await handle.signal("skip", "2.1")
    result = await final_result(handle)
    s = statuses(result)
    assert s["2.1"] is TaskStatus.SKIPPED and s["2.2"] is TaskStatus.SKIPPED
    assert {t.id: t.error for t in result.tasks}["2.1"] == "skipped by request"


@pytest.mark.parametrize("running", [Script(prepare_run_fails=True)], indirect=True)
async def test_failed_setup_ends_the_run_with_every_task_skipped(running: Harness) -> None:
    result = await running.run(plan_input(PLAN))
    assert result.status is RunStatus.FAILED
    assert all(t.status is TaskStatus.SKIPPED for t in result.tasks)
    assert "repository unreachable" in result.message


@pytest.mark.parametrize("running", [Script(lost_queue_claims={"1.1": 1})], indirect=True)
async def test_task_moves_to_another_worker_when_its_worker_is_gone(running: Harness) -> None:
    # The test server does not skip time for an activity nobody polls: keep the timeout short.
    result = await running.run(plan_input(PLAN, worker_lost_timeout_s=1))
    assert statuses(result)["1.1"] is TaskStatus.MERGED
    assert running.fakes.calls.count(("claim_worker", "1.1")) == 2
    assert running.fakes.agent_runs["1.1"] == 1  # nothing ran on the vanished worker


@pytest.mark.parametrize("running", [Script(lost_queue_claims={"1.1": 9})], indirect=True)
async def test_a_task_whose_workers_keep_vanishing_fails_with_the_reason(running: Harness) -> None:
    result = await running.run(plan_input(PLAN, worker_lost_timeout_s=1))
    by_id = {t.id: t for t in result.tasks}
    assert by_id["1.1"].status is TaskStatus.FAILED
    assert by_id["1.1"].error == "agent: the task's worker was lost 3 times"
    assert by_id["2.1"].status is TaskStatus.SKIPPED
