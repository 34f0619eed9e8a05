"""Where a run's agents run: the sandbox of every batch, its image and network, checked up front.

A batch's `**Execution Mode:**` chooses its sandbox (`local` -> worktree, `container`/`docker`
-> container, `dagger` -> dagger); `--sandbox` is the choice for batches that name none, and
`--override-execution-mode` makes it every batch's. The image comes from `--container-image`, or
from `.autonomous-pipeline/container.toml` in the repository at the run's base commit:

    image = "localhost/my-env:1"      # required
    setup = ["pip install -e ."]      # run once in the image, kept as a local image
    claude_bin = "/usr/local/bin/claude"
    [env]                             # literal values only
    PYTHONDONTWRITEBYTECODE = "1"

That file can choose an image and set values; it cannot loosen anything (network, isolation,
the worker's variables), nor set credentials, proxies or what decides which program runs: those
are the operator's, on the command line. `--container-image` replaces the file whole.
"""

from __future__ import annotations

import re
import shutil
import subprocess
import tomllib
from pathlib import Path

from pydantic import BaseModel, ConfigDict, ValidationError, field_validator

from autonomous_pipeline.backends.sandboxes.registry import Sandboxes
from autonomous_pipeline.backends.workspace.tasks import Workspaces
from autonomous_pipeline.config import Settings
from autonomous_pipeline.errors import UsageError
from autonomous_pipeline.models.plan import Plan
from autonomous_pipeline.models.run import AgentConfig, ReviewerConfig
from autonomous_pipeline.models.sandbox import (
    AgentNetwork,
    ContainerRuntime,
    ContainerSpec,
    SandboxConfig,
    SandboxKind,
)

CONTAINER_FILE = ".autonomous-pipeline/container.toml"
_IMAGED = (SandboxKind.CONTAINER, SandboxKind.DAGGER)


# Names a repository's file may not set: they carry or redirect credentials (a committed
# ANTHROPIC_BASE_URL would send the worker's key elsewhere), or change what runs.
_RESERVED_ENV = re.compile(
    r"^(ANTHROPIC_|CLAUDE_|AWS_|GOOGLE_|AZURE_|OPENAI_|GIT_|SSH_|GPG_|LD_|DYLD_|PIPELINE_)"
    r"|^(PATH|HOME|TMPDIR|SHELL|USER|NODE_OPTIONS|NODE_EXTRA_CA_CERTS|PYTHONPATH|PYTHONSTARTUP"
    r"|PYTHONHOME|PERL5OPT|RUBYOPT|BASH_ENV|ENV|[A-Z_]*PROXY)$"
    r"|KEY|TOKEN|SECRET|PASSWORD|PASSWD|CREDENTIAL|AUTH|COOKIE|SESSION|PRIVATE|DSN",
    re.IGNORECASE,
)


class ContainerFile(BaseModel):
    model_config = ConfigDict(extra="forbid")

    image: str
    setup: list[str] = []
    env: dict[str, str] = {}
    claude_bin: str | None = None

    @field_validator("env")
    @classmethod
    def _harmless(cls, env: dict[str, str]) -> dict[str, str]:
        taken = sorted(k for k in env if _RESERVED_ENV.search(k))
        if taken:
            raise ValueError(
                f"{', '.join(taken)}: a repository's file may not set credentials, proxies or "
                "what decides which program runs; give them to the run with --agent-env"
            )
        return env


def assign_sandboxes(plan: Plan, default: SandboxKind, override: bool) -> Plan:
    """The plan with every batch's sandbox filled in, as the run will use them."""
    batches = [
        b.model_copy(update={"sandbox": default if override or b.sandbox is None else b.sandbox})
        for b in plan.batches
    ]
    return plan.model_copy(update={"batches": batches})


def kinds_of(plan: Plan) -> set[SandboxKind]:
    return {b.sandbox or SandboxKind.WORKTREE for b in plan.batches}


