"""Fake activities registered under the real names, scripted per task."""

from __future__ import annotations

import asyncio
from collections import defaultdict
from dataclasses import dataclass, field

from temporalio import activity

from models.activity_io import (
    ClaimIn,
    ClaimOut,
    CleanupIn,
    CleanupOut,
    MergeIn,
    MergeOut,
    PrepareRunIn,
    PrepareRunOut,
    PrepareWorkspaceIn,
    PrepareWorkspaceOut,
    RunAgentIn,
    RunAgentOut,
    VerifyIn,
    VerifyOut,
)
from models.results import CheckResult


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
    lost_queue_claims: dict[str, int] = field(default_factory=dict)


class FakeActivities:
    def __init__(self, script: Script, queue: str = "") -> None:
        self.script = script
        self.queue = queue
        self.calls: list[tuple[str, str]] = []
        self.agent_runs: dict[str, int] = defaultdict(int)
        self.running = 0
        self.max_running = 0
        self.cleaned: list[str] = []
        self.merged_order: list[str] = []
        self.cancelled: list[str] = []

    @activity.defn(name="prepare_run")
    async def prepare_run(self, inp: PrepareRunIn) -> PrepareRunOut:
        self.calls.append(("prepare_run", ""))
        if self.script.prepare_run_fails:
            from temporalio.exceptions import ApplicationError

            raise ApplicationError("repository unreachable", type="GitError", non_retryable=True)
        return PrepareRunOut(target_commit="base0", created_target=True)

    @activity.defn(name="claim_worker")
    async def claim_worker(self, inp: ClaimIn) -> ClaimOut:
        self.calls.append(("claim_worker", inp.task_id))
        lost = self.script.lost_queue_claims.get(inp.task_id, 0)
        if inp.claim <= lost:  # a queue no worker serves: the worker "vanished"
            return ClaimOut(queue="nobody-serves-this", host="gone")
        return ClaimOut(queue=self.queue, host="test")

    @activity.defn(name="prepare_workspace")
    async def prepare_workspace(self, inp: PrepareWorkspaceIn) -> PrepareWorkspaceOut:
        self.calls.append(("prepare_workspace", inp.task_id))
        return PrepareWorkspaceOut(base_commit=f"base-{inp.task_id}", branch=f"b/{inp.task_id}")

    @activity.defn(name="run_agent")
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
        if tid in self.script.agent_fails or (
            tid in self.script.agent_fails_once and self.agent_runs[tid] == 1
        ):
            return RunAgentOut(exit_code=1, succeeded=False, error="agent exited with code 1")
        if tid in self.script.no_op:
            return RunAgentOut(exit_code=0, succeeded=True, commit=None)
        return RunAgentOut(
            exit_code=0, succeeded=True, commit=f"c-{tid}", changed_files=[f"{tid}.txt"]
        )

    @activity.defn(name="verify_task")
    async def verify_task(self, inp: VerifyIn) -> VerifyOut:
        self.calls.append(("verify_task", inp.task_id))
        ok = inp.task_id not in self.script.verify_fails
        return VerifyOut(
            passed=ok,
            checks=[
                CheckResult(command=c, exit_code=0 if ok else 1, passed=ok) for c in inp.commands
            ],
        )

    @activity.defn(name="merge_task")
    async def merge_task(self, inp: MergeIn) -> MergeOut:
        self.calls.append(("merge_task", inp.task_id))
        if inp.task_id in self.script.conflict:
            return MergeOut(merged=False, conflict_paths=["shared.py"])
        self.merged_order.append(inp.task_id)
        return MergeOut(merged=True, commit=f"m-{inp.task_id}")

    @activity.defn(name="cleanup_workspace")
    async def cleanup_workspace(self, inp: CleanupIn) -> CleanupOut:
        self.cleaned.append(inp.task_id)
        return CleanupOut(removed_worktree=True, deleted_branch=inp.delete_branch)

    def all(self) -> list:
        return [
            self.prepare_run,
            self.claim_worker,
            self.prepare_workspace,
            self.run_agent,
            self.verify_task,
            self.merge_task,
            self.cleanup_workspace,
        ]
