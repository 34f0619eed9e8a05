"""Subcommands that steer a run: each is one plain signal or query, as `temporal workflow` sends them."""

from __future__ import annotations

import json

from rich.console import Console
from temporalio.client import WorkflowExecutionStatus
from temporalio.service import RPCError, RPCStatusCode

from cli.approval import approval_token, approver_key
from cli.progress import print_summary, result_json
from cli.run import live_progress, open_target
from cli.server import stop_server
from config import Settings
from errors import UsageError
from models.results import PlanResult, RunProgress
from models.run import CancelRequest

SIGNALS = {"pause", "resume", "cancel", "retry", "skip", "approve", "reject"}


async def control(
    command: str, workflow_id: str, task: str | None, now: bool, settings: Settings
) -> int:
    if command == "approval-token":
        # For `temporal workflow signal --name approve --input '["TASK", "TOKEN"]'`.
        print(approval_token(approver_key(), workflow_id, task or ""))
        return 0
    if command == "server":
        stopped = stop_server(settings.workspace)
        print(
            f"stopped the embedded server of {settings.workspace}"
            if stopped
            else "no embedded server is running for this workspace"
        )
        return 0
    target = await open_target(settings)
    handle = target.client.get_workflow_handle(workflow_id, result_type=PlanResult)
    try:
        desc = await handle.describe()
    except RPCError as exc:
        if exc.status == RPCStatusCode.NOT_FOUND:
            raise UsageError(f"no run {workflow_id!r} on {target.address}") from None
        raise
    running = desc.status == WorkflowExecutionStatus.RUNNING
    if command == "status":
        if running:
            progress = await live_progress(target.client, handle)
            if settings.json_output:
                print(progress.model_dump_json())
            else:
                Console(highlight=False).print(_progress_text(progress))
        else:
            result = await handle.result()
            if settings.json_output:
                print(json.dumps(result_json(result)))
            else:
                print_summary(result, Console(highlight=False))
        return 0
    if not running:
        raise UsageError(
            f"run {workflow_id} has finished ({desc.status.name.lower() if desc.status else '?'}); "
            "nothing to signal"
        )
    if command in ("retry", "skip", "approve", "reject"):
        if not task:
            raise UsageError(f"{command} needs a task id: starter.py {command} WORKFLOW_ID TASK")
        if command in ("approve", "reject"):
            # A person's decision: it carries the operator's token for this task.
            token = approval_token(approver_key(), workflow_id, task)
            await handle.signal(command, args=[task, token])
        else:
            await handle.signal(command, task)
    elif command == "cancel":
        await handle.signal("cancel", CancelRequest(now=now))
    else:
        await handle.signal(command)
    print(f"sent {command} to {workflow_id}" + (f" for task {task}" if task else ""))
    return 0


def _progress_text(p: RunProgress) -> str:
    head = (
        f"{p.workflow_id}: {p.status.value}"
        + (" (paused)" if p.paused else "")
        + (" (cancelling)" if p.cancelling else "")
    )
    rows = [head, f"target {p.target_branch} at {(p.target_commit or '-')[:12]}"]
    for t in p.tasks:
        note = t.error or (t.phase if t.status.value == "running" else "")
        rows.append(f"  {t.id:<8} {t.status.value:<12} {(t.commit or '')[:10]:<10} {note}")
    return "\n".join(rows)
