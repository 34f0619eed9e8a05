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
from temporalio.exceptions import ActivityError, ApplicationError, is_cancelled_exception

with workflow.unsafe.imports_passed_through():
    from autonomous_pipeline.models.activity_io import (
        ClaimIn,
        ClaimWorkspaceIn,
        CleanupOut,
        ConflictFixIn,
        ConflictFixOut,
        FinishOut,
        FixRequest,
        MergeOut,
        PrepareWorkspaceIn,
        PrepareWorkspaceOut,
    )
    from autonomous_pipeline.models.activity_refs import (
        CLAIM_WORKER,
        CLAIM_WORKSPACE,
        FINISH_TASK,
        PREPARE_CONFLICT_FIX,
        PREPARE_WORKSPACE,
    )
    from autonomous_pipeline.models.forge import Publish
    from autonomous_pipeline.models.results import TaskResult, TaskStatus
    from autonomous_pipeline.models.run import Decision, TaskInput
    from autonomous_pipeline.models.steer import DecideRequest, SteerReply
    from autonomous_pipeline.workflows import metrics, policies
    from autonomous_pipeline.workflows.approval import from_operator
    from autonomous_pipeline.workflows.notices import delivered
    from autonomous_pipeline.workflows.outcome import TASK_FAILED
    from autonomous_pipeline.workflows.pull_request import PullRequestSteps
    from autonomous_pipeline.workflows.task_steps import (
        WorkerLost,
        doing,
        failure_message,
        run_of,
        unresolved,
    )
    from autonomous_pipeline.workflows.visibility import Shown, task_attributes
    from autonomous_pipeline.workflows.work import Work

# How often a task is moved to another worker because its worker vanished.
MAX_CLAIMS = 3


