"""`starter.py runs`: the runs a server holds, newest first, each with its outcome and Web UI link;
and the open runs aimed at one target (so that a second plan is not merged into it unseen)."""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

from temporalio.client import Client, WorkflowExecution, WorkflowExecutionStatus

from autonomous_pipeline.cli.connect import workflow_link
from autonomous_pipeline.cli.locate import RUN_TYPE, servers
from autonomous_pipeline.cli.progress import console
from autonomous_pipeline.config import Settings
from autonomous_pipeline.errors import UsageError
from autonomous_pipeline.models.results import ProgressMemo, RunStatus
from autonomous_pipeline.models.steer import RunInfo

LIMIT = 200
# The statuses `--status` takes: a run's own (its memo says it: a cancelled run's workflow ends
# Failed), and Temporal's for runs that ended without saying (terminated, timed out).
STATUSES = ("running", "completed", "failed", "cancelled", "terminated", "timed_out")


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
    query = f"WorkflowType='{RUN_TYPE}'"
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


async def list_runs(settings: Settings, status: str | None) -> int:
    found, missing = await servers(settings)
    rows: list[RunRow] = []
    for server in found:
        rows += await runs_on(server.client, server.ui_base, status)
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
