"""An agent's slot goes back as its agent exits (runs since "slot-at-exit"): the next agent starts
while the step still collects the change, and the run never runs more agents than its slots."""

from __future__ import annotations

import asyncio

import pytest
from temporalio import workflow
from temporalio.testing import WorkflowEnvironment
from temporalio.worker import UnsandboxedWorkflowRunner

from autonomous_pipeline.cli.results import final_result
from autonomous_pipeline.models.activity_io import AGENT_EXITED, SlotGrant
from autonomous_pipeline.models.results import RunStatus, TaskStatus
from tests.workflows.conftest import Harness, checked, plan_input, serving, wide
from tests.workflows.fakes import Script


def grants(running: Harness, tid: str) -> list[int | None]:
    return [
        i.slot.grant if i.slot else None for i in running.fakes.agent_inputs if i.task.id == tid
    ]


@pytest.mark.parametrize("running", [Script(agent_seconds=0.3, collect_seconds=1.0)], indirect=True)
async def test_the_next_agent_starts_while_the_change_is_collected(running: Harness) -> None:
    result = await running.run(plan_input(wide(3), max_concurrent=1, prepare_ahead=1))
    assert result.status is RunStatus.COMPLETED
    calls = running.fakes.calls
    assert calls.index(("run_agent", "1.2")) < calls.index(("collected", "1.1"))
    assert calls.index(("run_agent", "1.3")) < calls.index(("collected", "1.2"))
    assert running.fakes.max_running == 1  # agents themselves one at a time
    assert [grants(running, t) for t in ("1.1", "1.2", "1.3")] == [[1], [1], [1]]


@pytest.mark.parametrize("running", [Script(agent_seconds=0.3, collect_seconds=0.5)], indirect=True)
async def test_with_a_run_budget_the_slot_waits_for_what_the_agent_spent(
    running: Harness,
) -> None:
    # The run checks its budget with what an agent spent before the next starts: that is known
    # when the step ends.
    inp = plan_input(wide(2), max_concurrent=1, prepare_ahead=1, budget_usd=100.0)
    result = await running.run(inp)
    assert result.status is RunStatus.COMPLETED
    calls = running.fakes.calls
    assert calls.index(("run_agent", "1.2")) > calls.index(("collected", "1.1"))
    assert grants(running, "1.1") == [None]


@pytest.mark.parametrize(
    "running",
    [Script(agent_seconds=0.3, collect_seconds=0.5, verify_fails_times={"1.1": 1})],
    indirect=True,
)
async def test_a_fix_round_gives_back_the_slot_of_its_own_go(running: Harness) -> None:
    result = await running.run(plan_input(checked(2), max_concurrent=1, prepare_ahead=1))
    assert result.status is RunStatus.COMPLETED
    assert [t.status for t in result.tasks] == [TaskStatus.MERGED] * 2
    assert grants(running, "1.1") == [1, 2]
    assert running.fakes.max_running == 1


@pytest.mark.parametrize("running", [Script(slow={"1.1": 3.0})], indirect=True)
async def test_a_slot_named_wrongly_frees_nothing(running: Harness) -> None:
    handle = await running.start(plan_input(wide(2), max_concurrent=1, prepare_ahead=1))
    for _ in range(200):
        if ("run_agent", "1.1") in running.fakes.calls:
            break
        await asyncio.sleep(0.05)
    # A grant the run never gave, one it has not given yet, a task that holds no slot, and the
    # right grant from another try of the task.
    run = (await handle.describe()).run_id
    this_try = f"{handle.id}/task-1.1"
    for task_id, grant, try_id in (
        ("1.1", 0, this_try),
        ("1.1", 2, this_try),
        ("1.2", 1, f"{handle.id}/task-1.2"),
        ("9.9", 1, f"{handle.id}/task-9.9"),
        ("1.1", 1, f"{this_try}/try-2"),
    ):
        slot = SlotGrant(
            workflow_id=handle.id, run_id=run, task_workflow_id=try_id, task_id=task_id, grant=grant
        )
        await handle.signal(AGENT_EXITED, slot)
    result = await final_result(handle)
    assert result.status is RunStatus.COMPLETED
    calls = running.fakes.calls
    assert calls.index(("run_agent", "1.2")) > calls.index(("agent_ended", "1.1"))
    assert running.fakes.max_running == 1


@pytest.mark.parametrize(
    "running",
    [Script(agent_seconds=0.3, slow={"1.2": 3.0}, collect_seconds=0.3, collect_fails_once={"1.1"})],
    indirect=True,
)
async def test_a_step_retried_after_its_agent_exited_asks_for_a_slot_again(
    running: Harness,
) -> None:
    # 1.1's agent exits and gives its slot back (1.2's agent takes it), then the change cannot be
    # collected: the retried step must not run 1.1's agent beside 1.2's. It asks the run for a
    # slot and runs again holding it to the step's end.
    result = await running.run(plan_input(wide(2), max_concurrent=1, prepare_ahead=1))
    assert result.status is RunStatus.COMPLETED
    assert [t.status for t in result.tasks] == [TaskStatus.MERGED] * 2
    assert running.fakes.max_running == 1
    assert running.fakes.agent_runs["1.1"] == 2
    assert grants(running, "1.1") == [1, None]  # the second run holds its slot to the end
    first = result.tasks[0]
    assert first.agent_runs == 2 and first.attempts == 2, first
    assert first.cost_usd == 0.5 and first.tokens_in == 2000, first  # both runs' spending


@pytest.mark.parametrize(
    "running", [Script(agent_seconds=0.3, agent_crashes_once={"1.1"})], indirect=True
)
async def test_a_step_retried_mid_agent_keeps_its_slot(running: Harness) -> None:
    # The step failed while its agent ran: the slot never went back, and the step is retried in
    # place, in that slot (1.2, ready and waiting, does not jump the queue; no workflow task of
    # the run or the task is needed, which after a worker's death could wait on its cache).
    result = await running.run(plan_input(wide(2), max_concurrent=1, prepare_ahead=1))
    assert result.status is RunStatus.COMPLETED
    calls = [c for c in running.fakes.calls if c[0] == "run_agent"]
    assert calls == [("run_agent", "1.1"), ("run_agent", "1.1"), ("run_agent", "1.2")]
    assert running.fakes.agent_runs["1.1"] == 2 and running.fakes.max_running == 1
    assert grants(running, "1.1") == [1]  # the retry gives the same slot back as it exits


async def test_a_run_from_before_slot_at_exit_never_hears_of_it(
    env: WorkflowEnvironment, monkeypatch: pytest.MonkeyPatch
) -> None:
    # A run whose code predates "slot-at-exit" has no answer for a task that gives its slot back
    # early and then asks for it again: its tasks, new code or not, hold their slots to the end.
    real = workflow.patched

    def patched(patch_id: str) -> bool:
        plan = workflow.info().workflow_type == "PlanWorkflow"
        return not (plan and patch_id == "slot-at-exit") and real(patch_id)

    monkeypatch.setattr(workflow, "patched", patched)
    script = Script(agent_seconds=0.3, collect_seconds=0.3, collect_fails_once={"1.1"})
    # Unsandboxed, so that the workflows see the patch above.
    async with serving(env, script, workflow_runner=UnsandboxedWorkflowRunner()) as harness:
        handle = await harness.start(plan_input(wide(2), max_concurrent=1, prepare_ahead=1))
        result = await asyncio.wait_for(final_result(handle), 30)
    assert [t.status for t in result.tasks] == [TaskStatus.MERGED] * 2
    assert all(i.slot is None for i in harness.fakes.agent_inputs)
    assert harness.fakes.max_running == 1
