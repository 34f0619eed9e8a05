"""The pipeline's metrics (workflows.metrics), as a worker's runtime records them: each event
once, with its labels, whatever the retries and the replays."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest
from temporalio.runtime import MetricBuffer, Runtime, TelemetryConfig
from temporalio.testing import WorkflowEnvironment

from autonomous_pipeline.cli.redaction import data_converter
from autonomous_pipeline.models.results import RunStatus
from autonomous_pipeline.workflows import metrics
from tests.conftest import md
from tests.temporal_env import test_server_path as time_skipping_server
from tests.workflows.conftest import plan_input, serving
from tests.workflows.fakes import Script

PLAN = md(
    """
    # Measured
    ## Batch 1: one
    ### Task 1.1: a
    **Verification:**
    - `pytest -q`
    ### Task 1.2: b
    ### Task 1.3: c
    """
)


@pytest.fixture(scope="module")
async def measured() -> AsyncIterator[tuple[WorkflowEnvironment, MetricBuffer]]:
    buffer = MetricBuffer(10_000)
    runtime = Runtime(telemetry=TelemetryConfig(metrics=buffer))
    async with await WorkflowEnvironment.start_time_skipping(
        test_server_existing_path=time_skipping_server(), data_converter=data_converter(),
        runtime=runtime,
    ) as env:  # fmt: skip
        yield env, buffer


def recorded(buffer: MetricBuffer) -> list[tuple[str, float, dict[str, object]]]:
    return [
        (u.metric.name, u.value, dict(u.attributes))
        for u in buffer.retrieve_updates()
        if u.metric.name.startswith("pipeline_")
    ]


async def test_tasks_agents_fix_rounds_and_merges_are_counted_once(
    measured: tuple[WorkflowEnvironment, MetricBuffer],
) -> None:
    env, buffer = measured
    script = Script(
        agent_fails={"1.3"}, verify_fails_times={"1.1": 1}, conflict_once={"1.2"}, agent_cost=0.25
    )
    async with serving(env, script, max_cached_workflows=0) as running:  # every task replays
        result = await running.run(plan_input(PLAN))
    assert result.status is RunStatus.FAILED
    seen = recorded(buffer)

    def values(name: str, **labels: object) -> list[float]:
        return [v for n, v, a in seen if n == name and labels.items() <= a.items()]

    assert sorted(a["status"] for n, _, a in seen if n == metrics.TASKS_FINISHED) == [
        "failed", "merged", "merged",
    ]  # fmt: skip
    runs = sum(t.agent_runs for t in result.tasks)
    assert values(metrics.AGENT_COST, backend="literal") == [0.25] * runs
    assert sum(values(metrics.AGENT_TOKENS, direction="input")) == 1000 * runs
    assert len(values(metrics.AGENT_SECONDS, outcome="succeeded")) == runs - 1
    assert values(metrics.FIX_ROUNDS, reason="checks") == [1]
    assert values(metrics.FIX_ROUNDS, reason="conflict") == [1]
    assert values(metrics.MERGE_CONFLICTS) == [1]
