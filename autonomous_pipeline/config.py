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
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any

from pydantic import Field, field_validator
from pydantic.fields import FieldInfo
from pydantic_settings import (
    BaseSettings,
    NoDecode,
    PydanticBaseSettingsSource,
    SettingsConfigDict,
)

from autonomous_pipeline.errors import UsageError
from autonomous_pipeline.models.forge import ForgeConfig, MergeMethod, Publish
from autonomous_pipeline.models.ops import LogFormat
from autonomous_pipeline.models.run import AgentConfig, Approval, RunOptions
from autonomous_pipeline.models.sandbox import AgentNetwork, ContainerRuntime, SandboxKind


def default_workspace() -> Path:
    """The user's cache directory: the pipeline's clone, worktrees, transcripts, server database."""
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "autonomous-pipeline"


def config_dir() -> Path:
    """The pipeline's configuration folder: its .env and the operator's approval key."""
    base = os.environ.get("XDG_CONFIG_HOME") or str(Path.home() / ".config")
    return Path(base) / "autonomous-pipeline"


@dataclass(frozen=True)
class Flag:
    """A setting's command line flag: its help, and what argparse cannot derive from the type."""

    help: str
    metavar: str | None = None
    name: str | None = None  # the flag when it is not --field-name (--json, --no-confine)
    common: bool = False  # every subcommand takes it too (where the server and workspace are)


