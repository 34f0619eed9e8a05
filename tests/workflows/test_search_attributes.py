"""The Pipeline* search attributes a searchable run writes on its workflows, as they change.

On a dev server (the time-skipping one has no search attributes), registered as the starter
registers them on its own server."""

from __future__ import annotations

import asyncio

import pytest
from temporalio.client import WorkflowHandle
from temporalio.testing import WorkflowEnvironment

from autonomous_pipeline.cli.results import final_result
from autonomous_pipeline.cli.search import ensure_searchable
from autonomous_pipeline.models.results import RunStatus, TaskStatus
from autonomous_pipeline.models.run import Approval
from tests.conftest import md
from tests.workflows.conftest import plan_input, serving
from tests.workflows.fakes import Script

PLAN = md(
    """
    # Searched
    ## Batch 1: one
    ### Task 1.1: a
    ### Task 1.2: b
    """
)


async def attributes(handle: WorkflowHandle) -> dict[str, object]:
    found = (await handle.describe()).typed_search_attributes
    return {p.key.name: p.value for p in found if p.key.name.startswith("Pipeline")}


async def test_a_server_without_the_attributes_gets_them_or_the_run_is_not_searchable(
    dev_env: WorkflowEnvironment, capsys: pytest.CaptureFixture[str]
) -> None:
    # A cluster's operator registers them: the run goes on unsearchable and says how.
    assert not await ensure_searchable(dev_env.client, embedded=False)
    said = capsys.readouterr().err
    assert "temporal operator search-attribute create" in said and "PipelineCostUsd" in said
    # The pipeline's own server: registered on the spot.
    assert await ensure_searchable(dev_env.client, embedded=True)
    assert await ensure_searchable(dev_env.client, embedded=False)


async def test_a_searchable_run_and_its_tasks_say_what_they_are(
    dev_env: WorkflowEnvironment,
) -> None:
    assert await ensure_searchable(dev_env.client, embedded=True)
    async with serving(dev_env, Script(agent_fails={"1.2"})) as running:
        handle = await running.start(plan_input(PLAN, searchable=True))
        result = await final_result(handle)
    assert result.status is RunStatus.FAILED
    assert await attributes(handle) == {
        "PipelineRun": handle.id,
        "PipelineTarget": "pipeline/test",
        "PipelineStatus": "failed",
        "PipelineCostUsd": result.total_cost_usd,
    }
    tasks = {t.id: t for t in result.tasks}
    one = await attributes(dev_env.client.get_workflow_handle(tasks["1.1"].workflow_id or ""))
    assert one == {
        "PipelineRun": handle.id,
        "PipelineTask": "1.1",
        "PipelineTarget": "pipeline/test",
        "PipelineStatus": TaskStatus.MERGED.value,
        "PipelineCostUsd": tasks["1.1"].cost_usd,
    }
    assert tasks["1.1"].cost_usd > 0
    two = await attributes(dev_env.client.get_workflow_handle(tasks["1.2"].workflow_id or ""))
    assert two["PipelineStatus"] == TaskStatus.FAILED.value


async def test_a_task_waiting_for_a_person_is_found_as_such(dev_env: WorkflowEnvironment) -> None:
    assert await ensure_searchable(dev_env.client, embedded=True)
    async with serving(dev_env, Script()) as running:
        handle = await running.start(plan_input(PLAN, searchable=True, approval=Approval.ALWAYS))
        query = f"PipelineRun='{handle.id}' AND PipelineStatus='awaiting_approval'"

        async def waiting() -> list[str]:
            return [e.id async for e in dev_env.client.list_workflows(query)]

        for _ in range(100):
            if len(found := await waiting()) == 2:
                break
            await asyncio.sleep(0.1)
        assert sorted(found) == sorted(f"{handle.id}/task-{t}" for t in ("1.1", "1.2"))
        await handle.terminate("the test has seen it")
