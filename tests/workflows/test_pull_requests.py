"""--publish pr: a task's change as a pull request that people steer, merged through the host."""

from __future__ import annotations

import asyncio
import contextlib
import uuid

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from autonomous_pipeline.cli.approval import public_key, sign_decision
from autonomous_pipeline.cli.results import final_result
from autonomous_pipeline.models.forge import (
    CheckState,
    EventKind,
    ForgeConfig,
    PrCheck,
    PrEvent,
    Publish,
)
from autonomous_pipeline.models.results import TaskResult, TaskStatus
from autonomous_pipeline.models.run import Approval
from autonomous_pipeline.workflows.plan import PlanWorkflow
from tests.conftest import md
from tests.workflows.conftest import Harness, plan_input
from tests.workflows.fake_host import HostScript
from tests.workflows.fakes import Script

PLAN = md(
    """
    # PR plan
    ## Batch 1: one
    ### Task 1.1: a
    Make a.
    **Verification:**
    - `pytest -q`
    ### Task 1.2: b
    **Depends on:** 1.1
    """
)
FORGE = ForgeConfig(repository="acme/widgets", poll_s=30.0, web_ui="http://ui/run")


def pr_run(**options: object):
    forge = FORGE.model_copy(update=options.pop("forge", {}))
    return plan_input(PLAN, publish=Publish.PR, forge=forge, **options)


def tasks(result) -> dict[str, TaskResult]:
    return {t.id: t for t in result.tasks}


def fix(body: str) -> PrEvent:
    return PrEvent(id="comment:9", kind=EventKind.FIX, author="alice", body=body)


def approve(eid: str) -> PrEvent:
    return PrEvent(id=eid, kind=EventKind.APPROVE, author="carol")


async def test_each_task_opens_one_pr_and_the_host_merges_it(running: Harness) -> None:
    result = await running.run(pr_run())
    t, host = tasks(result), running.fakes.host
    assert t["1.1"].status is TaskStatus.MERGED and t["1.2"].status is TaskStatus.MERGED
    assert host.opened == ["1.1", "1.2"]
    assert t["1.1"].commit == "squash-1.1-c-1.1-1"
    assert t["1.1"].pull_request == "https://host/pr/1"
    merge = host.merges[0]
    assert merge.title == "Task 1.1: a (#1)" and merge.head_sha == "c-1.1-1"
    assert merge.message.endswith("Pipeline-Task: test/1.1")
    # Verified and reviewed before the PR; never merged or pushed onto the target here.
    calls = [name for name, tid in running.fakes.calls if tid == "1.1"]
    assert "verify_task" in calls and "merge_task" not in calls and "finish_task" not in calls
    assert host.reviews[0] == ("1.1", "c-1.1-1", True)


@pytest.mark.parametrize(
    "running",
    [Script(host=HostScript(events={"1.1": [(1, fix("rename x to height"))]}))],
    indirect=True,
)
async def test_a_fix_comment_leads_to_a_fix_round_pushed_to_the_same_pr(running: Harness) -> None:
    result = await running.run(pr_run())
    t, host = tasks(result)["1.1"], running.fakes.host
    assert t.status is TaskStatus.MERGED
    fixes = [i for i in running.fakes.agent_inputs if i.task.id == "1.1" and i.fix]
    assert len(fixes) == 1  # acted on once, though every read shows the comment
    assert fixes[0].fix.findings[0].message == "@alice on #1: rename x to height"
    assert host.pushes["1.1"] == ["c-1.1-1", "c-1.1-2"]
    assert host.opened == ["1.1", "1.2"]  # the same PR: found, not opened again
    assert host.merges[0].head_sha == "c-1.1-2"


@pytest.mark.parametrize(
    "running",
    [
        Script(
            host=HostScript(
                events={"1.1": [(3, approve("review:5"))], "1.2": [(1, approve("comment:6"))]}
            )
        )
    ],
    indirect=True,
)
async def test_approval_on_the_pr_satisfies_approval(running: Harness) -> None:
    result = await running.run(pr_run(approval=Approval.ALWAYS))
    t, host = tasks(result), running.fakes.host
    assert t["1.1"].status is TaskStatus.MERGED, t["1.1"].model_dump_json()
    assert t["1.2"].status is TaskStatus.MERGED, t["1.2"].error
    assert host.reads["1.1"] == 3  # waited on its timer until the approval came
    assert host.reads["1.2"] == 1


