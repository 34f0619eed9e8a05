"""Steering a detached run from the command line: pause, resume, skip, retry, cancel --now."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import md
from tests.integration.conftest import Cluster
from tests.integration.helpers import (
    agent_command,
    agent_runs,
    assert_no_agent_alive,
    make_dirty_user_repo,
    starter,
    wait_finished,
    wait_for,
    write_agent,
)
from tests.integration.test_end_to_end import run_args

pytestmark = pytest.mark.integration

PLAN = md(
    """
    # Steered plan
    ## Batch 1: Six
    **Dependencies:** None
    ### Task 1.1: one
    ### Task 1.2: two
    ### Task 1.3: three
    ### Task 1.4: four
    ### Task 1.5: five
    ### Task 1.6: six
    """
)


def status(cluster: Cluster, wid: str, cwd: Path) -> dict[str, Any]:
    res = starter(["status", wid, "--json", "--address", cluster.address], cluster.env, cwd)
    assert res.returncode == 0, res.stderr
    return dict(json.loads(res.stdout))


def send(cluster: Cluster, cwd: Path, *args: str) -> str:
    """A steering command that takes effect: exit 0, and what it does, in words."""
    res = starter([*args, "--address", cluster.address], cluster.env, cwd)
    assert res.returncode == 0, res.stdout + res.stderr
    return res.stdout.strip()


def refused(cluster: Cluster, cwd: Path, *args: str) -> str:
    """A steering command that cannot take effect: exit 2, and why, on stderr."""
    res = starter([*args, "--address", cluster.address], cluster.env, cwd)
    assert res.returncode == 2, res.stdout + res.stderr
    assert res.stderr.startswith("refused: "), res.stderr
    return res.stderr.removeprefix("refused: ").strip()


def by_id(data: dict[str, Any]) -> dict[str, str]:
    return {t["id"]: t["status"] for t in data["tasks"]}


def test_pause_resume_skip_retry_and_cancel_now(
    cluster: Cluster, tmp_path: Path, agent_log: Path
) -> None:
    repo = make_dirty_user_repo(tmp_path / "repo")
    plan = tmp_path / "steered.md"
    plan.write_text(PLAN)
    # 1.2 fails every time; the others take 2 s each, one at a time, in the plan's order (nothing
    # prepared ahead: a task ahead that is ready first would take the slot). 1.5 takes 60 s, so
    # an agent is surely running when the run is cancelled, however slow the machine's commands.
    command = agent_command(write_agent(tmp_path), agent_log, 2.0, fail=("1.2",), slow=("1.5", 60))
    argv = run_args(
        cluster, plan, repo, command, "--detach", "--prepare-ahead", "0", max_concurrent=1
    )
    res = starter(argv, cluster.env, tmp_path)
    assert res.returncode == 0, res.stderr
    wid = json.loads(res.stdout)["workflow_id"]

    assert "no new task starts" in send(cluster, tmp_path, "pause", wid)
    assert status(cluster, wid, tmp_path)["paused"] is True
    # Requests that cannot take effect are answered, not dropped.
    assert refused(cluster, tmp_path, "pause", wid) == "the run is already paused"
    assert "no task '9.9'" in refused(cluster, tmp_path, "skip", wid, "9.9")
    assert "has not started yet" in refused(cluster, tmp_path, "retry", wid, "1.5")
    assert refused(cluster, tmp_path, "approve", wid, "1.5") == (
        "task 1.5 is not waiting for approval: it is pending"
    )
    res = starter(
        ["skip", wid, "9.9", "--json", "--address", cluster.address], cluster.env, tmp_path
    )
    assert res.returncode == 2 and json.loads(res.stdout)["accepted"] is False
    assert send(cluster, tmp_path, "skip", wid, "1.4") == "task 1.4 will not run; it ends skipped"
    wait_for(
        lambda: by_id(status(cluster, wid, tmp_path))["1.4"] == "skipped", 20, "1.4 to be skipped"
    )
    # Paused: whatever was running finishes, nothing new starts. The run decides what to start
    # in the same step that takes a task's end, so once nothing runs, the status is the decision.
    wait_for(
        lambda: "running" not in by_id(status(cluster, wid, tmp_path)).values(),
        30,
        "the task that was running to finish",
    )
    after = by_id(status(cluster, wid, tmp_path))
    assert {"1.2", "1.3", "1.5", "1.6"} <= {t for t, s in after.items() if s == "pending"}, after
    assert list(after.values()).count("merged") <= 1 and after["1.4"] == "skipped", after
    assert len(agent_runs(agent_log)) <= 1

    assert "already ended: skipped" in refused(cluster, tmp_path, "skip", wid, "1.4")
    assert send(cluster, tmp_path, "resume", wid) == "the run goes on"
    assert refused(cluster, tmp_path, "resume", wid) == "the run is not paused"
    wait_for(lambda: by_id(status(cluster, wid, tmp_path))["1.2"] == "failed", 30, "1.2 to fail")
    merged = [t for t, s in by_id(status(cluster, wid, tmp_path)).items() if s == "merged"]
    assert merged, "1.1 merged before 1.2 ran"
    assert "nothing to retry" in refused(cluster, tmp_path, "retry", wid, merged[0])
    assert "will run again" in send(cluster, tmp_path, "retry", wid, "1.2")
    wait_for(
        lambda: by_id(status(cluster, wid, tmp_path))["1.2"] in ("pending", "running"),
        20,
        "1.2 to be retried",
    )

    # Cancel now while an agent is running (one at a time, 1.5 and 1.6 still wait): the running
    # agent is killed, the waiting tasks are cancelled, nothing else starts.
    wait_for(
        lambda: "running" in by_id(status(cluster, wid, tmp_path)).values(),
        30,
        "an agent to be running",
    )
    running = [t for t, s in by_id(status(cluster, wid, tmp_path)).items() if s == "running"]
    if running:
        # Refused while it runs; it may have ended since the status above (then it is retried,
        # or, merged, refused as such).
        res = starter(
            ["retry", wid, running[0], "--address", cluster.address], cluster.env, tmp_path
        )
        if res.returncode == 2:
            assert res.stderr.startswith(
                (
                    f"refused: task {running[0]} is still running",
                    f"refused: task {running[0]} has already ended: merged",
                )
            ), res.stderr
        else:
            assert res.returncode == 0 and "will run again" in res.stdout, res.stdout + res.stderr
    assert "running agents are stopped" in send(cluster, tmp_path, "cancel", wid, "--now")
    final = wait_finished(wid, cluster.address, cluster.env, tmp_path, 60, cluster.logs)
    assert final["status"] == "cancelled"
    s = by_id(final)
    assert s["1.4"] == "skipped"
    assert s["1.6"] == "cancelled"  # still waiting when the run was cancelled
    assert "cancelled" in s.values()
    assert all(v in ("merged", "skipped", "cancelled", "failed") for v in s.values())
    assert_no_agent_alive(agent_log)
    # Signals to a finished run are refused plainly.
    late = refused(cluster, tmp_path, "pause", wid)
    assert late.startswith(f"run {wid} has finished (cancelled: "), late
    again = refused(cluster, tmp_path, "retry", wid, "1.6")
    assert "--retry-failed" in again and str(plan) in again
