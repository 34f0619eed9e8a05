"""What a run reports: task outcomes, the run's result, and the live status query."""

from __future__ import annotations

from enum import StrEnum

from pydantic import BaseModel, Field

from autonomous_pipeline.models.review import Verdict


class TaskStatus(StrEnum):
    PENDING = "pending"
    RUNNING = "running"
    # Terminal states: every task of every run ends in one of these.
    MERGED = "merged"
    # The change was already on the target through other work (another run, a person): nothing
    # of this task's was published; `commit` is the target's commit that carries it.
    ON_TARGET = "on_target"
    FAILED = "failed"
    SKIPPED = "skipped"
    NO_OP = "no_op"
    DONE_BEFORE = "done_before"
    CANCELLED = "cancelled"

    @property
    def terminal(self) -> bool:
        return self not in (TaskStatus.PENDING, TaskStatus.RUNNING)

    @property
    def satisfies_dependants(self) -> bool:
        """Dependants may start after these; after any other terminal state they are skipped."""
        return self in (
            TaskStatus.MERGED,
            TaskStatus.ON_TARGET,
            TaskStatus.NO_OP,
            TaskStatus.DONE_BEFORE,
        )


class RunStatus(StrEnum):
    RUNNING = "running"
    COMPLETED = "completed"
    FAILED = "failed"
    CANCELLED = "cancelled"


class Spend(BaseModel):
    """What agents cost: an agent run, a review, or a task's sum of them."""

    cost_usd: float = 0.0
    tokens_in: int = 0
    tokens_out: int = 0

    def add(self, other: Spend) -> None:
        # Rounded far below a cent so that float sums of recorded costs compare exactly.
        self.cost_usd = round(self.cost_usd + other.cost_usd, 10)
        self.tokens_in += other.tokens_in
        self.tokens_out += other.tokens_out


class CheckResult(BaseModel):
    command: str
    exit_code: int
    passed: bool
    # The same command also fails on the task's base commit: not the task's fault.
    pre_existing: bool = False
    output_tail: str = ""


class TaskResult(Spend):
    id: str
    title: str = ""
    status: TaskStatus
    commit: str | None = None
    base_commit: str | None = None
    attempts: int = 0
    duration_s: float = 0.0
    error: str | None = None
    phase: str = ""  # the step the task is in, or ended in
    checks: list[CheckResult] = Field(default_factory=list)
    changed_files: list[str] = Field(default_factory=list)  # at most LIST_CAP of them
    changed_total: int = 0
    transcript: str | None = None
    # Times an agent process was started for the task (its rounds, and the starts a dead worker
    # cut short, which ran and may have cost money too).
    agent_runs: int = 0
    review_rounds: int = 0
    verdict: Verdict | None = None
    # What the agent asked for and was refused (claude's permission_denials), capped.
    permission_denials: list[str] = Field(default_factory=list)
    sandbox: str | None = None  # where the task ran: worktree, container or dagger
    # The commit waiting for a person's approval, while it waits (a decision signs it).
    approval_commit: str | None = None
    workflow_id: str | None = None  # the task's own workflow (its latest try)
    # `git diff --stat` of the change against its base (bounded): what a person approves.
    diffstat: str = ""
    # The task's branch in the pipeline's clone, when it is kept (a failed task's work).
    branch: str | None = None
    clone: str | None = None  # the pipeline's clone that holds `branch`, on the worker's disk
    # The task that, by ending without success, kept this one from starting.
    blocked_by: str | None = None
    summary: str = ""  # the agent's own last word on what it did
    pull_request: str | None = None  # its page on the code host (--publish pr)


class PlanResult(BaseModel):
    workflow_id: str
    status: RunStatus
    target_branch: str
    target_commit: str | None = None
    tasks: list[TaskResult] = Field(default_factory=list)
    total_cost_usd: float = 0.0
    message: str = ""
    plan_digest: str | None = None  # the plan revision it ended with (None: runs from before)
    revision: int = 0  # revisions the run took while it ran


class RunProgress(BaseModel):
    """The `status` query: where the run is, task by task."""

    workflow_id: str
    status: RunStatus
    paused: bool = False
    cancelling: bool = False
    target_branch: str
    target_commit: str | None = None
    tasks: list[TaskResult] = Field(default_factory=list)
    total_cost_usd: float = 0.0
    revision: int = 0  # revisions the run has taken (0: the plan it started with)
    # Its history is past twice its limit: no new task starts until none runs, and it continues
    # as new (models.run.RunOptions.history_limit).
    draining: bool = False


class TaskCount(BaseModel):
    status: TaskStatus
    count: int


class MemoTask(BaseModel):
    """A task as the memo lists it: what a person reads first, nothing more (the memo is shown
    whole in the Web UI, and bounded)."""

    id: str
    title: str = ""
    status: TaskStatus
    commit: str | None = None
    error: str | None = None
    blocked_by: str | None = None
    workflow_id: str | None = None

    def as_result(self) -> TaskResult:
        return TaskResult(**self.model_dump())


class ProgressMemo(BaseModel):
    """The run's state as its memo keeps it, so that it is readable when no worker answers a
    query. Every change is a history event, so it changes only when a task ends (or the run is
    paused, resumed, cancelled, or ends) and stays small: counts of the tasks that have ended,
    and the first of those that ended without success."""

    status: RunStatus
    paused: bool = False
    cancelling: bool = False
    target_commit: str | None = None
    total: int = 0  # tasks in the run
    counts: list[TaskCount] = Field(default_factory=list)  # of ended tasks only
    tasks: list[MemoTask] = Field(default_factory=list)  # ended without success, bounded
    more_tasks: int = 0  # of those, how many did not fit
    total_cost_usd: float = 0.0  # of ended tasks

    @property
    def ended(self) -> int:
        return sum(c.count for c in self.counts)
