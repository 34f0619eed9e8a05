"""Subcommands that look at or steer a run. Steering is a workflow update, so every request is
answered: taken (and what it does) or refused (and why), exit 0 or 2. Looking never starts a
server and works without a worker (from the run's memo)."""

from __future__ import annotations

import argparse
import asyncio
from datetime import timedelta
from typing import Any, TypeVar

from rich.console import Console
from temporalio.client import (
    WorkflowExecutionStatus,
    WorkflowHandle,
    WorkflowQueryFailedError,
    WorkflowUpdateFailedError,
)
from temporalio.exceptions import ApplicationError
from temporalio.service import RPCError
from temporalio.workflow import UpdateMethodMultiParam

from autonomous_pipeline.cli import invocation
from autonomous_pipeline.cli.approval import approver_key, sign_decision
from autonomous_pipeline.cli.connect import run_key_of
from autonomous_pipeline.cli.locate import Found, find_run, worker_seen
from autonomous_pipeline.cli.progress import console, print_summary
from autonomous_pipeline.cli.results import final_result
from autonomous_pipeline.cli.run import live_progress
from autonomous_pipeline.cli.runs import counts_of, list_runs, list_tasks
from autonomous_pipeline.cli.server import stop_server
from autonomous_pipeline.cli.task_detail import detail_lines, detail_report
from autonomous_pipeline.cli.terminal import safe
from autonomous_pipeline.config import Settings
from autonomous_pipeline.errors import UsageError
from autonomous_pipeline.models.reports import RunReport, SteerAnswer
from autonomous_pipeline.models.results import (
    PlanResult,
    ProgressMemo,
    RunProgress,
    TaskResult,
    TaskStatus,
)
from autonomous_pipeline.models.steer import (
    DecideRequest,
    RunInfo,
    SteerKind,
    SteerReply,
    SteerRequest,
)
from autonomous_pipeline.workflows.outcome import outcome_line
from autonomous_pipeline.workflows.plan import PlanWorkflow
from autonomous_pipeline.workflows.steering import find_task
from autonomous_pipeline.workflows.task import TaskWorkflow

W = TypeVar("W")  # a workflow class
Q = TypeVar("Q")  # an update's request

EXIT_OK, EXIT_REFUSED = 0, 2
STEER = tuple(k.value for k in SteerKind)
DECIDE = ("approve", "reject")
# A worker answers a query in well under a second; one that has not in this long is not there.
QUERY_TIMEOUT = timedelta(seconds=10)
# An update already has a worker (see `_need_worker`); this bounds a worker that dies meanwhile.
UPDATE_TIMEOUT = timedelta(seconds=60)


class Refused(Exception):
    """A request that cannot take effect: said on stderr (or in JSON), exit 2."""


async def control(command: str, args: argparse.Namespace, settings: Settings) -> int:
    if command == "server":
        stopped = stop_server(settings.workspace)
        print(
            f"stopped the embedded server of {settings.workspace}"
            if stopped
            else "no embedded server is running for this workspace"
        )
        return EXIT_OK
    if command == "runs":
        if args.tasks:
            return await list_tasks(settings, args.status, args.target, args.run)
        if args.run:
            raise UsageError("--run is for --tasks (a run itself: status RUN)")
        return await list_runs(settings, args.status, args.target)
    found = await find_run(settings, args.workflow_id)
    task = getattr(args, "task", None)
    task = task.strip() if task else task  # the run compares ids exactly (but for case)
    if command == "status":
        return await show_status(found, task, settings)
    try:
        if command == "approval-token":
            # For `temporal workflow signal --name approve --input '"TASK"' --input '"TOKEN"'`.
            await _need_worker(found)
            _, commit, token = await _signed(found, task or "", not args.now)
            if commit is None:
                raise Refused(f"task {task} is not waiting for approval")
            print(token)
            return EXIT_OK
        if found.desc.status != WorkflowExecutionStatus.RUNNING:
            raise Refused(await _finished_text(found, command))
        await _need_worker(found)
        if command in DECIDE:
            message = await _decide(
                found, task or "", command == "approve", getattr(args, "reason", None)
            )
        else:
            req = SteerRequest(
                kind=SteerKind(command), task=task, now=bool(getattr(args, "now", False))
            )
            message = await _update(
                found.client.get_workflow_handle_for(PlanWorkflow.run, found.handle.id),
                PlanWorkflow.steer,
                req,
            )
    except Refused as exc:
        return _answer(settings, found, command, task, None, str(exc))
    return _answer(settings, found, command, task, message, None)


