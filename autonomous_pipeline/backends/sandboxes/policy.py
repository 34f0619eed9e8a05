"""What a worker lets a run weaken. The workflow input asks; the worker, started by the operator,
decides.

Weakening is running without namespaces (`isolation` off), on the host's network, or without
Landlock. A run's input is data anyone who reaches the Temporal frontend can write, so a worker
honours it only when its operator said so:

- the run's sandbox carries a grant, the operator's signature (HMAC under a key derived from
  their approval key, cli.approval) over the run and what it weakens, and the worker holds that
  key: the starter's embedded worker, a worker it spawned for --detach, any worker started by
  the same user on the same machine;
- or the worker was started with `worker.py --allow-weakened-isolation`: every run, as asked.

A grant seen in history can be replayed only for that same run key and the same weakening;
protect the frontend itself (mTLS, API keys) where untrusted code can reach it.
"""

from __future__ import annotations

import hashlib
import hmac
import json
from dataclasses import dataclass

from autonomous_pipeline.models.sandbox import AgentNetwork, SandboxConfig, SandboxKind

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


def _grant_key(operator_key: bytes) -> bytes:
    return hashlib.sha256(b"autonomous-pipeline sandbox grant\0" + operator_key).digest()


def sandbox_grant(operator_key: bytes, run_key: str, config: SandboxConfig) -> str:
    """The operator's signature on a run's weakened sandbox (whatever kind a batch runs in)."""
    asked = {"run": run_key, "isolation": config.isolation, "network": config.network.value,
             "confine": config.confine}  # fmt: skip
    message = json.dumps(asked, sort_keys=True).encode()
    return hmac.new(_grant_key(operator_key), message, hashlib.sha256).hexdigest()


@dataclass(frozen=True)
class WorkerPolicy:
    any_run: bool = False  # --allow-weakened-isolation
    operator_key: bytes | None = None  # runs this key granted may weaken their sandbox

    def refusal(self, config: SandboxConfig, run_key: str) -> str | None:
        """Why this worker will not run a step of run `run_key` under `config`, or None."""
        asked = weakenings(config)
        if not asked or self.any_run:
            return None
        if self.operator_key is not None and config.grant is not None:
            expected = sandbox_grant(self.operator_key, run_key, config)
            if hmac.compare_digest(config.grant, expected):
                return None
        return (
            f"run {run_key} asks for {', '.join(asked)} without a grant this worker can check: "
            "a run's input is not the operator's say. Start it from the starter (whose key "
            "signs it) on a machine whose workers hold that key, or start the worker with "
            "--allow-weakened-isolation"
        )
