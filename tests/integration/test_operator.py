"""The operator's first hour, as they see it: a failure that explains itself (the failing check's
output, the transcript, a branch they can fetch), status found without being told where and
without starting anything, status with no worker at all, and one target shared by two plans
refused."""

from __future__ import annotations

import json
import shlex
import subprocess
from pathlib import Path

import pytest

from tests.conftest import md
from tests.integration.helpers import (
    Procs,
    agent_command,
    git,
    kill_group,
    make_dirty_user_repo,
    process_env,
    stage,
    starter,
    wait_for,
    write_agent,
)

pytestmark = pytest.mark.integration

# Passes on the base, fails once the agent has written out/1.1.txt: the task's own failure.
CHECK = (
    'if [ -f out/1.1.txt ]; then echo "expected 2, got 1"; '
    'echo "AssertionError: test_total (tests/test_x.py:3)"; exit 1; fi'
)
FAILING = md(
    f"""
    # Failing plan
    ## Batch 1: one
    **Dependencies:** None
    ### Task 1.1: write out
    **Verification:**
    - [ ] `sh -c '{CHECK}'`
    ### Task 1.2: after it
    **Depends on:** Task 1.1
    """
)
SLOW = md(
    """
    # Slow plan
    ## Batch 1: one
    **Dependencies:** None
    ### Task 1.1: slow
    ### Task 1.2: slower
    """
)


def test_a_failed_task_explains_itself_and_status_finds_it_unasked(
    tmp_path: Path, agent_log: Path
) -> None:
    env = process_env(tmp_path)
    repo = make_dirty_user_repo(tmp_path / "repo")
    plan = tmp_path / "failing.md"
    plan.write_text(FAILING)
    workspace = tmp_path / "ws"
    command = agent_command(write_agent(tmp_path), agent_log, 0.0)
    try:
        run = starter(
            [
                *("--plan", str(plan), "--repo", str(repo), "--workspace", str(workspace)),
                *("--agent", "command", "--agent-command", command, "--max-fix-rounds", "0"),
            ],
            env,
            tmp_path,
            timeout=180,
        )
        assert run.returncode == 1, run.stdout + run.stderr
        out = run.stdout
        # The end-of-run summary: the whole error, the check's own last lines, where to look.
        assert "task 1.1 (write out): failed" in out
        assert "| AssertionError: test_total (tests/test_x.py:3)" in out
        assert "held back by task 1.1" not in out  # 1.2 was skipped, not failed: no detail
        assert "transcript: " in out
        fetch = next(line for line in out.splitlines() if "fetch it: " in line)
        # Lines are never wrapped off a terminal: the command is whole, and it works.
        cmd = fetch.split("fetch it: ", 1)[1]
        subprocess.run(shlex.split(cmd), check=True, env=env, capture_output=True)
        wid = next(w for w in out.split() if w.startswith("pipeline-failing-")).rstrip(":")
        key = wid.removeprefix("pipeline-")
        fetched = git(repo, "show", f"pipeline/failed/{key}/1.1:out/1.1.txt")
        assert fetched.strip() == "1.1"

        # From another terminal, without --workspace: found through the workspaces known to
        # have had a server; nothing is started for the default workspace.
        status = starter(["status", wid], env, tmp_path)
        assert status.returncode == 0, status.stderr
        assert "Web UI: http://127.0.0.1:" in status.stdout and wid in status.stdout
        default = tmp_path / "cache" / "autonomous-pipeline"
        assert not (default / "server.json").exists() and not (default / "temporal.db").exists()

        detail = starter(["status", wid, "1.1", "--json"], env, tmp_path)
        assert detail.returncode == 0, detail.stderr
        t = json.loads(detail.stdout)
        assert t["status"] == "failed" and t["fetch_command"] == cmd
        assert "expected 2, got 1" in t["checks"][0]["output_tail"]
        assert Path(t["transcript"]).is_file()
        skipped = json.loads(starter(["status", wid, "1.2", "--json"], env, tmp_path).stdout)
        assert skipped["status"] == "skipped" and skipped["blocked_by"] == "1.1"

        runs = starter(["runs", "--json"], env, tmp_path)
        assert runs.returncode == 0, runs.stderr
        (row,) = [r for r in json.loads(runs.stdout)["runs"] if r["workflow_id"] == wid]
        assert row["status"] == "failed" and row["target_branch"] == "pipeline/failing"
        assert row["counts"] == {"failed": 1, "skipped": 1} and row["plan"] == str(plan)

        # The run's own outcome, not the workflow's: and what to do instead.
        retry = starter(["retry", wid, "1.1"], env, tmp_path)
        assert retry.returncode == 2
        assert f"run {wid} has finished (failed: 1 failed, 1 skipped" in retry.stderr
        assert "--retry-failed" in retry.stderr
        again = starter(
            [
                *("--plan", str(plan), "--repo", str(repo), "--workspace", str(workspace)),
                *("--agent", "command", "--agent-command", command, "--max-fix-rounds", "0"),
            ],
            env,
            tmp_path,
        )
        assert again.returncode == 1
        assert "already finished (failed: 1 failed, 1 skipped" in again.stderr

        # A task's workflow id (shown in the Web UI) is not a run: said so, with what to type.
        child = starter(["status", f"{wid}/task-1.1"], env, tmp_path)
        assert child.returncode == 2
        assert (
            f"is a task of run {wid}, not a run: python starter.py status {wid} 1.1" in child.stderr
        )

        missing = starter(["status", "pipeline-nothing-here"], env, tmp_path)
        assert missing.returncode == 2
        assert "no run 'pipeline-nothing-here'; looked in: " in missing.stderr
        assert str(workspace) in missing.stderr and "--address" in missing.stderr
    finally:
        starter(["server", "stop", "--workspace", str(workspace)], env, tmp_path)


