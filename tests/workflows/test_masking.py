"""Through the workflows, with the converter the pipeline runs with: a secret's value is masked in
what a run reports and reaches every step it acts on as written."""

from __future__ import annotations

import pytest
from temporalio.api.enums.v1 import EventType
from temporalio.client import WorkflowFailureError

from autonomous_pipeline.models.results import PlanResult
from tests.conftest import md
from tests.workflows.conftest import Harness, plan_input
from tests.workflows.fakes import Script

SECRET = "pg-7Hq2xV9kLm3"  # a credential-looking value the worker has, under a secret's name
PLAN = md(f"""
    ## Batch 1: b
    ### Task 1.1: t
    **Verification:**
    - [ ] `grep -q {SECRET} app.conf`
    """)


@pytest.fixture
def planted(monkeypatch: pytest.MonkeyPatch) -> str:
    monkeypatch.setenv("POSTGRES_PASSWORD", SECRET)
    return SECRET


@pytest.mark.parametrize(
    "running",
    [Script(verify_fails={"1.1"}, verify_output=f"app.conf: password {SECRET} not found")],
    indirect=True,
)
async def test_reports_are_masked_and_inputs_reach_the_steps_as_written(
    running: Harness, planted: str
) -> None:
    handle = await running.start(plan_input(PLAN, repo=f"/srv/{planted}-app"))
    with pytest.raises(WorkflowFailureError) as failed:
        await handle.result()
    # The check ran as the plan wrote it, in the repository the run was given.
    (check,) = running.fakes.verify_inputs[0].commands
    assert check == f"grep -q {planted} app.conf"
    # The history holds the input as written, and the reports masked.
    input_seen, reports = b"", b""
    histories, children = [handle], []
    while histories:
        async for event in histories.pop().fetch_history_events():
            if event.event_type == EventType.EVENT_TYPE_WORKFLOW_EXECUTION_STARTED:
                attrs = event.workflow_execution_started_event_attributes
                input_seen += b"".join(p.data for p in attrs.input.payloads)
            if event.event_type == EventType.EVENT_TYPE_ACTIVITY_TASK_COMPLETED:
                result = event.activity_task_completed_event_attributes.result
                reports += b"".join(p.data for p in result.payloads)
            if event.event_type == EventType.EVENT_TYPE_START_CHILD_WORKFLOW_EXECUTION_INITIATED:
                child = event.start_child_workflow_execution_initiated_event_attributes.workflow_id
                children.append(child)
                histories.append(running.client.get_workflow_handle(child))
    assert children, "the task ran in a child workflow whose history is read too"
    assert f"/srv/{planted}-app".encode() in input_seen
    assert b"app.conf: password *** not found" in reports
    assert planted.encode() not in reports
    # What the run says at its end (the failure's details) is masked too.
    cause = failed.value.cause
    details = cause.details if hasattr(cause, "details") else ()
    (result,) = details
    text = PlanResult.model_validate(result).model_dump_json()
    assert planted not in text and "***" in text
