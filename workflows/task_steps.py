"""The steps of a task after its workspace exists: agent runs (with usage-limit waits), verify,
review, approval and merge. TaskWorkflow composes them; each is one activity on the claimed queue."""

from __future__ import annotations

import asyncio
from datetime import timedelta
from typing import Any

from temporalio import workflow
from temporalio.exceptions import (
    ActivityError,
    ApplicationError,
    FailureError,
    TimeoutError,
    TimeoutType,
)
from temporalio.workflow import ActivityCancellationType

with workflow.unsafe.imports_passed_through():
    from autonomous_pipeline.models.activity_io import (
        SLOT_GONE,
        CleanupIn,
        CleanupOut,
        FixRequest,
        MergeIn,
        MergeOut,
        ReviewIn,
        ReviewOut,
        RunAgentIn,
        RunAgentOut,
        SlotGrant,
        VerifyIn,
        VerifyOut,
    )
    from autonomous_pipeline.models.activity_refs import (
        CLEANUP_WORKSPACE,
        MERGE_TASK,
        REVIEW_TASK,
        RUN_AGENT,
        VERIFY_TASK,
        A,
        ActivityRef,
        R,
    )
    from autonomous_pipeline.models.failure import FailureKind
    from autonomous_pipeline.models.forge import Publish
    from autonomous_pipeline.models.results import Spend, TaskResult, TaskStatus
    from autonomous_pipeline.models.review import Verdict
    from autonomous_pipeline.models.run import AgentConfig, Approval, Decision, TaskInput
    from autonomous_pipeline.workflows import metrics, policies
    from autonomous_pipeline.workflows.approval import from_operator
    from autonomous_pipeline.workflows.notices import approval_notice, tell
    from autonomous_pipeline.workflows.visibility import Shown, changes, task_attributes


def failure_message(exc: BaseException) -> str:
    """The innermost message of an activity failure: what went wrong, not how it was wrapped."""
    while isinstance(exc, ActivityError) and exc.cause is not None:
        exc = exc.cause
    if isinstance(exc, ApplicationError) and exc.type:
        return f"{exc.type}: {exc.message}"
    return str(exc)


def gave_slot_back(exc: ActivityError) -> tuple[int, Spend] | None:
    """An agent step that failed after giving its slot back (activities.slots.slot_gone): how
    many attempts it made, each of which ran the agent, and what its agent spent. None: another
    failure."""
    cause = exc.cause
    if not isinstance(cause, ApplicationError) or cause.type != SLOT_GONE:
        return None
    details = list(cause.details)
    attempts = details[0] if details and isinstance(details[0], int) else 1
    spent = Spend.model_validate(details[1]) if len(details) > 1 else Spend()
    return attempts, spent


def worker_lost(exc: ActivityError) -> bool:
    cause = exc.cause
    return isinstance(cause, TimeoutError) and cause.type == TimeoutType.SCHEDULE_TO_START


class WorkerLost(Exception):
    """No worker serves the claimed queue any more."""


def started_before_lost(lost: WorkerLost) -> bool:
    """Whether the step had started on the machine that was lost: its queue's timeout then
    carries, as its cause, the failure of the attempt that started there (its heartbeat's)."""
    exc = lost.__cause__
    timeout = exc.cause if isinstance(exc, ActivityError) else None
    return isinstance(timeout, TimeoutError) and timeout.cause is not None