def test_status_without_a_worker_and_one_target_for_one_plan(
    tmp_path: Path, procs: Procs, agent_log: Path
) -> None:
    at = stage(procs, tmp_path)
    env, server, workspace, worker, repo = at.env, at.server, at.workspace, at.worker, at.repo
    plan = tmp_path / "slow.md"
    plan.write_text(SLOW)
    base = [
        *("--repo", str(repo), "--address", server.address, "--workspace", str(workspace)),
        *("--agent", "command", "--target-branch", "pipeline/shared", "--max-concurrent", "1"),
    ]
    command = agent_command(write_agent(tmp_path), agent_log, 60.0)
    res = starter(
        ["--plan", str(plan), *base, "--agent-command", command, "--detach", "--json"],
        env,
        tmp_path,
    )
    assert res.returncode == 0, res.stderr
    wid = json.loads(res.stdout)["workflow_id"]

    def running() -> bool:
        r = starter(["status", wid, "--json", "--address", server.address], env, tmp_path)
        data = json.loads(r.stdout) if r.returncode == 0 else {}
        return any(t["status"] == "running" for t in data.get("tasks", []))

    wait_for(running, 60, "task 1.1 to start")

    # A different plan into the same target while this run is open: refused, with its id.
    other = tmp_path / "other.md"
    other.write_text(SLOW.replace("Slow plan", "Other plan"))
    clash = starter(["--plan", str(other), *base, "--agent-command", command], env, tmp_path)
    assert clash.returncode == 2, clash.stdout + clash.stderr
    assert f"run {wid} (plan {plan}) is open on pipeline/shared" in clash.stderr
    assert "--share-target" in clash.stderr

    kill_group(worker, 9)
    worker.wait(timeout=10)
    status = starter(["status", wid, "--address", server.address], env, tmp_path)
    assert status.returncode == 0, status.stderr
    # What is wrong and what to run; the state as the run's memo last recorded it.
    assert "no worker is running" in status.stderr
    assert f"python worker.py --address {server.address}" in status.stderr
    assert "as of its last change: 2 of 2 not ended" in status.stdout
    assert "RPCError" not in status.stderr + status.stdout
    # A request now would wait for a worker and take effect whenever one starts: refused.
    pause = starter(["pause", wid, "--address", server.address], env, tmp_path)
    assert pause.returncode == 2
    assert pause.stderr.startswith("refused: no worker is running this run")
