"""Settings: command-line flags > environment (PIPELINE_*) > .env > defaults.

No temporalio import here: the starter validates its input before touching Temporal.
"""

from __future__ import annotations

import os
from pathlib import Path

from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict


def default_workspace() -> Path:
    """The user's cache directory: the pipeline's clone, worktrees, transcripts, server database."""
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "autonomous-pipeline"


class Settings(BaseSettings):
    model_config = SettingsConfigDict(
        env_prefix="PIPELINE_", env_file=".env", extra="ignore", populate_by_name=True
    )

    # What to run
    plan: Path | None = None
    start_batch: str | None = None
    end_batch: str | None = None
    rerun_done: bool = False
    retry_failed: bool = False
    dry_run: bool = False
    json_output: bool = Field(default=False, alias="json")

    # Where
    repo: Path = Path(".")
    base: str | None = None  # default: the repository's current branch
    target_branch: str | None = None  # default: pipeline/<plan-name>
    workspace: Path = Field(default_factory=default_workspace)

    # Who does the work
    agent: str = "claude"
    agent_command: str | None = None
    # Names of environment variables the agent (and the checks) get beyond the base allow-list.
    agent_env: str | None = None
    confine: bool = True  # writes only inside the task's worktree, where the kernel allows
    claude_bin: str | None = None
    model: str | None = None
    max_turns: int | None = Field(default=None, ge=1)
    permission_mode: str = "acceptEdits"
    max_budget_usd: float | None = Field(default=None, gt=0)  # per task
    budget_usd: float | None = Field(default=None, gt=0)  # for the whole run
    reviewer: str | None = None  # default: the agent's backend (none for literal)
    reviewer_command: str | None = None
    max_fix_rounds: int = Field(default=2, ge=0, le=10)
    approval: str = "never"
    agent_timeout: float = 1800.0
    verify_timeout: float = 600.0
    max_concurrent: int = Field(default=4, ge=1, le=64)
    heartbeat_timeout: float = Field(default=30.0, ge=1.0)

    # Temporal
    address: str | None = None  # None: the embedded dev server
    namespace: str | None = None
    ui_url: str | None = None
    detach: bool = False