class TaskSteps:
    inp: TaskInput
    result: TaskResult
    queue: str | None
    session_id: str | None
    agent_ran: bool
    diff_size: tuple[int, int]
    decision: Decision | None
    # Files the change deletes that the task does not name: (how many, the first few).
    unasked_deletions: tuple[int, list[str]]
    slot_given: bool  # the run said `go`: this task holds one of its agent slots
    grants: int  # how many `go`s the run has sent this task
    # Agent steps give their slot back as the agent exits; off once one failed after that.
    slot_at_exit: bool
    # Its agent has ended; the slot goes back with the signal that the task is merging.
    slot_to_free: bool
    fused: bool  # since "fused-steps": checks, merge and cleanup are one step where they can be
    # A signal to the run on its way, not waited for (slot per agent): the next one waits for it,
    # so the run reads them in the order they were sent.
    told: asyncio.Task[None] | None
    shown: Shown  # the search attributes written so far (searchable runs)
    notices: list[asyncio.Task[None]]  # notices on their way (--notify): the task ends after
    approvals_told: list[str]  # the commits whose wait for approval was told

    def tell_approval(self, why: str, commit: str) -> None:
        """Tell the run's receivers that a person is waiting for: once per commit."""
        config = self.inp.options.notify
        if config is None or commit in self.approvals_told:
            return
        self.approvals_told.append(commit)
        notice = approval_notice(
            config, run_of(), workflow.info().workflow_id, self.result, why, commit
        )
        self.notices.append(asyncio.create_task(tell(config, notice)))

    def show(self) -> None:
        """Write the task's search attributes that changed (its state, its cost)."""
        if self.inp.options.searchable:
            shown = task_attributes(run_of(), self.inp.options.target_branch, self.result)
            if updates := changes(shown, self.shown):
                workflow.upsert_search_attributes(updates)
                self.shown = shown

    async def _act(self, ref: ActivityRef[A, R], arg: A, **kw: Any) -> R:
        """An activity on the claimed worker's queue; a queue nobody serves any more is noticed."""
        try:
            return await workflow.execute_activity(
                ref.name,
                arg,
                result_type=ref.result,
                task_queue=self.queue,
                schedule_to_start_timeout=timedelta(seconds=self.inp.options.worker_lost_timeout_s),
                **kw,
            )
        except ActivityError as exc:
            if worker_lost(exc):
                raise WorkerLost(self.queue) from exc
            raise

    async def _run_agent(
        self,
        inp: TaskInput,
        label: str,
        base: str,
        start: str,
        fix: FixRequest | None,
        prepared: bool = False,
    ) -> RunAgentOut | None:
        """Run the agent, waiting out usage limits on durable timers. None: the task has failed.
        `prepared`: the worktree is as a fresh claim left it (checked clean at `start`)."""
        opts, res = inp.options, self.result
        assert res is not None
        waits = 0
        while True:
            agent = opts.agent
            budget = agent.claude.max_budget_usd
            if budget is not None:
                # The budget is the task's, across retries and fix rounds: each run gets what is left.
                left = round(budget - res.cost_usd, 10)
                if left <= 0:
                    res.status = TaskStatus.FAILED
                    res.error = (
                        f"budget: the task's budget of ${budget:g} is spent (${res.cost_usd:.4f})"
                    )
                    return None
                agent = agent.model_copy(
                    update={"claude": agent.claude.model_copy(update={"max_budget_usd": left})}
                )
            await self._wait_for_slot()
            try:
                out: RunAgentOut = await self._run_agent_step(
                    inp, label, base, start, agent, fix, prepared
                )
            except WorkerLost as lost:
                # Its agent ran on the machine that is gone, and may have cost: counted, as a
                # dead worker's attempt is counted when its machine comes back.
                if started_before_lost(lost):
                    res.attempts += 1
                    res.agent_runs += 1
                raise
            except ActivityError as exc:
                gone = gave_slot_back(exc)
                if gone is None:
                    raise
                earlier, spent = gone
                # The agent exited and gave its slot back, then its change was not collected:
                # the agent runs again in a slot the run gives it, held to the step's end this
                # time (the one it holds still, if the run never heard it was given back). The
                # agent ran: its session, if any, is resumed.
                self.slot_given = False
                self.slot_at_exit = False
                self.agent_ran = True
                res.attempts += earlier
                res.agent_runs += earlier
                res.add(spent)  # the task's budget counts it: the next run gets what is left
                metrics.agent_spent(inp, spent)
                continue
            self.agent_ran = True
            metrics.agent_ran(inp, out)
            res.attempts += out.attempt
            # Each attempt of the activity started the agent: one a dead worker cut short ran too.
            res.agent_runs += out.attempt
            res.add(out)
            res.transcript = out.transcript
            res.summary = out.summary or res.summary
            if out.permission_denials:
                res.permission_denials = list(
                    dict.fromkeys([*res.permission_denials, *out.permission_denials])
                )[:50]
            if out.changed_files:
                res.changed_files = out.changed_files
                res.changed_total = max(out.changed_total, len(out.changed_files))
            if out.succeeded:
                if out.commit is not None:
                    self.unasked_deletions = (
                        out.unasked_deletions_total,
                        out.unasked_deletions[:5],
                    )
                if out.commit is not None and self._finishes_in_one_step(inp):
                    # The finishing step starts now and tells the run so: that one signal frees
                    # the slot too (see _merging). A run from before slots per agent takes the
                    # slot back as the task merges, and never hands it out again: it stays given.
                    if inp.slot_per_agent:
                        self.slot_to_free = self.slot_given
                        self.slot_given = False
                else:
                    self._free_slot()  # after res.add: what it spent travels with it
                return out
            if (
                out.failure_kind is not None
                and out.failure_kind.waits
                and waits < opts.max_limit_waits
            ):
                delay = limit_delay(
                    out.failure_kind, out.reset_at, workflow.now().timestamp(), waits
                )
                waits += 1
                phase, res.phase = (
                    res.phase,
                    f"waiting {int(delay)} s for the agent's {out.failure_kind.value.replace('_', ' ')}",
                )
                # The slot stays this task's: another agent would hit the same account's limit.
                await workflow.sleep(delay)
                metrics.limit_waited(delay, "agent")
                res.phase = phase
                continue
            res.status, res.error = TaskStatus.FAILED, out.error or "the agent failed"
            self._free_slot()
            return None

    async def _run_agent_step(
        self,
        inp: TaskInput,
        label: str,
        base: str,
        start: str,
        agent: AgentConfig,
        fix: FixRequest | None,
        prepared: bool,
    ) -> RunAgentOut:
        opts = inp.options
        return await self._act(
            RUN_AGENT,
            RunAgentIn(
                run_key=inp.run_key,
                plan_title=inp.plan_title,
                task=inp.task,
                base_commit=base,
                start_commit=start,
                agent=agent,
                fix=fix,
                session_id=self.session_id,
                resume=self.agent_ran,
                sandbox=inp.sandbox_config,
                prepared=prepared and not self.agent_ran,
                slot=self._slot_grant(),
            ),
            start_to_close_timeout=timedelta(seconds=opts.agent.timeout_s)
            + policies.AGENT_TIMEOUT_SLACK,
            heartbeat_timeout=timedelta(seconds=opts.heartbeat_timeout_s),
            retry_policy=policies.AGENT_RETRY,
            # Wait until the agent is really dead before cleanup removes its worktree.
            cancellation_type=ActivityCancellationType.WAIT_CANCELLATION_COMPLETED,
            summary=f"{label} — {'fix' if fix else 'agent'} ({opts.agent.backend})",
        )

    async def _put_away(self, inp: TaskInput, summary: str, delete_branch: bool) -> CleanupOut:
        """The task's worktree removed (and its branch, with `delete_branch`): at its end, or
        while its pull request waits (the branch stays for a fix round)."""
        return await self._act(
            CLEANUP_WORKSPACE,
            CleanupIn(
                run_key=inp.run_key,
                task_id=inp.task.id,
                delete_branch=delete_branch,
                sandbox=inp.sandbox_config,
                repo=inp.options.repo,
            ),
            start_to_close_timeout=policies.GIT_TIMEOUT,
            heartbeat_timeout=timedelta(seconds=inp.options.heartbeat_timeout_s),
            retry_policy=policies.GIT_RETRY,
            summary=summary,
        )

    def _finishes_in_one_step(self, inp: TaskInput) -> bool:
        """Checks, merge and cleanup as one step: when nobody else looks at the change between
        them (no reviewer; no approval, which deleting many unnamed files always asks for)."""
        opts = inp.options
        wiped = self.unasked_deletions[0] > opts.approval_max_unasked_deletions
        return (
            self.fused
            and opts.publish is Publish.PUSH
            and opts.reviewer.backend == "none"
            and opts.approval is Approval.NEVER
            and not wiped
        )

    async def _tell_parent(self, signal: str) -> None:
        """Tell the run where this task is (its concurrency slot is freed while it merges)."""
        parent = workflow.info().parent
        if parent is None or not workflow.patched("merge-frees-slot"):
            return
        if workflow.patched("cancel-while-telling"):
            # The SDK lets a signal already sent complete and forgets a cancel that came while
            # this task waited for it: the task then went on (to wait forever for a slot). The
            # signal goes in a task of its own; only the wait for it is cancelled.
            self._tell_parent_soon(signal)
            assert self.told is not None
            await asyncio.shield(self.told)
            return
        told, self.told = self.told, None
        if told is not None:
            await told
        await self._signal_parent(signal)

    async def _signal_parent(self, signal: str, frees_slot: bool = False) -> None:
        parent = workflow.info().parent
        assert parent is not None
        args: list[object] = [self.inp.task.id, self.result.cost_usd]
        if frees_slot:
            args.append(True)
        try:
            await workflow.get_external_workflow_handle(parent.workflow_id).signal(
                signal, args=args
            )
        except FailureError as exc:  # the run has closed (cancelled): nobody to tell
            workflow.logger.warning("could not signal %s to the run: %s", signal, exc)

    def _tell_parent_soon(self, signal: str, frees_slot: bool = False) -> None:
        """`_tell_parent` without waiting for the run to have it: the next step starts now."""
        previous = self.told

        async def tell() -> None:
            if previous is not None:
                await previous
            await self._signal_parent(signal, frees_slot)

        self.told = asyncio.create_task(tell())

    async def _wait_for_slot(self) -> None:
        """Prepared ahead: the agent starts when the run gives this task one of its slots."""
        if not self.inp.agent_slot or self.slot_given:
            return
        phase, self.result.phase = self.result.phase, "slot"
        await self._tell_parent("task_ready")
        await workflow.wait_condition(lambda: self.slot_given)
        self.result.phase = phase

    def _slot_grant(self) -> SlotGrant | None:
        """The slot the agent step gives back as its agent exits (since "slot-at-exit"): the
        next agent need not wait for this change to be collected and the step to report. Not
        with a run budget, which the run checks with what the agent spent before the next starts."""
        parent = workflow.info().parent
        if (
            parent is None
            or not self.inp.slot_per_agent
            or not self.inp.slot_at_exit
            or not self.slot_given
            or not self.slot_at_exit
            or self.inp.options.budget_usd is not None
            or not workflow.patched("slot-at-exit")
        ):
            return None
        return SlotGrant(
            workflow_id=parent.workflow_id,
            run_id=parent.run_id,
            task_workflow_id=workflow.info().workflow_id,
            task_id=self.inp.task.id,
            grant=self.grants,
        )

    def _free_slot(self) -> None:
        """Slot per agent: the agent has ended; its slot goes back to the run."""
        if self.inp.slot_per_agent and self.slot_given:
            self.slot_given = False
            self._tell_parent_soon("agent_ended")

    async def _verify(self, inp: TaskInput, label: str, base: str, commit: str) -> bool:
        res, commands = self.result, inp.task.commands
        assert res is not None
        if not commands:
            return True
        res.phase = "verify"
        verify: VerifyOut = await self._act(
            VERIFY_TASK,
            VerifyIn(
                run_key=inp.run_key,
                task_id=inp.task.id,
                commands=commands,
                base_commit=base,
                timeout_s=inp.options.verify_timeout_s,
                env=inp.options.agent.env,
                sandbox=inp.sandbox_config,
            ),
            start_to_close_timeout=policies.verify_timeout(
                inp.options.verify_timeout_s, len(commands)
            ),
            heartbeat_timeout=timedelta(seconds=inp.options.heartbeat_timeout_s),
            retry_policy=policies.GIT_RETRY,
            summary=f"{label} — verify",
        )
        res.checks = verify.checks
        return verify.passed

    async def _review(self, inp: TaskInput, label: str, base: str, commit: str) -> Verdict:
        res, opts = self.result, inp.options
        assert res is not None
        # No reviewer, and no approval rule that needs the diff's size: nothing to ask a worker.
        if (
            opts.reviewer.backend == "none"
            and opts.approval is Approval.NEVER
            and workflow.patched("no-empty-review")
        ):
            res.verdict = Verdict(approved=True, summary="no reviewer")
            return res.verdict
        res.phase = "review"
        review: ReviewOut = await self._act(
            REVIEW_TASK,
            ReviewIn(
                run_key=inp.run_key,
                task=inp.task,
                base_commit=base,
                commit=commit,
                reviewer=opts.reviewer,
                sandbox=inp.sandbox_config,
                checks=inp.task.commands,
            ),
            start_to_close_timeout=timedelta(seconds=opts.reviewer.timeout_s)
            + policies.AGENT_TIMEOUT_SLACK,
            heartbeat_timeout=timedelta(seconds=opts.heartbeat_timeout_s),
            retry_policy=policies.AGENT_RETRY,
            summary=f"{label} — review ({opts.reviewer.backend})",
        )
        if opts.reviewer.backend != "none":
            res.review_rounds += 1
        res.add(review)
        res.verdict = review.verdict
        res.diffstat = review.diffstat
        self.diff_size = (review.files_changed, review.lines_deleted)
        return review.verdict

    def _why_a_person(self, inp: TaskInput) -> str | None:
        """Why the change waits for a person's approval (the run's --approval, its size, what
        it deletes); None: it does not."""
        opts = inp.options
        files, deleted = self.diff_size
        large = files > opts.approval_max_files or deleted > opts.approval_max_deletions
        unasked, examples = self.unasked_deletions
        # Whatever the run's approval setting: deleting what nobody asked for is never unattended.
        wiped = unasked > opts.approval_max_unasked_deletions
        if not wiped and (
            opts.approval is Approval.NEVER or (opts.approval is Approval.LARGE and not large)
        ):
            return None
        why = f"{files} files, {deleted} deleted lines" + (" (large)" if large else "")
        if wiped:
            why = (
                f"deletes {unasked} files the task does not name "
                f"({', '.join(examples)}{', ...' if unasked > len(examples) else ''}); {why}"
            )
        return why

    async def _approved(self, inp: TaskInput, label: str, commit: str) -> bool:
        """Wait for a person when the run asks for it. False: rejected (the task has failed)."""
        res = self.result
        assert res is not None
        why = self._why_a_person(inp)
        if why is None:
            return True
        res.phase = f"awaiting approval: {why}"
        res.approval_commit = commit  # what a person approves; what the decision must sign
        self.show()
        self.tell_approval(why, commit)
        asked = workflow.now()
        run = run_of()
        # Shown on the task's page in the Web UI, where the person deciding will look.
        workflow.set_current_details(approval_details(run, inp.task.id, why, res))
        while True:
            await workflow.wait_condition(lambda: self.decision is not None)
            decision, self.decision = self.decision, None
            assert decision is not None
            if from_operator(
                inp.approver, decision.token, decision.approved, run, inp.task.id, commit,
                inp.approval_digest,
            ):  # fmt: skip
                break
            # Whoever sent it does not hold the operator's key: an agent, a script. Not a person.
            workflow.logger.warning(
                "task %s: a decision the operator did not sign for %s was ignored",
                inp.task.id,
                commit[:12],
            )
        workflow.set_current_details("")
        res.approval_commit = None
        self.show()
        metrics.approval_waited((workflow.now() - asked).total_seconds(), decision.approved)
        if decision.approved:
            return True
        res.status = TaskStatus.FAILED
        res.error = "rejected" + (f": {decision.reason}" if decision.reason else "")
        return False

    def _merge_input(self, inp: TaskInput, base: str, commit: str) -> MergeIn:
        opts = inp.options
        return MergeIn(
            run_key=inp.run_key,
            task_id=inp.task.id,
            repo=opts.repo,
            target_branch=opts.target_branch,
            base_commit=base,
            commit=commit,
            commands=inp.task.commands,
            verify_timeout_s=opts.verify_timeout_s,
            attempts=opts.merge_attempts,
            env=opts.agent.env,
            sandbox=inp.sandbox_config,
        )

    async def _merge(self, inp: TaskInput, label: str, base: str, commit: str) -> MergeOut:
        opts, commands = inp.options, inp.task.commands
        merge: MergeOut = await self._act(
            MERGE_TASK,
            self._merge_input(inp, base, commit),
            start_to_close_timeout=policies.GIT_TIMEOUT
            + policies.verify_timeout(opts.verify_timeout_s, len(commands)),
            heartbeat_timeout=timedelta(seconds=opts.heartbeat_timeout_s),
            retry_policy=policies.GIT_RETRY,
            summary=f"{label} — merge into {opts.target_branch}",
        )
        if merge.checks:
            self.result.checks = merge.checks
        return merge


