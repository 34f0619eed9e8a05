"""What a run is asked to do: the workflow inputs. Everything here is recorded in history."""

from __future__ import annotations

from pydantic import BaseModel, Field

from models.plan import Plan, Task


class AgentConfig(BaseModel):
    """Which agent backend runs a task, and with what limits. The name travels in history."""

    backend: str = "literal"
    # argv template of the `command` backend: {prompt_file}, {task_id}, {workdir} are filled in.
    command: list[str] = Field(default_factory=list)
    timeout_s: float = 1800.0


class RunOptions(BaseModel):
    repo: str  # the user's repository: an absolute path or a URL; only ever pushed to
    base_ref: str  # what --base named (a branch, usually)
    base_commit: str  # what it resolved to when the run started
    target_branch: str
    agent: AgentConfig = Field(default_factory=AgentConfig)
    max_concurrent: int = 4
    rerun_done: bool = False
    verify_timeout_s: float = 600.0
    # Merge attempts when the target keeps moving under us (each one rebases and re-verifies).
    merge_attempts: int = 5


class PlanRunInput(BaseModel):
    run_key: str  # short, filesystem-safe name of the run (worktrees, transcripts)
    plan_name: str
    plan: Plan
    options: RunOptions


class TaskInput(BaseModel):
    run_key: str
    task: Task
    options: RunOptions
    # Increases when the user retries a task by signal, so each try has its own workflow id.
    attempt: int = 1
