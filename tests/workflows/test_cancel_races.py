"""A cancel that lands while a task is telling the run something: the SDK lets a signal that was
already sent complete and forgets the cancel that interrupted the wait for it. The task must end
cancelled all the same, never wait forever for a slot the run will not give it."""

from __future__ import annotations

import asyncio
import threading
import time
from typing import Any

import pytest
from temporalio.api.enums.v1 import EventType
from temporalio.testing import WorkflowEnvironment
from temporalio.worker import (
    Interceptor,
    SignalExternalWorkflowInput,
    WorkflowInboundInterceptor,
    WorkflowInterceptorClassInput,
    WorkflowOutboundInterceptor,
)

from autonomous_pipeline.cli.results import final_result
from autonomous_pipeline.models.results import RunStatus, TaskStatus
from autonomous_pipeline.models.run import CancelRequest
from tests.workflows.conftest import plan_input, serving
from tests.workflows.fakes import Script
from tests.workflows.test_plan_workflow import PLAN


class HoldTheTelling(Interceptor):
    """Holds the workflow task in which `task` tells the run it is ready until the test has had
    the run cancel it: the cancel reaches the task just after that signal was sent."""

    def __init__(self, task: str) -> None:
        self.task = task
        self.telling = threading.Event()
        self.cancelled = threading.Event()

    def workflow_interceptor_class(
        self, input: WorkflowInterceptorClassInput
    ) -> type[WorkflowInboundInterceptor]:
        hold = self

        class Outbound(WorkflowOutboundInterceptor):
            async def signal_external_workflow(self, input: SignalExternalWorkflowInput) -> None:
                args: list[Any] = list(input.args)
                if input.signal == "task_ready" and args[:1] == [hold.task]:
                    hold.telling.set()
                    # Under the SDK's deadlock detection (2 s) whatever the test's progress.
                    hold.cancelled.wait(1.0)
                    time.sleep(0.2)  # the cancel request on its way to the task
                return await super().signal_external_workflow(input)

        class Inbound(WorkflowInboundInterceptor):
            def init(self, outbound: WorkflowOutboundInterceptor) -> None:
                super().init(Outbound(outbound))

        return Inbound


async def _cancel_requested(handle, times: int) -> None:
    for _ in range(500):
        events = [e.event_type async for e in handle.fetch_history_events()]
        if (
            events.count(EventType.EVENT_TYPE_REQUEST_CANCEL_EXTERNAL_WORKFLOW_EXECUTION_INITIATED)
            >= times
        ):
            return
        await asyncio.sleep(0.02)
    raise TimeoutError("the run never cancelled its tasks")


@pytest.mark.parametrize("attempt", range(3))  # the server decides the race: each try counts
async def test_a_cancel_while_a_task_tells_the_run_it_is_ready_ends_it(
    env: WorkflowEnvironment, attempt: int
) -> None:
    hold = HoldTheTelling("1.2")
    async with serving(env, Script(slow={"1.1": 30}), interceptors=[hold]) as harness:
        fakes = harness.fakes
        try:
            handle = await harness.start(plan_input(PLAN, max_concurrent=1, prepare_ahead=1))
            assert await asyncio.to_thread(hold.telling.wait, 10)
            await handle.signal("cancel", CancelRequest(now=True))
            await _cancel_requested(handle, 2)  # 1.1 in its agent, 1.2 telling
            hold.cancelled.set()
            result = await asyncio.wait_for(final_result(handle), 60)
        finally:
            hold.cancelled.set()
    assert result.status is RunStatus.CANCELLED
    s = {t.id: t.status for t in result.tasks}
    assert s["1.1"] is TaskStatus.CANCELLED and s["1.2"] is TaskStatus.CANCELLED, s
    assert "1.2" in fakes.cleaned  # its worktree put away although its agent never ran
    assert ("run_agent", "1.2") not in fakes.calls