def approval_details(run: str, task_id: str, why: str, res: TaskResult) -> str:
    """What the person deciding reads on the task's page: why, what changed, where to look."""
    lines = [
        f"**Awaiting approval** ({why}).",
        "",
        f"`starter.py approve {run} {task_id}` or `starter.py reject {run} {task_id}`",
    ]
    if res.branch:
        where = f" in `{res.clone}`" if res.clone else ""
        lines += ["", f"**Branch:** `{res.branch}`{where}"]
    if res.diffstat:
        lines += ["", "```", res.diffstat, "```"]
    return "\n".join(lines)


def run_of() -> str:
    """The run's workflow id: what a person's decision names (the parent, or this one alone)."""
    parent = workflow.info().parent
    return parent.workflow_id if parent is not None else workflow.info().workflow_id


_DOING = {
    "claim": "it is waiting for a worker",
    "workspace": "it is preparing its worktree",
    "slot": "its worktree is ready and it waits for a free slot (--max-concurrent)",
    "agent": "it is running the agent",
    "verify": "it is running its checks",
    "review": "it is being reviewed",
    "merge": "it is merging",
    "checks and merge": "it is running its checks and merging",
    "conflict fix": "its agent is resolving a merge conflict",
}


def doing(res: TaskResult) -> str:
    """What a task is doing, for a sentence: "it is running the agent", "it has ended merged"."""
    if res.status.terminal:
        return f"it has ended {res.status.value}"
    if res.phase.startswith("fix round"):
        return f"its agent is in {res.phase}"
    return _DOING.get(res.phase, f"it is in step {res.phase!r}")


def limit_delay(kind: FailureKind, reset_at: float | None, now: float, waits: int) -> float:
    """Seconds to wait before the agent runs again: until the reported reset, else a backoff."""
    if kind is FailureKind.RATE_LIMIT and reset_at and reset_at > now:
        return min(reset_at - now + 5, 6 * 3600)
    return float(min(60 * 2**waits, 1800))


def unresolved(fix: FixRequest, rounds: int) -> str:
    parts = [f"`{c}` fails" for c in fix.failing_checks] + [
        f"[{f.severity.value}] {f.file + ': ' if f.file else ''}{f.message}" for f in fix.findings
    ]
    idle = f", {fix.unchanged_rounds} of which changed nothing" if fix.unchanged_rounds else ""
    return f"not resolved after {rounds} fix round(s){idle}: " + "; ".join(parts)[:1500]
