"""Record workflow histories for the replay tests: `python -m tests.replay.record_histories`.

Runs every workflow shape on the time-skipping server with the fake activities and writes each
PlanWorkflow and TaskWorkflow history to tests/replay/histories/<VERSION>/. After a change to a
workflow (behind `workflow.patched`), raise VERSION and record: the older versions' histories stay,
as the promise that runs started by those versions still replay.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import os
import sys
from datetime import timedelta
from pathlib import Path

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from temporalio.client import Client, WorkflowUpdateFailedError
from temporalio.testing import WorkflowEnvironment
from temporalio.worker import Worker

from autonomous_pipeline.cli.approval import public_key, sign_decision
from autonomous_pipeline.cli.redaction import data_converter
from autonomous_pipeline.cli.results import final_result
from autonomous_pipeline.cli.search import ensure_searchable
from autonomous_pipeline.models.forge import (
    CheckState,
    EventKind,
    ForgeConfig,
    PrCheck,
    PrEvent,
    Publish,
)
from autonomous_pipeline.models.notify import NotifyConfig
from autonomous_pipeline.models.results import PlanResult, RunProgress, TaskResult, TaskStatus
from autonomous_pipeline.models.revision import REVISE, PlanRevision, RevisionReply
from autonomous_pipeline.models.run import Approval, CancelRequest, ReviewerConfig
from autonomous_pipeline.models.steer import DecideRequest, SteerKind, SteerReply, SteerRequest
from autonomous_pipeline.plan_parser import parse_plan
from autonomous_pipeline.workflows.plan import PlanWorkflow
from autonomous_pipeline.workflows.task import TaskWorkflow
from tests.conftest import md
from tests.temporal_env import dev_server_path, test_server_path
from tests.workflows.conftest import plan_input
from tests.workflows.fake_host import HostScript
from tests.workflows.fakes import FakeActivities, Script

# Raise this with every change to a workflow's commands; each version keeps its own histories.
VERSION = "v14"
OUT = Path(__file__).resolve().parent / "histories" / VERSION
PLAN = md(
    """
    # Replay plan
    ## Batch 1: first
    **Dependencies:** None
    ### Task 1.1: a
    **Verification:**
    - `true`
    ### Task 1.2: b
    ## Batch 2: second
    **Dependencies:** Batch 1
    ### Task 2.1: c
    """
)


async def _wait_for(handle, tid: str, status: TaskStatus) -> None:
    for _ in range(500):
        p = await handle.query("status", result_type=RunProgress)
        if any(t.id == tid and t.status is status for t in p.tasks):
            return
        await asyncio.sleep(0.02)
    raise TimeoutError(f"task {tid} never reached {status}")


async def _wait_phase(client: Client, handle, tid: str) -> str:
    """The commit waiting for approval, once task `tid` waits."""
    for _ in range(500):
        with contextlib.suppress(Exception):
            res = await client.get_workflow_handle(f"{handle.id}/task-{tid}").query(
                "status", result_type=TaskResult
            )
            if res is not None and res.phase.startswith("awaiting approval"):
                assert res.approval_commit is not None
                return res.approval_commit
        await asyncio.sleep(0.02)
    raise TimeoutError(f"task {tid} never waited for approval")


async def scenario(
    client: Client, name: str, script: Script, steer=None, approver: str | None = None, **options
) -> None:
    queue = f"record-{name}"
    fakes = FakeActivities(script, queue)
    async with Worker(
        client,
        task_queue=queue,
        workflows=[PlanWorkflow, TaskWorkflow],
        activities=fakes.all(),
        max_heartbeat_throttle_interval=timedelta(seconds=0.2),
    ):
        wf_id = f"replay-{name}"
        inp = plan_input(PLAN, **options)
        inp.approver = approver
        handle = await client.start_workflow(PlanWorkflow.run, inp, id=wf_id, task_queue=queue)
        if steer:
            await steer(handle)
        result: PlanResult = await final_result(handle)
    # Every run of the plan's chain (one per continue-as-new): `NAME@N.json` for the N-th after
    # the first, which replays as the same workflow id.
    run_id: str | None = handle.result_run_id
    ids: list[str] = []
    for n in range(100):
        parent = await client.get_workflow_handle(wf_id, run_id=run_id).fetch_history()
        (OUT / (wf_id + (f"@{n}" if n else "") + ".json")).write_text(parent.to_json())
        ids += [
            e.child_workflow_execution_started_event_attributes.workflow_execution.workflow_id
            for e in parent.events
            if e.HasField("child_workflow_execution_started_event_attributes")
        ]
        last = parent.events[-1]
        if not last.HasField("workflow_execution_continued_as_new_event_attributes"):
            break
        run_id = last.workflow_execution_continued_as_new_event_attributes.new_execution_run_id
    for wid in ids:
        history = await client.get_workflow_handle(wid).fetch_history()
        (OUT / f"{wid.replace('/', '__')}.json").write_text(history.to_json())
    print(f"{name}: {result.status.value}, {n + 1} runs, {len(ids)} task histories")


async def main() -> None:
    OUT.mkdir(parents=True, exist_ok=True)
    for old in OUT.glob("*.json"):
        old.unlink()
    async with await WorkflowEnvironment.start_time_skipping(
        test_server_existing_path=test_server_path(), data_converter=data_converter()
    ) as env:
        c = env.client
        await scenario(c, "all-merged", Script())
        await scenario(c, "failure-skips-dependants", Script(agent_fails={"1.2"}))
        await scenario(
            c,
            "no-op-verify-fail-conflict",
            Script(no_op={"2.1"}, verify_fails={"1.1"}, conflict={"1.2"}),
        )
        await scenario(c, "setup-failed", Script(prepare_run_fails=True))

        async def retry(handle) -> None:
            await _wait_for(handle, "1.2", TaskStatus.FAILED)
            await handle.signal("retry", "1.2")

        await scenario(c, "retry", Script(agent_fails_once={"1.2"}, slow={"1.1": 1.0}), retry)

        async def cancel_now(handle) -> None:
            await _wait_for(handle, "1.1", TaskStatus.RUNNING)
            await asyncio.sleep(0.3)
            await handle.signal("cancel", CancelRequest(now=True))

        await scenario(c, "cancel-now", Script(slow={"1.1": 30}), cancel_now, max_concurrent=1)

        await scenario(
            c,
            "review-fix-round",
            Script(reject_reviews={"1.1": 1}),
            reviewer=ReviewerConfig(backend="claude"),
        )
        await scenario(c, "verify-fix-round", Script(verify_fails_times={"1.1": 1}))
        await scenario(c, "conflict-fix-round", Script(conflict_once={"1.2"}))
        await scenario(
            c, "usage-limit-wait", Script(rate_limited={"1.1": 1}, overloaded={"1.2": 1})
        )
        await scenario(c, "budget-spent", Script(agent_cost=1.0), budget_usd=0.5, max_concurrent=1)

        # Decisions signed by the operator's key, for the commit waiting (and one unsigned,
        # ignored).
        key = Ed25519PrivateKey.generate().private_bytes_raw()

        async def approve(handle) -> None:
            commits = {}
            for tid in ("1.1", "1.2"):
                commits[tid] = await _wait_phase(client=c, handle=handle, tid=tid)
            await handle.signal("approve", args=["1.1"])
            sign = functools.partial(sign_decision, key, workflow_id=handle.id)
            await handle.signal(
                "approve", args=["1.1", sign(True, task_id="1.1", commit=commits["1.1"])]
            )
            await handle.signal(
                "reject", args=["1.2", sign(False, task_id="1.2", commit=commits["1.2"])]
            )

        await scenario(
            c, "approval", Script(), approve, approver=public_key(key), approval=Approval.ALWAYS
        )

        async def pause_skip(handle) -> None:
            await handle.signal("pause")
            await handle.signal("skip", "2.1")
            await asyncio.sleep(0.5)
            await handle.signal("resume")

        await scenario(
            c, "pause-skip-resume", Script(slow={"1.1": 0.5}), pause_skip, max_concurrent=1
        )

        # v5: steering by update (answered; a refused one leaves no trace), decisions by
        # update, a fix round that changes nothing, a change already on the target.
        async def steer_updates(handle) -> None:
            async def update(kind: SteerKind, task: str | None = None) -> None:
                await handle.execute_update(
                    "steer", SteerRequest(kind=kind, task=task), result_type=SteerReply
                )

            await _wait_for(handle, "1.1", TaskStatus.RUNNING)
            await update(SteerKind.PAUSE)
            with contextlib.suppress(WorkflowUpdateFailedError):
                await update(SteerKind.PAUSE)  # refused: already paused
            await update(SteerKind.SKIP, "2.1")
            await asyncio.sleep(0.5)
            await update(SteerKind.RESUME)

        await scenario(
            c, "steer-updates", Script(slow={"1.1": 0.5}), steer_updates, max_concurrent=1
        )

        async def decide(handle) -> None:
            for tid in ("1.1", "1.2"):
                commit = await _wait_phase(client=c, handle=handle, tid=tid)
                child = c.get_workflow_handle(f"{handle.id}/task-{tid}")
                approved = tid == "1.1"
                token = sign_decision(key, approved, handle.id, tid, commit)
                await child.execute_update(
                    "decide",
                    DecideRequest(approved=approved, token=token),
                    result_type=SteerReply,
                )

        await scenario(
            c, "decide-updates", Script(), decide, approver=public_key(key),
            approval=Approval.ALWAYS,
        )  # fmt: skip
        await scenario(c, "fix-no-change", Script(verify_fails={"1.1"}, fix_no_change={"1.1"}))
        await scenario(c, "on-target", Script(on_target={"1.2"}))
        # --publish pr: a fix asked on the PR, a conflict on the host, the rate limit, a
        # failing check; then a PR closed by a person and one skipped.
        fix = PrEvent(id="comment:1", kind=EventKind.FIX, author="alice", body="rename it")
        host = HostScript(
            events={"1.1": [(1, fix)]},
            conflict_once={"1.2"},
            rate_limited={"read_pull_request": 1},
            checks={"2.1": [[PrCheck(name="ci", state=CheckState.FAILED)],
                            [PrCheck(name="ci", state=CheckState.PASSED)]],
                    "1.1": [[PrCheck(name="ci", state=CheckState.PASSED)]] * 2,
                    "1.2": [[PrCheck(name="ci", state=CheckState.PASSED)]] * 2},
        )  # fmt: skip
        forge = ForgeConfig(repository="acme/widgets", require_checks=True)
        await scenario(c, "pull-requests", Script(host=host), publish=Publish.PR, forge=forge)
        skip = PrEvent(id="comment:2", kind=EventKind.SKIP, author="alice")
        host = HostScript(closed_at={"1.1": 2}, events={"1.2": [(1, skip)]})
        await scenario(
            c, "pull-requests-ended-by-people", Script(host=host), publish=Publish.PR,
            forge=forge.model_copy(update={"require_checks": False}), approval=Approval.ALWAYS,
        )  # fmt: skip

        # v13: notices (--notify): a wait for approval, a failure, the budget, the end; each
        # first send fails and is retried.
        async def approve_unsigned(handle) -> None:
            await _wait_phase(client=c, handle=handle, tid="1.1")
            await handle.signal("approve", args=["1.1"])  # no approver recorded: it counts

        told = NotifyConfig(urls=["https://hooks.example/x", "env:HOOK"], links="http://ui/")
        await scenario(
            c, "notified", Script(agent_fails={"1.2"}, agent_cost=1.0, notify_fails_once=True),
            approve_unsigned, approval=Approval.ALWAYS, budget_usd=1.5, max_concurrent=1,
            notify=told,
        )  # fmt: skip

        # v14: a living plan: a revision while the run runs (a task changed, one removed, one
        # added; a broken one refused), and a run that continues as new between its tasks.
        async def revise(handle) -> None:
            await _wait_for(handle, "1.1", TaskStatus.RUNNING)
            broken = PlanRevision(plan=parse_plan(PLAN), digest="broken", plan_file="PLAN.md")
            broken.plan.batches[0].tasks[0].depends_on = ["1.2"]
            broken.plan.batches[0].tasks[1].depends_on = ["1.1"]
            with contextlib.suppress(WorkflowUpdateFailedError):
                await handle.execute_update(REVISE, broken, result_type=RevisionReply)
            edited = PLAN.replace("### Task 1.2: b", "### Task 1.2: b, better").replace(
                "### Task 2.1: c", "### Task 2.2: d"
            )
            rev = PlanRevision(plan=parse_plan(edited), digest="edited", plan_file="PLAN.md")
            await handle.execute_update(REVISE, rev, result_type=RevisionReply)

        await scenario(c, "revised", Script(slow={"1.1": 1.0}), revise, max_concurrent=1)
        await scenario(c, "continued", Script(), history_limit=30, max_concurrent=1)

    # v13: search attributes, on a dev server (the time-skipping one has none).
    async with await WorkflowEnvironment.start_local(
        dev_server_existing_path=dev_server_path(), data_converter=data_converter(), ui=False
    ) as env:
        c = env.client
        assert await ensure_searchable(c, embedded=True)
        await scenario(
            c, "searchable", Script(agent_fails={"1.2"}), approve_unsigned_on(c),
            approval=Approval.ALWAYS, searchable=True,
        )  # fmt: skip


def approve_unsigned_on(client: Client):  # type: ignore[no-untyped-def]
    async def approve(handle) -> None:  # type: ignore[no-untyped-def]
        await _wait_phase(client=client, handle=handle, tid="1.1")
        await handle.signal("approve", args=["1.1"])

    return approve


if __name__ == "__main__":
    asyncio.run(main())
    sys.stdout.flush()
    os._exit(0)  # the SDK's threads can crash the interpreter's exit
