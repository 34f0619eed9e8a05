"""The `podman run` / `docker run` command line of a container step. Pure: facts in, argv out.

One container per step (an agent run, a review, a check): when the step ends, whatever it
started ends with its container, so a daemon an agent leaves cannot touch the files its checks
then read. The task's checkout is mounted read-write at /workspace (the working directory), its
TMPDIR at /tmp and its HOME at /home/pipeline; the pipeline's clone is mounted read-only at its
own path (the checkout's `.git` names it there) with a config that names no remote. Nothing else
of the host is mounted. Environment values cross by name (`--env NAME`, the value read from the
CLI's own environment), so a secret never appears on a command line.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from autonomous_pipeline.backends.sandboxes.slirp import DNS
from autonomous_pipeline.models.sandbox import AgentNetwork, ContainerRuntime

WORKDIR = Path("/workspace")
TMPDIR = Path("/tmp")
HOME = Path("/home/pipeline")
LABEL = "autonomous-pipeline"
TASK_LABEL = f"{LABEL}.task"
WORKSPACE_LABEL = f"{LABEL}.workspace"
WORKER_LABEL = f"{LABEL}.worker"
# The worker's own variables: the image has its own PATH, and HOME and TMPDIR are the mounts.
NOT_FORWARDED = frozenset({"PATH", "HOME", "TMPDIR", "SHELL", "USER", "LOGNAME", "PWD"})
# Root in the container may do what root in a container may, but never gain more (a setuid
# binary), nor fork without end.
HARDENING = ("--security-opt", "no-new-privileges", "--pids-limit", "4096")


@dataclass(frozen=True)
class ContainerStep:
    runtime: ContainerRuntime
    binary: str  # the runtime's CLI
    image: str
    name: str
    checkout: Path
    tmp: Path
    home: Path
    clone: Path
    clone_config: Path  # what the container sees as the clone's config
    network: AgentNetwork
    labels: dict[str, str]
    env_names: list[str]  # forwarded by name from the CLI's environment
    env_values: dict[str, str] = field(default_factory=dict)  # literal, from the image's spec
    stdin: bool = False
    uid: int = 0
    gid: int = 0
    timeout_s: float | None = None  # podman's own limit on the container's life
    extra: list[str] = field(default_factory=list)  # PIPELINE_CONTAINER_RUN_ARGS
    # `internet` in a namespace of the worker's, with its firewall (slirp.namespace)
    netns: Path | None = None


def network_flag(runtime: ContainerRuntime, network: AgentNetwork) -> str:
    if network is AgentNetwork.NONE:
        return "none"
    if network is AgentNetwork.HOST:
        return "host"
    if runtime is ContainerRuntime.PODMAN:
        return "slirp4netns:allow_host_loopback=false"
    return "bridge"


def own_namespace(runtime: ContainerRuntime, network: AgentNetwork, uid: int) -> bool:
    """Whether `internet` is a namespace of the worker's, with its firewall (slirp.namespace),
    rather than the engine's own, which keeps out the host's loopback but not its other
    addresses nor a cloud's metadata service: podman as root (rootless podman cannot join a
    namespace its user does not own; docker cannot join one at all)."""
    internet = network is AgentNetwork.INTERNET
    return internet and runtime is ContainerRuntime.PODMAN and uid == 0


def network_args(runtime: ContainerRuntime, network: AgentNetwork, netns: Path | None) -> list[str]:
    if netns is not None:
        return ["--network", f"ns:{netns}", "--dns", DNS]
    return ["--network", network_flag(runtime, network)]


def run_argv(step: ContainerStep, command: list[str]) -> list[str]:
    # Only images already here: a step never waits on, or trusts, a registry.
    argv = [step.binary, "run", "--rm", "--pull=never", "--name", step.name]
    if step.stdin:
        argv.append("-i")
    for key, value in sorted(step.labels.items()):
        argv += ["--label", f"{key}={value}"]
    argv += [*network_args(step.runtime, step.network, step.netns), *HARDENING]
    argv += [
        "-v", f"{step.checkout}:{WORKDIR}:rw",
        "-v", f"{step.tmp}:{TMPDIR}:rw",
        "-v", f"{step.home}:{HOME}:rw",
        "-v", f"{step.clone}:{step.clone}:ro",
        "-v", f"{step.clone_config}:{step.clone / 'config'}:ro",
        "-w", str(WORKDIR),
        "--env", f"HOME={HOME}",
        "--env", f"TMPDIR={TMPDIR}",
    ]  # fmt: skip
    forwarded = [k for k in step.env_names if k not in NOT_FORWARDED]
    # The operator's variables win over the image's literal ones (a repository's file).
    for key, value in sorted(step.env_values.items()):
        if key not in forwarded:
            argv += ["--env", f"{key}={value}"]
    for key in forwarded:
        argv += ["--env", key]
    if step.uid != 0:
        # Files the agent makes belong to the worker's user on the host afterwards.
        if step.runtime is ContainerRuntime.PODMAN:
            argv.append("--userns=keep-id")
        else:
            argv += ["--user", f"{step.uid}:{step.gid}"]
    if step.timeout_s is not None and step.runtime is ContainerRuntime.PODMAN:
        # If nobody is left to stop it (the worker was killed), conmon does.
        argv += ["--timeout", str(int(step.timeout_s) + 60)]
    return [*argv, *step.extra, step.image, *command]
