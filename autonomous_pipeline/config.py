"""Settings: command-line flags > environment (PIPELINE_*) > the configuration's .env > defaults.

The .env file is read from the pipeline's own configuration folder
(`$XDG_CONFIG_HOME/autonomous-pipeline/.env`, else `~/.config/autonomous-pipeline/.env`), never
from the working directory: a starter run from inside the repository it works on must not take
its settings from a file an agent may have committed there. Settings that weaken the agents'
isolation never come from a file at all, and `--no-isolation` only from the command line.

No temporalio import here: the starter validates its input before touching Temporal.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from pydantic import Field
from pydantic.fields import FieldInfo
from pydantic_settings import (
    BaseSettings,
    PydanticBaseSettingsSource,
    SettingsConfigDict,
)

from autonomous_pipeline.errors import UsageError
from autonomous_pipeline.models.sandbox import AgentNetwork, ContainerRuntime, SandboxKind


def default_workspace() -> Path:
    """The user's cache directory: the pipeline's clone, worktrees, transcripts, server database."""
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "autonomous-pipeline"


def config_dir() -> Path:
    """The pipeline's configuration folder: its .env and the operator's approval key."""
    base = os.environ.get("XDG_CONFIG_HOME") or str(Path.home() / ".config")
    return Path(base) / "autonomous-pipeline"


# Settings that loosen what an agent may do or reach: never read from a file.
WEAKENING = frozenset({"confine", "agent_env", "agent_network", "no_isolation"})
# ... and these only from the command line.
COMMAND_LINE_ONLY = frozenset({"no_isolation"})


class _Filtered(PydanticBaseSettingsSource):
    """Another source's values, minus some settings; `refuse` makes finding one an error."""

    def __init__(
        self,
        settings_cls: type[BaseSettings],
        inner: PydanticBaseSettingsSource,
        names: frozenset[str],
        refuse: str | None = None,
    ) -> None:
        super().__init__(settings_cls)
        self.inner, self.names, self.refuse = inner, names, refuse

    def get_field_value(self, field: FieldInfo, field_name: str) -> tuple[Any, str, bool]:
        return None, field_name, False  # not used: __call__ delegates

    def __call__(self) -> dict[str, Any]:
        values = self.inner()
        found = sorted(n for n in values if n in self.names)
        if found and self.refuse:
            names = ", ".join(f"PIPELINE_{n.upper()}" for n in found)
            raise UsageError(
                f"{self.refuse} sets {names}: a setting that weakens the agents' isolation is "
                "never read from a file; give it on the command line"
            )
        return {k: v for k, v in values.items() if k not in self.names}


class Settings(BaseSettings):
    # The .env is named when Settings are made (`load_settings`), so that it follows
    # XDG_CONFIG_HOME as it is then.
    model_config = SettingsConfigDict(env_prefix="PIPELINE_", extra="ignore", populate_by_name=True)

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        env_file = getattr(dotenv_settings, "env_file", None)
        return (
            init_settings,
            _Filtered(settings_cls, env_settings, COMMAND_LINE_ONLY),
            _Filtered(settings_cls, dotenv_settings, WEAKENING, refuse=str(env_file)),
        )

    # What to run
    plan: Path | None = None
    start_batch: str | None = None
    end_batch: str | None = None
    rerun_done: bool = False
    retry_failed: bool = False
    share_target: bool = False  # start even while another run is open on the same target
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
    confine: bool = True  # Landlock inside the sandbox: writes only inside the task's own places
    claude_bin: str | None = None
    model: str | None = None
    max_turns: int | None = Field(default=None, ge=1)
    permission_mode: str | None = None  # default: bypassPermissions in a sandbox, else acceptEdits
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

    # Where it runs
    sandbox: SandboxKind = SandboxKind.WORKTREE  # for batches whose execution mode names none
    override_execution_mode: bool = False  # --sandbox for every batch, whatever the plan says
    agent_network: AgentNetwork | None = None  # default: internet for claude, none otherwise
    no_isolation: bool = False  # worktree sandbox without namespaces: command line only
    container_image: str | None = None
    container_runtime: ContainerRuntime | None = None  # default: the first on PATH

    # Temporal
    address: str | None = None  # None: the embedded dev server
    namespace: str | None = None
    ui_url: str | None = None
    detach: bool = False


def load_settings(**given: Any) -> Settings:
    """Settings from the command line's values `given`, the environment and the .env file."""
    env_file = config_dir() / ".env"
    return Settings(_env_file=env_file if env_file.is_file() else None, **given)
