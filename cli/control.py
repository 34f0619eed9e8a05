"""Subcommands that steer a run: each is one plain signal or query, as `temporal workflow` sends them."""

from __future__ import annotations

import json

from rich.console import Console
from temporalio.client import Client, WorkflowExecutionStatus, WorkflowHandle
from temporalio.service import RPCError, RPCStatusCode

from cli.approval import approver_key, sign_decision
from cli.progress import print_summary, result_json
from cli.run import live_progress, open_target
from cli.server import stop_server
from config import Settings
from errors import UsageError
from models.results import PlanResult, RunProgress, TaskResult, TaskStatus
from models.run import CancelRequest

SIGNALS = {"pause", "resume", "cancel", "retry", "skip", "approve", "reject"}


async def control(
    command: str, workflow_id: str, task: str | None, now: bool, settings: Settings
) -> int:
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
    if command == "approval-token":
        # For `temporal workflow signal --name approve --input '"TASK"' --input '"TOKEN"'`.
        _, token = await _signed_decision(target.client, handle, task or "", not now)
        print(token)
        return 0
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
            # A person's decision: signed with the operator's key, for the commit waiting.
            commit, token = await _signed_decision(
                target.client, handle, task, command == "approve"
            )
            await handle.signal(command, args=[task, token])
            print(f"{command} of task {task} at {commit[:12]} sent to {workflow_id}")
            return 0
        else:
            await handle.signal(command, task)
    elif command == "cancel":
        await handle.signal("cancel", CancelRequest(now=now))
    else:
        await handle.signal(command)
    print(f"sent {command} to {workflow_id}" + (f" for task {task}" if task else ""))
    return 0


async def _signed_decision(
    client: Client, handle: WorkflowHandle, task: str, approved: bool
) -> tuple[str, str]:
    """(the commit waiting for approval, the operator's signature of the decision on it)."""
    progress: RunProgress = await handle.query("status", result_type=RunProgress)
    found = next((t for t in progress.tasks if t.id.lower() == task.lower()), None)
    if found is None:
        raise UsageError(f"run {handle.id} has no task {task!r}")
    waiting = None
    if found.workflow_id is not None and found.status is TaskStatus.RUNNING:
        live = await client.get_workflow_handle(found.workflow_id).query(
            "status", result_type=TaskResult
        )
        waiting = live.approval_commit if live is not None else None
    if waiting is None:
        raise UsageError(
            f"task {found.id} is not waiting for approval (it is {found.status.value})"
        )
    key = approver_key()
    return waiting, sign_decision(key, approved, handle.id, found.id, waiting)


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
