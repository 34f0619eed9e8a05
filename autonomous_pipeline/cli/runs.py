"""`starter.py runs`: the runs a server holds, newest first, each with its outcome and Web UI link;
and the open runs aimed at one target (so that a second plan is not merged into it unseen)."""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

from temporalio.client import Client, WorkflowExecution, WorkflowExecutionStatus
from temporalio.service import RPCError

from autonomous_pipeline.cli.connect import workflow_link
from autonomous_pipeline.cli.locate import RUN_TYPE, TASK_TYPE, servers
from autonomous_pipeline.cli.progress import console
from autonomous_pipeline.config import Settings
from autonomous_pipeline.errors import UsageError
from autonomous_pipeline.models import search
from autonomous_pipeline.models.results import ProgressMemo, RunStatus, TaskStatus
from autonomous_pipeline.models.steer import RunInfo

LIMIT = 200
# The statuses `--status` takes: a run's own (its memo says it: a cancelled run's workflow ends
# Failed), and Temporal's for runs that ended without saying (terminated, timed out).
STATUSES = ("running", "completed", "failed", "cancelled", "terminated", "timed_out")
# With --tasks: a task's PipelineStatus.
TASK_STATES = (*(s.value for s in TaskStatus), search.AWAITING_APPROVAL)


@dataclass
class RunRow:
    workflow_id: str
    status: str
    started: str | None
    plan: str | None
    repo: str | None
    target_branch: str | None
    progress: ProgressMemo | None
    ui_url: str | None

    def json(self) -> dict[str, Any]:
        return {
            "workflow_id": self.workflow_id,
            "status": self.status,
            "started": self.started,
            "plan": self.plan,
            "repo": self.repo,
            "target_branch": self.target_branch,
            "counts": {c.status.value: c.count for c in self.progress.counts}
            if self.progress
            else None,
            "tasks_total": self.progress.total if self.progress else None,
            "total_cost_usd": self.progress.total_cost_usd if self.progress else None,
            "ui_url": self.ui_url,
        }


def counts_of(memo: ProgressMemo) -> str:
    """ "3 merged, 1 failed; 2 of 6 not ended" as the memo last recorded it."""
    done = ", ".join(f"{c.count} {c.status.value}" for c in memo.counts)
    open_ = memo.total - memo.ended
    rest = f"{open_} of {memo.total} not ended" if open_ else f"all {memo.total} ended"
    return f"{done}; {rest}" if done else rest


def _query(status: str | None) -> str:
    # A run that continued as new is listed once, as its newest execution.
    query = f"WorkflowType='{RUN_TYPE}' AND ExecutionStatus!='ContinuedAsNew'"
    if status == "running":
        query += " AND ExecutionStatus='Running'"
    elif status:
        query += " AND ExecutionStatus!='Running'"
    return query


def _state(e: WorkflowExecution, progress: ProgressMemo | None) -> str:
    if e.status == WorkflowExecutionStatus.RUNNING:
        return "running"
    if progress is not None and progress.status is not RunStatus.RUNNING:
        return progress.status.value  # the run's own outcome
    if e.status == WorkflowExecutionStatus.CANCELED:
        return "cancelled"
    return e.status.name.lower() if e.status else "unknown"


async def _memo(e: WorkflowExecution, key: str, model: type[Any]) -> Any:
    try:
        return await e.memo_value(key, None, type_hint=model)
    except Exception:  # an older run, or a memo of someone else's
        return None


async def runs_on(client: Client, ui_base: str | None, status: str | None) -> list[RunRow]:
    rows = []
    async for e in client.list_workflows(_query(status), limit=LIMIT):
        info: RunInfo | None = await _memo(e, "run", RunInfo)
        progress: ProgressMemo | None = await _memo(e, "progress", ProgressMemo)
        state = _state(e, progress)
        if status and state != status:
            continue
        rows.append(
            RunRow(
                workflow_id=e.id,
                status=state,
                started=e.start_time.isoformat(timespec="seconds") if e.start_time else None,
                plan=info.plan if info else None,
                repo=info.repo if info else None,
                target_branch=info.target_branch if info else None,
                progress=progress,
                ui_url=workflow_link(ui_base, client.namespace, e.id),
            )
        )
    return rows


async def open_runs_into(client: Client, repo: str, target_branch: str) -> list[RunRow]:
    """Running runs of this repository aimed at this target branch."""
    return [
        r
        for r in await runs_on(client, None, "running")
        if r.repo == repo and r.target_branch == target_branch
    ]


