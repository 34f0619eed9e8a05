"""End to end, as a user runs it: `starter.py` against a real dev server and a `worker.py` process,
a command agent that really sleeps and writes files, and a real (dirty) user repository."""

from __future__ import annotations

import asyncio
import json
import re
import time
from pathlib import Path
from typing import Any

import pytest
from temporalio.api.enums.v1 import EventType
from temporalio.client import Client

from autonomous_pipeline.cli.redaction import data_converter
from autonomous_pipeline.models.activity_io import AGENT_EXITED, SlotGrant
from tests.conftest import md
from tests.integration.conftest import Cluster
from tests.integration.helpers import (
    agent_command,
    agent_runs,
    assert_merged_once,
    assert_no_agent_alive,
    assert_untouched,
    assert_workspace_clean,
    finished_runs,
    fsck,
    git,
    make_dirty_user_repo,
    max_overlap,
    repo_snapshot,
    run_key_of,
    runs_per_task,
    starter,
    wait_finished,
    write_agent,
)

pytestmark = pytest.mark.integration

SHA = re.compile(r"^[0-9a-f]{40}$")
# The run report's contract (models.reports.RunReport): fields are added, never taken away.
RESULT_KEYS = {"workflow_id", "status", "target_branch", "target_commit", "tasks", "total_cost_usd"}
RESULT_KEYS |= {"finished", "worker", "counts", "total_tasks", "tasks_complete", "ui_url"}
TASK_KEYS = {
    "id",
    "status",
    "commit",
    "attempts",
    "duration_s",
    "error",
    "cost_usd",
    "tokens_in",
    "tokens_out",
    "agent_runs",
    "review_rounds",
    "verdict",
    "sandbox",
    "permission_denials",
}


def _task(tid: str, title: str, extra: str = "") -> str:
    return (
        f"### Task {tid}: {title}\n"
        f"**Files:**\n- Create: `out/{tid}.txt`\n"
        f"{extra}"
        f"**Verification:**\n- `grep -qx {tid} out/{tid}.txt`\n\n"
    )


PARALLEL_PLAN = (
    md(
        """
        # Parallel plan

        ## Batch 1: Four independent files
        **Dependencies:** None

        """
    )
    + "".join(_task(f"1.{n}", f"file {n}") for n in range(1, 5))
    + md(
        """
        ## Batch 2: After batch 1
        **Dependencies:** Batch 1

        """
    )
    + _task("2.1", "after the batch")
    + _task("2.2", "after the batch and 1.3", "**Depends on:** Task 1.3\n")
)

FAILING_PLAN = md(
    """
    # Failing plan

    ## Batch 1: One fails
    **Dependencies:** None

    ### Task 1.1: the agent exits 1
    ### Task 1.2: works

    ## Batch 2: Independent of batch 1
    **Dependencies:** None

    ### Task 2.1: needs the failing task
    **Depends on:** Task 1.1
    ### Task 2.2: needs nothing

    ## Batch 3: After batch 2
    **Dependencies:** Batch 2

    ### Task 3.1: needs batch 2
    """
)

SMALL_PLAN = md(
    """
    # Detached plan

    ## Batch 1: Two files
    **Dependencies:** None

    ### Task 1.1: one
    ### Task 1.2: two
    """
)


def run_args(
    cluster: Cluster, plan: Path, repo: Path, command: str, *extra: str, max_concurrent: int = 4
) -> list[str]:
    return [
        *("--plan", str(plan), "--repo", str(repo)),
        *("--address", cluster.address, "--workspace", str(cluster.workspace)),
        *("--agent", "command", "--agent-command", command),
        *("--max-concurrent", str(max_concurrent), "--heartbeat-timeout", "3", "--json"),
        *extra,
    ]


