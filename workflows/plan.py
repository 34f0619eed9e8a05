"""PlanWorkflow: one run of a plan. Schedules TaskWorkflow children, takes signals, answers `status`."""

from __future__ import annotations

import asyncio
from datetime import timedelta

from temporalio import workflow
from temporalio.exceptions import (
    ActivityError,
    ApplicationError,
    ChildWorkflowError,
    FailureError,
)

with workflow.unsafe.imports_passed_through():
    from autonomous_pipeline.models.activity_io import AGENT_EXITED, PrepareRunIn, SlotGrant
    from autonomous_pipeline.models.activity_refs import PREPARE_RUN
    from autonomous_pipeline.models.notify import Notice
    from autonomous_pipeline.models.results import (
        PlanResult,
        ProgressMemo,
        RunProgress,
        RunStatus,
        TaskResult,
        TaskStatus,
    )
    from autonomous_pipeline.models.revision import (
        REVISE,
        REVISION_REFUSED,
        PlanRevision,
        RevisionReply,
        RunCarry,
    )
    from autonomous_pipeline.models.run import CancelRequest, PlanRunInput, TaskInput
    from autonomous_pipeline.models.sandbox import sandbox_of
    from autonomous_pipeline.models.steer import SteerKind, SteerReply, SteerRequest
    from autonomous_pipeline.workflows import policies
    from autonomous_pipeline.workflows.notices import (
        budget_notice,
        delivered,
        failed_notice,
        finished_notice,
        tell,
    )
    from autonomous_pipeline.workflows.outcome import (
        RUN_FAILED,
        TASK_FAILED,
        outcome_line,
        progress_memo,
        result_of,
    )
    from autonomous_pipeline.workflows.progress import details_markdown
    from autonomous_pipeline.workflows.revision import (
        apply,
        carried,
        pin_sandboxes,
        refusals,
        refused_message,
        reply,
    )
    from autonomous_pipeline.workflows.schedule import Schedule
    from autonomous_pipeline.workflows.steering import RunState, accepted, find_task, refusal
    from autonomous_pipeline.workflows.task import TaskWorkflow, failure_message
    from autonomous_pipeline.workflows.visibility import (
        Shown,
        changes,
        run_attributes,
        task_attributes,
        typed,
    )