async def list_runs(settings: Settings, status: str | None, target: str | None = None) -> int:
    if status is not None and status not in STATUSES:
        raise UsageError(
            f"--status {status} is a task's state: add --tasks, or use one of {', '.join(STATUSES)}"
        )
    found, missing = await servers(settings)
    rows: list[RunRow] = []
    for server in found:
        rows += await runs_on(server.client, server.ui_base, status)
    if target is not None:
        rows = [r for r in rows if r.target_branch == target]
    rows.sort(key=lambda r: r.started or "", reverse=True)
    if settings.json_output:
        print(json.dumps({"runs": [r.json() for r in rows], "not_searched": missing}))
        return 0
    out = console()
    if not found:
        raise UsageError(
            f"no Temporal server to ask: {'; '.join(missing)}. Pass --address HOST:PORT, or "
            "--workspace DIR of a run started with the embedded server"
        )
    if not rows:
        out.print("no runs" + (f" with status {status}" if status else ""))
    for r in rows:
        counts = counts_of(r.progress) if r.progress else ""
        where = f" {r.plan} → {r.target_branch}" if r.plan else ""
        out.print(f"{r.workflow_id}  {r.status:<10} {r.started or '':<25}{where}", markup=False)
        if counts:
            out.print(f"    {counts}", markup=False)
        if r.ui_url:
            out.print(f"    {r.ui_url}")
    return 0


@dataclass
class TaskRow:
    workflow_id: str
    run: str
    task: str
    status: str
    cost_usd: float | None
    target_branch: str | None
    started: str | None
    ui_url: str | None

    def json(self) -> dict[str, Any]:
        return dict(vars(self))


def tasks_query(status: str | None, target: str | None, run: str | None) -> str:
    """The visibility query of tasks by their search attributes (models.search)."""
    parts = [f"WorkflowType='{TASK_TYPE}'", f"{search.TASK} IS NOT NULL"]
    for name, value in ((search.STATUS, status), (search.TARGET, target), (search.RUN, run)):
        if value is not None:
            parts.append(f"{name}='{_quoted(value)}'")
    return " AND ".join(parts)


def _quoted(value: str) -> str:
    return value.replace("\\", "\\\\").replace("'", "\\'")


async def tasks_on(client: Client, ui_base: str | None, query: str) -> list[TaskRow]:
    rows = []
    try:
        async for e in client.list_workflows(query, limit=LIMIT):
            attrs = {p.key.name: p.value for p in e.typed_search_attributes}
            rows.append(
                TaskRow(
                    workflow_id=e.id,
                    run=str(attrs.get(search.RUN, "")),
                    task=str(attrs.get(search.TASK, "")),
                    status=str(attrs.get(search.STATUS, "")),
                    cost_usd=attrs.get(search.COST),
                    target_branch=attrs.get(search.TARGET),
                    started=e.start_time.isoformat(timespec="seconds") if e.start_time else None,
                    ui_url=workflow_link(ui_base, client.namespace, e.id),
                )
            )
    except RPCError as exc:
        raise UsageError(
            f"this server cannot search tasks ({exc.message}); it needs the search attributes "
            "registered: " + "; ".join(search.create_commands(client.namespace))
        ) from None
    return rows


async def list_tasks(
    settings: Settings, status: str | None, target: str | None, run: str | None
) -> int:
    """`runs --tasks`: the tasks of every searchable run, by what they are now."""
    if status is not None and status not in TASK_STATES:
        raise UsageError(f"--status {status}: a task is one of {', '.join(TASK_STATES)}")
    found, missing = await servers(settings)
    if not found and not settings.json_output:
        raise UsageError(f"no Temporal server to ask: {'; '.join(missing)}")
    query = tasks_query(status, target, run)
    rows: list[TaskRow] = []
    for server in found:
        rows += await tasks_on(server.client, server.ui_base, query)
    rows.sort(key=lambda r: (r.started or "", r.workflow_id), reverse=True)
    if settings.json_output:
        print(json.dumps({"tasks": [r.json() for r in rows], "not_searched": missing}))
        return 0
    out = console()
    if not rows:
        out.print("no tasks" + (f" with status {status}" if status else ""))
    for r in rows:
        cost = f" ${r.cost_usd:.2f}" if r.cost_usd else ""
        out.print(f"{r.run}  task {r.task:<8} {r.status:<18}{cost}", markup=False)
        if r.ui_url:
            out.print(f"    {r.ui_url}")
    return 0
