"""The backend Protocols the activities use. Built-ins and plugins register through one registry.

- `SandboxBackend`: a task's isolated workspace: made at a base commit, processes run in it (with
  a timeout, an environment, cancellation and a whole-tree kill), its change collected, reset,
  destroyed. The git bookkeeping behind it is shared, host-side code (`backends.workspace`).
- `Runner`: what a sandbox hands an agent, a reviewer or a check: a way to run processes in one
  checkout, and where things are as the process sees them.
- `AgentBackend`: given a request and a runner, does the task and reports an outcome.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from enum import StrEnum
from pathlib import Path
from typing import Protocol

from pydantic import BaseModel, Field

from autonomous_pipeline.backends._proc import ProcResult
from autonomous_pipeline.backends.workspace.checkout import Checkout
from autonomous_pipeline.backends.workspace.collect import Committed
from autonomous_pipeline.backends.workspace.layout import TaskRef
from autonomous_pipeline.models.failure import AgentFailure
from autonomous_pipeline.models.sandbox import SandboxKind

# Sets the progress note the activity's heartbeat carries next (activities.heartbeat sends it on
# its own clock): cheap to call on every line, so a backend neither throttles nor ticks.
Heartbeat = Callable[[str], None]


class SandboxError(OSError):
    """The sandbox could not run the process at all (its wall failed to go up, its engine said
    no). Never the process's own failure: a check that never ran has not failed, nor passed."""


class Role(StrEnum):
    """Who a runner runs processes for. The agent keeps its HOME and TMPDIR from one run to the
    next (its sessions live there); a check or a reviewer gets fresh ones, so nothing the agent
    left there (a usercustomize.py, an .npmrc, a reviewer's settings) reaches them."""

    AGENT = "agent"
    CHECK = "check"
    REVIEWER = "reviewer"


@dataclass(frozen=True)
class View:
    """The places a sandboxed process works with, as paths."""

    workdir: Path  # the checkout: writable, the working directory
    tmp: Path  # the task's private TMPDIR (prompt files go here)
    home: Path  # the task's HOME (agent sessions live here)


@dataclass
class Exec:
    """One process to run in a sandbox."""

    argv: list[str]  # as the process sees it (paths from the runner's `inside` view)
    env: dict[str, str]  # its whole environment (backends.secrets.agent_env and what is named)
    timeout_s: float | None
    stdin: bytes | None = None
    transcript: Path | None = None  # on the host; output is appended, capped, masked
    on_line: Callable[[str], None] | None = None
    tail_chars: int = 8000
    # False: no Landlock on this process even where the sandbox applies it (the claude CLI
    # outside a sandbox keeps its state in the worker's HOME). Namespaces are never dropped.
    confine: bool = True


class Runner(Protocol):
    """Runs processes in one checkout of a task, inside the task's sandbox."""

    host: View  # the same places as the worker sees them
    inside: View  # as the process sees them
    # True: the process runs the worker's own programs (a path is looked up on the host);
    # False: an image's (a container), named as the image knows them.
    host_programs: bool

    async def run(self, job: Exec) -> ProcResult: ...


class SandboxBackend(Protocol):
    kind: SandboxKind

    async def prepare(
        self, task: TaskRef, repo: str, target_branch: str, fresh: bool = False
    ) -> tuple[str, Checkout]:
        """The task's checkout at the target's tip, made once: (base commit, checkout).
        `fresh`: no agent has run, so it is returned clean at the base, checked so."""
        ...

    async def reset(self, task: TaskRef, commit: str) -> Checkout:
        """The checkout back at `commit` with nothing else in it."""
        ...

    def runner(self, task: TaskRef, checkout: Checkout, role: Role) -> Runner:
        """Run processes in `checkout` (the task's, or a throwaway one of the same task)."""
        ...

    async def collect(
        self, task: TaskRef, base_commit: str, message: str, named: list[str]
    ) -> Committed:
        """Commit what the process left in the task's checkout, checked against its base."""
        ...

    async def reap(self, task: TaskRef) -> int:
        """Kill what an attempt of this task that died with its worker left running."""
        ...

    async def destroy(self, task: TaskRef, delete_branch: bool) -> tuple[bool, bool]:
        """Remove the checkout and whatever runs for the task: (removed, branch deleted)."""
        ...

    async def preflight(self) -> str | None:
        """None when this sandbox can run here; else what is missing and what to do."""
        ...


class AgentRequest(BaseModel):
    task_id: str
    title: str
    prompt: str  # the full text the agent is given
    instructions: (
        str  # the task's own section of the plan (the literal agent reads its code blocks)
    )
    workdir: Path  # the task's checkout on the host; the agent works nowhere else
    transcript: Path  # where its output is kept, capped (on the host, outside the checkout)
    timeout_s: float
    command: list[str] = Field(default_factory=list)  # argv template for the command backend
    # The process's whole environment (backends.secrets.agent_env); empty: the base allow-list.
    env: dict[str, str] = Field(default_factory=dict)
    # The agent runs behind the sandbox's own wall (namespaces or a container), which is its
    # boundary: the claude backend then runs with every permission inside it.
    isolated: bool = True
    # Commands the task's verification will run: what an agent outside a sandbox is allowed.
    checks: list[str] = Field(default_factory=list)


class AgentOutcome(BaseModel):
    succeeded: bool
    exit_code: int | None = None
    timed_out: bool = False
    summary: str = ""
    error: str | None = None  # for people
    # What went wrong, as data, when the backend knows (claude does); otherwise the error text is
    # classified by its wording.
    failure: AgentFailure | None = None
    cost_usd: float = 0.0
    tokens_in: int = 0
    tokens_out: int = 0
    session_id: str | None = None
    text: str = ""  # the agent's full final answer (a reviewer's verdict is read from it)
    # Tools the agent was refused (the claude CLI's permission_denials), as "Tool: what".
    permission_denials: list[str] = Field(default_factory=list)


class AgentBackend(Protocol):
    name: str

    async def run(
        self, request: AgentRequest, heartbeat: Heartbeat, runner: Runner
    ) -> AgentOutcome: ...


class SessionAgent(Protocol):
    """A backend whose run can continue an earlier conversation (`sessions = True` on its class):
    a retried or fixing run resumes the same conversation instead of paying for it again."""

    async def run(
        self,
        request: AgentRequest,
        heartbeat: Heartbeat,
        runner: Runner,
        session_id: str | None = None,
        resume: bool = False,
    ) -> AgentOutcome: ...