def _run(name: str) -> Any:
    """A run's default, from the run's input model (one place for it, old histories included)."""
    return RunOptions.model_fields[name].default


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

    # Each setting is declared once, here: its type (closed choices are enums), its default (a
    # run's defaults are its input's: RunOptions and AgentConfig), and, with a Flag, its command
    # line flag and help (cli.flags builds the parser from these; defaults are shown from here).

    # What to run
    plan: Annotated[Path | None, Flag("the plan file (MASTER_PLAN.md)")] = None
    dry_run: Annotated[bool, Flag("parse, validate and print the plan; run nothing")] = False
    start_batch: Annotated[
        str | None,
        Flag("first batch to run (numeric ids by value, others by position)", metavar="ID"),
    ] = None
    end_batch: Annotated[str | None, Flag("last batch to run", metavar="ID")] = None
    rerun_done: Annotated[bool, Flag("run tasks the plan marks as done")] = _run("rerun_done")
    retry_failed: Annotated[bool, Flag("run a finished run's failed tasks again")] = False
    share_target: Annotated[
        bool, Flag("start even while a run of another plan is open on the same target branch")
    ] = False

    # Where
    repo: Annotated[
        Path,
        Flag("the repository to work on; never written to but by ref pushes", metavar="PATH"),
    ] = Path(".")
    base: Annotated[
        str | None,
        Flag("branch the target starts from (default: the repo's current branch)", metavar="REF"),
    ] = None
    target_branch: Annotated[
        str | None,
        Flag("branch that receives merged tasks (default: pipeline/<plan-name>)", metavar="BRANCH"),
    ] = None

    # Who does the work
    agent: Annotated[str, Flag("agent backend: claude, command, literal")] = "claude"
    agent_command: Annotated[
        str | None,
        Flag("argv template for --agent command: {prompt_file} {task_id} {workdir}", metavar="CMD"),
    ] = None
    # Names of environment variables the agent (and the checks) get beyond the base allow-list.
    agent_env: Annotated[
        str | None,
        Flag(
            "comma-separated environment variables the agent and checks get (values from the "
            "worker; credentials the agent needs must be named here)",
            metavar="NAMES",
        ),
    ] = None

    # Where it runs
    sandbox: Annotated[
        SandboxKind,
        Flag(
            "where agents, reviewers and checks run, for batches whose **Execution Mode:** "
            "names none: worktree (namespaces around a git worktree), container (podman or "
            "docker), dagger"
        ),
    ] = SandboxKind.WORKTREE
    override_execution_mode: Annotated[
        bool, Flag("use --sandbox for every batch, whatever its **Execution Mode:** says")
    ] = False
    agent_network: Annotated[
        AgentNetwork | None,
        Flag(
            "the agents' network: none, internet (never the host's loopback or the control "
            "plane), host (the worker's own; weakens isolation). Default: internet for claude, "
            "none otherwise"
        ),
    ] = None
    # Command line only (config.COMMAND_LINE_ONLY).
    no_isolation: Annotated[
        bool,
        Flag(
            "run worktree agents without namespaces, where they are not available: they can "
            "then read the worker's files, signal its processes and reach its network"
        ),
    ] = False
    container_image: Annotated[
        str | None,
        Flag(
            "the image of container and dagger batches (default: "
            ".autonomous-pipeline/container.toml in the repository)",
            metavar="IMAGE",
        ),
    ] = None
    container_runtime: Annotated[
        ContainerRuntime | None,
        Flag("the container CLI (default: the first of podman, docker on PATH)"),
    ] = None
    # Landlock inside the sandbox: writes only inside the task's own places.
    confine: Annotated[
        bool,
        Flag(
            "no Landlock inside the sandbox (default: writes only to the task's own places)",
            name="--no-confine",
        ),
    ] = True
    claude_bin: Annotated[
        str | None, Flag("the claude CLI (default: claude on PATH)", metavar="PATH")
    ] = None
    model: Annotated[str | None, Flag("model for the claude backend")] = None
    max_turns: Annotated[
        int | None, Flag("agent turns per claude run", metavar="N"), Field(ge=1)
    ] = None
    permission_mode: Annotated[
        str | None,
        Flag("claude permission mode (default: bypassPermissions in a sandbox, else acceptEdits)"),
    ] = None
    max_budget_usd: Annotated[
        float | None,
        Flag("spend limit of one task, across its retries and fix rounds", metavar="USD"),
        Field(gt=0),
    ] = None
    budget_usd: Annotated[
        float | None,
        Flag("spend limit of the whole run: no new task starts past it", metavar="USD"),
        Field(gt=0),
    ] = _run("budget_usd")
    reviewer: Annotated[
        str | None, Flag("claude | command | none (default: the agent's backend; none for literal)")
    ] = None
    reviewer_command: Annotated[
        str | None,
        Flag("argv template of a command reviewer (prints a JSON verdict)", metavar="CMD"),
    ] = None
    max_fix_rounds: Annotated[
        int,
        Flag("fix rounds after findings or failed checks", metavar="N"),
        Field(ge=0, le=10),
    ] = _run("max_fix_rounds")
    approval: Annotated[Approval, Flag("wait for `approve` before merging")] = _run("approval")
    agent_timeout: Annotated[
        float, Flag("seconds before an agent is killed", metavar="S"), Field(gt=0)
    ] = AgentConfig.model_fields["timeout_s"].default
    verify_timeout: Annotated[
        float, Flag("seconds per verification command", metavar="S"), Field(gt=0)
    ] = _run("verify_timeout_s")
    max_concurrent: Annotated[
        int, Flag("agents running at once", metavar="N"), Field(ge=1, le=64)
    ] = _run("max_concurrent")
    prepare_ahead: Annotated[
        int | None,
        Flag(
            "tasks that prepare their worktree while all slots are busy (default: a quarter of "
            "--max-concurrent, at least 1)",
            metavar="N",
        ),
        Field(ge=0, le=64),
    ] = _run("prepare_ahead")
    max_checkouts: Annotated[
        int | None,
        Flag(
            "checkouts the run's tasks hold at once, at most: agents, tasks ahead and changes "
            "waiting to merge (default: 2 x --max-concurrent + --prepare-ahead)",
            metavar="N",
        ),
        Field(ge=1, le=256),
    ] = _run("max_checkouts")
    heartbeat_timeout: Annotated[
        float,
        Flag("seconds of silence before a worker is presumed dead", metavar="S"),
        Field(ge=1.0),
    ] = _run("heartbeat_timeout_s")
    worker_lost_timeout: Annotated[
        float,
        Flag(
            "seconds a task's steps wait for its machine's worker before the task starts over on "
            "another machine",
            metavar="S",
        ),
        Field(ge=1.0),
    ] = _run("worker_lost_timeout_s")
    history_limit: Annotated[
        int,
        Flag(
            "events in a run's history past which it continues as new, carrying its state, once "
            "no task runs (as it does past 8 MB, or when the server suggests it); past twice "
            "this, no new task starts until none runs",
            metavar="EVENTS",
        ),
        Field(ge=100),
    ] = _run("history_limit")
    detach: Annotated[bool, Flag("start the run and return")] = False
    notify: Annotated[
        list[str],
        NoDecode,  # PIPELINE_NOTIFY: whitespace-separated, not JSON (see _receivers)
        Flag(
            "a webhook told when a task waits for approval or fails, the budget is spent and "
            "the run ends (Slack's incoming webhooks, or plain JSON to any other URL; env:NAME: "
            "the URL in the worker's variable NAME, kept out of the run's history); repeatable",
            metavar="URL",
        ),
    ] = Field(default_factory=list)

    @field_validator("notify", mode="before")
    @classmethod
    def _receivers(cls, value: Any) -> Any:
        """From the environment, one string: its receivers apart by whitespace (a URL has none)."""
        return value.split() if isinstance(value, str) else value

    # Publishing
    publish: Annotated[
        Publish,
        Flag(
            "push: merge each checked task into the target branch and push it; pr: push the "
            "task's branch and open a pull request on the code host, merged there"
        ),
    ] = _run("publish")
    remote: Annotated[
        str, Flag("the remote whose code host gets the pull requests", metavar="NAME")
    ] = "origin"
    forge_url: Annotated[
        str,
        Flag("the code host's API (GitHub Enterprise: https://HOST/api/v3)", metavar="URL"),
    ] = ForgeConfig.model_fields["api_url"].default
    forge_repo: Annotated[
        str | None,
        Flag("OWNER/NAME on the code host (default: from the remote's URL)", metavar="REPO"),
    ] = None
    merge_method: Annotated[MergeMethod, Flag("how the code host merges a task's pull request")] = (
        ForgeConfig.model_fields["merge_method"].default
    )
    require_checks: Annotated[
        bool, Flag("merge a pull request only once its checks pass (failing ones get a fix round)")
    ] = False
    pr_poll: Annotated[
        float,
        Flag("seconds between reads of a waiting pull request", metavar="S"),
        Field(ge=1.0),
    ] = ForgeConfig.model_fields["poll_s"].default

    # Temporal, and what every subcommand takes too
    address: Annotated[
        str | None,
        Flag("HOST:PORT of an existing Temporal server (default: the embedded one)", common=True),
    ] = None
    namespace: Annotated[
        str | None,
        Flag(
            "Temporal namespace (default: from the environment config, or 'default')", common=True
        ),
    ] = None
    workspace: Annotated[
        Path,
        Flag("the pipeline's own clone, worktrees and server data", metavar="DIR", common=True),
    ] = Field(default_factory=default_workspace)
    json_output: Annotated[
        bool, Flag("print one JSON object on stdout", name="--json", common=True)
    ] = False
    log_format: Annotated[
        LogFormat,
        Flag(
            "log lines as JSON, or for the console; auto: JSON unless stderr is a terminal",
            common=True,
        ),
    ] = LogFormat.AUTO
    metrics_port: Annotated[
        int | None,
        Flag(
            "serve the embedded worker's Prometheus metrics on this port (as worker.py does)",
            metavar="N",
        ),
        Field(ge=1, le=65535),
    ] = None
    ui_url: str | None = None  # the Web UI of --address, from the environment only


def load_settings(**given: Any) -> Settings:
    """Settings from the command line's values `given`, the environment and the .env file."""
    env_file = config_dir() / ".env"
    return Settings(_env_file=env_file if env_file.is_file() else None, **given)