@pytest.mark.parametrize(
    "running",
    [
        Script(
            host=HostScript(
                events={"1.1": [(2, PrEvent(id="comment:3", kind=EventKind.SKIP, author="alice"))]}
            )
        )
    ],
    indirect=True,
)
async def test_skip_on_the_pr_skips_the_task_and_its_dependants(running: Harness) -> None:
    result = await running.run(pr_run(approval=Approval.ALWAYS))
    t = tasks(result)
    assert t["1.1"].status is TaskStatus.SKIPPED
    assert t["1.1"].error == "skipped by @alice on #1"
    assert t["1.2"].status is TaskStatus.SKIPPED
    assert running.fakes.host.merges == []
    # Its PR is closed, saying why: nobody merges work the run gave up on.
    assert running.fakes.host.closed == [
        ("1.1", "The pipeline ended task 1.1 skipped: skipped by @alice on #1")
    ]


@pytest.mark.parametrize("running", [Script(host=HostScript(closed_at={"1.1": 2}))], indirect=True)
async def test_a_pr_closed_by_a_person_fails_its_task_with_the_reason(running: Harness) -> None:
    result = await running.run(pr_run(approval=Approval.ALWAYS))
    t = tasks(result)["1.1"]
    assert t.status is TaskStatus.FAILED
    assert t.error == "pull request #1 was closed by @bob without merging"
    assert running.fakes.host.merges == []
    assert running.fakes.host.closed == []  # a person closed it already


@pytest.mark.parametrize(
    "running", [Script(host=HostScript(merged_by_person_at={"1.1": 1}))], indirect=True
)
async def test_a_pr_merged_by_a_person_is_merged(running: Harness) -> None:
    result = await running.run(pr_run())
    t = tasks(result)["1.1"]
    assert t.status is TaskStatus.MERGED and t.commit == "person-merge-1.1"
    assert [m for m in running.fakes.host.merges if m.number == 1] == []


FAILING = [PrCheck(name="ci/tests", state=CheckState.FAILED, url="https://ci/7")]
PASSING = [PrCheck(name="ci/tests", state=CheckState.PASSED)]
PENDING = [PrCheck(name="ci/tests", state=CheckState.PENDING)]


@pytest.mark.parametrize(
    "running",
    [Script(host=HostScript(checks={"1.1": [FAILING, PASSING], "1.2": [PASSING]}))],
    indirect=True,
)
async def test_a_failing_required_check_leads_to_a_fix_round(running: Harness) -> None:
    result = await running.run(pr_run(forge={"require_checks": True}))
    t = tasks(result)
    assert t["1.1"].status is TaskStatus.MERGED and t["1.2"].status is TaskStatus.MERGED
    (fixed,) = [i for i in running.fakes.agent_inputs if i.task.id == "1.1" and i.fix]
    assert fixed.fix.failing_checks == ["ci/tests (the code host's check: https://ci/7)"]
    assert running.fakes.host.merges[0].head_sha == "c-1.1-2"


@pytest.mark.parametrize(
    "running",
    [
        Script(
            host=HostScript(
                checks={"1.1": [[], PENDING]},
                events={"1.1": [(5, PrEvent(id="comment:1", kind=EventKind.SKIP, author="alice"))]},
            )
        )
    ],
    indirect=True,
)
async def test_no_check_reported_is_waited_for_not_taken_as_passing(running: Harness) -> None:
    result = await running.run(pr_run(forge={"require_checks": True}))
    # Four reads with no check on the head, none merged: then a person skipped it.
    assert tasks(result)["1.1"].status is TaskStatus.SKIPPED
    assert running.fakes.host.reads["1.1"] == 5
    assert running.fakes.host.merges == []


@pytest.mark.parametrize(
    "running", [Script(host=HostScript(rate_limited={"read_pull_request": 2}))], indirect=True
)
async def test_the_rate_limit_is_waited_out_on_a_timer(running: Harness) -> None:
    result = await running.run(pr_run())
    assert tasks(result)["1.1"].status is TaskStatus.MERGED
    assert running.fakes.host.calls["read_pull_request"] >= 4  # two refused, then read


@pytest.mark.parametrize(
    "running", [Script(host=HostScript(open_fails_once={"1.1"}))], indirect=True
)
async def test_a_crash_after_the_pr_was_made_finds_it_again(running: Harness) -> None:
    result = await running.run(pr_run())
    assert tasks(result)["1.1"].status is TaskStatus.MERGED
    assert running.fakes.host.opened == ["1.1", "1.2"]