@workflow.defn
class PlanWorkflow:
    # The input arrives with the workflow, before any signal, update or query is handled.
    @workflow.init
    def __init__(self, inp: PlanRunInput) -> None:
        self.inp = inp
        self.started = False  # the tasks' results are laid out
        self.results: dict[str, TaskResult] = {}
        self.running: dict[str, asyncio.Task[None]] = {}
        # Running tasks that are merging, with what they spent: merges queue on the target, not
        # on agent slots, and the run's budget counts their spending before they finish.
        self.merging: dict[str, float] = {}
        # Merging tasks that wait on their pull request with no checkout (--publish pr): people
        # may take days, and the tasks after them need not wait for that.
        self.parked: set[str] = set()
        # What running tasks said they had spent when their agent ended (slot per agent).
        self.spending: dict[str, float] = {}
        # Agent slots (runs since "agent-slots"): --max-concurrent bounds tasks working (agent,
        # checks, review), not tasks getting ready; a few more prepare their worktree ahead and
        # wait, in `ready`, for the run's `go`. `working`: tasks holding a slot now; `had_slot`:
        # tasks whose agent has started (they are never held back).
        self.slots = False
        # Since "slot-per-agent" a slot is held while an agent runs, not until the merge: a task
        # gives it back when its agent ends and asks again (`ready`) before a fix round.
        self.per_agent = False
        # Since "slots-not-idle": a slot waits for an earlier task still preparing only when
        # there are not enough free for both.
        self.not_idle = False
        # Since "ahead-after-slots": tasks ahead start once the free slots' tasks are ready.
        self.ahead_waits = False
        # Since "slot-at-exit": agent steps give their slot back as their agent exits.
        self.at_exit = False
        self.ready: list[str] = []
        self.working: set[str] = set()
        self.had_slot: set[str] = set()
        # How many `go`s each running task has had: an agent step that gives its slot back as
        # its agent exits names which one (SlotGrant), so a late one frees nothing.
        self.grants: dict[str, int] = {}
        self.signals: set[asyncio.Task[None]] = set()  # `go` signals on their way
        # Tasks stopped before their agent started: how their result reads.
        self.held_back: dict[str, tuple[TaskStatus, str]] = {}
        self.cancel_sent: set[str] = set()  # tasks `cancel --now` has cancelled
        self.tries: dict[str, int] = {}
        self.skip_running: set[str] = set()
        self.paused = False
        self.cancelling = False
        self.cancel_now = False
        self.requests: list[tuple[str, str]] = []  # ("retry" | "skip", task id), in arrival order
        self.target_commit: str | None = None
        self.child_ids: dict[str, str] = {}
        self.budget_spent = False
        self.status = RunStatus.RUNNING
        self.changed = False
        self.finished = False
        self.memo: ProgressMemo | None = None  # what the memo says now
        self.shown: Shown = {}  # the search attributes written so far (searchable runs)
        self.notices: list[asyncio.Task[None]] = []  # notices on their way (--notify)
        # The plan as revised (`revise`): the schedule of its tasks, and the run's tasks that
        # revisions took out of it (they keep their results, and are never retried).
        self.sched = Schedule(inp.plan, inp.options.rerun_done)
        self.removed: set[str] = set()
        self.revision = 0
        # Tasks a revision is holding back (their preparation stops): never given a slot.
        self.revision_held: set[str] = set()
        # Since "continue-as-new": the history is past twice its limit; no new task starts until
        # none runs, and the run continues as new.
        self.draining = False
        self.no_carry = False  # found too large to carry: the run stays in this history

    # ------------------------------------------------------------------ signals and query

    @workflow.signal
    def pause(self) -> None:
        self.paused, self.changed = True, True

    @workflow.signal
    def resume(self) -> None:
        self.paused, self.changed = False, True

    @workflow.signal
    def cancel(self, request: CancelRequest | None = None) -> None:
        self.cancelling = True
        self.cancel_now = self.cancel_now or bool(request and request.now)
        self.changed = True

    @workflow.update
    def steer(self, req: SteerRequest) -> SteerReply:
        """pause, resume, cancel, retry, skip, answered: the caller learns whether it took
        effect (a refused request fails its update, with the reason, and is not recorded)."""
        message = accepted(self._state(), req)
        if req.kind is SteerKind.PAUSE:
            self.pause()
        elif req.kind is SteerKind.RESUME:
            self.resume()
        elif req.kind is SteerKind.CANCEL:
            self.cancel(CancelRequest(now=req.now))
        else:
            self.requests.append((req.kind.value, req.task or ""))
            self.changed = True
        return SteerReply(message=message)

    @steer.validator
    def _check_steer(self, req: SteerRequest) -> None:
        problem = refusal(self._state(), req)
        if problem is not None:
            raise ValueError(problem)

    def _state(self) -> RunState:
        return RunState(
            tasks=self.results,
            paused=self.paused,
            cancelling=self.cancelling,
            cancel_now=self.cancel_now,
            merging=frozenset(self.merging),
            budget_spent=self.budget_spent,
            finished=self.finished,
            started=self.started,
            removed=frozenset(self.removed),
        )

    @workflow.update(name=REVISE)
    async def revise(self, rev: PlanRevision) -> RevisionReply:
        """The plan file as it reads now: new tasks are added, tasks not started run with their
        new text, removed ones not started end skipped; running and ended tasks are kept. The
        reply says what happened to each task that changed."""
        # Sent with the run's start (update-with-start), it arrives before the tasks are laid out.
        await workflow.wait_condition(lambda: self.started)
        if rev.digest == self.inp.plan_digest:
            return reply(self.revision, [], same=True)
        # Again: the run may have moved on while this waited. A refusal fails the update, not
        # the run's workflow task.
        try:
            self._check_revision(rev)
        except ValueError as exc:  # ending, or being cancelled: no lines to point at
            raise ApplicationError(str(exc), type="RevisionNotTaken", non_retryable=True) from None
        unstarted = {
            t
            for t in self.running
            if self.slots and (t not in self.had_slot or t in self.held_back)
        }
        plan = pin_sandboxes(self.inp.plan, rev.plan, self.inp.options.sandbox.kind)
        applied = apply(
            self.inp.plan,
            self.results,
            plan,
            unstarted,
            self.inp.options.rerun_done,
            frozenset(self.inp.merged_before),
        )
        self.revision += 1
        self.results = applied.results
        self.removed = applied.removed
        self.inp = self.inp.model_copy(update={"plan": plan, "plan_digest": rev.digest})
        self.sched = Schedule(plan, self.inp.options.rerun_done)
        for tid, why in applied.hold_back.items():
            if tid not in self.held_back:
                self.running[tid].cancel()
            self.held_back[tid] = why
            self.revision_held.add(tid)
        workflow.logger.info(
            "plan revision %d: %d tasks changed", self.revision, len(applied.changes)
        )
        self.changed = True
        self._publish_details()
        return reply(self.revision, applied.changes)

    @revise.validator
    def _check_revision(self, rev: PlanRevision) -> None:
        if rev.digest == self.inp.plan_digest:  # the same plan: attaching, never refused
            return
        if self.finished:
            raise ValueError(
                "the run is ending; once it has ended, the same command starts a run of this plan"
            )
        if self.cancelling:
            raise ValueError("the run is being cancelled; no revision can run")
        if not self.started:  # sent with the start: the handler checks it once laid out
            return
        issues = refusals(self.inp.plan, self.results, rev.plan, frozenset(rev.outside))
        if issues:
            raise ApplicationError(
                refused_message(rev.plan_file, issues),
                *[i.model_dump() for i in issues],
                type=REVISION_REFUSED,
                non_retryable=True,
            )

    @workflow.signal
    def task_merging(self, task_id: str, cost_usd: float = 0.0, frees_slot: bool = False) -> None:
        """From a task: its agent work is done and it waits for the target; its slot is free.
        `frees_slot`: its agent has just ended, and this says so too (no `agent_ended` came)."""
        if frees_slot:
            self.agent_ended(task_id, cost_usd)
        if task_id in self.running:
            self.merging[task_id] = cost_usd
            self.changed = True

    @workflow.signal
    def task_parked(self, task_id: str, cost_usd: float = 0.0) -> None:
        """From a task merging: it waits on its pull request and has given its checkout back."""
        if task_id in self.merging:
            self.parked.add(task_id)
            self.changed = True

    @workflow.signal
    def task_ready(self, task_id: str, cost_usd: float = 0.0) -> None:
        """From a task: its worktree is ready; it waits for a slot to start its agent."""
        if self.at_exit and task_id in self.running and task_id in self.working:
            # It asks for the slot it holds: its agent step failed after giving the slot back
            # (since "slot-at-exit"), and that signal never came. It keeps it, and goes on.
            self._grant(task_id)
            return
        if task_id in self.running and task_id not in self.working and task_id not in self.ready:
            self.ready.append(task_id)
            self.changed = True

    @workflow.signal
    def agent_ended(self, task_id: str, cost_usd: float = 0.0) -> None:
        """From a task: its agent has ended; its slot is free while it is checked and reviewed."""
        if task_id in self.running:
            self.spending[task_id] = cost_usd
        if task_id in self.working:
            self.working.discard(task_id)
            self.changed = True

    @workflow.signal(name=AGENT_EXITED)
    def agent_exited(self, grant: SlotGrant) -> None:
        """From a task's agent step: its agent has exited and succeeded; the slot is free while
        the step collects the change. Only the slot of the latest `go` to the task's current try
        (a step that fails after this asks for a slot again: TaskSteps._run_agent)."""
        tid = grant.task_id
        if (
            self.at_exit
            and tid in self.working
            and self.grants.get(tid) == grant.grant
            and self.child_ids.get(tid) == grant.task_workflow_id
        ):
            self.working.discard(tid)
            self.changed = True

    @workflow.signal
    def task_working(self, task_id: str, cost_usd: float = 0.0) -> None:
        """From a task: it runs an agent again (a conflict fix) and counts as running again."""
        self.merging.pop(task_id, None)
        self.parked.discard(task_id)

    @workflow.signal
    def retry(self, task_id: str) -> None:
        self.requests.append(("retry", task_id))
        self.changed = True

    @workflow.signal
    def skip(self, task_id: str) -> None:
        self.requests.append(("skip", task_id))
        self.changed = True

    @workflow.signal
    async def approve(self, task_id: str, token: str | None = None) -> None:
        await self._decide(task_id, "approve", [token] if token else [])

    @workflow.signal
    async def reject(self, task_id: str, token: str | None = None) -> None:
        await self._decide(task_id, "reject", [None, token] if token else [])

    async def _decide(self, raw: str, signal: str, args: list[str | None]) -> None:
        """Forward a person's decision to the task's own workflow, which is waiting for it (and
        checks the operator's token)."""
        tid = next((t for t in self.child_ids if t.lower() == raw.lower()), None)
        if tid is None or tid not in self.running:
            workflow.logger.warning("%s: task %r is not running", signal, raw)
            return
        handle = workflow.get_external_workflow_handle(self.child_ids[tid])
        await handle.signal(signal, args=args)

    @workflow.query(name="status")
    def status_query(self) -> RunProgress:
        return RunProgress(
            workflow_id=workflow.info().workflow_id,
            status=self.status,
            paused=self.paused,
            cancelling=self.cancelling,
            target_branch=self.inp.options.target_branch,
            target_commit=self.target_commit,
            tasks=list(self.results.values()),
            total_cost_usd=self._spent(),
            revision=self.revision,
            draining=self.draining and not self.finished,
        )

    def _spent(self) -> float:
        finished = sum(r.cost_usd for r in self.results.values())
        # A task's spending only grows: the newer of its two reports is the larger. Summed in the
        # order the reports came: runs before "slot-per-agent" have only `merging`'s.
        said = [*self.merging, *(t for t in self.spending if t not in self.merging)]
        running = sum(max(self.merging.get(t, 0.0), self.spending.get(t, 0.0)) for t in said)
        return round(finished + running, 10)

    # ------------------------------------------------------------------ the run

    @workflow.run
    async def run(self, inp: PlanRunInput) -> PlanResult:
        sched = self.sched
        if inp.carried is not None:
            self._take_over(inp.carried)
        for tid in sched.order:
            if tid in self.results:  # carried
                continue
            task = sched.tasks[tid]
            before = tid in sched.initially_done or tid in inp.merged_before
            self.results[tid] = TaskResult(
                id=tid,
                title=task.title,
                status=TaskStatus.DONE_BEFORE if before else TaskStatus.PENDING,
            )
        self.started = True
        self._publish_details()
        try:
            if inp.carried is None:  # a continued run's target is prepared, its commit carried
                await self._prepare(inp)
            self.slots = workflow.patched("agent-slots")
            self.per_agent = self.slots and workflow.patched("slot-per-agent")
            self.not_idle = self.per_agent and workflow.patched("slots-not-idle")
            self.ahead_waits = self.not_idle and workflow.patched("ahead-after-slots")
            self.at_exit = self.per_agent and workflow.patched("slot-at-exit")
            await self._drive()
        except ActivityError as exc:
            reason = f"run setup failed: {failure_message(exc)}"
            for r in self.results.values():
                if r.status is TaskStatus.PENDING:
                    r.status, r.error = TaskStatus.SKIPPED, reason
            return await self._ended(self._finish(reason))
        except asyncio.CancelledError:
            # The workflow itself was cancelled: behave as `cancel --now`, then report.
            self.cancelling = self.cancel_now = True
            await self._drain()
        return await self._ended(self._finish())

    async def _prepare(self, inp: PlanRunInput) -> None:
        """The run's clone and target branch, ready (idempotent)."""
        prep = await workflow.execute_activity(
            PREPARE_RUN.name,
            PrepareRunIn(
                run_key=inp.run_key,
                repo=inp.options.repo,
                base_commit=inp.options.base_commit,
                target_branch=inp.options.target_branch,
            ),
            result_type=PREPARE_RUN.result,
            start_to_close_timeout=policies.GIT_TIMEOUT,
            heartbeat_timeout=timedelta(seconds=inp.options.heartbeat_timeout_s),
            retry_policy=policies.GIT_RETRY,
            summary=f"prepare {inp.options.target_branch} from {inp.options.base_commit[:10]}",
        )
        self.target_commit = prep.target_commit

    def _notify(self, notice: Notice) -> None:
        """Tell the run's receivers, without waiting: the run goes on meanwhile."""
        if self.inp.options.notify is not None:
            self.notices.append(asyncio.create_task(tell(self.inp.options.notify, notice)))

    async def _ended(self, result: PlanResult) -> PlanResult:
        """The run's end, told; then every notice delivered (or given up) before it closes."""
        workflow.logger.info(
            "run ended %s",
            outcome_line(result),
            extra={"status": result.status.value, "cost_usd": result.total_cost_usd},
        )
        if self.inp.options.notify is not None:
            self._notify(finished_notice(self.inp.options.notify, result))
            await delivered(self.notices)
        return self._end(result)

    def _end(self, result: PlanResult) -> PlanResult:
        """A run that did not complete ends its workflow failed, so the Web UI and every list
        show it at a glance; the result travels in the failure, where the starter reads it."""
        if result.status is RunStatus.COMPLETED or not workflow.patched("fail-visibly"):
            return result
        raise ApplicationError(outcome_line(result), result, type=RUN_FAILED, non_retryable=True)

    async def _drive(self) -> None:
        while True:
            sched = self.sched  # a revision replaces it between passes
            self._take_requests(sched)
            states = {t: r.status for t, r in self.results.items()}
            for tid, dep, reason in sched.blocked(states):
                r = self.results[tid]
                r.status, r.error, r.blocked_by = TaskStatus.SKIPPED, reason, dep
            if await self._continue_if_due():
                continue
            if self.cancelling:
                for r in self.results.values():
                    if r.status is TaskStatus.PENDING:
                        r.status, r.error = (
                            TaskStatus.CANCELLED,
                            "the run was cancelled before the task started",
                        )
                if self.cancel_now:
                    self._cancel_running()
                else:
                    why = "the run was cancelled before its agent started"
                    self._hold_back(TaskStatus.CANCELLED, why)
                    self._give_slots(fresh=False)
            elif self._over_budget():
                for r in self.results.values():
                    if r.status is TaskStatus.PENDING:
                        r.status, r.error = TaskStatus.SKIPPED, self._budget_message()
                self._hold_back(TaskStatus.SKIPPED, self._budget_message())
                self._give_slots(fresh=False)
            elif not self.paused and not self.draining:
                states = {t: r.status for t, r in self.results.items()}
                limit = self.inp.options.max_concurrent
                if self.slots:
                    limit += self.inp.options.ahead
                for tid in sched.ready(states):
                    if not self._room(limit) or self._ahead_must_wait():
                        break
                    self._start(tid, sched)
                self._give_slots()
            else:
                # Paused (or draining): a task prepared ahead has not started its agent; it
                # waits as pending, not as running, holding nothing, and starts afresh on resume.
                self._hold_back(TaskStatus.PENDING, "")
                self._give_slots(fresh=False)
            self._publish_details()
            pending = [t for t, r in self.results.items() if r.status is TaskStatus.PENDING]
            if not self.running and not pending:
                return
            if not self.running and not self.paused and not self.cancelling and not self.draining:
                states = {t: r.status for t, r in self.results.items()}
                if sched.blocked(states):
                    # A dependency ended (failed, skipped) as this pass began: the top of the
                    # loop skips its dependants with that reason.
                    continue
                if not sched.ready(states):  # unreachable for a validated plan; never hang on it
                    for tid in pending:
                        self.results[tid].status = TaskStatus.SKIPPED
                        self.results[tid].error = "its dependencies can never be satisfied"
                    continue
            self.changed = False
            await workflow.wait_condition(lambda: self.changed)

    def _history_due(self) -> int:
        """0: the history is small; 1: the run continues as new once no task runs; 2: it is past
        twice its limit, and no new task starts until none runs."""
        info = workflow.info()
        limit = self.inp.options.history_limit
        events, size = info.get_current_history_length(), info.get_current_history_size()
        if events >= 2 * limit or size >= 2 * policies.HISTORY_BYTES:
            return 2
        if events >= limit or size >= policies.HISTORY_BYTES or info.is_continue_as_new_suggested():
            return 1
        return 0

    async def _continue_if_due(self) -> bool:
        """Continue as new when the history is large and no task runs, carrying the tasks'
        states, the plan as revised and what the operator asked. True: the state changed while
        the run made ready (go round again)."""
        due = self._history_due()
        if not due or self.cancelling or self.finished or self.no_carry:
            return False
        pending = any(r.status is TaskStatus.PENDING for r in self.results.values())
        if not pending or not workflow.patched("continue-as-new"):
            return False
        self.draining = due == 2
        if self.running:
            return False
        # Nothing in flight is lost: notices go out, then updates and signals being handled
        # finish; nothing awaits between that and the continue-as-new.
        await delivered(self.notices)
        await workflow.wait_condition(workflow.all_handlers_finished)
        if self.running or self.cancelling or self.requests or self.finished:
            return True
        carry = self._carry(lean=False)
        size = len(self.inp.model_copy(update={"carried": carry}).model_dump_json())
        if size > policies.MAX_CARRY_BYTES:
            carry = self._carry(lean=True)
            size = len(self.inp.model_copy(update={"carried": carry}).model_dump_json())
        if size > policies.MAX_CARRY_BYTES:
            # Too large to carry even lean (a plan near the input's limit, thousands of tasks):
            # the run goes on in this history, which has room to the server's hard limit.
            workflow.logger.warning("run too large to continue as new (%d bytes); goes on", size)
            self.no_carry = True
            self.draining = False
            return True
        workflow.logger.info(
            "run continues as new after %d events", workflow.info().get_current_history_length()
        )
        workflow.continue_as_new(self.inp.model_copy(update={"carried": carry}))

    def _carry(self, lean: bool) -> RunCarry:
        return RunCarry(
            results=[carried(r, lean) for r in self.results.values()],
            tries=self.tries,
            removed=sorted(self.removed),
            revision=self.revision,
            paused=self.paused,
            budget_spent=self.budget_spent,
            target_commit=self.target_commit,
            continued=(self.inp.carried.continued + 1) if self.inp.carried else 1,
        )

    def _take_over(self, carry: RunCarry) -> None:
        """The state of the run this one continues."""
        self.results = {r.id: r for r in carry.results}
        self.tries = dict(carry.tries)
        self.removed = set(carry.removed)
        self.revision = carry.revision
        self.paused = carry.paused
        self.budget_spent = carry.budget_spent
        self.target_commit = carry.target_commit

    def _room(self, limit: int) -> bool:
        """Whether one more task may start: fewer than `limit` tasks (--max-concurrent plus
        --prepare-ahead) before or in their agent. Slot per agent: tasks whose agent has ended
        (checked, reviewed, waiting for a fix round's slot) do not count, so the next tasks get
        ready during their checks; but all running tasks, merging ones included, stay fewer than
        `limit` + --max-concurrent: the bound on checks running and on worktrees held."""
        active = len(self.running) - len(self.merging)
        # --max-checkouts: every running task holds a checkout, merging ones included (but for
        # those parked on their pull request).
        checkouts = self.inp.options.max_checkouts
        holding = len(self.running) - len(self.parked)
        if not self.per_agent:
            return active < limit and (checkouts is None or holding < checkouts)
        agent_done = sum(
            1
            for t in self.running
            if t not in self.merging and t in self.had_slot and t not in self.working
        )
        cap = limit + self.inp.options.max_concurrent
        if checkouts is not None:
            cap = min(cap, checkouts)
        return active - agent_done < limit and holding < cap

    def _ahead_must_wait(self) -> bool:
        """Since "ahead-after-slots": while slots are free, a task is started ahead of them only
        once the tasks that will take them have their worktrees ready. Started together, the
        tasks ahead built theirs beside the first agents' and every agent started later. With
        every slot busy, tasks ahead start at once: their worktrees are built during agents."""
        if not self.ahead_waits:
            return False
        free = self.inp.options.max_concurrent - sum(
            1 for t in self.working if t in self.running and t not in self.merging
        )
        preparing = [
            t
            for t in self.running
            if t not in self.had_slot and t not in self.ready and t not in self.held_back
        ]
        # The free slots the tasks ready now do not take go to those still preparing.
        left = free - len(self.ready)
        return left > 0 and len(preparing) >= left

    def _cancel_running(self) -> None:
        """Cancel every running task, once: a second cancel of a task already cancelling would
        stop waiting for its workflow to end, and the run could close while it cleans up."""
        for tid, t in self.running.items():
            if tid in self.cancel_sent and workflow.patched("cancel-once"):
                continue
            self.cancel_sent.add(tid)
            t.cancel()

    def _give_slots(self, fresh: bool = True) -> None:
        """`go` to the tasks waiting, first in the plan first, while slots are free. Not `fresh`
        (paused, cancelling, out of budget): only to tasks whose agent has run, for a fix round;
        the others are held back."""
        busy = sum(1 for t in self.working if t in self.running and t not in self.merging)
        while self.slots and busy < self.inp.options.max_concurrent:
            # The plan's order among the ready (the results are laid out in it). First agents
            # start in that order too, not in the order their worktrees got ready: a task does
            # not take a slot an earlier one, still preparing, will want. Since "slots-not-idle"
            # only when the slots free are too few for both: with enough for every earlier task,
            # a slot does not stay idle while the slowest worktree is built.
            order = list(self.results)
            free = self.inp.options.max_concurrent - busy
            waiting = [
                t
                for t in self.ready
                if (fresh or t in self.had_slot)
                and t not in self.revision_held
                and (
                    t in self.had_slot
                    or not self.per_agent
                    or not self._preparing_before(t, order, free)
                )
            ]
            if not waiting:
                return
            tid = min(waiting, key=order.index)
            self.ready.remove(tid)
            if tid not in self.running:
                continue
            self.working.add(tid)
            self.had_slot.add(tid)
            busy += 1
            self._grant(tid)

    def _grant(self, tid: str) -> None:
        """Send `go`: the task's agent may start in the slot counted for it."""
        self.grants[tid] = self.grants.get(tid, 0) + 1
        sent = asyncio.create_task(self._go(tid))
        self.signals.add(sent)
        sent.add_done_callback(self.signals.discard)

    def _preparing_before(self, tid: str, order: list[str], free: int) -> bool:
        """Whether tasks before `tid` in the plan, still preparing their worktree for their first
        agent (a few seconds at most), will want the `free` slots: they get them first."""
        at = order.index(tid)
        earlier = sum(
            1
            for t in self.running
            if t not in self.had_slot
            and t not in self.ready
            and t not in self.held_back
            and order.index(t) < at
        )
        if not self.not_idle:
            return earlier > 0
        return earlier >= free

    async def _go(self, tid: str) -> None:
        try:
            await workflow.get_external_workflow_handle(self.child_ids[tid]).signal(TaskWorkflow.go)
        except FailureError as exc:  # it ended meanwhile: its end frees the slot
            workflow.logger.warning("could not give task %s its slot: %s", tid, exc)

    def _hold_back(self, status: TaskStatus, reason: str) -> None:
        """Tasks prepared ahead whose agent has not started end now, to read as `status`:
        no new agent starts (the run is cancelled, its budget spent, or it is paused)."""
        if not self.slots:
            return
        for tid, t in self.running.items():
            if tid not in self.had_slot and tid not in self.held_back:
                self.held_back[tid] = (status, reason)
                t.cancel()

    def _over_budget(self) -> bool:
        budget = self.inp.options.budget_usd
        if budget is not None and self._spent() >= budget and not self.budget_spent:
            self.budget_spent = True
            if self.inp.options.notify is not None:
                spent = self._spent()
                self._notify(
                    budget_notice(
                        self.inp.options.notify,
                        workflow.info().workflow_id,
                        self._budget_message(),
                        spent,
                    )
                )
        return self.budget_spent

    def _budget_message(self) -> str:
        return f"the run's budget of ${self.inp.options.budget_usd:g} is spent (${self._spent():.2f}); no new task starts"

    def _start(self, tid: str, sched: Schedule) -> None:
        n = self.tries[tid] = self.tries.get(tid, 0) + 1
        task = sched.tasks[tid]
        self.results[tid].status = TaskStatus.RUNNING
        self.results[tid].title = task.title  # a revision may have renamed it
        task_input = TaskInput(
            run_key=self.inp.run_key,
            plan_title=self.inp.plan.title,
            task=task,
            options=self.inp.options,
            attempt=n,
            sandbox=sandbox_of(self.inp.plan, task, self.inp.options.sandbox),
            approver=self.inp.approver,
            approval_digest=self.inp.approval_digests.get(tid),
            agent_slot=self.slots,
            slot_per_agent=self.per_agent,
            slot_at_exit=self.at_exit,
        )
        self.running[tid] = asyncio.create_task(self._run_child(tid, task_input))

    async def _run_child(self, tid: str, task_input: TaskInput) -> None:
        base = workflow.info().workflow_id
        child_id = f"{base}/task-{tid}" + (
            f"/try-{task_input.attempt}" if task_input.attempt > 1 else ""
        )
        self.child_ids[tid] = child_id
        self.results[tid].workflow_id = child_id  # where `status` and a person's decision go
        task = task_input.task
        previous = self.results[tid]
        previous_attempts = previous.attempts
        opts = self.inp.options
        # Searchable from its first moment: the task's attributes come with its start.
        attributes = (
            typed(task_attributes(base, opts.target_branch, TaskWorkflow.starting(task_input)))
            if opts.searchable
            else None
        )
        try:
            res = await workflow.execute_child_workflow(
                TaskWorkflow.run,
                task_input,
                id=child_id,
                static_summary=f"Task {task.id}: {task.title}",
                static_details=task.instructions[:4000],
                search_attributes=attributes,
            )
        except asyncio.CancelledError:
            res = TaskResult(
                id=tid, title=task.title, status=TaskStatus.CANCELLED, error="cancelled"
            )
        except ChildWorkflowError as exc:
            # A task that failed ends its workflow failed, with its result in the failure.
            res = result_of(exc.cause, TASK_FAILED, TaskResult) or TaskResult(
                id=tid,
                title=task.title,
                status=TaskStatus.FAILED,
                error=failure_message(exc.cause or exc),
            )
        res.workflow_id = child_id
        res.attempts += previous_attempts
        res.add(previous)  # what earlier tries of the task spent counts too
        res.agent_runs += previous.agent_runs
        if tid in self.skip_running:
            self.skip_running.discard(tid)
            res.status, res.error = TaskStatus.SKIPPED, "skipped by request while running"
        elif tid in self.held_back and res.status is TaskStatus.CANCELLED:
            res.status, res.error = self.held_back[tid]
            if res.status is TaskStatus.PENDING:  # back in line: what it had, nothing more
                res = TaskResult(id=tid, title=task.title, status=TaskStatus.PENDING)
                res.attempts, res.agent_runs = previous_attempts, previous.agent_runs
                res.add(previous)
        self.held_back.pop(tid, None)
        self.revision_held.discard(tid)
        self.cancel_sent.discard(tid)
        self.working.discard(tid)
        self.had_slot.discard(tid)
        self.grants.pop(tid, None)
        if tid in self.ready:
            self.ready.remove(tid)
        if res.status is TaskStatus.MERGED and res.commit:
            self.target_commit = res.commit
        self.results[tid] = res
        if res.status is TaskStatus.FAILED and self.inp.options.notify is not None:
            self._notify(failed_notice(self.inp.options.notify, base, res))
        del self.running[tid]
        self.parked.discard(tid)
        self.merging.pop(tid, None)
        self.spending.pop(tid, None)
        self.changed = True

    def _take_requests(self, sched: Schedule) -> None:
        while self.requests:
            kind, raw = self.requests.pop(0)
            tid = find_task(self.results, raw)
            if tid is None:
                workflow.logger.warning("%s: no task %r in this run", kind, raw)
                continue
            if kind == "retry" and tid in self.removed:  # the signal skips the update's check
                workflow.logger.warning("retry: task %s was removed from the plan", tid)
                continue
            r = self.results[tid]
            if kind == "skip":
                if r.status is TaskStatus.PENDING:
                    r.status, r.error = TaskStatus.SKIPPED, "skipped by request"
                elif r.status is TaskStatus.RUNNING:
                    self.skip_running.add(tid)
                    self.running[tid].cancel()
            elif kind == "retry" and r.status in (
                TaskStatus.FAILED,
                TaskStatus.CANCELLED,
                TaskStatus.SKIPPED,
            ):
                r.status, r.error, r.blocked_by = TaskStatus.PENDING, None, None
                # Dependants skipped for want of a dependency get their chance again (those
                # still held back by another failed task are skipped again at once).
                for dep in sched.dependants(tid):
                    d = self.results[dep]
                    # A field, not the error's text: a replay rebuilds it for older runs too,
                    # since the skip that sets it is this code's.
                    if d.status is TaskStatus.SKIPPED and d.blocked_by is not None:
                        d.status, d.error, d.blocked_by = TaskStatus.PENDING, None, None

    async def _drain(self) -> None:
        for t in self.running.values():
            t.cancel()
        if self.running:
            await asyncio.gather(*self.running.values(), return_exceptions=True)

    def _finish(self, message: str = "") -> PlanResult:
        statuses = [r.status for r in self.results.values()]
        if self.cancelling:
            self.status = RunStatus.CANCELLED
        elif (
            any(s in (TaskStatus.FAILED, TaskStatus.CANCELLED) for s in statuses)
            or message
            or self.budget_spent
        ):
            self.status = RunStatus.FAILED
        else:
            self.status = RunStatus.COMPLETED
        self.finished = True
        self._publish_details()
        return PlanResult(
            workflow_id=workflow.info().workflow_id,
            status=self.status,
            target_branch=self.inp.options.target_branch,
            target_commit=self.target_commit,
            tasks=list(self.results.values()),
            message=message or (self._budget_message() if self.budget_spent else ""),
            total_cost_usd=self._spent(),
            plan_digest=self.inp.plan_digest,
            revision=self.revision,
        )

    def _publish_details(self) -> None:
        workflow.set_current_details(
            details_markdown(self.inp, list(self.results.values()), self.paused, self.status)
        )
        # The memo keeps the run's state readable when no worker answers a query; it is
        # written only when something the operator sees has changed.
        memo = progress_memo(
            self.status,
            self.results,
            self.paused,
            self.cancelling,
            self.target_commit,
        )
        if memo != self.memo and workflow.patched("status-memo"):
            self.memo = memo
            workflow.upsert_memo({"progress": memo})
        if self.inp.options.searchable:
            state = "paused" if self.paused and not self.finished else self.status.value
            shown = run_attributes(
                workflow.info().workflow_id, self.inp.options.target_branch, state, self._spent()
            )
            if updates := changes(shown, self.shown):
                workflow.upsert_search_attributes(updates)
                self.shown = shown
