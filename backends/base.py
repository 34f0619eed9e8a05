"""The two backend Protocols. Built-ins and plugins register through the same registry."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Protocol

from pydantic import BaseModel, Field


class AgentRequest(BaseModel):
    task_id: str
    title: str
    prompt: str  # the full text the agent is given
    instructions: (
        str  # the task's own section of the plan (the literal agent reads its code blocks)
    )
    workdir: Path  # the task's worktree; the agent works nowhere else
    transcript: Path  # where its output is kept, capped
    timeout_s: float
    command: list[str] = Field(default_factory=list)  # argv template for the command backend
    # The process's whole environment (backends.secrets.agent_env); empty: the base allow-list.
    env: dict[str, str] = Field(default_factory=dict)
    # Backends that run a process confine its writes to these paths (backends.confine); None:
    # unconfined. The claude backend confines its own edits and ignores this.
    writable: list[Path] | None = None


class AgentOutcome(BaseModel):
    succeeded: bool
    exit_code: int | None = None
    timed_out: bool = False
    summary: str = ""
    error: str | None = None
    cost_usd: float = 0.0
    tokens_in: int = 0
    tokens_out: int = 0
    session_id: str | None = None
    text: str = ""  # the agent's full final answer (a reviewer's verdict is read from it)


def pgid_file(transcript: Path) -> Path:
    """Where a running agent's process group is recorded, beside its transcript."""
    return transcript.with_name(transcript.name + ".pgid")


# Called with a short progress note whenever the agent shows signs of life.
Heartbeat = Callable[[str], None]


class AgentBackend(Protocol):
    name: str

    async def run(self, request: AgentRequest, heartbeat: Heartbeat) -> AgentOutcome: ...


class SessionAgent(Protocol):
    """A backend whose run can continue an earlier conversation (`sessions = True` on its class):
    a retried or fixing run resumes the same conversation instead of paying for it again."""

    async def run(
        self,
        request: AgentRequest,
        heartbeat: Heartbeat,
        session_id: str | None = None,
        resume: bool = False,
    ) -> AgentOutcome: ...


class SandboxBackend(Protocol):
    """Creates and destroys the isolated workspace of one task."""

    name: str

    async def prepare(
        self, run_key: str, task_id: str, repo: str, target_branch: str
    ) -> tuple[str, Path]:
        """Create (or reuse) the task's workspace from the target's tip: (base commit, workdir)."""
        ...

    async def reset(self, run_key: str, task_id: str, base_commit: str) -> Path:
        """Put the workspace back at `base_commit` with nothing else in it; return the workdir."""
        ...

    async def remove(
        self, run_key: str, task_id: str, delete_branch: bool
    ) -> tuple[bool, bool]: ...