def check_contract(data: dict[str, Any], target: str, task_ids: list[str]) -> None:
    """The `--json` result: exactly these keys and types, tasks in plan order."""
    assert set(data) >= RESULT_KEYS, data
    assert data["finished"] is True and data["tasks_complete"] is True
    assert isinstance(data["workflow_id"], str) and data["workflow_id"].startswith("pipeline-")
    assert data["target_branch"] == target
    assert isinstance(data["status"], str)
    assert data["target_commit"] is None or SHA.match(data["target_commit"])
    assert [t["id"] for t in data["tasks"]] == task_ids
    for t in data["tasks"]:
        assert set(t) >= TASK_KEYS, t
        assert isinstance(t["status"], str)
        assert t["commit"] is None or SHA.match(t["commit"]), t
        assert isinstance(t["attempts"], int) and not isinstance(t["attempts"], bool)
        assert isinstance(t["duration_s"], int | float) and t["duration_s"] >= 0
        assert t["error"] is None or isinstance(t["error"], str)
        assert t["sandbox"] in (None, "worktree", "container", "dagger")
        assert isinstance(t["permission_denials"], list)


def test_parallel_run_merges_every_task_once_and_leaves_the_checkout_alone(
    cluster: Cluster, tmp_path: Path, agent_log: Path
) -> None:
    repo = make_dirty_user_repo(tmp_path / "repo")
    plan = tmp_path / "parallel-plan.md"
    plan.write_text(PARALLEL_PLAN)
    target = "pipeline/parallel-plan"
    log = agent_log
    command = agent_command(write_agent(tmp_path), log, 1.5)
    before = repo_snapshot(repo, target)
    base = git(repo, "rev-parse", "HEAD")
    ids = ["1.1", "1.2", "1.3", "1.4", "2.1", "2.2"]

    t0 = time.monotonic()
    res = starter(run_args(cluster, plan, repo, command), cluster.env, tmp_path)
    elapsed = time.monotonic() - t0
    assert res.returncode == 0, f"{res.stdout}\n{res.stderr}\n{cluster.logs()}"
    data = json.loads(res.stdout)

    # The JSON contract, and every task merged with a commit.
    check_contract(data, target, ids)
    assert data["status"] == "completed"
    for t in data["tasks"]:
        assert t["status"] == "merged" and t["commit"] and t["error"] is None, t
        assert t["attempts"] == 1 and t["duration_s"] > 1.0, t
    tip = git(repo, "rev-parse", f"refs/heads/{target}")
    assert data["target_commit"] == tip
    assert tip in {t["commit"] for t in data["tasks"]}  # the last merge is the tip

    # Exactly once: one agent run per task, one trailer and one file per task on the target.
    assert runs_per_task(log) == dict.fromkeys(ids, 1)
    run_key = run_key_of(data["workflow_id"])
    assert_merged_once(repo, target, run_key, ids)
    # The target grew from the committed base; the user's uncommitted edits did not leak in.
    git(repo, "merge-base", "--is-ancestor", base, tip)  # raises if it is not
    assert git(repo, "show", f"{tip}:README.md") == git(repo, "show", f"{base}:README.md")
    assert git(repo, "show", f"{tip}:toolkit/core.py") == git(
        repo, "show", f"{base}:toolkit/core.py"
    )
    assert git(repo, "ls-tree", "--name-only", tip, "scratch.txt") == ""

    # Parallelism was real, and batch 2 waited for all of batch 1.
    runs = {r.task_id: r for r in agent_runs(log)}
    batch1 = [(runs[t].start, runs[t].end or 0.0) for t in ids[:4]]
    batch2 = [runs[t] for t in ids[4:]]
    assert max_overlap(batch1) >= 3, batch1
    assert min(r.start for r in batch2) >= max(end for _, end in batch1), (batch1, batch2)
    assert runs["2.2"].start >= runs["1.3"].end  # type: ignore[operator]
    # Four 1.5 s agents then two: well under the 9 s they would take one at a time.
    assert elapsed < 30, elapsed

    # Nothing corrupt, nothing left behind, the user's checkout byte-for-byte as it was.
    fsck(repo)
    assert_workspace_clean(cluster.workspace, repo, run_key)
    assert_untouched(before, repo_snapshot(repo, target))

    # The same command again reports the finished run: same id, no agent runs again.
    seen = (finished_runs(log), len(agent_runs(log)))
    again = starter(run_args(cluster, plan, repo, command), cluster.env, tmp_path)
    assert again.returncode == 0, f"{again.stdout}\n{again.stderr}"
    assert json.loads(again.stdout) == data
    assert "already finished" in again.stderr
    assert (finished_runs(log), len(agent_runs(log))) == seen
    assert git(repo, "rev-parse", f"refs/heads/{target}") == tip
    assert_untouched(before, repo_snapshot(repo, target))
    assert_no_agent_alive(log)


