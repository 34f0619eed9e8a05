"""TaskWorkflow: pick a worker -> workspace -> agent -> verify -> merge, and cleanup whatever happens.

A task's steps share one worktree on one machine, so after `claim_worker` every activity of the task
goes to that worker's workspace queue. Workers that share a workspace (one machine) share the queue,
so a restarted worker picks up where a killed one stopped; if no worker serves the queue any more
(the machine is gone), the task is claimed again and starts over elsewhere.
"""

from __future__ import annotations

import asyncio
from datetime import timedelta
from typing import Any

from temporalio import workflow
from temporalio.exceptions import (
    ActivityError,
    ApplicationError,
    TimeoutError,
    TimeoutType,
    is_cancelled_exception,
)
from temporalio.workflow import ActivityCancellationType

with workflow.unsafe.imports_passed_through():
    from models.activity_io import (
        ClaimIn,
        ClaimOut,
        CleanupIn,
        CleanupOut,
        MergeIn,
        MergeOut,
        PrepareWorkspaceIn,
        PrepareWorkspaceOut,
        RunAgentIn,
        RunAgentOut,
        VerifyIn,
        VerifyOut,
    )
    from models.results import TaskResult, TaskStatus
    from models.run import TaskInput
    from workflows import policies

# How often a task is moved to another worker because its worker vanished.
MAX_CLAIMS = 3


def failure_message(exc: BaseException) -> str:
    """The innermost message of an activity failure: what went wrong, not how it was wrapped."""
    while isinstance(exc, ActivityError) and exc.cause is not None:
        exc = exc.cause
    if isinstance(exc, ApplicationError) and exc.type:
        return f"{exc.type}: {exc.message}"
    return str(exc)


def _worker_lost(exc: ActivityError) -> bool:
    cause = exc.cause
    return isinstance(cause, TimeoutError) and cause.type == TimeoutType.SCHEDULE_TO_START


class _WorkerLost(Exception):
    pass


