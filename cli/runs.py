"""`starter.py runs`: the runs a server holds, newest first, each with its outcome and Web UI link;
and the open runs aimed at one target (so that a second plan is not merged into it unseen)."""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

from temporalio.client import Client, WorkflowExecution

from cli.locate import servers
from cli.progress import console
from config import Settings
from errors import UsageError
from models.results import ProgressMemo
from models.steer import RunInfo

WORKFLOW_TYPE = "PlanWorkflow"
LIMIT = 200
# The statuses a user types, as the visibility query spells them.
STATUSES = {
    "running": "Running",
    "completed": "Completed",
    "failed": "Failed",
    "cancelled": "Canceled",
    "terminated": "Terminated",
    "timed_out": "TimedOut",
}


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
            "total_cost_usd": self.progress.total_cost_usd if self.progress else None,
            "ui_url": self.ui_url,
        }


def _query(status: str | None) -> str:
    query = f"WorkflowType='{WORKFLOW_TYPE}'"
    if status:
        query += f" AND ExecutionStatus='{STATUSES[status]}'"
    return query


def _state(e: WorkflowExecution) -> str:
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
        ui = f"{ui_base}/namespaces/{client.namespace}/workflows/{e.id}" if ui_base else None
        rows.append(
            RunRow(
                workflow_id=e.id,
                status=_state(e),
                started=e.start_time.isoformat(timespec="seconds") if e.start_time else None,
                plan=info.plan if info else None,
                repo=info.repo if info else None,
                target_branch=info.target_branch if info else None,
                progress=await _memo(e, "progress", ProgressMemo),
                ui_url=ui,
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
        counts = (
            ", ".join(f"{c.count} {c.status.value}" for c in r.progress.counts)
            if r.progress
            else ""
        )
        where = f" {r.plan} → {r.target_branch}" if r.plan else ""
        out.print(f"{r.workflow_id}  {r.status:<10} {r.started or '':<25}{where}")
        if counts:
            out.print(f"    {counts}")
        if r.ui_url:
            out.print(f"    {r.ui_url}")
    return 0