def test_failed_task_skips_its_dependants_and_the_rest_merges(
    cluster: Cluster, tmp_path: Path, agent_log: Path
) -> None:
    repo = make_dirty_user_repo(tmp_path / "repo")
    plan = tmp_path / "failing-plan.md"
    plan.write_text(FAILING_PLAN)
    target = "pipeline/failing-plan"
    log = agent_log
    command = agent_command(write_agent(tmp_path), log, 0.3, fail=("1.1",))
    before = repo_snapshot(repo, target)

    res = starter(run_args(cluster, plan, repo, command), cluster.env, tmp_path)
    assert res.returncode == 1, f"{res.stdout}\n{res.stderr}\n{cluster.logs()}"
    data = json.loads(res.stdout)
    check_contract(data, target, ["1.1", "1.2", "2.1", "2.2", "3.1"])
    assert data["status"] == "failed"
    by_id = {t["id"]: t for t in data["tasks"]}
    assert {t: v["status"] for t, v in by_id.items()} == {
        "1.1": "failed",
        "1.2": "merged",
        "2.1": "skipped",
        "2.2": "merged",
        "3.1": "skipped",
    }
    assert "exited with code 1" in by_id["1.1"]["error"], by_id["1.1"]
    assert by_id["1.1"]["commit"] is None
    assert "1.1" in by_id["2.1"]["error"] and "dependency" in by_id["2.1"]["error"]
    assert "2.1" in by_id["3.1"]["error"] and "dependency" in by_id["3.1"]["error"]
    for tid in ("2.1", "3.1"):
        assert by_id[tid]["commit"] is None and by_id[tid]["attempts"] == 0

    # A failed agent is a result, not retried; skipped tasks never ran an agent.
    assert runs_per_task(log) == {"1.1": 1, "1.2": 1, "2.2": 1}
    run_key = run_key_of(data["workflow_id"])
    assert_merged_once(repo, target, run_key, ["1.2", "2.2"])
    assert data["target_commit"] == git(repo, "rev-parse", f"refs/heads/{target}")

    fsck(repo)
    # The failed task's branch is kept for inspection; its worktree is gone like the others.
    assert_workspace_clean(cluster.workspace, repo, run_key, kept=("1.1",))
    assert_untouched(before, repo_snapshot(repo, target))
    assert_no_agent_alive(log)


