"""What a run is asked to do: the workflow inputs. Everything here is recorded in history."""

from __future__ import annotations

from enum import StrEnum
from typing import Any

from pydantic import BaseModel, Field, model_validator

from autonomous_pipeline.models.forge import ForgeConfig, Publish
from autonomous_pipeline.models.notify import NotifyConfig
from autonomous_pipeline.models.plan import Plan, Task
from autonomous_pipeline.models.revision import RunCarry
from autonomous_pipeline.models.sandbox import SandboxConfig


class ClaudeOptions(BaseModel):
    """Options of the `claude` backend (the Claude Code CLI)."""

    binary: str | None = None  # None: `claude` on PATH
    model: str | None = None
    max_turns: int | None = None
    # None: every permission inside a sandbox (bypassPermissions: the sandbox is the boundary),
    # acceptEdits outside one (edits in the worktree, shell commands only for the task's checks).
    permission_mode: str | None = None
    max_budget_usd: float | None = None  # per agent run
    extra_args: list[str] = Field(default_factory=list)


class AgentConfig(BaseModel):
    """Which agent backend runs a task, and with what limits. The name travels in history."""

    backend: str = "literal"
    # argv template of the `command` backend: {prompt_file}, {task_id}, {workdir} are filled in.
    command: list[str] = Field(default_factory=list)
    timeout_s: float = 1800.0
    claude: ClaudeOptions = Field(default_factory=ClaudeOptions)
    # Names of the worker's environment variables the agent gets beyond the base allow-list
    # (backends.secrets.BASE_ENV); the values are read on the worker and never recorded.
    env: list[str] = Field(default_factory=list)


class ReviewerConfig(BaseModel):
    backend: str = "none"  # claude | command | none
    command: list[str] = Field(default_factory=list)
    timeout_s: float = 900.0
    claude: ClaudeOptions = Field(default_factory=lambda: ClaudeOptions(permission_mode="plan"))
    env: list[str] = Field(default_factory=list)  # as AgentConfig.env


class Approval(StrEnum):
    NEVER = "never"
    LARGE = "large"  # more than approval_max_files files or approval_max_deletions deleted lines
    ALWAYS = "always"


