"""TaskWorkflow: workspace -> agent -> verify -> merge, and cleanup whatever happens."""

from __future__ import annotations

import asyncio
from datetime import timedelta

from temporalio import workflow
from temporalio.exceptions import ActivityError, ApplicationError, is_cancelled_exception
from temporalio.workflow import ActivityCancellationType

with workflow.unsafe.imports_passed_through():
    from models.activity_io import (
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


def failure_message(exc: BaseException) -> str:
    """The innermost message of an activity failure: what went wrong, not how it was wrapped."""
    while isinstance(exc, ActivityError) and exc.cause is not None:
        exc = exc.cause
    if isinstance(exc, ApplicationError) and exc.type:
        return f"{exc.type}: {exc.message}"
    return str(exc)


@workflow.defn
class TaskWorkflow:
    def __init__(self) -> None:
        self.result: TaskResult | None = None

    @workflow.query
    def status(self) -> TaskResult | None:
        return self.result

    @workflow.run
    async def run(self, inp: TaskInput) -> TaskResult:
        task, opts = inp.task, inp.options
        started = workflow.now()
        label = f"Task {task.id}: {task.title}"
        res = self.result = TaskResult(
            id=task.id, title=task.title, status=TaskStatus.RUNNING, phase="workspace"
        )
        cancelled = False
        try:
            ws = await workflow.execute_activity(
                "prepare_workspace",
                PrepareWorkspaceIn(
                    run_key=inp.run_key,
                    task_id=task.id,
                    repo=opts.repo,
                    target_branch=opts.target_branch,
                ),
                result_type=PrepareWorkspaceOut,
                start_to_close_timeout=policies.GIT_TIMEOUT,
                retry_policy=policies.GIT_RETRY,
                summary=f"{label} — workspace",
            )
            res.base_commit = ws.base_commit
            await self._work(inp, ws.base_commit, label)
        except (asyncio.CancelledError, ActivityError) as exc:
            if isinstance(exc, ActivityError) and not is_cancelled_exception(exc):
                res.status, res.error = TaskStatus.FAILED, f"{res.phase}: {failure_message(exc)}"
            else:
                cancelled = True
                res.status, res.error = TaskStatus.CANCELLED, f"cancelled during {res.phase}"
        finally:
            keep = res.status is TaskStatus.FAILED and opts.keep_failed_branches
            cleanup = workflow.execute_activity(
                "cleanup_workspace",
                CleanupIn(run_key=inp.run_key, task_id=task.id, delete_branch=not keep),
                result_type=CleanupOut,
                start_to_close_timeout=policies.GIT_TIMEOUT,
                retry_policy=policies.GIT_RETRY,
                summary=f"{label} — cleanup",
            )
            try:
                # A cancelled task still cleans up; its own cancellation must not cancel that.
                await (asyncio.shield(cleanup) if cancelled else cleanup)
            except ActivityError as exc:
                workflow.logger.warning(
                    "cleanup of task %s failed: %s", task.id, failure_message(exc)
                )
        res.duration_s = round((workflow.now() - started).total_seconds(), 3)
        # Cancelled or not, the outcome is a result: the parent records it instead of a failure.
        return res

    async def _work(self, inp: TaskInput, base: str, label: str) -> None:
        task, opts, res = inp.task, inp.options, self.result
        assert res is not None
        res.phase = "agent"
        agent = await workflow.execute_activity(
            "run_agent",
            RunAgentIn(
                run_key=inp.run_key,
                plan_title=inp.plan_title,
                task=task,
                base_commit=base,
                agent=opts.agent,
            ),
            result_type=RunAgentOut,
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
            verify = await workflow.execute_activity(
                "verify_task",
                VerifyIn(
                    run_key=inp.run_key,
                    task_id=task.id,
                    commands=commands,
                    base_commit=base,
                    timeout_s=opts.verify_timeout_s,
                ),
                result_type=VerifyOut,
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
        merge = await workflow.execute_activity(
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
            result_type=MergeOut,
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
