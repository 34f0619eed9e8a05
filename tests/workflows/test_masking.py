"""Through the workflows, with the converter the pipeline runs with: a secret's value is masked in
what a run reports and reaches every step it acts on as written."""

from __future__ import annotations

import uuid
from datetime import timedelta

import pytest
from temporalio import activity
from temporalio.api.enums.v1 import EventType
from temporalio.client import WorkflowFailureError
from temporalio.testing import WorkflowEnvironment
from temporalio.worker import Worker

from autonomous_pipeline.cli.results import final_result
from autonomous_pipeline.models.activity_io import (
    ConflictFixIn,
    ConflictFixOut,
    MergeIn,
    MergeOut,
    ReviewIn,
    ReviewOut,
    RunAgentIn,
    RunAgentOut,
    VerifyIn,
    VerifyOut,
)
from autonomous_pipeline.models.activity_refs import (
    MERGE_TASK,
    PREPARE_CONFLICT_FIX,
    REVIEW_TASK,
    RUN_AGENT,
    VERIFY_TASK,
)
from autonomous_pipeline.models.results import CheckResult, PlanResult, TaskStatus
from autonomous_pipeline.models.review import Finding, Severity, Verdict
from autonomous_pipeline.workflows.plan import PlanWorkflow
from autonomous_pipeline.workflows.task import TaskWorkflow
from tests.conftest import md
from tests.workflows.conftest import Harness, plan_input
from tests.workflows.fakes import FakeActivities, Script

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


# ------------------------------------------------------------------ output copied into inputs

OUTPUT_SECRET = "dt-9fK2mQ7xL4pZ"  # only in the worker's environment and the steps' output
OUTPUT_PLAN = md("""
    ## Batch 1: b
    ### Task 1.1: t
    **Verification:**
    - [ ] `pytest -q`
    """)


class Leaky(FakeActivities):
    """Every agent-derived field holds the secret, unmasked."""

    def __init__(self, script: Script, queue: str) -> None:
        super().__init__(script, queue)
        self.seen: list[str] = []  # activity inputs as the activities received them

    @activity.defn(name=VERIFY_TASK.name)
    async def verify_task(self, inp: VerifyIn) -> VerifyOut:
        self.seen.append(inp.model_dump_json())
        self.verifies[inp.task_id] += 1
        ok = self.verifies[inp.task_id] > 1
        return VerifyOut(
            passed=ok,
            checks=[
                CheckResult(
                    command=c,
                    exit_code=0 if ok else 1,
                    passed=ok,
                    output_tail="" if ok else f"token={OUTPUT_SECRET}",
                )
                for c in inp.commands
            ],
        )

    @activity.defn(name=REVIEW_TASK.name)
    async def review_task(self, inp: ReviewIn) -> ReviewOut:
        self.seen.append(inp.model_dump_json())
        self.reviews[inp.task.id] += 1
        if self.reviews[inp.task.id] == 1:
            f = Finding(
                severity=Severity.MAJOR,
                file=f"{OUTPUT_SECRET}.py",
                message=f"leaks {OUTPUT_SECRET}",
            )
            return ReviewOut(verdict=Verdict(approved=False, findings=[f], summary=OUTPUT_SECRET))
        return ReviewOut(verdict=Verdict(approved=True), diffstat=OUTPUT_SECRET)

    @activity.defn(name=MERGE_TASK.name)
    async def merge_task(self, inp: MergeIn) -> MergeOut:
        self.seen.append(inp.model_dump_json())
        if not inp.base_commit.startswith("tip-"):
            return MergeOut(merged=False, conflict_paths=[f"cfg/{OUTPUT_SECRET}.env"])
        return MergeOut(merged=True, commit="m-1")

    @activity.defn(name=PREPARE_CONFLICT_FIX.name)
    async def prepare_conflict_fix(self, inp: ConflictFixIn) -> ConflictFixOut:
        self.seen.append(inp.model_dump_json())
        return ConflictFixOut(
            base_commit=f"tip-{OUTPUT_SECRET}", conflict_paths=[f"cfg/{OUTPUT_SECRET}.env"]
        )

    @activity.defn(name=RUN_AGENT.name)
    async def run_agent(self, inp: RunAgentIn) -> RunAgentOut:
        self.seen.append(inp.model_dump_json())
        self.agent_inputs.append(inp)
        self.commits[inp.task.id] += 1
        n = self.commits[inp.task.id]
        return RunAgentOut(
            exit_code=0,
            succeeded=True,
            commit=f"c-{OUTPUT_SECRET}-{n}",
            summary=OUTPUT_SECRET,
            changed_files=[f"{OUTPUT_SECRET}.txt"],
            permission_denials=[OUTPUT_SECRET],
            session_id=inp.session_id,
        )


async def test_agent_output_never_reaches_any_history_event(
    env: WorkflowEnvironment, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Every step's output holds a secret only the worker has (as if masking at the source had
    been bypassed); the workflows copy it into later steps' arguments (fix rounds, conflict fix,
    merge). No event of any history holds it, scheduled activities included."""
    monkeypatch.setenv("DEPLOY_TOKEN", OUTPUT_SECRET)
    queue = f"q-{uuid.uuid4().hex[:8]}"
    fakes = Leaky(Script(), queue)
    async with Worker(
        env.client,
        task_queue=queue,
        workflows=[PlanWorkflow, TaskWorkflow],
        activities=fakes.all(),
        max_heartbeat_throttle_interval=timedelta(seconds=0.2),
    ):
        h = Harness(env.client, fakes, queue)
        handle = await h.start(plan_input(OUTPUT_PLAN, reviewer={"backend": "command"}))
        result = await final_result(handle)
        # Every event of every history, as raw protobuf bytes.
        blobs, todo = [], [handle]
        while todo:
            async for ev in todo.pop().fetch_history_events():
                raw = ev.SerializeToString()
                blobs.append(raw)
                a = ev.start_child_workflow_execution_initiated_event_attributes
                if a.workflow_id:
                    todo.append(env.client.get_workflow_handle(a.workflow_id))
    assert result.tasks[0].status is TaskStatus.MERGED, result
    leaked = [b for b in blobs if OUTPUT_SECRET.encode() in b]
    assert any("***" in s for s in fakes.seen), "the fix rounds got the masked copies"
    assert not any(OUTPUT_SECRET in s for s in fakes.seen)
    assert not leaked