@workflow.defn
class TaskWorkflow:
    def __init__(self) -> None:
        self.inp: TaskInput | None = None
        self.result: TaskResult | None = None
        self.queue: str | None = None

    @workflow.query
    def status(self) -> TaskResult | None:
        return self.result

    async def _act(self, name: str, arg: Any, result_type: type, **kw: Any) -> Any:
        """An activity on the claimed worker's queue; a queue nobody serves any more is noticed."""
        assert self.inp is not None
        try:
            return await workflow.execute_activity(
                name,
                arg,
                result_type=result_type,
                task_queue=self.queue,
                schedule_to_start_timeout=timedelta(seconds=self.inp.options.worker_lost_timeout_s),
                **kw,
            )
        except ActivityError as exc:
            if _worker_lost(exc):
                raise _WorkerLost(self.queue) from exc
            raise

    @workflow.run
    async def run(self, inp: TaskInput) -> TaskResult:
        self.inp = inp
        task = inp.task
        started = workflow.now()
        label = f"Task {task.id}: {task.title}"
        res = self.result = TaskResult(
            id=task.id, title=task.title, status=TaskStatus.RUNNING, phase="claim"
        )
        cancelled = False
        try:
            for claim in range(1, MAX_CLAIMS + 1):
                res.phase = "claim"
                got = await workflow.execute_activity(
                    "claim_worker",
                    ClaimIn(run_key=inp.run_key, task_id=task.id, claim=claim),
                    result_type=ClaimOut,
                    start_to_close_timeout=timedelta(minutes=1),
                    retry_policy=policies.GIT_RETRY,
                    summary=f"{label} — pick a worker",
                )
                self.queue = got.queue
                try:
                    await self._attempt(inp, label)
                    break
                except _WorkerLost:
                    workflow.logger.warning(
                        "task %s: no worker serves %s any more", task.id, self.queue
                    )
                    if claim == MAX_CLAIMS:
                        raise
        except _WorkerLost:
            res.status, res.error = (
                TaskStatus.FAILED,
                f"{res.phase}: the task's worker was lost {MAX_CLAIMS} times",
            )
        except (asyncio.CancelledError, ActivityError) as exc:
            if isinstance(exc, ActivityError) and not is_cancelled_exception(exc):
                res.status, res.error = TaskStatus.FAILED, f"{res.phase}: {failure_message(exc)}"
            else:
                cancelled = True
                res.status, res.error = TaskStatus.CANCELLED, f"cancelled during {res.phase}"
        finally:
            await self._cleanup(inp, label, cancelled)
        res.duration_s = round((workflow.now() - started).total_seconds(), 3)
        # Cancelled or not, the outcome is a result: the parent records it instead of a failure.
        return res

    async def _cleanup(self, inp: TaskInput, label: str, cancelled: bool) -> None:
        res = self.result
        assert res is not None
        if self.queue is None:
            return
        keep = res.status is TaskStatus.FAILED and inp.options.keep_failed_branches
        cleanup = self._act(
            "cleanup_workspace",
            CleanupIn(run_key=inp.run_key, task_id=inp.task.id, delete_branch=not keep),
            CleanupOut,
            start_to_close_timeout=policies.GIT_TIMEOUT,
            retry_policy=policies.GIT_RETRY,
            summary=f"{label} — cleanup",
        )
        try:
            # A cancelled task still cleans up; its own cancellation must not cancel that.
            await (asyncio.shield(cleanup) if cancelled else cleanup)
        except (ActivityError, _WorkerLost) as exc:
            workflow.logger.warning(
                "cleanup of task %s failed: %s", inp.task.id, failure_message(exc)
            )

    async def _attempt(self, inp: TaskInput, label: str) -> None:
        task, opts, res = inp.task, inp.options, self.result
        assert res is not None
        res.phase = "workspace"
        ws: PrepareWorkspaceOut = await self._act(
            "prepare_workspace",
            PrepareWorkspaceIn(
                run_key=inp.run_key,
                task_id=task.id,
                repo=opts.repo,
                target_branch=opts.target_branch,
            ),
            PrepareWorkspaceOut,
            start_to_close_timeout=policies.GIT_TIMEOUT,
            retry_policy=policies.GIT_RETRY,
            summary=f"{label} — workspace",
        )
        base = res.base_commit = ws.base_commit

        res.phase = "agent"
        agent: RunAgentOut = await self._act(
            "run_agent",
            RunAgentIn(
                run_key=inp.run_key,
                plan_title=inp.plan_title,
                task=task,
                base_commit=base,
                agent=opts.agent,
            ),
            RunAgentOut,
            start_to_close_timeout=timedelta(seconds=opts.agent.timeout_s)
            + policies.AGENT_TIMEOUT_SLACK,
            heartbeat_timeout=timedelta(seconds=opts.heartbeat_timeout_s),
            retry_policy=policies.AGENT_RETRY,
            # Wait until the agent is really dead before cleanup removes its worktree.
            cancellation_type=ActivityCancellationType.WAIT_CANCELLATION_COMPLETED,
            summary=f"{label} — agent ({opts.agent.backend})",
        )
        res.attempts += agent.attempt
        res.transcript = agent.transcript
        res.changed_files = agent.changed_files
        if not agent.succeeded:
            res.status, res.error = TaskStatus.FAILED, agent.error or "the agent failed"
            return
        if agent.commit is None:
            res.status, res.error = TaskStatus.NO_OP, None
            return
        res.commit = agent.commit

        res.phase = "verify"
        commands = task.commands
        if commands:
            verify: VerifyOut = await self._act(
                "verify_task",
                VerifyIn(
                    run_key=inp.run_key,
                    task_id=task.id,
                    commands=commands,
                    base_commit=base,
                    timeout_s=opts.verify_timeout_s,
                ),
                VerifyOut,
                start_to_close_timeout=policies.verify_timeout(
                    opts.verify_timeout_s, len(commands)
                ),
                heartbeat_timeout=timedelta(seconds=opts.heartbeat_timeout_s),
                retry_policy=policies.GIT_RETRY,
                summary=f"{label} — verify",
            )
            res.checks = verify.checks
            if not verify.passed:
                failing = [c.command for c in verify.checks if not c.passed and not c.pre_existing]
                res.status, res.error = (
                    TaskStatus.FAILED,
                    "verification failed: " + "; ".join(failing),
                )
                return

        res.phase = "merge"
        merge: MergeOut = await self._act(
            "merge_task",
            MergeIn(
                run_key=inp.run_key,
                task_id=task.id,
                repo=opts.repo,
                target_branch=opts.target_branch,
                base_commit=base,
                commit=agent.commit,
                commands=commands,
                verify_timeout_s=opts.verify_timeout_s,
                attempts=opts.merge_attempts,
            ),
            MergeOut,
            start_to_close_timeout=policies.GIT_TIMEOUT
            + policies.verify_timeout(opts.verify_timeout_s, len(commands)),
            heartbeat_timeout=timedelta(seconds=max(opts.heartbeat_timeout_s, 60)),
            retry_policy=policies.GIT_RETRY,
            summary=f"{label} — merge into {opts.target_branch}",
        )
        if merge.checks:
            res.checks = merge.checks
        if merge.merged:
            res.status, res.commit = TaskStatus.MERGED, merge.commit
        elif merge.conflict_paths:
            res.status = TaskStatus.FAILED
            res.error = "merge conflict in " + ", ".join(merge.conflict_paths)
        else:
            res.status, res.error = TaskStatus.FAILED, merge.error or "merge failed"