def _answer(
    settings: Settings,
    found: Found,
    command: str,
    task: str | None,
    message: str | None,
    refusal: str | None,
) -> int:
    if settings.json_output:
        answer = SteerAnswer(
            workflow_id=found.handle.id,
            command=command,
            task=task,
            accepted=refusal is None,
            message=(message if refusal is None else refusal) or "",
        )
        print(answer.model_dump_json())
    elif refusal is None:
        print(message)
    else:
        console(stderr=True).print(f"refused: {safe(refusal)}", markup=False)
    return EXIT_OK if refusal is None else EXIT_REFUSED


async def _update(
    handle: WorkflowHandle[W, Any],
    update: UpdateMethodMultiParam[[W, Q], SteerReply],
    req: Q,
) -> str:
    """Send a steering update through the workflow's own handler: its name and its types come
    from the workflow class, never from a string here."""
    try:
        reply = await asyncio.wait_for(
            handle.execute_update(update, req, rpc_timeout=UPDATE_TIMEOUT),
            UPDATE_TIMEOUT.total_seconds(),
        )
    except WorkflowUpdateFailedError as exc:
        cause = exc.cause
        raise Refused(
            cause.message if isinstance(cause, ApplicationError) else str(cause)
        ) from None
    except (RPCError, TimeoutError) as exc:
        why = exc.message if isinstance(exc, RPCError) else "no answer"
        raise Refused(
            f"the run did not answer ({why}); its worker may have stopped. The request takes "
            "effect if a worker picks it up: check with `status`"
        ) from None
    return reply.message


async def _need_worker(found: Found) -> None:
    """A request is sent only to a run a worker answers for now: an update to a run without one
    would wait, and take effect whenever a worker next starts, long after it was asked."""
    if await answering(found) is None:
        raise Refused(
            f"no worker is running this run on {found.address}, so it cannot answer (it waits; "
            f"nothing is lost); start one: {found.worker_hint()}"
        )


async def answering(found: Found) -> RunProgress | None:
    """The run's status as its worker answers it, or None when no worker does (the server
    refuses a query no worker polls for, or the query times out)."""
    try:
        if not await worker_seen(found.client):
            return None
        return await asyncio.wait_for(
            run_handle(found).query(PlanWorkflow.status_query, rpc_timeout=QUERY_TIMEOUT),
            QUERY_TIMEOUT.total_seconds() + 5,
        )
    except (RPCError, WorkflowQueryFailedError, TimeoutError):
        return None


async def run_info(found: Found) -> RunInfo | None:
    try:
        return await found.desc.memo_value("run", None, type_hint=RunInfo)
    except Exception:  # an older run, or a memo of someone else's
        return None


async def _finished_result(found: Found) -> PlanResult | None:
    try:
        return await final_result(found.handle)
    except Exception:  # terminated, timed out: no result of ours
        return None


async def _finished_text(found: Found, command: str) -> str:
    result = await _finished_result(found)
    state = found.desc.status.name.lower() if found.desc.status else "closed"
    outcome = outcome_line(result) if result is not None else f"{state}, without a result"
    text = f"run {found.handle.id} has finished ({outcome}); there is nothing to {command}"
    if command == "retry":
        info = await run_info(found)
        plan = info.plan if info else "PLAN"
        text += (
            f". To run its failed tasks again: {invocation.starter()} --plan {plan} --retry-failed "
            "(with the rest of the command that started it)"
        )
    return text


async def _signed(found: Found, raw: str, approved: bool) -> tuple[str, str | None, str]:
    """(the task's workflow id, the commit waiting for approval or None, the signed decision)."""
    progress = await run_handle(found).query(PlanWorkflow.status_query)
    tasks = {t.id: t for t in progress.tasks}
    tid = find_task(tasks, raw)
    if tid is None:
        raise Refused(f"this run has no task {raw!r}")
    t = tasks[tid]
    if t.status is not TaskStatus.RUNNING or t.workflow_id is None:
        raise Refused(f"task {tid} is not waiting for approval: it is {t.status.value}")
    live = await found.client.get_workflow_handle_for(TaskWorkflow.run, t.workflow_id).query(
        TaskWorkflow.status
    )
    waiting = live.approval_commit
    if waiting is None:
        # The task's own validator says what it is doing instead.
        return t.workflow_id, None, ""
    return (
        t.workflow_id,
        waiting,
        sign_decision(approver_key(), approved, found.handle.id, tid, waiting),
    )


async def _decide(found: Found, raw: str, approved: bool, reason: str | None) -> str:
    child, _, token = await _signed(found, raw, approved)
    req = DecideRequest(approved=approved, token=token, reason=reason)
    return await _update(
        found.client.get_workflow_handle_for(TaskWorkflow.run, child), TaskWorkflow.decide, req
    )


def run_handle(found: Found) -> WorkflowHandle[PlanWorkflow, PlanResult]:
    """The run's handle, typed by its workflow: queries and updates name its handlers."""
    return found.client.get_workflow_handle_for(PlanWorkflow.run, found.handle.id)


