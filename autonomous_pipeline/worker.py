"""A worker process: `python worker.py --address HOST:PORT --workspace DIR`.

Any number of workers may serve one cluster; each does the work in its own workspace. The starter
runs the same worker in-process when it uses the embedded server.
"""

from __future__ import annotations

import argparse
import asyncio
import compileall
import contextlib
import logging
import signal
import sys
from collections.abc import AsyncIterator, Callable
from datetime import timedelta
from pathlib import Path
from typing import Any

from temporalio.client import Client, WorkflowExecutionStatus
from temporalio.service import RPCError, RPCStatusCode
from temporalio.worker import Worker

from autonomous_pipeline.activities.agent import AgentActivities
from autonomous_pipeline.activities.claim import ClaimActivities, workspace_queue
from autonomous_pipeline.activities.forge import ForgeActivities
from autonomous_pipeline.activities.merge import MergeActivities
from autonomous_pipeline.activities.notify import NotifyActivities
from autonomous_pipeline.activities.review import ReviewActivities
from autonomous_pipeline.activities.sandbox import SandboxActivities
from autonomous_pipeline.activities.verify import VerifyActivities
from autonomous_pipeline.backends.registry import make_agent, make_reviewer_agent
from autonomous_pipeline.backends.sandboxes.container import sweep_workspace
from autonomous_pipeline.backends.sandboxes.policy import WorkerPolicy
from autonomous_pipeline.backends.sandboxes.registry import Sandboxes
from autonomous_pipeline.backends.workspace.tasks import Workspaces
from autonomous_pipeline.cli import invocation
from autonomous_pipeline.cli.approval import existing_key
from autonomous_pipeline.cli.connect import TASK_QUEUE, connect_client
from autonomous_pipeline.cli.logs import LogContext, configure_logging
from autonomous_pipeline.config import default_workspace
from autonomous_pipeline.errors import UsageError
from autonomous_pipeline.models.ops import LogFormat
from autonomous_pipeline.telemetry import configure_runtime
from autonomous_pipeline.workflows.plan import PlanWorkflow
from autonomous_pipeline.workflows.task import TaskWorkflow

HEARTBEAT_THROTTLE = timedelta(seconds=2)


def activities(
    sandboxes: Sandboxes, local_queue: str
) -> tuple[list[Callable[..., Any]], list[Callable[..., Any]]]:
    """(the shared queue's activities, the workspace queue's): every one in models.activity_refs."""
    sandbox_acts = SandboxActivities(sandboxes)
    claims = ClaimActivities(local_queue, sandbox_acts)
    forges = ForgeActivities(sandboxes.workspaces.clones)
    shared: list[Callable[..., Any]] = [
        sandbox_acts.prepare_run,
        claims.claim_worker,
        claims.claim_workspace,
        forges.open_pr,
        forges.post_review,
        forges.read_pr,
        forges.merge_pr,
        forges.close_pr,
        forges.withdraw,
        NotifyActivities().notify,
    ]
    merges = MergeActivities(sandboxes)
    local: list[Callable[..., Any]] = [
        sandbox_acts.prepare_workspace,
        sandbox_acts.cleanup_workspace,
        sandbox_acts.prepare_conflict_fix,
        AgentActivities(sandboxes, make_agent).run_agent,
        VerifyActivities(sandboxes).verify_task,
        ReviewActivities(sandboxes, make_reviewer_agent).review_task,
        merges.merge_task,
        merges.finish_task,
        forges.push_branch,
    ]
    return shared, local


def compile_workflows() -> None:
    """Write the bytecode of the workflow modules where it is missing or stale.

    The workflow sandbox imports these modules afresh for every workflow it starts; with no
    .pyc beside them (PYTHONDONTWRITEBYTECODE, a fresh checkout) every import compiles them
    again: measured, 13% of the worker's time. Only this package's own workflow folder is
    written; a folder that cannot be written is left as it is (the imports work, slower)."""
    folder = Path(__file__).resolve().parent / "workflows"
    with contextlib.suppress(OSError):
        compileall.compile_dir(folder.resolve(), quiet=2, workers=1)