@pytest.mark.parametrize("running", [Script(host=HostScript(conflict_once={"1.1"}))], indirect=True)
async def test_a_conflict_on_the_host_gets_the_conflict_fix_round(running: Harness) -> None:
    result = await running.run(pr_run())
    t, fakes = tasks(result)["1.1"], running.fakes
    assert t.status is TaskStatus.MERGED
    assert ("prepare_conflict_fix", "1.1") in fakes.calls
    assert fakes.host.pushes["1.1"] == ["c-1.1-1", "c-1.1-2"]
    assert len(fakes.host.merges) >= 2 and fakes.host.merges[1].number == 1


FOUR = md(
    """
    # Four
    ## Batch 1: four
    ### Task 1.1: a
    ### Task 1.2: b
    ### Task 1.3: c
    ### Task 1.4: d
    """
)


@pytest.mark.parametrize(
    "running",
    [
        Script(
            host=HostScript(events={f"1.{i}": [(3, approve(f"review:{i}"))] for i in range(1, 5)})
        )
    ],
    indirect=True,
)
async def test_a_pr_waiting_on_people_gives_its_checkout_back(running: Harness) -> None:
    # One checkout for the whole run: a PR waiting for its approval holds none, so every task
    # gets to open its PR before the first person has approved anything.
    inp = plan_input(
        FOUR, publish=Publish.PR, forge=FORGE, approval=Approval.ALWAYS,
        max_concurrent=1, max_checkouts=1,
    )  # fmt: skip
    result = await running.run(inp)
    assert [t.status for t in result.tasks] == [TaskStatus.MERGED] * 4
    log = running.fakes.host.log
    assert [kind for kind, _ in log[:4]] == ["opened"] * 4, log
    assert running.fakes.max_checkouts == 1


@pytest.mark.parametrize(
    "running",
    [Script(host=HostScript(protected={"1.1"}, merged_by_person_at={"1.1": 4}))],
    indirect=True,
)
async def test_a_pr_handed_to_auto_merge_is_left_to_the_host(running: Harness) -> None:
    result = await running.run(pr_run())
    t, host = tasks(result)["1.1"], running.fakes.host
    assert t.status is TaskStatus.MERGED and t.commit == "person-merge-1.1"
    # Asked once; then only read until the host had merged it.
    assert [m.number for m in host.merges].count(1) == 1
    assert host.reads["1.1"] == 4


@pytest.mark.parametrize(
    "running",
    [
        Script(
            host=HostScript(
                events={"1.1": [(40, approve("review:1"))], "1.2": [(1, approve("review:2"))]}
            )
        )
    ],
    indirect=True,
)
async def test_a_long_wait_on_people_leaves_the_history_small(running: Harness) -> None:
    # 39 reads found nothing new: each was a retry the server scheduled, not a step recorded.
    handle = await running.start(pr_run(approval=Approval.ALWAYS))
    result = await final_result(handle)
    assert tasks(result)["1.1"].status is TaskStatus.MERGED
    assert running.fakes.host.reads["1.1"] == 40
    history = await running.client.get_workflow_handle(f"{handle.id}/task-1.1").fetch_history()
    reads = [
        e for e in history.events
        if e.activity_task_scheduled_event_attributes.activity_type.name == "read_pull_request"
    ]  # fmt: skip
    assert len(reads) == 2  # the first read, then one watch until the approval came
    assert not [e for e in history.events if e.HasField("timer_started_event_attributes")]


async def test_the_operators_signed_approval_wakes_a_waiting_pr(running: Harness) -> None:
    key = Ed25519PrivateKey.generate().private_bytes_raw()
    inp = pr_run(approval=Approval.ALWAYS, forge={"poll_s": 3600.0})
    inp.approver = public_key(key)
    wid = f"plan-{uuid.uuid4().hex[:8]}"
    handle = await running.client.start_workflow(
        PlanWorkflow.run, inp, id=wid, task_queue=running.queue
    )
    running.started.append(handle)
    for tid in ("1.1", "1.2"):
        child = running.client.get_workflow_handle(f"{wid}/task-{tid}")
        waiting = await _waiting_for_approval(child)
        await handle.signal("approve", args=[tid])  # unsigned: dropped, it waits on
        await handle.signal("approve", args=[tid, sign_decision(key, True, wid, tid, waiting)])
    result = await final_result(handle)
    assert [t.status for t in result.tasks] == [TaskStatus.MERGED] * 2
    # Woken by the decision, not by a read an hour later: the watch was cancelled.
    assert running.fakes.host.reads["1.1"] <= 3


async def _waiting_for_approval(child) -> str:
    for _ in range(400):
        with contextlib.suppress(Exception):
            res = await child.query("status", result_type=TaskResult)
            if res.phase.startswith("pull request #") and res.approval_commit:
                return res.approval_commit
        await asyncio.sleep(0.05)
    raise AssertionError("never waited for approval")


