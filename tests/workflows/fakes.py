"""Fake activities registered under the real names, scripted per task."""

from __future__ import annotations

import asyncio
from collections import defaultdict
from dataclasses import dataclass, field

from temporalio import activity

from autonomous_pipeline.activities.slots import giving_back
from autonomous_pipeline.models.activity_io import (
    ClaimIn,
    ClaimOut,
    ClaimWorkspaceIn,
    ClaimWorkspaceOut,
    CleanupIn,
    CleanupOut,
    ConflictFixIn,
    ConflictFixOut,
    FinishOut,
    MergeIn,
    MergeOut,
    PrepareRunIn,
    PrepareRunOut,
    PrepareWorkspaceIn,
    PrepareWorkspaceOut,
    ReviewIn,
    ReviewOut,
    RunAgentIn,
    RunAgentOut,
    VerifyIn,
    VerifyOut,
)
from autonomous_pipeline.models.activity_refs import (
    CLAIM_WORKER,
    CLAIM_WORKSPACE,
    CLEANUP_WORKSPACE,
    FINISH_TASK,
    MERGE_TASK,
    NOTIFY,
    PREPARE_CONFLICT_FIX,
    PREPARE_RUN,
    PREPARE_WORKSPACE,
    REVIEW_TASK,
    RUN_AGENT,
    VERIFY_TASK,
)
from autonomous_pipeline.models.failure import FailureKind
from autonomous_pipeline.models.notify import Notice, NotifyIn, NotifyOut
from autonomous_pipeline.models.results import CheckResult, Spend
from autonomous_pipeline.models.review import Finding, Severity, Verdict
from tests.workflows.fake_host import FakeHost, HostScript


@dataclass
class Script:
    """What each fake does, by task id."""

    agent_fails: set[str] = field(default_factory=set)
    agent_fails_once: set[str] = field(default_factory=set)
    no_op: set[str] = field(default_factory=set)
    verify_fails: set[str] = field(default_factory=set)
    conflict: set[str] = field(default_factory=set)
    agent_seconds: float = 0.05
    slow: dict[str, float] = field(default_factory=dict)
    prepare_run_fails: bool = False
    conflict_once: set[str] = field(default_factory=set)
    reject_reviews: dict[str, int] = field(default_factory=dict)  # task -> reviews that reject
    verify_fails_times: dict[str, int] = field(default_factory=dict)  # task -> failing verifies
    rate_limited: dict[str, int] = field(default_factory=dict)  # task -> limited runs
    overloaded: dict[str, int] = field(default_factory=dict)
    auth_fails: set[str] = field(default_factory=set)
    agent_cost: float = 0.25
    large_diff: set[str] = field(default_factory=set)
    lost_queue_claims: dict[str, int] = field(default_factory=dict)
    unasked_deletions: dict[str, int] = field(default_factory=dict)  # task -> files deleted
    merge_seconds: float = 0.0
    fix_no_change: set[str] = field(default_factory=set)  # fix rounds that commit nothing
    on_target: set[str] = field(default_factory=set)  # changes other work already merged
    verify_output: str | None = None  # what a failing check prints (default: a pytest line)
    cleanup_seconds: dict[str, float] = field(default_factory=dict)  # task -> cleanup time
    verify_seconds: dict[str, float] = field(default_factory=dict)  # task -> verification time
    # finish_task moves these tasks' changes onto a target tip "tip2-<id>" before checking them
    moved_base: set[str] = field(default_factory=set)
    prepare_seconds: dict[str, float] = field(default_factory=dict)  # task -> worktree time
    # How long the agent step takes after its agent exits (collecting the change).
    collect_seconds: float = 0.0
    collect_fails_once: set[str] = field(default_factory=set)  # the first collect raises
    # The first run's step fails while its agent runs (as a worker lost would): no slot given back.
    agent_crashes_once: set[str] = field(default_factory=set)
    host: HostScript = field(default_factory=HostScript)  # the code host (--publish pr)
    notify_fails_once: bool = False  # each notice's first send fails
    notify_held: set[str] = field(default_factory=set)  # notices of these kinds wait for the gate


