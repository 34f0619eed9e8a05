"""What a worker lets a run weaken. The workflow input asks; the worker, started by the operator,
decides.

Weakening is running without namespaces (`isolation` off), on the host's network, or without
Landlock. A run's input is data anyone who reaches the Temporal frontend can write, so a worker
honours it only when its operator said so on its own command line: `worker.py
--allow-weakened-isolation` for every run, or the embedded worker of `starter.py --no-isolation`
(or `--agent-network host`, `--no-confine`) for the one run that starter started.
"""

from __future__ import annotations

from dataclasses import dataclass

from models.sandbox import AgentNetwork, SandboxConfig, SandboxKind

WEAKENED_REFUSED = "WeakenedIsolationRefused"


def weakenings(config: SandboxConfig) -> list[str]:
    """What of `config` weakens the sandbox, as the command-line flags that ask for it."""
    found = []
    if config.kind is SandboxKind.WORKTREE and not config.isolation:
        found.append("--no-isolation")
    if config.network is AgentNetwork.HOST:
        found.append("--agent-network host")
    if not config.confine:
        found.append("--no-confine")
    return found


@dataclass(frozen=True)
class WorkerPolicy:
    # None: any run may weaken; otherwise only the runs (workflow ids) named here.
    weakened_runs: frozenset[str] | None = frozenset()

    def refusal(self, config: SandboxConfig, workflow_id: str) -> str | None:
        """Why this worker will not run a step of `workflow_id` under `config`, or None."""
        asked = weakenings(config)
        run = workflow_id.split("/", 1)[0]  # a task's id is <run>/task-<id>[/try-N]
        if not asked or self.weakened_runs is None or run in self.weakened_runs:
            return None
        return (
            f"run {run} asks for {', '.join(asked)}, and this worker runs agents only in full "
            "isolation: a run's input is not the operator's say. Start the worker with "
            "--allow-weakened-isolation, or run the plan with the starter's embedded worker"
        )
