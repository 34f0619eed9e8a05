"""claim_worker: the worker that answers names the queue where the task's other steps will run."""

from __future__ import annotations

import hashlib
import socket
from pathlib import Path

from temporalio import activity

from autonomous_pipeline.models.activity_io import ClaimIn, ClaimOut
from autonomous_pipeline.models.activity_refs import CLAIM_WORKER


def workspace_queue(base: str, workspace: Path) -> str:
    """One queue per machine and workspace: the workers that share a disk share the queue."""
    key = f"{socket.gethostname()}:{workspace.resolve()}"
    return f"{base}/ws-{hashlib.sha256(key.encode()).hexdigest()[:12]}"


class ClaimActivities:
    def __init__(self, queue: str) -> None:
        self.queue = queue

    @activity.defn(name=CLAIM_WORKER.name)
    async def claim_worker(self, inp: ClaimIn) -> ClaimOut:
        return ClaimOut(queue=self.queue, host=socket.gethostname())
