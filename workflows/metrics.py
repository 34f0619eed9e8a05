"""The pipeline's own metrics, recorded from workflow code through `workflow.metric_meter()`: a
replaying worker records nothing, so each event counts once, whichever worker records it.

Every metric carries the SDK's labels (namespace, task_queue, workflow_type) and those listed
here; the README's Metrics section documents them, and `deploy/grafana/pipeline.json` charts them.
Names are as the SDK gives them to Prometheus (counters end `_total`)."""

from __future__ import annotations

from temporalio import workflow

with workflow.unsafe.imports_passed_through():
    from autonomous_pipeline.models.activity_io import FixRequest, MergeOut, RunAgentOut
    from autonomous_pipeline.models.results import Spend, TaskResult
    from autonomous_pipeline.models.run import TaskInput

TASKS_FINISHED = "pipeline_tasks_finished"  # {status, backend}
AGENT_SECONDS = "pipeline_agent_seconds"  # histogram {backend, model, outcome}
AGENT_COST = "pipeline_agent_cost_usd"  # histogram of each agent run's cost {backend, model}
AGENT_TOKENS = "pipeline_agent_tokens"  # {backend, model, direction: input | output}
FIX_ROUNDS = "pipeline_fix_rounds"  # {reason: checks | findings | conflict}
MERGE_RETRIES = "pipeline_merge_retries"  # merges tried again as the target moved
MERGE_CONFLICTS = "pipeline_merge_conflicts"
LIMIT_WAIT = "pipeline_rate_limit_wait_seconds"  # histogram {source: agent | code_host}
APPROVALS = "pipeline_approvals_waited"  # tasks that waited for a person {outcome}
APPROVAL_WAIT = "pipeline_approval_wait_seconds"  # histogram {outcome}

ALL = (
    TASKS_FINISHED, AGENT_SECONDS, AGENT_COST, AGENT_TOKENS, FIX_ROUNDS, MERGE_RETRIES,
    MERGE_CONFLICTS, LIMIT_WAIT, APPROVALS, APPROVAL_WAIT,
)  # fmt: skip


def _agent(inp: TaskInput) -> dict[str, str | int | float | bool]:
    model = inp.options.agent.claude.model if inp.options.agent.backend == "claude" else None
    return {"backend": inp.options.agent.backend, "model": model or "default"}


def task_finished(inp: TaskInput, res: TaskResult) -> None:
    workflow.metric_meter().create_counter(TASKS_FINISHED, "tasks that ended, by status").add(
        1, {"status": res.status.value, "backend": inp.options.agent.backend}
    )


def agent_ran(inp: TaskInput, out: RunAgentOut) -> None:
    outcome = "succeeded" if out.succeeded else (out.failure_kind or "failed")
    workflow.metric_meter().create_histogram_float(AGENT_SECONDS, "agent run time", "s").record(
        out.duration_s, {**_agent(inp), "outcome": str(outcome)}
    )
    agent_spent(inp, out)


def agent_spent(inp: TaskInput, spent: Spend) -> None:
    """What an agent run spent (also one whose change was not collected, which runs again)."""
    meter, labels = workflow.metric_meter(), _agent(inp)
    meter.create_histogram_float(AGENT_COST, "cost of an agent run", "USD").record(
        spent.cost_usd, labels
    )
    tokens = meter.create_counter(AGENT_TOKENS, "tokens the agents used")
    tokens.add(spent.tokens_in, {**labels, "direction": "input"})
    tokens.add(spent.tokens_out, {**labels, "direction": "output"})


def fix_round(fix: FixRequest) -> None:
    reason = "conflict" if fix.conflicts else "checks" if fix.failing_checks else "findings"
    workflow.metric_meter().create_counter(FIX_ROUNDS, "fix rounds started").add(
        1, {"reason": reason}
    )


def merged(out: MergeOut) -> None:
    meter = workflow.metric_meter()
    if out.attempts > 1:
        meter.create_counter(MERGE_RETRIES, "merges tried again on a moved target").add(
            out.attempts - 1
        )
    if out.conflict_paths:
        meter.create_counter(MERGE_CONFLICTS, "merges that met a conflict").add(1)


def limit_waited(seconds: float, source: str) -> None:
    workflow.metric_meter().create_histogram_float(
        LIMIT_WAIT, "time waiting out a rate or usage limit", "s"
    ).record(seconds, {"source": source})


def approval_waited(seconds: float, approved: bool) -> None:
    meter, labels = workflow.metric_meter(), {"outcome": "approved" if approved else "rejected"}
    meter.create_counter(APPROVALS, "waits for a person's approval").add(1, labels)
    meter.create_histogram_float(APPROVAL_WAIT, "time a task waited for approval", "s").record(
        seconds, labels
    )