# ------------------------------------------------------------------ status


async def show_status(found: Found, task: str | None, settings: Settings) -> int:
    info = await run_info(found)
    repo = info.repo if info else None
    key = run_key_of(found.handle.id)
    out = console()
    link = found.ui_link()
    if found.desc.status != WorkflowExecutionStatus.RUNNING:
        result = await _finished_result(found)
        if result is None:
            state = found.desc.status.name.lower() if found.desc.status else "closed"
            raise UsageError(f"run {found.handle.id} ended without a result ({state})")
        if task:
            return _show_task(result.tasks, task, key, repo, settings, out)
        if settings.json_output:
            print(RunReport.finished_run(result, link).model_dump_json())
        else:
            print_summary(result, out, repo=repo)
            if link:
                out.print(f"Web UI: {link}")
        return EXIT_OK
    progress = None
    if await answering(found) is not None:
        try:
            progress = await live_progress(found.client, found.handle)
        except (RPCError, WorkflowQueryFailedError):
            progress = None
    if progress is None:
        return await _show_memo(found, task, key, repo, settings, out)
    if task:
        return _show_task(progress.tasks, task, key, repo, settings, out)
    if settings.json_output:
        print(RunReport.running(progress, link).model_dump_json())
    else:
        out.print(safe(progress_text(progress)), markup=False)
        if link:
            out.print(f"Web UI: {link}")
    return EXIT_OK


def _show_task(
    tasks: list[TaskResult],
    raw: str,
    key: str,
    repo: str | None,
    settings: Settings,
    out: Console,
) -> int:
    by_id = {t.id: t for t in tasks}
    tid = find_task(by_id, raw)
    if tid is None:
        raise UsageError(f"this run has no task {raw!r} (its tasks: {', '.join(list(by_id)[:20])})")
    t = by_id[tid]
    if settings.json_output:
        print(detail_report(t, key, repo).model_dump_json())
    else:
        for line in detail_lines(t, key, repo):
            out.print(line, markup=False)
    return EXIT_OK


async def _show_memo(
    found: Found, task: str | None, key: str, repo: str | None, settings: Settings, out: Console
) -> int:
    """A running run that no worker answers for: what its memo says, and what to start."""
    try:
        memo = await found.desc.memo_value("progress", None, type_hint=ProgressMemo)
    except Exception:
        memo = None
    note = (
        f"no worker is running for {found.address}: the run waits (nothing is lost). "
        f"Start one: {found.worker_hint()}"
    )
    if settings.json_output:
        info = await run_info(found)
        report = RunReport.from_memo(
            found.handle.id,
            memo,
            note,
            found.ui_link(),
            target_branch=info.target_branch if info else None,
        )
        print(report.model_dump_json())
        return EXIT_OK
    console(stderr=True).print(note, markup=False)
    if memo is None:
        out.print(f"{found.handle.id}: running (its memo has no progress yet)")
        return EXIT_OK
    if task:
        listed = [t.as_result() for t in memo.tasks]
        if find_task({t.id: t for t in listed}, task) is None:
            raise UsageError(
                f"no worker answers for the run, and its memo lists only tasks that ended "
                f"without success ({counts_of(memo)}); start a worker to see task {task}"
            )
        return _show_task(listed, task, key, repo, settings, out)
    flags = (" (paused)" if memo.paused else "") + (" (cancelling)" if memo.cancelling else "")
    out.print(
        f"{found.handle.id}: {memo.status.value}{flags}, as of its last change: {counts_of(memo)}",
        markup=False,
    )
    for t in memo.tasks:
        out.print(safe(_row(t.id, t.status, t.commit, t.error or "")), markup=False)
    if memo.more_tasks:
        out.print(f"  ... and {memo.more_tasks} more")
    if found.ui_link():
        out.print(f"Web UI: {found.ui_link()}")
    return EXIT_OK


def progress_text(p: RunProgress) -> str:
    head = (
        f"{p.workflow_id}: {p.status.value}"
        + (" (paused)" if p.paused else "")
        + (" (cancelling)" if p.cancelling else "")
        + (" (its history is large: no new task starts until none runs)" if p.draining else "")
        + (f" (plan revision {p.revision})" if p.revision else "")
    )
    rows = [head, f"target {p.target_branch} at {(p.target_commit or '-')[:12]}"]
    for t in p.tasks:
        note = t.error or (t.phase if t.status is TaskStatus.RUNNING else "")
        rows.append(_row(t.id, t.status, t.commit, note))
    return "\n".join(rows)


def _row(tid: str, status: TaskStatus, commit: str | None, note: str) -> str:
    """One task in `status`'s plain listing (live or from the memo)."""
    return f"  {tid:<8} {status.value:<12} {(commit or '')[:10]:<10} {note}"