def test_detach_returns_at_once_and_status_follows_the_run(
    cluster: Cluster, tmp_path: Path, agent_log: Path
) -> None:
    repo = make_dirty_user_repo(tmp_path / "repo")
    plan = tmp_path / "detached-plan.md"
    plan.write_text(SMALL_PLAN)
    target = "pipeline/detached-plan"
    log = agent_log
    command = agent_command(write_agent(tmp_path), log, 3.0)
    before = repo_snapshot(repo, target)
    args = run_args(cluster, plan, repo, command, "--detach")

    t0 = time.monotonic()
    res = starter(args, cluster.env, tmp_path)
    took = time.monotonic() - t0
    assert res.returncode == 0, f"{res.stdout}\n{res.stderr}\n{cluster.logs()}"
    started = json.loads(res.stdout)
    assert set(started) == {"workflow_id", "target_branch", "ui_url", "revision"}, started
    assert started["revision"] is None  # started, not revised
    assert started["target_branch"] == target
    assert started["workflow_id"].startswith("pipeline-")
    assert started["ui_url"] is None or started["workflow_id"] in started["ui_url"]
    # It did not wait for the 3 s agents (the run is only just starting).
    assert took < 10, took
    assert finished_runs(log) == 0

    wid = started["workflow_id"]

    # `status` shows the run in progress (the agents take 3 s): the RunProgress of the query.
    res = starter(["status", wid, "--json", "--address", cluster.address], cluster.env, tmp_path)
    assert res.returncode == 0, res.stderr
    running = json.loads(res.stdout)
    assert running["status"] == "running", running
    assert running["workflow_id"] == wid and running["target_branch"] == target
    assert [t["id"] for t in running["tasks"]] == ["1.1", "1.2"]
    assert {t["status"] for t in running["tasks"]} <= {"pending", "running"}, running

    # While it runs, the same detached command attaches instead of starting a second run.
    again = starter(args, cluster.env, tmp_path)
    assert again.returncode == 0, again.stderr
    assert json.loads(again.stdout)["workflow_id"] == wid
    assert "already in progress" in again.stderr

    final = wait_finished(wid, cluster.address, cluster.env, tmp_path, 60, cluster.logs)
    check_contract(final, target, ["1.1", "1.2"])
    assert final["workflow_id"] == wid and final["status"] == "completed"
    assert [t["status"] for t in final["tasks"]] == ["merged", "merged"]
    assert final["target_commit"] == git(repo, "rev-parse", f"refs/heads/{target}")
    assert runs_per_task(log) == {"1.1": 1, "1.2": 1}
    assert_merged_once(repo, target, run_key_of(wid), ["1.1", "1.2"])
    fsck(repo)
    assert_workspace_clean(cluster.workspace, repo, run_key_of(wid))
    assert_untouched(before, repo_snapshot(repo, target))
    assert_no_agent_alive(log)


async def slots_given_back(address: str, workflow_id: str) -> list[SlotGrant]:
    """The slots the run's agent steps gave back as their agents exited, from its history."""
    client = await Client.connect(address, data_converter=data_converter())
    converter = client.data_converter.payload_converter
    return [
        converter.from_payloads(e.workflow_execution_signaled_event_attributes.input.payloads,
                                [SlotGrant])[0]
        async for e in client.get_workflow_handle(workflow_id).fetch_history_events()
        if e.event_type == EventType.EVENT_TYPE_WORKFLOW_EXECUTION_SIGNALED
        and e.workflow_execution_signaled_event_attributes.signal_name == AGENT_EXITED
    ]  # fmt: skip


def test_an_agents_slot_goes_back_as_its_agent_exits(
    cluster: Cluster, tmp_path: Path, agent_log: Path
) -> None:
    # The real agent step tells the run, through the worker's client, before it collects the
    # change; the run still never runs more agents than its slots.
    repo = make_dirty_user_repo(tmp_path / "repo")
    plan = tmp_path / "slot-plan.md"
    plan.write_text(PARALLEL_PLAN)
    command = agent_command(write_agent(tmp_path), agent_log, 0.5)
    args = run_args(cluster, plan, repo, command, "--prepare-ahead", "1", max_concurrent=2)
    res = starter(args, cluster.env, tmp_path)
    assert res.returncode == 0, f"{res.stdout}\n{res.stderr}\n{cluster.logs()}"
    data = json.loads(res.stdout)
    ids = ["1.1", "1.2", "1.3", "1.4", "2.1", "2.2"]
    assert [t["status"] for t in data["tasks"]] == ["merged"] * len(ids)
    given = asyncio.run(slots_given_back(cluster.address, data["workflow_id"]))
    assert sorted((g.task_id, g.grant) for g in given) == [(t, 1) for t in ids]
    assert {g.workflow_id for g in given} == {data["workflow_id"]}
    assert {g.task_workflow_id for g in given} == {f"{data['workflow_id']}/task-{t}" for t in ids}
    runs = agent_runs(agent_log)
    assert max_overlap([(r.start, r.end or r.start) for r in runs]) <= 2
