"""Settings: command-line flags > environment (PIPELINE_*) > .env > defaults.

No temporalio import here: the starter validates its input before touching Temporal.
"""

from __future__ import annotations

from pathlib import Path

from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict


def default_workspace() -> Path:
    """The user's cache directory: the pipeline's clone, worktrees, transcripts, server database."""
    import os

    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "autonomous-pipeline"


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="PIPELINE_", env_file=".env", extra="ignore")

    plan: Path | None = None
    start_batch: str | None = None
    end_batch: str | None = None
    rerun_done: bool = False
    dry_run: bool = False
    json_output: bool = Field(default=False, alias="json")
    workspace: Path = Field(default_factory=default_workspace)
