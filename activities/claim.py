"""claim_worker: the worker that answers names the queue where the task's other steps will run.
claim_workspace: the same, with the task's worktree prepared there in the same step."""

from __future__ import annotations

import hashlib
import socket
from pathlib import Path

from temporalio import activity

from autonomous_pipeline.activities.sandbox import SandboxActivities
from autonomous_pipeline.models.activity_io import (
    ClaimIn,
    ClaimOut,
    ClaimWorkspaceIn,
    ClaimWorkspaceOut,
)
from autonomous_pipeline.models.activity_refs import CLAIM_WORKER, CLAIM_WORKSPACE


def workspace_queue(base: str, workspace: Path) -> str:
    """One queue per machine and workspace: the workers that share a disk share the queue."""
    key = f"{socket.gethostname()}:{workspace.resolve()}"
    return f"{base}/ws-{hashlib.sha256(key.encode()).hexdigest()[:12]}"


class ClaimActivities:
    def __init__(self, queue: str, workspace: SandboxActivities) -> None:
        self.queue = queue
        self.workspace = workspace

    @activity.defn(name=CLAIM_WORKER.name)
    async def claim_worker(self, inp: ClaimIn) -> ClaimOut:
        return ClaimOut(queue=self.queue, host=socket.gethostname())

    @activity.defn(name=CLAIM_WORKSPACE.name)
    async def claim_workspace(self, inp: ClaimWorkspaceIn) -> ClaimWorkspaceOut:
        try:
            prepared = await self.workspace.prepare(inp)
        except BaseException:
            # Retried, the claim may go to another worker: what this one made goes now, or its
            # worktree would stay on this disk with no task to remove it. Unless the server has
            # already given up on this attempt (timed out, not found): the next attempt may be
            # running, on this disk too, and the worktree is its own by now (its agent even).
            if not _superseded(activity.cancellation_details()):
                await self.workspace.discard(inp.run_key, inp.task_id, inp.sandbox)
            raise
        return ClaimWorkspaceOut(
            **prepared.model_dump(), queue=self.queue, host=socket.gethostname()
        )


def _superseded(details: activity.ActivityCancellationDetails | None) -> bool:
    """Whether a cancel says the server counts this attempt as over (another may run)."""
    return details is not None and (details.timed_out or details.not_found)
