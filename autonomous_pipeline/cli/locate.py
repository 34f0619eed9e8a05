"""Finding a run for a read-only or steering command, without ever starting a server: the given
address, else the embedded servers of the workspace named and of every workspace known to have had
one."""

from __future__ import annotations

import os
import time
from dataclasses import dataclass
from pathlib import Path

from temporalio.api.enums.v1 import TaskQueueType
from temporalio.api.taskqueue.v1 import TaskQueue
from temporalio.api.workflowservice.v1 import DescribeTaskQueueRequest
from temporalio.client import Client, WorkflowExecutionDescription, WorkflowHandle
from temporalio.service import RPCError, RPCStatusCode

from autonomous_pipeline.cli import invocation
from autonomous_pipeline.cli.connect import TASK_QUEUE, connect_client, ui_base_of, workflow_link
from autonomous_pipeline.cli.server import known_workspaces, running_server
from autonomous_pipeline.config import Settings
from autonomous_pipeline.errors import UsageError
from autonomous_pipeline.models.results import PlanResult


@dataclass
class Server:
    client: Client
    address: str
    ui_base: str | None
    workspace: Path | None  # the embedded server's workspace, when it is one


@dataclass
class Found(Server):
    """A run, and the server it was found on."""

    handle: WorkflowHandle
    desc: WorkflowExecutionDescription

    def ui_link(self) -> str | None:
        return workflow_link(self.ui_base, self.client.namespace, self.handle.id)

    def worker_hint(self) -> str:
        where = f" --workspace {self.workspace}" if self.workspace else " --workspace DIR"
        return f"{invocation.worker()} --address {self.address}{where}"


def explicit_address(settings: Settings) -> str | None:
    return settings.address or os.environ.get("TEMPORAL_ADDRESS")


async def servers(settings: Settings) -> tuple[list[Server], list[str]]:
    """The servers to look on, and a note for each place that had none."""
    address = explicit_address(settings)
    if address:
        client = await connect_client(address, settings.namespace)
        return [Server(client, address, ui_base_of(address, settings.ui_url), None)], []
    found, missing, seen = [], [], set()
    for ws in [settings.workspace, *known_workspaces()]:
        key = str(ws.expanduser().resolve())
        if key in seen:
            continue
        seen.add(key)
        info = running_server(ws)
        if info is None:
            missing.append(f"{ws} (no server running)")
            continue
        try:
            client = await connect_client(info.address, settings.namespace)
        except UsageError:  # a stale record of a port something else now holds
            missing.append(f"{ws} (its server at {info.address} does not answer)")
            continue
        found.append(Server(client, info.address, settings.ui_url or info.ui_url, ws))
    return found, missing


RUN_TYPE = "PlanWorkflow"
TASK_TYPE = "TaskWorkflow"


def _not_a_run(workflow_id: str, desc: WorkflowExecutionDescription) -> str:
    if desc.workflow_type == "TaskWorkflow" and desc.parent_id:
        task = workflow_id.split("/task-", 1)[-1].split("/", 1)[0]
        return (
            f"{workflow_id} is a task of run {desc.parent_id}, not a run: "
            f"{invocation.starter()} status {desc.parent_id} {task}"
        )
    return f"{workflow_id} is not a pipeline run (it is a {desc.workflow_type} workflow)"


async def find_run(settings: Settings, workflow_id: str) -> Found:
    candidates, looked = await servers(settings)
    for server in candidates:
        handle = server.client.get_workflow_handle(workflow_id, result_type=PlanResult)
        try:
            desc = await handle.describe()
        except RPCError as exc:
            if exc.status != RPCStatusCode.NOT_FOUND:
                raise
            where = f"{server.workspace} " if server.workspace else ""
            looked.append(f"{where}(server at {server.address}: no such run)".strip())
            continue
        if desc.workflow_type != RUN_TYPE:
            raise UsageError(_not_a_run(workflow_id, desc))
        return Found(**vars(server), handle=handle, desc=desc)
    raise UsageError(
        f"no run {workflow_id!r}; looked in: {'; '.join(looked) or 'nowhere'}. A run on another "
        "server needs --address HOST:PORT (and --namespace); one in another workspace, "
        f"--workspace DIR (`{invocation.starter()} runs` lists the runs it can see)"
    )


# A worker long-polls its queue again as soon as a poll ends (within about a minute); one the
# server has not seen for this long is gone.
WORKER_SEEN_S = 120.0


async def worker_seen(client: Client) -> bool:
    """Whether any worker polled the pipeline's task queue lately: a quick "no" for a run whose
    workers are long gone (a "yes" still needs the run itself to answer)."""
    resp = await client.workflow_service.describe_task_queue(
        DescribeTaskQueueRequest(
            namespace=client.namespace,
            task_queue=TaskQueue(name=TASK_QUEUE),
            task_queue_type=TaskQueueType.TASK_QUEUE_TYPE_WORKFLOW,
        )
    )
    now = time.time()
    return any(
        p.HasField("last_access_time") and now - p.last_access_time.ToSeconds() < WORKER_SEEN_S
        for p in resp.pollers
    )
