"""TaskWorkflow: pick a worker -> workspace -> agent -> verify -> merge, and cleanup whatever happens.

A task's steps share one worktree on one machine, so after `claim_worker` every activity of the task
goes to that worker's workspace queue. Workers that share a workspace (one machine) share the queue,
so a restarted worker picks up where a killed one stopped; if no worker serves the queue any more
(the machine is gone), the task is claimed again and starts over elsewhere.
"""

from __future__ import annotations

import asyncio
from datetime import timedelta

from temporalio import workflow
from temporalio.exceptions import ActivityError, is_cancelled_exception

with workflow.unsafe.imports_passed_through():
    from models.activity_io import (
        ClaimIn,
        ClaimOut,
        CleanupIn,
        CleanupOut,
        ConflictFixIn,
        ConflictFixOut,
        FixRequest,
        PrepareWorkspaceIn,
        PrepareWorkspaceOut,
    )
    from models.results import TaskResult, TaskStatus
    from models.run import Decision, TaskInput
    from workflows import policies
    from workflows.task_steps import TaskSteps, WorkerLost, failure_message, unresolved

# How often a task is moved to another worker because its worker vanished.
MAX_CLAIMS = 3


@workflow.defn
class TaskWorkflow(TaskSteps):
    def __init__(self) -> None:
        self.inp: TaskInput | None = None
        self.result: TaskResult | None = None
        self.queue: str | None = None
        self.session_id: str | None = None
        self.agent_ran = False
        self.diff_size = (0, 0)
        self.decision: Decision | None = None
        self.unasked_deletions: tuple[int, list[str]] = (0, [])

    @workflow.query
    def status(self) -> TaskResult | None:
        return self.result

    # A decision counts only with the operator's token for the task (checked in _approved).
    @workflow.signal
    def approve(self, token: str | None = None) -> None:
        self.decision = Decision(approved=True, token=token)

    @workflow.signal
    def reject(self, reason: str | None = None, token: str | None = None) -> None:
        self.decision = Decision(approved=False, reason=reason, token=token)

    @workflow.run
    async def run(self, inp: TaskInput) -> TaskResult:
        self.inp = inp
        task = inp.task
        started = workflow.now()
        label = f"Task {task.id}: {task.title}"
        res = self.result = TaskResult(
            id=task.id,
            title=task.title,
            status=TaskStatus.RUNNING,
            phase="claim",
            sandbox=inp.sandbox_config.kind.value,
        )
        cancelled = False
        try:
            for claim in range(1, MAX_CLAIMS + 1):
                res.phase = "claim"
                got = await workflow.execute_activity(
                    "claim_worker",
                    ClaimIn(run_key=inp.run_key, task_id=task.id, claim=claim),
                    result_type=ClaimOut,
                    start_to_close_timeout=timedelta(seconds=20),
                    retry_policy=policies.GIT_RETRY,
                    summary=f"{label} — pick a worker",
                )
                self.queue = got.queue
                try:
                    await self._attempt(inp, label)
                    break
                except WorkerLost:
                    workflow.logger.warning(
                        "task %s: no worker serves %s any more", task.id, self.queue
                    )
                    if claim == MAX_CLAIMS:
                        raise
        except WorkerLost:
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
            CleanupIn(
                run_key=inp.run_key,
                task_id=inp.task.id,
                delete_branch=not keep,
                sandbox=inp.sandbox_config,
            ),
            CleanupOut,
            start_to_close_timeout=policies.GIT_TIMEOUT,
            heartbeat_timeout=timedelta(seconds=inp.options.heartbeat_timeout_s),
            retry_policy=policies.GIT_RETRY,
            summary=f"{label} — cleanup",
        )
        try:
            # A cancelled task still cleans up; its own cancellation must not cancel that.
            await (asyncio.shield(cleanup) if cancelled else cleanup)
        except (ActivityError, WorkerLost) as exc:
            workflow.logger.warning(
                "cleanup of task %s failed: %s", inp.task.id, failure_message(exc)
            )

    async def _attempt(self, inp: TaskInput, label: str) -> None:
        """workspace -> agent -> (verify -> review -> approval -> merge, with fix rounds)."""
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
                sandbox=inp.sandbox_config,
            ),
            PrepareWorkspaceOut,
            start_to_close_timeout=policies.GIT_TIMEOUT,
            heartbeat_timeout=timedelta(seconds=inp.options.heartbeat_timeout_s),
            retry_policy=policies.GIT_RETRY,
            summary=f"{label} — workspace",
        )
        base = res.base_commit = ws.base_commit
        # One session for every run of the agent on this task: retries and fix rounds resume it.
        if self.session_id is None:
            self.session_id = str(workflow.uuid4())

        res.phase = "agent"
        agent = await self._run_agent(inp, label, base, start=base, fix=None)
        if agent is None:
            return
        if agent.commit is None:
            res.status, res.error = TaskStatus.NO_OP, None
            return
        commit = agent.commit
        rounds = 0
        conflict_fixed = False
        while True:
            fix = FixRequest()
            checks_ok = await self._verify(inp, label, base, commit)
            if not checks_ok:
                fix.failing_checks = [
                    c.command for c in res.checks if not c.passed and not c.pre_existing
                ]
            else:
                verdict = await self._review(inp, label, base, commit)
                if not verdict.approved:
                    fix.findings = verdict.blocking or verdict.findings
            if fix.failing_checks or fix.findings:
                if rounds >= opts.max_fix_rounds:
                    res.status = TaskStatus.FAILED
                    res.error = unresolved(fix, rounds)
                    return
                rounds += 1
                res.phase = f"fix round {rounds}"
                fixed = await self._run_agent(inp, label, base, start=commit, fix=fix)
                if fixed is None:
                    return
                commit = fixed.commit or commit
                continue

            if not await self._approved(inp, label, commit):
                return
            res.phase = "merge"
            await self._tell_parent("task_merging")
            merge = await self._merge(inp, label, base, commit)
            if merge.merged:
                res.status, res.commit, res.error = TaskStatus.MERGED, merge.commit, None
                return
            if merge.conflict_paths and not conflict_fixed:
                # One fix round with the conflicting files, on top of the target's tip.
                conflict_fixed = True
                res.phase = "conflict fix"
                await self._tell_parent("task_working")
                prep: ConflictFixOut = await self._act(
                    "prepare_conflict_fix",
                    ConflictFixIn(
                        run_key=inp.run_key,
                        task_id=task.id,
                        repo=opts.repo,
                        target_branch=opts.target_branch,
                        base_commit=base,
                        commit=commit,
                    ),
                    ConflictFixOut,
                    start_to_close_timeout=policies.GIT_TIMEOUT,
                    heartbeat_timeout=timedelta(seconds=opts.heartbeat_timeout_s),
                    retry_policy=policies.GIT_RETRY,
                    summary=f"{label} — prepare conflict fix",
                )
                base = res.base_commit = prep.base_commit
                fixed = await self._run_agent(
                    inp,
                    label,
                    base,
                    start=base,
                    fix=FixRequest(conflicts=prep.conflict_paths or merge.conflict_paths),
                )
                if fixed is None:
                    return
                if fixed.commit is None:
                    res.status, res.error = (
                        TaskStatus.FAILED,
                        "merge conflict: the fix round left nothing to merge",
                    )
                    return
                commit = fixed.commit
                continue
            res.status = TaskStatus.FAILED
            res.error = (
                "merge conflict in " + ", ".join(merge.conflict_paths)
                if merge.conflict_paths
                else merge.error or "merge failed"
            )
            return