# An approval made before the fix round began (the host's time, to the second).
said_before = approve("comment:10").model_copy(update={"at": "2000-01-01T00:00:00Z"})


@pytest.mark.parametrize(
    "running",
    [
        Script(
            host=HostScript(
                events={
                    "1.1": [
                        (1, fix("rename it")),
                        (1, said_before),
                        (3, approve("comment:11")),
                    ],
                    "1.2": [(1, approve("comment:12"))],
                }
            )
        )
    ],
    indirect=True,
)
async def test_an_approval_given_before_a_fix_round_does_not_approve_its_change(
    running: Harness,
) -> None:
    # "/fix" and "/approve" in one read: the fix round's new head needs its own approval.
    result = await running.run(pr_run(approval=Approval.ALWAYS))
    t, host = tasks(result)["1.1"], running.fakes.host
    assert t.status is TaskStatus.MERGED
    assert host.pushes["1.1"] == ["c-1.1-1", "c-1.1-2"]
    assert host.reads["1.1"] >= 3  # merged only once comment:11 came, after the push
    assert host.merges[0].head_sha == "c-1.1-2"


@pytest.mark.parametrize(
    "running",
    [Script(host=HostScript(pushed_by_someone_at={"1.1": 1}, merged_by_person_at={"1.1": 3}))],
    indirect=True,
)
async def test_a_head_someone_else_pushed_is_never_merged_by_the_pipeline(
    running: Harness,
) -> None:
    result = await running.run(pr_run())
    t, host = tasks(result)["1.1"], running.fakes.host
    assert [m.number for m in host.merges].count(1) == 0  # waited; the person merged it
    assert t.status is TaskStatus.MERGED and t.commit == "person-merge-1.1"


@pytest.mark.parametrize(
    "running",
    [Script(host=HostScript(pushed_during_fix={"1.1"}, events={"1.1": [(1, fix("test it"))]}))],
    indirect=True,
)
async def test_a_fix_round_never_overwrites_someone_elses_commit(running: Harness) -> None:
    # Someone pushed while the fix round ran: the task's push would have replaced their commit.
    result = await running.run(pr_run())
    t, host = tasks(result)["1.1"], running.fakes.host
    assert t.status is TaskStatus.FAILED and "TaskBranchMoved" in (t.error or "")
    assert host.pushes["1.1"] == ["c-1.1-1"] and host.prs["1.1"].head_sha == "someone-1.1"
    assert host.closed == []  # someone else's commits are on it: theirs to close


@pytest.mark.parametrize(
    "running",
    [
        Script(
            host=HostScript(
                protected={"1.1"},
                events={"1.1": [(3, fix("one more thing"))]},
                merged_by_person_at={"1.1": 6},
            )
        )
    ],
    indirect=True,
)
async def test_a_fix_round_takes_the_pr_back_from_auto_merge_before_it_pushes(
    running: Harness,
) -> None:
    result = await running.run(pr_run())
    t, host = tasks(result)["1.1"], running.fakes.host
    assert t.status is TaskStatus.MERGED
    assert host.withdrawn == [("1.1", "auto-merge")]
    assert host.pushes["1.1"] == ["c-1.1-1", "c-1.1-2"]


@pytest.mark.parametrize("running", [Script(host=HostScript(refused_once={"1.1"}))], indirect=True)
async def test_a_merge_the_host_refuses_for_now_is_tried_again(running: Harness) -> None:
    result = await running.run(pr_run())
    assert tasks(result)["1.1"].status is TaskStatus.MERGED
    assert [m.number for m in running.fakes.host.merges].count(1) == 2
    assert running.fakes.host.closed == []


@pytest.mark.parametrize(
    "running",
    [
        Script(
            host=HostScript(
                pushed_by_someone_at={"1.1": 1},
                events={"1.1": [(1, fix("and test it"))]},
                checks={"1.1": [FAILING], "1.2": [PASSING]},
                merged_by_person_at={"1.1": 3},
            )
        )
    ],
    indirect=True,
)
async def test_a_fix_or_failing_check_on_someone_elses_head_is_not_acted_on(
    running: Harness,
) -> None:
    result = await running.run(pr_run(forge={"require_checks": True}))
    t, fakes = tasks(result)["1.1"], running.fakes
    assert t.status is TaskStatus.MERGED and t.commit == "person-merge-1.1"
    assert fakes.agent_runs["1.1"] == 1 and fakes.host.closed == []