def make_worker(
    client: Client,
    workspace: Path,
    max_activities: int = 16,
    task_queue: str = TASK_QUEUE,
    policy: WorkerPolicy | None = None,
) -> contextlib.AbstractAsyncContextManager[None]:
    """Settings -> backends -> activity objects -> two Workers, run together.

    The shared queue carries the workflows and the steps any worker can do; the workspace queue
    carries a claimed task's steps, which need this machine's worktree. `policy` says which runs
    may weaken their agents' isolation (by default none).
    """
    compile_workflows()
    workspaces = Workspaces(workspace)
    frontend = client.service_client.config.target_host.rsplit(":", 1)[0].strip("[]")
    sandboxes = Sandboxes(workspaces, policy, control_plane=(frontend,))
    local_queue = workspace_queue(task_queue, workspace)
    shared_acts, local_acts = activities(sandboxes, local_queue)
    # Cancellation reaches an activity only on a heartbeat round trip: send them often enough
    # that `cancel --now` kills an agent within seconds, not 0.8 x the heartbeat timeout.
    shared = Worker(
        client,
        task_queue=task_queue,
        workflows=[PlanWorkflow, TaskWorkflow],
        activities=shared_acts,
        max_heartbeat_throttle_interval=HEARTBEAT_THROTTLE,
        # A killed worker's cached workflows move to another worker after this, not the 10 s default.
        sticky_queue_schedule_to_start_timeout=timedelta(seconds=3),
        interceptors=[LogContext()],
    )
    local = Worker(
        client,
        task_queue=local_queue,
        activities=local_acts,
        max_concurrent_activities=max_activities,
        max_heartbeat_throttle_interval=HEARTBEAT_THROTTLE,
        interceptors=[LogContext()],
    )

    @contextlib.asynccontextmanager
    async def both() -> AsyncIterator[None]:
        # Containers a killed worker of this workspace left running end before new work starts.
        if swept := await sweep_workspace(workspaces):
            logging.getLogger(__name__).warning("removed %d containers of dead workers", swept)
        async with shared, local:
            yield

    return both()


# A detached run's worker starts before the call that starts the run returns (the call waits for
# a worker to take the run's first revision): it waits this long for the run to exist.
RUN_APPEARS_S = 120.0


async def _closed(client: Client, workflow_id: str) -> None:
    """When the run `workflow_id` (the newest of its chain) has closed. It waits for the run to
    be open first: a run started again under its id finds the last one closed."""
    handle = client.get_workflow_handle(workflow_id)
    for _ in range(int(RUN_APPEARS_S / 0.5)):
        try:
            if (await handle.describe()).status == WorkflowExecutionStatus.RUNNING:
                break
        except RPCError as exc:
            if exc.status != RPCStatusCode.NOT_FOUND:
                raise
        await asyncio.sleep(0.5)
    with contextlib.suppress(Exception):  # failed, cancelled, terminated: closed all the same
        await handle.result()


async def serve(
    address: str | None,
    namespace: str | None,
    workspace: Path,
    until: str | None,
    policy: WorkerPolicy,
) -> int:
    client = await connect_client(address, namespace)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    async with make_worker(client, workspace, policy=policy):
        print(
            f"worker serving {address or 'the configured cluster'} from {workspace}",
            file=sys.stderr,
            flush=True,
        )
        if until:
            # A detached run's worker leaves when that run has closed.
            waiter = asyncio.create_task(_closed(client, until))
            stopper = asyncio.create_task(stop.wait())
            await asyncio.wait({waiter, stopper}, return_when=asyncio.FIRST_COMPLETED)
            stopper.cancel()
        else:
            await stop.wait()
    return 0


def main() -> int:
    ap = argparse.ArgumentParser(
        prog=invocation.worker_prog(),
        description="Serve pipeline workflows and activities.",
    )
    ap.add_argument(
        "--address", help="HOST:PORT of the Temporal frontend (default: environment config)"
    )
    ap.add_argument("--namespace", default=None)
    ap.add_argument(
        "--workspace", default=None, help="the worker's clone, worktrees and transcripts"
    )
    ap.add_argument("--until", metavar="WORKFLOW_ID", help="exit when this run closes")
    ap.add_argument(
        "--metrics-port",
        type=int,
        metavar="N",
        help="serve Prometheus metrics on this port (the SDK's temporal_* and the pipeline's own)",
    )
    ap.add_argument(
        "--log-format",
        choices=[f.value for f in LogFormat],
        default=LogFormat.AUTO.value,
        help="json lines, or console; auto: json unless stderr is a terminal",
    )
    ap.add_argument("--log-level", default="info", choices=["debug", "info", "warning", "error"])
    ap.add_argument(
        "--allow-weakened-isolation",
        action="store_true",
        help="run agents as a run asks even when that weakens their isolation (--no-isolation, "
        "--agent-network host, --no-confine); by default only runs this user's approval key "
        "granted may",
    )
    args = ap.parse_args()
    configure_logging(args.log_level, LogFormat(args.log_format))
    try:
        configure_runtime(args.metrics_port)
    except UsageError as exc:
        print(f"worker: {exc}", file=sys.stderr)
        return 2
    workspace = (
        Path(args.workspace).expanduser().resolve() if args.workspace else default_workspace()
    )
    # Runs the operator's key granted may weaken: this user's key, where there is one.
    policy = WorkerPolicy(args.allow_weakened_isolation, existing_key())
    try:
        return asyncio.run(serve(args.address, args.namespace, workspace, args.until, policy))
    except Exception as exc:
        print(f"worker: {type(exc).__name__}: {exc}", file=sys.stderr)
        return 1


def entry() -> None:
    """The `autonomous-pipeline-worker` console script (and `python -m autonomous_pipeline.worker`)."""
    invocation.exit_after(main)


if __name__ == "__main__":
    entry()