@workflow.defn
class TaskWorkflow(PullRequestSteps):
    # The input arrives with the workflow, before any signal, update or query is handled: every
    # handler can rely on it (and on the task's result, which starts out running).
    @workflow.init
    def __init__(self, inp: TaskInput) -> None:
        self.inp = inp
        self.result = self.starting(inp)
        # Its search attributes as its run started it with them (searchable runs).
        self.shown: Shown = (
            task_attributes(run_of(), inp.options.target_branch, self.result)
            if inp.options.searchable
            else {}
        )
        self.queue: str | None = None
        self.session_id: str | None = None
        self.agent_ran = False
        self.diff_size = (0, 0)
        self.decision: Decision | None = None
        self.unasked_deletions: tuple[int, list[str]] = (0, [])
        self.slot_given = False
        self.slot_to_free = False
        self.grants = 0  # the run's `go`s to this task so far (SlotGrant)
        self.slot_at_exit = True
        self.told: asyncio.Task[None] | None = None
        # Runs since "fused-steps": the claim prepares the worktree, and checks, merge and
        # cleanup are one step where no reviewer and no person take part.
        self.fused = False
        self.prepared: PrepareWorkspaceOut | None = None  # by the claim, for the next attempt
        self.cleaned = False  # the worktree was put away by the finishing step
        self.seen: list[str] = []  # --publish pr: the events of its PR acted on already
        self.handed_over: dict[str, str] = {}  # and the heads the host merges on its own
        self.pushed_head: str | None = None
        self.pr_number: int | None = None
        self.pr_foreign = False
        self.pushed_at = ""
        self.notices: list[asyncio.Task[None]] = []
        self.approvals_told: list[str] = []

    @staticmethod
    def starting(inp: TaskInput) -> TaskResult:
        return TaskResult(
            id=inp.task.id,
            title=inp.task.title,
            status=TaskStatus.RUNNING,
            phase="claim",
            sandbox=inp.sandbox_config.kind.value,
        )

    @workflow.signal
    def go(self) -> None:
        """From the run: one of its agent slots is this task's; its agent may start."""
        self.slot_given = True
        self.grants += 1

    @workflow.query
    def status(self) -> TaskResult:
        return self.result

    # A decision counts only with the operator's token for the task (checked in _approved).
    @workflow.signal
    def approve(self, token: str | None = None) -> None:
        self.decision = Decision(approved=True, token=token)

    @workflow.signal
    def reject(self, reason: str | None = None, token: str | None = None) -> None:
        self.decision = Decision(approved=False, reason=reason, token=token)

    @workflow.update
    def decide(self, req: DecideRequest) -> SteerReply:
        """approve or reject, answered: refused (with why) unless the task waits for a decision
        and the operator's key signed this one for the commit waiting."""
        assert self.result.approval_commit is not None  # the validator refused it otherwise
        self.decision = Decision(approved=req.approved, reason=req.reason, token=req.token)
        commit = self.result.approval_commit[:12]
        if req.approved:
            return SteerReply(message=f"approved {commit}: the task goes on to merge")
        return SteerReply(message=f"rejected {commit}: the task ends failed")

    @decide.validator
    def _check_decide(self, req: DecideRequest) -> None:
        res, inp = self.result, self.inp
        if res.approval_commit is None:
            raise ValueError(f"task {res.id} is not waiting for approval: {doing(res)}")
        pending = self.decision
        if pending is not None and from_operator(
            inp.approver, pending.token, pending.approved, run_of(), res.id, res.approval_commit,
            inp.approval_digest,
        ):  # fmt: skip
            # Two decisions of the operator's in one moment (an approve racing a reject): the
            # first counts. (An unsigned one pending is no decision; this one replaces it.)
            raise ValueError(f"task {res.id} has a decision being applied already")
        if not from_operator(
            inp.approver, req.token, req.approved, run_of(), res.id, res.approval_commit,
            inp.approval_digest,
        ):  # fmt: skip
            raise ValueError(
                f"the decision is not signed by this run's operator key for {res.approval_commit[:12]}"
            )

    @workflow.run
    async def run(self, inp: TaskInput) -> TaskResult:
        task = inp.task
        started = workflow.now()
        label = f"Task {task.id}: {task.title}"
        res = self.result
        cancelled = False
        try:
            self.fused = workflow.patched("fused-steps")
            for claim in range(1, MAX_CLAIMS + 1):
                await self._claim(inp, label, claim)
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
            await self._close_left_pr(inp, label, cancelled)
            await self._cleanup(inp, label, cancelled)
        if self.told is not None:
            # A signal to the run still on its way: the task ends only once the run has it.
            await self.told
        res.duration_s = round((workflow.now() - started).total_seconds(), 3)
        self.show()
        metrics.task_finished(inp, res)
        say = workflow.logger.warning if res.status is TaskStatus.FAILED else workflow.logger.info
        say(
            "task %s ended %s%s",
            task.id,
            res.status.value,
            f": {res.error}" if res.error else "",
            extra={"phase": res.phase, "status": res.status.value, "cost_usd": res.cost_usd},
        )
        await delivered(self.notices)
        if res.status in (TaskStatus.FAILED, TaskStatus.CANCELLED) and workflow.patched(
            "fail-visibly"
        ):
            # Failed in the Web UI at a glance; the parent reads the result from the failure.
            raise ApplicationError(
                f"task {task.id} {res.status.value}: {res.error or ''}"[:2000],
                res,
                type=TASK_FAILED,
                non_retryable=True,
            )
        # Before that patch, the outcome was always a result.
        return res

    async def _claim(self, inp: TaskInput, label: str, claim: int) -> None:
        """A worker for the task: its queue is where every later step goes. Since "fused-steps"
        the worker prepares the task's worktree as it claims it."""
        task, res = inp.task, self.result
        if not self.fused:
            res.phase = "claim"
            got = await workflow.execute_activity(
                CLAIM_WORKER.name,
                ClaimIn(run_key=inp.run_key, task_id=task.id, claim=claim),
                result_type=CLAIM_WORKER.result,
                start_to_close_timeout=timedelta(seconds=20),
                retry_policy=policies.GIT_RETRY,
                summary=f"{label} — pick a worker",
            )
            self.queue = got.queue
            return
        res.phase = "workspace"
        claimed = await workflow.execute_activity(
            CLAIM_WORKSPACE.name,
            ClaimWorkspaceIn(
                run_key=inp.run_key,
                task_id=task.id,
                repo=inp.options.repo,
                target_branch=inp.options.target_branch,
                sandbox=inp.sandbox_config,
                fresh=not self.agent_ran,
                claim=claim,
            ),
            result_type=CLAIM_WORKSPACE.result,
            start_to_close_timeout=policies.GIT_TIMEOUT,
            heartbeat_timeout=timedelta(seconds=inp.options.heartbeat_timeout_s),
            retry_policy=policies.GIT_RETRY,
            summary=f"{label} — pick a worker, prepare the worktree",
        )
        self.queue = claimed.queue
        self.prepared = PrepareWorkspaceOut(
            base_commit=claimed.base_commit, branch=claimed.branch, clone=claimed.clone
        )

    async def _cleanup(self, inp: TaskInput, label: str, cancelled: bool) -> None:
        res = self.result
        assert res is not None
        if self.queue is None or self.cleaned:
            return
        keep = res.status is TaskStatus.FAILED and inp.options.keep_failed_branches
        cleanup = self._put_away(inp, f"{label} — cleanup", delete_branch=not keep)
        try:
            # A cancelled task still cleans up; its own cancellation must not cancel that.
            out: CleanupOut = await (asyncio.shield(cleanup) if cancelled else cleanup)
            res.branch, res.clone = out.kept_branch, out.clone
        except (ActivityError, WorkerLost) as exc:
            workflow.logger.warning(
                "cleanup of task %s failed: %s", inp.task.id, failure_message(exc)
            )

    async def _attempt(self, inp: TaskInput, label: str) -> None:
        """The story of one attempt: the agent makes a change; checks and review find what is
        wrong and fix rounds mend it; a person approves it if asked; it merges, or a merge
        conflict sends it back to be checked again. Each step returns where the change stands
        next, or None once the task has ended (its result says how)."""
        work = await self._first_change(inp, label)
        while work is not None:
            if inp.options.publish is Publish.PR:
                work = await self._through_pr(inp, label, work)
                continue
            if self._finishes_in_one_step(inp):
                work = await self._finish(inp, label, work)
                continue
            fix = await self._findings(inp, label, work)
            if fix is not None:
                work = await self._fix_round(inp, label, work, fix)
                continue
            if not await self._approved(inp, label, work.commit):
                return
            work = await self._merge_or_rework(inp, label, work)

    async def _first_change(self, inp: TaskInput, label: str) -> Work | None:
        """workspace -> agent: the task's first commit, or None (the agent failed or did nothing)."""
        task, opts, res = inp.task, inp.options, self.result
        res.phase = "workspace"
        claimed = self.prepared is not None and not self.agent_ran
        ws = self.prepared or await self._act(
            PREPARE_WORKSPACE,
            PrepareWorkspaceIn(
                run_key=inp.run_key,
                task_id=task.id,
                repo=opts.repo,
                target_branch=opts.target_branch,
                sandbox=inp.sandbox_config,
            ),
            start_to_close_timeout=policies.GIT_TIMEOUT,
            heartbeat_timeout=timedelta(seconds=inp.options.heartbeat_timeout_s),
            retry_policy=policies.GIT_RETRY,
            summary=f"{label} — workspace",
        )
        self.prepared = None  # a later attempt (after a lost worker) claims and prepares anew
        base = res.base_commit = ws.base_commit
        # Where the task's work can be looked at while it runs (an approval) and, if kept, after.
        res.branch, res.clone = ws.branch, ws.clone
        # One session for every run of the agent on this task: retries and fix rounds resume it.
        if self.session_id is None:
            self.session_id = str(workflow.uuid4())
        await self._wait_for_slot()
        res.phase = "agent"
        agent = await self._run_agent(inp, label, base, start=base, fix=None, prepared=claimed)
        if agent is None:
            return None
        if agent.commit is None:
            res.status, res.error = TaskStatus.NO_OP, None
            return None
        return Work(base=base, commit=agent.commit)

    async def _findings(self, inp: TaskInput, label: str, work: Work) -> FixRequest | None:
        """What the change must fix (failing checks, else the review's findings), or None."""
        if work.standing is not None:
            # The last fix round changed nothing: its request stands, with no reason to verify.
            fix, work.standing = work.standing, None
            return fix
        fix = FixRequest()
        if not await self._verify(inp, label, work.base, work.commit):
            fix.failed = [c for c in self.result.checks if not c.passed and not c.pre_existing]
            fix.failing_checks = [c.command for c in fix.failed]
        else:
            verdict = await self._review(inp, label, work.base, work.commit)
            if not verdict.approved:
                fix.findings = verdict.blocking or verdict.findings
        return fix if fix.failing_checks or fix.findings else None

    async def _fix_round(
        self, inp: TaskInput, label: str, work: Work, fix: FixRequest
    ) -> Work | None:
        """One fix round: the change to check again, or None (out of rounds, or the agent failed)."""
        res = self.result
        if work.rounds >= inp.options.max_fix_rounds:
            res.status, res.error = TaskStatus.FAILED, unresolved(fix, work.rounds)
            return None
        work.rounds += 1
        metrics.fix_round(fix)
        res.phase = f"fix round {work.rounds}"
        fixed = await self._run_agent(inp, label, work.base, start=work.commit, fix=fix)
        if fixed is None:
            return None
        if fixed.commit is None and workflow.patched("fix-no-change"):
            fix.unchanged_rounds += 1
            work.standing = fix
            return work
        work.commit = fixed.commit or work.commit
        return work

    async def _finish(self, inp: TaskInput, label: str, work: Work) -> Work | None:
        """Checks, merge and cleanup in one step (see backends.finish): None once the task has
        ended; else the change to go on with, after a fix round (failing checks) or a conflict
        fix."""
        opts, res = inp.options, self.result
        if work.standing is not None:
            # The last fix round changed nothing: its request stands, with no reason to check.
            fix, work.standing = work.standing, None
            return await self._fix_round(inp, label, work, fix)
        res.phase = "checks and merge"
        await self._merging(inp)
        out: FinishOut = await self._act(
            FINISH_TASK,
            # Straight after an agent run: the worktree is as that step left it.
            self._merge_input(inp, work.base, work.commit).model_copy(update={"after_agent": True}),
            start_to_close_timeout=policies.GIT_TIMEOUT
            + 2 * policies.verify_timeout(opts.verify_timeout_s, len(inp.task.commands)),
            heartbeat_timeout=timedelta(seconds=opts.heartbeat_timeout_s),
            retry_policy=policies.GIT_RETRY,
            summary=f"{label} — checks, merge into {opts.target_branch}",
        )
        if out.checks:
            res.checks = out.checks
        # Moved onto the target's tip to be checked there: fix rounds go on from it.
        work.base = res.base_commit = out.base_commit
        work.commit = out.commit
        if out.cleaned:
            self.cleaned = True
            res.branch = res.clone = None  # merged: the branch is gone with the worktree
        if out.merge is None:
            fix = FixRequest(failed=[c for c in out.checks if not c.passed and not c.pre_existing])
            fix.failing_checks = [c.command for c in fix.failed]
            self._tell_parent_soon("task_working")  # checked and found wanting: working again
            return await self._fix_round(inp, label, work, fix)
        return await self._merged(inp, label, work, out.merge)

    async def _merging(self, inp: TaskInput) -> None:
        """Tell the run the task is merging (its concurrency slot is free meanwhile)."""
        frees, self.slot_to_free = self.slot_to_free, False
        if inp.slot_per_agent:
            # The merge need not wait for the run to hear.
            self._tell_parent_soon("task_merging", frees_slot=frees)
        else:
            await self._tell_parent("task_merging")

    async def _merge_or_rework(self, inp: TaskInput, label: str, work: Work) -> Work | None:
        """Merge; None once the task has ended (merged, already on the target, or failed). A
        first merge conflict gets one fix round on the target's tip: that change is returned,
        to be checked again."""
        self.result.phase = "merge"
        await self._merging(inp)
        merge = await self._merge(inp, label, work.base, work.commit)
        return await self._merged(inp, label, work, merge)

    async def _merged(self, inp: TaskInput, label: str, work: Work, merge: MergeOut) -> Work | None:
        """What a merge's outcome makes of the task (see _merge_or_rework)."""
        task, opts, res = inp.task, inp.options, self.result
        metrics.merged(merge)
        if merge.merged:
            res.status, res.commit, res.error = TaskStatus.MERGED, merge.commit, None
            return None
        if merge.on_target:
            # Nothing of this task's was published: `commit` is the one that carries it.
            res.status, res.commit, res.error = TaskStatus.ON_TARGET, merge.commit, None
            return None
        if not merge.conflict_paths or work.conflict_fixed:
            res.status = TaskStatus.FAILED
            res.error = (
                "merge conflict in " + ", ".join(merge.conflict_paths)
                if merge.conflict_paths
                else merge.error or "merge failed"
            )
            return None
        # One fix round with the conflicting files, on top of the target's tip.
        work.conflict_fixed = True
        res.phase = "conflict fix"
        await self._tell_parent("task_working")
        prep: ConflictFixOut = await self._act(
            PREPARE_CONFLICT_FIX,
            ConflictFixIn(
                run_key=inp.run_key,
                task_id=task.id,
                repo=opts.repo,
                target_branch=opts.target_branch,
                base_commit=work.base,
                commit=work.commit,
            ),
            start_to_close_timeout=policies.GIT_TIMEOUT,
            heartbeat_timeout=timedelta(seconds=opts.heartbeat_timeout_s),
            retry_policy=policies.GIT_RETRY,
            summary=f"{label} — prepare conflict fix",
        )
        work.base = res.base_commit = prep.base_commit
        conflicts = FixRequest(conflicts=prep.conflict_paths or merge.conflict_paths)
        metrics.fix_round(conflicts)
        fixed = await self._run_agent(inp, label, work.base, start=work.base, fix=conflicts)
        if fixed is None:
            return None
        if fixed.commit is None:
            res.status = TaskStatus.FAILED
            res.error = "merge conflict: the fix round left nothing to merge"
            return None
        work.commit = fixed.commit
        return work