def default_network(agent: AgentConfig, reviewer: ReviewerConfig) -> AgentNetwork:
    """A backend that calls an API needs the internet; anything else gets no network."""
    if "claude" in (agent.backend, reviewer.backend):
        return AgentNetwork.INTERNET
    return AgentNetwork.NONE


def read_container_file(repo: str, base_commit: str) -> ContainerFile | None:
    """The repository's container file as committed at the run's base, if it has one."""
    shown = subprocess.run(
        ["git", "-C", repo, "show", f"{base_commit}:{CONTAINER_FILE}"],
        capture_output=True,
        text=True,
        check=False,
    )
    if shown.returncode != 0:
        return None
    where = f"{repo}/{CONTAINER_FILE} (at {base_commit[:12]})"
    try:
        return ContainerFile.model_validate(tomllib.loads(shown.stdout))
    except tomllib.TOMLDecodeError as exc:
        raise UsageError(f"{where}: {exc}") from None
    except ValidationError as exc:
        first = exc.errors()[0]
        field = ".".join(str(x) for x in first["loc"])
        raise UsageError(f"{where}: {field}: {first['msg']}") from None


def _runtime(settings: Settings) -> ContainerRuntime:
    if settings.container_runtime is not None:
        return settings.container_runtime
    for runtime in ContainerRuntime:
        if shutil.which(runtime.value):
            return runtime
    raise UsageError(
        "a batch runs in a container, and neither podman nor docker is on PATH "
        "(install one, or pass --container-runtime)"
    )


def sandbox_config(
    settings: Settings,
    plan: Plan,
    repo: str,
    base_commit: str,
    agent: AgentConfig,
    reviewer: ReviewerConfig,
) -> SandboxConfig:
    """The run's sandbox from the command line and the repository's container file."""
    kinds = kinds_of(plan)
    imaged = any(k in _IMAGED for k in kinds)
    if settings.container_image and not imaged:
        raise UsageError(
            "--container-image is for batches that run in a container: pass --sandbox "
            "container (or dagger), or name the mode in the plan's **Execution Mode:**"
        )
    if settings.no_isolation and SandboxKind.WORKTREE not in kinds:
        raise UsageError("--no-isolation is for the worktree sandbox; no batch runs in one")
    container = None
    if imaged:
        file = None if settings.container_image else read_container_file(repo, base_commit)
        image = settings.container_image or (file.image if file else None)
        if not image:
            raise UsageError(
                "a batch runs in a container and no image is named: pass --container-image "
                f"IMAGE, or commit {CONTAINER_FILE} with `image = ...`"
            )
        container = ContainerSpec(
            image=image,
            runtime=_runtime(settings),
            setup=file.setup if file else [],
            env=file.env if file else {},
            # The command line wins over the repository's file.
            claude_bin=settings.claude_bin or (file.claude_bin if file else None),
        )
    network = settings.agent_network or default_network(agent, reviewer)
    if settings.no_isolation and SandboxKind.WORKTREE in kinds:
        if settings.agent_network not in (None, AgentNetwork.HOST):
            raise UsageError(
                f"--agent-network {network.value} cannot be kept with --no-isolation: without "
                "namespaces the agents have the host's network"
            )
        network = AgentNetwork.HOST  # what they get: said in the run's input, honestly
    return SandboxConfig(
        kind=settings.sandbox,
        network=network,
        isolation=not settings.no_isolation,
        confine=settings.confine,
        container=container,
    )


async def check_sandboxes(config: SandboxConfig, plan: Plan, workspace: Path) -> None:
    """Every sandbox the run's batches use can run on this machine, or the run does not start."""
    sandboxes = Sandboxes(Workspaces(workspace))
    for kind in sorted(kinds_of(plan)):
        problem = await sandboxes.get(config.model_copy(update={"kind": kind})).preflight()
        if problem:
            raise UsageError(f"--sandbox {kind.value}: {problem}")
