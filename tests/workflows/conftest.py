from __future__ import annotations

import contextlib
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from datetime import timedelta
from typing import Any

import pytest
from temporalio.client import Client, WorkflowExecutionStatus, WorkflowHandle
from temporalio.service import RPCError
from temporalio.testing import WorkflowEnvironment
from temporalio.worker import Worker

from autonomous_pipeline.cli.redaction import data_converter
from autonomous_pipeline.cli.results import final_result
from autonomous_pipeline.models.results import PlanResult
from autonomous_pipeline.models.run import AgentConfig, PlanRunInput, RunOptions
from autonomous_pipeline.plan_parser import parse_plan
from autonomous_pipeline.workflows.plan import PlanWorkflow
from autonomous_pipeline.workflows.task import TaskWorkflow
from tests.temporal_env import dev_server_path, test_server_path
from tests.workflows.fakes import FakeActivities, Script


@pytest.fixture(scope="session")
async def env() -> AsyncIterator[WorkflowEnvironment]:
    async with await WorkflowEnvironment.start_time_skipping(
        # The converter workers and starters use: reports masked, what is acted on as written.
        test_server_existing_path=test_server_path(),
        data_converter=data_converter(),
    ) as e:
        yield e


@pytest.fixture(scope="module")
async def dev_env() -> AsyncIterator[WorkflowEnvironment]:
    """A dev server (the CLI's), for what the time-skipping one lacks: search attributes, and
    updates to a run that continued as new. One per module: a module may register attributes."""
    async with await WorkflowEnvironment.start_local(
        dev_server_existing_path=dev_server_path(),
        data_converter=data_converter(),
        ui=False,
    ) as e:
        yield e


def plan_input(markdown: str, **options: object) -> PlanRunInput:
    fields: dict[str, object] = {
        "repo": "/repo",
        "base_ref": "main",
        "base_commit": "base0",
        "target_branch": "pipeline/test",
        "agent": AgentConfig(backend="literal"),
    }
    opts = RunOptions(**(fields | options))  # type: ignore[arg-type]
    return PlanRunInput(run_key="test", plan_name="test", plan=parse_plan(markdown), options=opts)


def wide(n: int) -> str:
    """One batch of `n` independent tasks, 1.1 to 1.n."""
    return "## Batch 1: wide\n" + "".join(f"### Task 1.{i}: t{i}\n" for i in range(1, n + 1))


def checked(n: int) -> str:
    """`wide(n)` whose tasks each have a check to run."""
    tasks = "".join(f"### Task 1.{i}: t{i}\n**Verification:**\n- `true`\n" for i in range(1, n + 1))
    return "## Batch 1: wide\n" + tasks


@dataclass
class Harness:
    client: Client
    fakes: FakeActivities
    queue: str
    started: list[WorkflowHandle] = field(default_factory=list)

    async def start(self, inp: PlanRunInput) -> WorkflowHandle:
        handle = await self.client.start_workflow(
            PlanWorkflow.run, inp, id=f"plan-{uuid.uuid4().hex[:8]}", task_queue=self.queue
        )
        self.started.append(handle)
        return handle

    async def close(self) -> None:
        """Terminate what the test left running (its tasks go with it). The time-skipping
        server's clock is shared by every test: a run left waiting with no worker behind it
        stalls the clock, or lets it leap, for the tests after it."""
        for handle in self.started:
            with contextlib.suppress(RPCError):
                if (await handle.describe()).status is WorkflowExecutionStatus.RUNNING:
                    await handle.terminate("the test ended")

    async def run(self, inp: PlanRunInput) -> PlanResult:
        return await final_result(await self.start(inp))


@contextlib.asynccontextmanager
async def serving(
    env: WorkflowEnvironment, script: Script, **worker_options: Any
) -> AsyncIterator[Harness]:
    """A worker of the workflows and `script`'s fake activities on a queue of its own (with
    `worker_options`: interceptors, a runner), and what the test left running ended after."""
    queue = f"q-{uuid.uuid4().hex[:8]}"
    fakes = FakeActivities(script, queue)
    options: dict[str, Any] = {"max_heartbeat_throttle_interval": timedelta(seconds=0.2)}
    async with Worker(
        env.client,
        task_queue=queue,
        workflows=[PlanWorkflow, TaskWorkflow],
        activities=fakes.all(),
        **(options | worker_options),
    ):
        harness = Harness(env.client, fakes, queue)
        try:
            yield harness
        finally:
            await harness.close()


@pytest.fixture
async def running(
    env: WorkflowEnvironment, request: pytest.FixtureRequest
) -> AsyncIterator[Harness]:
    async with serving(env, getattr(request, "param", None) or Script()) as harness:
        yield harness
