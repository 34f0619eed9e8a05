"""One model in and one out for every activity.

Paths on the worker's disk never travel here: each worker derives them from its own workspace and
the run key, so a payload stays valid on whichever worker picks the activity up.
"""

from __future__ import annotations

from pydantic import BaseModel, Field

from autonomous_pipeline.models.failure import FailureKind
from autonomous_pipeline.models.plan import Task
from autonomous_pipeline.models.results import CheckResult, Spend
from autonomous_pipeline.models.review import Finding, Verdict
from autonomous_pipeline.models.run import AgentConfig, ReviewerConfig
from autonomous_pipeline.models.sandbox import SandboxConfig

# Lists of paths in a result stop here; a count says how many there were.
LIST_CAP = 200


class PrepareRunIn(BaseModel):
    run_key: str
    repo: str
    base_commit: str
    target_branch: str


class PrepareRunOut(BaseModel):
    target_commit: str
    created_target: bool


class ClaimIn(BaseModel):
    run_key: str
    task_id: str
    claim: int = 1  # which claim of the task this is (> 1: its previous worker vanished)


class ClaimOut(BaseModel):
    queue: str  # the claiming worker's workspace queue: the task's other activities go there
    host: str


class PrepareWorkspaceIn(BaseModel):
    run_key: str
    task_id: str
    repo: str
    target_branch: str
    sandbox: SandboxConfig = Field(default_factory=SandboxConfig)
    # No agent of the task has run: its checkout is made clean at the base, and checked so, even
    # when one is there already (else it is kept as it is, for a resumed agent).
    fresh: bool = False


class PrepareWorkspaceOut(BaseModel):
    base_commit: str  # the target's tip when the task started: earlier batches' work included
    branch: str
    clone: str | None = None  # the pipeline's clone holding `branch` (for a person to fetch)


class ClaimWorkspaceIn(PrepareWorkspaceIn):
    """Claim a worker and prepare the task's worktree there, in one step (runs since
    "fused-steps"): the worker that answers is the one whose disk the worktree is on."""

    claim: int = 1  # which claim of the task this is (> 1: its previous worker vanished)


class ClaimWorkspaceOut(PrepareWorkspaceOut):
    queue: str  # the claiming worker's workspace queue: the task's other activities go there
    host: str


class FixRequest(BaseModel):
    """What a fix round must address."""

    findings: list[Finding] = Field(default_factory=list)
    failing_checks: list[str] = Field(default_factory=list)
    conflicts: list[str] = Field(default_factory=list)
    # The failing checks' results, with the last lines they printed: what the agent must fix.
    failed: list[CheckResult] = Field(default_factory=list)
    # The previous fix round left the change as it was: the agent is told so.
    unchanged_rounds: int = 0


# The run's signal by which an agent step gives its slot back as its agent exits (SlotGrant).
AGENT_EXITED = "agent_exited"
# The error of an agent step that failed after giving its slot back: its agent runs again only
# in a slot of its own (the task asks the run for one).
SLOT_GONE = "SlotMayBeGone"


class SlotGrant(BaseModel):
    """The run's agent slot a step's agent runs in: the run's `grant`-th `go` to this try of the
    task. The step gives it back as soon as its agent has exited and succeeded, so that the next
    agent starts while this change is collected. Only that slot: a signal that comes late, after
    the run gave the task another `go`, started another try of it, or a new run began under the
    same id, frees nothing."""

    workflow_id: str  # the run's
    run_id: str  # the run's execution: a later run under the same workflow id is another
    task_workflow_id: str  # the task's try
    task_id: str
    grant: int


class RunAgentIn(BaseModel):
    run_key: str
    plan_title: str | None = None
    task: Task
    base_commit: str  # the task's base: what "changed" is measured against
    # Where a fresh attempt starts: the base for the task itself, the task's commit for a fix round.
    start_commit: str | None = None
    agent: AgentConfig
    sandbox: SandboxConfig = Field(default_factory=SandboxConfig)
    fix: FixRequest | None = None
    # Chosen in workflow code, so every attempt and fix round of the task shares one session.
    session_id: str | None = None
    resume: bool = False  # continue the session (and its worktree) instead of starting afresh
    # The worktree is as a fresh claim left it, checked clean at the base: a first attempt
    # need not check it again.
    prepared: bool = False
    # Given back when the agent exits (since "slot-at-exit"); None: when the step ends.
    slot: SlotGrant | None = None