class RunOptions(BaseModel):
    repo: str  # the user's repository: an absolute path or a URL; only ever pushed to
    base_ref: str  # what --base named (a branch, usually)
    base_commit: str  # what it resolved to when the run started
    target_branch: str
    agent: AgentConfig = Field(default_factory=AgentConfig)
    reviewer: ReviewerConfig = Field(default_factory=ReviewerConfig)
    # Where agents, reviewers and checks run; a batch's `**Execution Mode:**` may choose the kind.
    sandbox: SandboxConfig = Field(default_factory=SandboxConfig)
    max_fix_rounds: int = 2
    approval: Approval = Approval.NEVER
    approval_max_files: int = 20
    approval_max_deletions: int = 200
    # A change deleting more files than this that the task does not name waits for approval,
    # whatever `approval` says: an agent that wipes a directory is not merged unattended.
    approval_max_unasked_deletions: int = 10
    budget_usd: float | None = None  # for the whole run: no new task starts once it is spent
    # Waits for a usage/rate limit before a task gives up (each wait lasts until the reported reset).
    max_limit_waits: int = 8
    max_concurrent: int = 4
    # Tasks that get their workspace ready while every slot is taken, so that an agent starts the
    # moment a slot frees; None: a quarter of max_concurrent, at least one (see `ahead`).
    prepare_ahead: int | None = None
    # Checkouts the run's tasks hold at once, at most (a task holds one from its claim until it
    # has merged); None: 2 x max_concurrent + prepare_ahead (see PlanWorkflow._room). Fewer
    # bound the disk a big repository takes, at the price of agents waiting for merges.
    max_checkouts: int | None = None
    rerun_done: bool = False
    verify_timeout_s: float = 600.0
    # Merge attempts when the target keeps moving under us (each one rebases and re-verifies).
    merge_attempts: int = 5
    # A worker that stops heartbeating for this long is presumed dead; its activity runs elsewhere.
    heartbeat_timeout_s: float = 30.0
    # A task whose worker serves its queue no longer for this long moves to another worker.
    worker_lost_timeout_s: float = 600.0
    # Keep the branch of a task that failed, for inspection (worktrees are always removed).
    keep_failed_branches: bool = True
    # How a checked change lands: pushed onto the target, or as a pull request on the code host
    # (`forge`; `repo` is then the host's remote, the target branch the PR's base).
    publish: Publish = Publish.PUSH
    forge: ForgeConfig | None = None
    # The run's workflows write the Pipeline* search attributes (models.search): set by the
    # starter when the server has them registered, as a workflow that writes one the server does
    # not know fails.
    searchable: bool = False
    notify: NotifyConfig | None = None  # who is told of approvals, failures, the budget, the end
    # Events in the run's history past which it continues as new once no task runs (and past
    # twice this, no new task starts until none runs): a week-long run stays small and fast to
    # replay. The server's own suggestion, and 8 MB of history, count as this too.
    history_limit: int = 10_000

    @property
    def ahead(self) -> int:
        if self.prepare_ahead is not None:
            return self.prepare_ahead
        return max(1, -(-self.max_concurrent // 4))

    @model_validator(mode="before")
    @classmethod
    def _sandbox_of_older_runs(cls, data: Any) -> Any:
        """A run started before sandboxes has none recorded: its agents keep what they had (a
        claude agent its API, writes confined as its `confine` said)."""
        if not isinstance(data, dict) or "sandbox" in data:
            return data
        agent, reviewer = data.get("agent"), data.get("reviewer")
        roles = [r if isinstance(r, dict) else r.model_dump() for r in (agent, reviewer) if r]
        claude = any(r.get("backend") == "claude" for r in roles)
        confine = all(r.get("confine", True) for r in roles)
        network = "internet" if claude else "none"
        return {**data, "sandbox": {"network": network, "confine": confine}}


class PlanRunInput(BaseModel):
    run_key: str  # short, filesystem-safe name of the run (worktrees, transcripts)
    plan_name: str
    plan: Plan
    options: RunOptions
    # Tasks a previous run of the same plan content merged: recorded results, not guesses.
    merged_before: list[str] = Field(default_factory=list)
    # The operator's public key (cli.approval): approve and reject count only when it signed
    # them. None: a run from before decisions were signed.
    approver: str | None = None
    # Runs started when approvals carried a token: each task's token's SHA-256. Kept so that
    # they still refuse an approval without it.
    approval_digests: dict[str, str] = Field(default_factory=dict)
    # The plan file's digest, with the batch selection (cli.run.plan_digest): a re-run of the
    # same file with this digest is the same revision. None: runs from before revisions.
    plan_digest: str | None = None
    # The state of the run this one continues (continue-as-new); None: a run's first.
    carried: RunCarry | None = None


class Decision(BaseModel):
    """A person's answer to a task waiting for approval."""

    approved: bool
    reason: str | None = None
    token: str | None = None  # the operator's signature of this decision (cli.approval)


class CancelRequest(BaseModel):
    now: bool = False  # also cancel running tasks (their agents are killed)


class TaskInput(BaseModel):
    run_key: str
    plan_title: str | None = None
    task: Task
    options: RunOptions
    # Increases when the user retries a task by signal, so each try has its own workflow id.
    attempt: int = 1
    # The sandbox of the task's batch; None (runs started before sandboxes): the run's own.
    sandbox: SandboxConfig | None = None
    # The operator's public key, as the run recorded it (None: decisions need no signature).
    approver: str | None = None
    # Runs started when approvals carried a token: the SHA-256 of this task's token.
    approval_digest: str | None = None
    # The run hands out agent slots: the task prepares its workspace, then waits for the run's
    # `go` before its agent starts. False: runs started before, whose tasks hold a slot throughout.
    agent_slot: bool = False
    # The slot is held only while an agent runs: the task gives it back when its agent ends, and
    # asks again before a fix round, so checks and reviews never keep the next agent waiting.
    # False: runs started before, whose tasks hold their slot until they merge.
    slot_per_agent: bool = False
    # Since "slot-at-exit" (the run's): an agent step gives its slot back as its agent exits.
    # The run decides, so that a run whose code predates it never has to answer for it.
    slot_at_exit: bool = False

    @property
    def sandbox_config(self) -> SandboxConfig:
        return self.sandbox or self.options.sandbox