class FakeActivities:
    def __init__(self, script: Script, queue: str = "") -> None:
        self.script = script
        self.queue = queue
        self.calls: list[tuple[str, str]] = []
        self.agent_runs: dict[str, int] = defaultdict(int)
        self.running = 0
        self.max_running = 0
        self.cleaned: list[str] = []
        self.notices: list[Notice] = []  # delivered, in order
        self.notify_failed: list[Notice] = []
        self.notify_entered = asyncio.Event()  # a held notice is being sent
        self.notify_gate = asyncio.Event()  # and may go on
        self.merged_order: list[str] = []
        self.cancelled: list[str] = []
        self.agent_inputs: list[RunAgentIn] = []
        self.verify_inputs: list[VerifyIn] = []
        self.reviews: dict[str, int] = defaultdict(int)
        self.verifies: dict[str, int] = defaultdict(int)
        self.commits: dict[str, int] = defaultdict(int)
        self.finishes: list[MergeIn] = []
        self.checkouts: set[str] = set()  # tasks holding a worktree: prepared, not cleaned up
        self.max_checkouts = 0
        self.host = FakeHost(script.host)

    @activity.defn(name=PREPARE_RUN.name)
    async def prepare_run(self, inp: PrepareRunIn) -> PrepareRunOut:
        self.calls.append(("prepare_run", ""))
        if self.script.prepare_run_fails:
            from temporalio.exceptions import ApplicationError

            raise ApplicationError("repository unreachable", type="GitError", non_retryable=True)
        return PrepareRunOut(target_commit="base0", created_target=True)

    @activity.defn(name=CLAIM_WORKER.name)
    async def claim_worker(self, inp: ClaimIn) -> ClaimOut:
        self.calls.append(("claim_worker", inp.task_id))
        lost = self.script.lost_queue_claims.get(inp.task_id, 0)
        if inp.claim <= lost:  # a queue no worker serves: the worker "vanished"
            return ClaimOut(queue="nobody-serves-this", host="gone")
        return ClaimOut(queue=self.queue, host="test")

    @activity.defn(name=PREPARE_WORKSPACE.name)
    async def prepare_workspace(self, inp: PrepareWorkspaceIn) -> PrepareWorkspaceOut:
        await asyncio.sleep(self.script.prepare_seconds.get(inp.task_id, 0.0))
        self.calls.append(("prepare_workspace", inp.task_id))
        self.checkouts.add(inp.task_id)
        self.max_checkouts = max(self.max_checkouts, len(self.checkouts))
        return PrepareWorkspaceOut(base_commit=f"base-{inp.task_id}", branch=f"b/{inp.task_id}")

    @activity.defn(name=RUN_AGENT.name)
    async def run_agent(self, inp: RunAgentIn) -> RunAgentOut:
        tid = inp.task.id
        self.calls.append(("run_agent", tid))
        self.agent_runs[tid] += 1
        self.running += 1
        self.max_running = max(self.max_running, self.running)
        try:
            seconds = self.script.slow.get(tid, self.script.agent_seconds)
            while seconds > 0:
                activity.heartbeat()
                await asyncio.sleep(min(0.05, seconds))
                seconds -= 0.05
        except asyncio.CancelledError:
            self.cancelled.append(tid)
            raise
        finally:
            self.running -= 1
        if tid in self.script.agent_crashes_once and self.agent_runs[tid] == 1:
            from temporalio.exceptions import ApplicationError

            raise ApplicationError("the worker went away", type="WorkerGone")
        self.calls.append(("agent_ended", tid))
        self.agent_inputs.append(inp)
        spend = {
            "cost_usd": self.script.agent_cost,
            "tokens_in": 1000,
            "tokens_out": 100,
            "session_id": inp.session_id,
        }
        n = self.agent_runs[tid]
        if tid in self.script.auth_fails:
            from temporalio.exceptions import ApplicationError

            raise ApplicationError("auth: Not logged in", type="AgentAuthError", non_retryable=True)
        if n <= self.script.rate_limited.get(tid, 0):
            reset = activity.info().current_attempt_scheduled_time.timestamp() + 3600
            return RunAgentOut(
                exit_code=1,
                succeeded=False,
                error="rate_limit: usage limit",
                failure_kind=FailureKind.RATE_LIMIT,
                reset_at=reset,
                **spend,
            )
        if n <= self.script.overloaded.get(tid, 0):
            return RunAgentOut(
                exit_code=1,
                succeeded=False,
                error="overloaded: 529",
                failure_kind=FailureKind.OVERLOADED,
                **spend,
            )
        if tid in self.script.agent_fails or (tid in self.script.agent_fails_once and n == 1):
            return RunAgentOut(
                exit_code=1,
                succeeded=False,
                error="agent exited with code 1",
                failure_kind=FailureKind.OTHER,
                **spend,
            )
        # As the real step does once its agent has exited and succeeded: the slot goes back
        # while the change is collected.
        spent = Spend(cost_usd=self.script.agent_cost, tokens_in=1000, tokens_out=100)
        async with giving_back(inp.slot, tid, activity.info().attempt, spent):
            await asyncio.sleep(self.script.collect_seconds)
            if tid in self.script.collect_fails_once and n == 1:
                from temporalio.exceptions import ApplicationError

                raise ApplicationError("could not collect the change", type="GitError")
        self.calls.append(("collected", tid))
        if tid in self.script.no_op or (inp.fix is not None and tid in self.script.fix_no_change):
            return RunAgentOut(exit_code=0, succeeded=True, commit=None, **spend)
        self.commits[tid] += 1
        return RunAgentOut(
            exit_code=0,
            succeeded=True,
            commit=f"c-{tid}-{self.commits[tid]}",
            changed_files=[f"{tid}.txt"],
            unasked_deletions=[
                f"src/{i}.py" for i in range(self.script.unasked_deletions.get(tid, 0))
            ][:5],
            unasked_deletions_total=self.script.unasked_deletions.get(tid, 0),
            **spend,
        )

    @activity.defn(name=VERIFY_TASK.name)
    async def verify_task(self, inp: VerifyIn) -> VerifyOut:
        self.calls.append(("verify_task", inp.task_id))
        self.verify_inputs.append(inp)
        self.verifies[inp.task_id] += 1
        await asyncio.sleep(self.script.verify_seconds.get(inp.task_id, 0.0))
        self.calls.append(("verified", inp.task_id))
        failing = self.verifies[inp.task_id] <= self.script.verify_fails_times.get(inp.task_id, 0)
        ok = inp.task_id not in self.script.verify_fails and not failing
        return VerifyOut(
            passed=ok,
            checks=[
                CheckResult(
                    command=c,
                    exit_code=0 if ok else 1,
                    passed=ok,
                    output_tail=""
                    if ok
                    else self.script.verify_output or f"FAILED test_{inp.task_id}: assert 1 == 2",
                )
                for c in inp.commands
            ],
        )

    @activity.defn(name=MERGE_TASK.name)
    async def merge_task(self, inp: MergeIn) -> MergeOut:
        self.calls.append(("merge_task", inp.task_id))
        await asyncio.sleep(self.script.merge_seconds)
        fixed = inp.base_commit.startswith("tip-")
        if inp.task_id in self.script.conflict or (
            inp.task_id in self.script.conflict_once and not fixed
        ):
            return MergeOut(merged=False, conflict_paths=["shared.py"])
        if inp.task_id in self.script.on_target:
            return MergeOut(merged=False, on_target=True, commit="other-work")
        self.merged_order.append(inp.task_id)
        self.calls.append(("merged", inp.task_id))
        return MergeOut(merged=True, commit=f"m-{inp.task_id}")

    @activity.defn(name=REVIEW_TASK.name)
    async def review_task(self, inp: ReviewIn) -> ReviewOut:
        tid = inp.task.id
        self.calls.append(("review_task", tid))
        self.reviews[tid] += 1
        big = tid in self.script.large_diff
        if self.reviews[tid] <= self.script.reject_reviews.get(tid, 0):
            finding = Finding(
                severity=Severity.MAJOR, file="a.py", line=1, message="missing edge case"
            )
            verdict = Verdict(approved=False, findings=[finding])
        else:
            verdict = Verdict(approved=True, summary="fine")
        cost = 0.05 if inp.reviewer.backend != "none" else 0.0
        return ReviewOut(
            verdict=verdict,
            files_changed=40 if big else 1,
            lines_deleted=500 if big else 0,
            cost_usd=cost,
        )

    @activity.defn(name=PREPARE_CONFLICT_FIX.name)
    async def prepare_conflict_fix(self, inp: ConflictFixIn) -> ConflictFixOut:
        self.calls.append(("prepare_conflict_fix", inp.task_id))
        return ConflictFixOut(base_commit=f"tip-{inp.task_id}", conflict_paths=["shared.py"])

    @activity.defn(name=NOTIFY.name)
    async def notify(self, inp: NotifyIn) -> NotifyOut:
        if inp.notice.kind in self.script.notify_held:
            self.notify_entered.set()
            await self.notify_gate.wait()
        if self.script.notify_fails_once and not any(
            n.id == inp.notice.id for n in self.notify_failed
        ):
            self.notify_failed.append(inp.notice)
            raise RuntimeError("the receiver is down")
        self.notices.append(inp.notice)
        return NotifyOut(sent=len(inp.urls))

    @activity.defn(name=CLEANUP_WORKSPACE.name)
    async def cleanup_workspace(self, inp: CleanupIn) -> CleanupOut:
        await asyncio.sleep(self.script.cleanup_seconds.get(inp.task_id, 0.0))
        self.cleaned.append(inp.task_id)
        self.checkouts.discard(inp.task_id)
        return CleanupOut(removed_worktree=True, deleted_branch=inp.delete_branch)

    # The fused steps record the same calls as the steps they stand for, in the same order.
    @activity.defn(name=CLAIM_WORKSPACE.name)
    async def claim_workspace(self, inp: ClaimWorkspaceIn) -> ClaimWorkspaceOut:
        claimed = await self.claim_worker(
            ClaimIn(**inp.model_dump(include={"run_key", "task_id", "claim"}))
        )
        prepared = await self.prepare_workspace(inp)
        return ClaimWorkspaceOut(**prepared.model_dump(), queue=claimed.queue, host=claimed.host)

    @activity.defn(name=FINISH_TASK.name)
    async def finish_task(self, inp: MergeIn) -> FinishOut:
        self.finishes.append(inp)
        if inp.task_id in self.script.moved_base and not inp.base_commit.startswith("tip2-"):
            inp = inp.model_copy(
                update={"base_commit": f"tip2-{inp.task_id}", "commit": f"{inp.commit}-moved"}
            )
        checks: list[CheckResult] = []
        if inp.commands:
            verified = await self.verify_task(
                VerifyIn(
                    run_key=inp.run_key,
                    task_id=inp.task_id,
                    commands=inp.commands,
                    base_commit=inp.base_commit,
                    timeout_s=inp.verify_timeout_s,
                    env=inp.env,
                    sandbox=inp.sandbox,
                )
            )
            if not verified.passed:
                return FinishOut(
                    base_commit=inp.base_commit,
                    commit=inp.commit,
                    passed=False,
                    checks=verified.checks,
                )
            checks = verified.checks
        merge = await self.merge_task(inp)
        cleaned = merge.merged or merge.on_target
        if cleaned:
            await self.cleanup_workspace(CleanupIn(run_key=inp.run_key, task_id=inp.task_id))
        return FinishOut(
            base_commit=inp.base_commit,
            commit=inp.commit,
            passed=True,
            checks=merge.checks or checks,
            merge=merge,
            cleaned=cleaned,
        )

    def all(self) -> list:
        return [
            self.prepare_run,
            self.claim_worker,
            self.prepare_workspace,
            self.run_agent,
            self.verify_task,
            self.merge_task,
            self.review_task,
            self.prepare_conflict_fix,
            self.cleanup_workspace,
            self.notify,
            self.claim_workspace,
            self.finish_task,
            *self.host.all(),
        ]