class RunAgentOut(Spend):
    exit_code: int | None
    timed_out: bool = False
    succeeded: bool
    commit: str | None = None  # None: the agent changed nothing
    # Capped at LIST_CAP names, so that a change of thousands of files keeps payloads small.
    changed_files: list[str] = Field(default_factory=list)
    changed_total: int = 0
    # Files the change deletes that the task does not name (capped; the total is exact).
    unasked_deletions: list[str] = Field(default_factory=list)
    unasked_deletions_total: int = 0
    # Untracked files left out of the commit as junk (build output, caches), capped.
    left_out: list[str] = Field(default_factory=list)
    summary: str = ""
    transcript: str | None = None
    duration_s: float = 0.0
    error: str | None = None
    attempt: int = 1  # which try of the activity produced this (a dead worker costs one)
    failure_kind: FailureKind | None = None
    reset_at: float | None = None  # unix time a usage limit resets, when the agent said
    session_id: str | None = None
    # What the agent asked for and was refused (claude's permission_denials), capped.
    permission_denials: list[str] = Field(default_factory=list)


class VerifyIn(BaseModel):
    run_key: str
    task_id: str
    commands: list[str]
    base_commit: str
    timeout_s: float = 600.0
    env: list[str] = Field(default_factory=list)  # as AgentConfig.env: checks run agent code
    sandbox: SandboxConfig = Field(default_factory=SandboxConfig)


class VerifyOut(BaseModel):
    passed: bool
    checks: list[CheckResult] = Field(default_factory=list)


class ReviewIn(BaseModel):
    run_key: str
    task: Task
    base_commit: str
    commit: str
    reviewer: ReviewerConfig
    sandbox: SandboxConfig = Field(default_factory=SandboxConfig)
    checks: list[str] = Field(default_factory=list)  # verification commands that passed


class ReviewOut(Spend):
    verdict: Verdict
    files_changed: int = 0
    lines_deleted: int = 0
    diffstat: str = ""  # `git diff --stat`, bounded: what a person deciding on approval sees
    transcript: str | None = None


class ConflictFixIn(BaseModel):
    run_key: str
    task_id: str
    repo: str
    target_branch: str
    base_commit: str
    commit: str


class ConflictFixOut(BaseModel):
    # The worktree now holds the task's change applied onto this commit, conflict markers and all.
    base_commit: str
    conflict_paths: list[str] = Field(default_factory=list)


class MergeIn(BaseModel):
    run_key: str
    task_id: str
    repo: str
    target_branch: str
    base_commit: str
    commit: str
    commands: list[str] = Field(default_factory=list)
    verify_timeout_s: float = 600.0
    attempts: int = 5
    env: list[str] = Field(default_factory=list)
    sandbox: SandboxConfig = Field(default_factory=SandboxConfig)
    # The worktree is as the agent step left it (at `commit`, nothing staged): a first attempt
    # checks only where its HEAD is, not every file.
    after_agent: bool = False


class MergeOut(BaseModel):
    merged: bool
    commit: str | None = None
    already_merged: bool = False
    # The change is already on the target through other work: `commit` is what carries it.
    on_target: bool = False
    conflict_paths: list[str] = Field(default_factory=list)
    checks: list[CheckResult] = Field(default_factory=list)
    error: str | None = None
    attempts: int = 0


class FinishOut(BaseModel):
    """Checks, merge and cleanup in one step (runs since "fused-steps"). The change is first
    moved onto the target's tip when that has moved and the move is clean, so that it is
    checked once, where it will land: `base_commit` and `commit` say where it stands now."""

    base_commit: str
    commit: str
    passed: bool  # the checks passed (or failed on the base as well); False: nothing merged
    checks: list[CheckResult] = Field(default_factory=list)
    merge: MergeOut | None = None  # None: not merged, because the checks failed
    cleaned: bool = False  # merged (or on the target already) and the worktree put away


class CleanupIn(BaseModel):
    run_key: str
    task_id: str
    delete_branch: bool = True
    repo: str | None = None  # to say which clone keeps the branch (runs before it: unsaid)
    sandbox: SandboxConfig = Field(default_factory=SandboxConfig)


class CleanupOut(BaseModel):
    removed_worktree: bool
    deleted_branch: bool
    # The branch kept (a failed task's work) and the clone that holds it, for `git fetch`.
    kept_branch: str | None = None
    clone: str | None = None
