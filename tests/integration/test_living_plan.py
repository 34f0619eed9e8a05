"""A plan edited while it runs, as the operator does it: the same command on the edited file
revises the open run (one run, not two); a task added merges, a task removed is skipped, and a
broken edit is refused with its line while the run goes on unchanged."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tests.conftest import md
from tests.integration.helpers import (
    Procs,
    agent_command,
    git,
    stage,
    starter,
    wait_finished,
    wait_for,
    write_agent,
)

pytestmark = pytest.mark.integration

FIRST = md(
    """
    # Living plan
    ## Batch 1: one
    **Dependencies:** None
    ### Task 1.1: slow
    ### Task 1.2: dropped later
    **Depends on:** Task 1.1
    ### Task 1.3: kept
    **Depends on:** Task 1.1
    """
)
# 1.2 removed, 1.4 added after 1.3.
EDITED = md(
    """
    # Living plan
    ## Batch 1: one
    **Dependencies:** None
    ### Task 1.1: slow
    ### Task 1.3: kept
    **Depends on:** Task 1.1
    ### Task 1.4: added
    **Depends on:** Task 1.3
    """
)
# A cycle: 1.1 now waits for 1.3, which waits for 1.1.
BROKEN = FIRST.replace("### Task 1.1: slow\n", "### Task 1.1: slow\n**Depends on:** Task 1.3\n")


def test_the_same_command_on_an_edited_plan_revises_its_open_run(
    tmp_path: Path, procs: Procs, agent_log: Path
) -> None:
    at = stage(procs, tmp_path)
    env, server, workspace, repo = at.env, at.server, at.workspace, at.repo
    plan = tmp_path / "PLAN.md"
    plan.write_text(FIRST)
    command = agent_command(write_agent(tmp_path), agent_log, 0.2, slow=("1.1", 10.0))
    argv = [
        *("--plan", str(plan), "--repo", str(repo), "--address", server.address),
        *("--workspace", str(workspace), "--agent", "command", "--agent-command", command),
        *("--target-branch", "pipeline/living", "--detach", "--json"),
    ]
    first = starter(argv, env, tmp_path)
    assert first.returncode == 0, first.stderr
    wid = json.loads(first.stdout)["workflow_id"]

    def status() -> dict:
        r = starter(["status", wid, "--json", "--address", server.address], env, tmp_path)
        assert r.returncode == 0, r.stderr
        return json.loads(r.stdout)

    wait_for(
        lambda: any(t["id"] == "1.1" and t["status"] == "running" for t in status()["tasks"]),
        60,
        "task 1.1 to start",
    )

    # A broken edit: refused where it is broken, and the run is as it was.
    plan.write_text(BROKEN)
    broken = starter(argv, env, tmp_path)
    assert broken.returncode == 2, broken.stdout + broken.stderr
    assert f"{plan}:5: dependency cycle: task 1.1 -> task 1.3 -> task 1.1" in broken.stderr
    assert "Traceback" not in broken.stderr
    now = status()
    assert [t["id"] for t in now["tasks"]] == ["1.1", "1.2", "1.3"] and now["revision"] == 0

    # The edit that runs: the same command, the same run, what changed said task by task.
    plan.write_text(EDITED)
    revised = starter(argv, env, tmp_path)
    assert revised.returncode == 0, revised.stderr
    answer = json.loads(revised.stdout)
    assert answer["workflow_id"] == wid
    changes = {c["task"]: c["kind"] for c in answer["revision"]["changes"]}
    assert changes == {"1.2": "removed", "1.4": "added"}
    assert f"revised run {wid}: revision 1: 1 added, 1 removed" in revised.stderr
    assert "task 1.4 is added; it waits for 1.3" in revised.stderr
    assert "task 1.2 is removed from the plan; it will not run" in revised.stderr

    # One run of this plan file on the server, not two.
    listed = starter(["runs", "--json", "--address", server.address], env, tmp_path)
    assert listed.returncode == 0, listed.stderr
    assert [r["workflow_id"] for r in json.loads(listed.stdout)["runs"]] == [wid]

    final = wait_finished(wid, server.address, env, tmp_path, 120, tmp_path / "worker.log")
    tasks = {t["id"]: t for t in final["tasks"]}
    assert {t: tasks[t]["status"] for t in tasks} == {
        "1.1": "merged",
        "1.3": "merged",
        "1.4": "merged",
        "1.2": "skipped",
    }
    assert tasks["1.2"]["error"] == "removed from the plan"
    files = git(repo, "ls-tree", "-r", "--name-only", "pipeline/living").split()
    assert {"out/1.1.txt", "out/1.3.txt", "out/1.4.txt"} <= set(files)
    assert "out/1.2.txt" not in files

    # Once it has ended, the same command on the same file reports it; it starts nothing.
    again = starter([a for a in argv if a != "--detach"], env, tmp_path)
    assert again.returncode == 0, again.stderr
    assert "already finished" in again.stderr
