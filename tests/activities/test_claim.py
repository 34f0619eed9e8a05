"""claim_workspace: a claim that fails removes what it made, unless the server has given the
claim to another attempt already (it timed out): that attempt's worktree is the same one."""

from __future__ import annotations

import asyncio

import pytest
from temporalio.activity import ActivityCancellationDetails
from temporalio.exceptions import CancelledError
from temporalio.testing import ActivityEnvironment

from autonomous_pipeline.activities.claim import ClaimActivities
from autonomous_pipeline.models.activity_io import ClaimWorkspaceIn
from autonomous_pipeline.models.sandbox import SandboxConfig


class SlowWorkspace:
    """Prepares until cancelled; records what is discarded."""

    def __init__(self) -> None:
        self.discarded: list[str] = []
        self.started = asyncio.Event()

    async def prepare(self, inp: ClaimWorkspaceIn) -> None:
        self.started.set()
        await asyncio.sleep(30)

    async def discard(self, run_key: str, task_id: str, config: SandboxConfig) -> None:
        self.discarded.append(task_id)


@pytest.mark.parametrize(
    ("details", "discarded"),
    [
        (ActivityCancellationDetails(cancel_requested=True), ["1.1"]),  # the task was cancelled
        (ActivityCancellationDetails(worker_shutdown=True), ["1.1"]),  # retried after a restart
        (ActivityCancellationDetails(timed_out=True), []),  # another attempt owns it now
        (ActivityCancellationDetails(not_found=True), []),
    ],
)
async def test_a_cancelled_claim_discards_its_worktree_only_if_no_other_attempt_may_own_it(
    details: ActivityCancellationDetails, discarded: list[str]
) -> None:
    ws = SlowWorkspace()
    claims = ClaimActivities("q", ws)  # type: ignore[arg-type]
    env = ActivityEnvironment()
    inp = ClaimWorkspaceIn(run_key="r", task_id="1.1", repo="/repo", target_branch="t")
    running = asyncio.create_task(env.run(claims.claim_workspace, inp))
    await ws.started.wait()
    env.cancel(cancellation_details=details)
    with pytest.raises((asyncio.CancelledError, CancelledError)):
        await running
    assert ws.discarded == discarded
