"""The claude backend end to end, with a stub `claude` that replays recorded stream-json.

A worker is killed with SIGKILL while the agent runs: the next attempt resumes the same session
(`--resume` with the id chosen in workflow code) instead of starting over. The reviewer runs
read-only; its first verdict has a finding, so a fix round resumes the session again and a second
review approves. Costs add up exactly.
"""

from __future__ import annotations

import json
import os
import signal
import sys
import time
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import ROOT, md
from tests.integration.helpers import (
    DevServer,
    Procs,
    agent_log_path,
    assert_untouched,
    assert_workspace_clean,
    fsck,
    git,
    make_dirty_user_repo,
    process_env,
    processes_with,
    repo_snapshot,
    run_key_of,
    start_worker,
    starter,
    tail,
    trailers,
    wait_finished,
    wait_for,
)

pytestmark = pytest.mark.integration

FIXTURES = ROOT / "tests" / "fixtures" / "claude"
PLAN = md(
    """
    # Claude plan
    ## Batch 1: One
    ### Task 1.1: Say hello
    **Files:**
    - Create: `hello.py`
    **Acceptance Criteria:**
    - prints a greeting
    """
)
TARGET = "pipeline/claude-plan"

WRAPPER = """#!{python}
# `claude` for the test: the reviewer (read-only, --permission-mode plan) gets a verdict, the
# agent a slow successful session that writes hello.py.
import os, sys
argv = sys.argv[1:]
review = "--permission-mode" in argv and argv[argv.index("--permission-mode") + 1] == "plan"
os.environ["STUB_CLAUDE_LOG"] = {log!r}
reviews = {counter!r}
if review:
    n = (int(open(reviews).read()) if os.path.exists(reviews) else 0) + 1
    open(reviews, "w").write(str(n))
    # The first review finds a problem; the one after the fix round approves.
    os.environ["STUB_CLAUDE_FIXTURE"] = {reject_fixture!r} if n == 1 else {approve_fixture!r}
else:
    os.environ["STUB_CLAUDE_FIXTURE"] = {agent_fixture!r}
os.environ["STUB_CLAUDE_DELAY"] = "0" if review else "0.5"
# Sessions live where the CLI keeps them, in HOME: in the sandbox, the task's own.
os.environ["STUB_CLAUDE_SESSIONS"] = "home"
if not review:
    os.environ["STUB_CLAUDE_WRITE"] = "hello.py"
os.execv(sys.executable, [sys.executable, {stub!r}, *argv])
"""


def invocations(log: Path) -> list[dict[str, Any]]:
    if not log.exists():
        return []
    return [json.loads(line) for line in log.read_text().splitlines() if line.strip()]


def session_flag(argv: list[str]) -> tuple[str, str] | None:
    for flag in ("--session-id", "--resume"):
        if flag in argv:
            return flag, argv[argv.index(flag) + 1]
    return None


def test_killed_worker_resumes_the_claude_session(tmp_path: Path, procs: Procs) -> None:
    env = process_env(tmp_path) | {"ANTHROPIC_API_KEY": "sk-test-not-a-real-key"}
    # Written from inside the sandbox: the one place outside it the agents may write.
    log = agent_log_path(tmp_path, "claude-calls.jsonl")
    claude = tmp_path / "bin" / "claude"
    claude.parent.mkdir()
    claude.write_text(
        WRAPPER.format(
            python=sys.executable,
            log=str(log),
            counter=str(log.with_name("reviews")),
            reject_fixture=str(FIXTURES / "review_verdict.jsonl"),
            approve_fixture=str(FIXTURES / "review_approved.jsonl"),
            agent_fixture=str(FIXTURES / "success.jsonl"),
            stub=str(FIXTURES / "stub_claude.py"),
        )
    )
    claude.chmod(0o755)
    repo = make_dirty_user_repo(tmp_path / "repo")
    before = repo_snapshot(repo, TARGET)
    plan = tmp_path / "claude-plan.md"
    plan.write_text(PLAN)
    server = DevServer(procs, tmp_path, env)
    server.start()
    workspace = tmp_path / "ws"
    first = start_worker(procs, server.address, workspace, tmp_path / "worker-1.log", env)

    def logs() -> str:
        return "\n".join(tail(p) for p in sorted(tmp_path.glob("*.log"))) + f"\n{invocations(log)}"

    args = [
        *("--plan", str(plan), "--repo", str(repo), "--address", server.address),
        *("--workspace", str(workspace), "--agent", "claude", "--claude-bin", str(claude)),
        *("--heartbeat-timeout", "3", "--detach", "--json"),
    ]
    res = starter(args, env, tmp_path)
    assert res.returncode == 0, res.stdout + res.stderr
    wid = json.loads(res.stdout)["workflow_id"]

    # The agent streams for ~5 s: kill its worker in the middle.
    wait_for(lambda: len(invocations(log)) >= 1, 30, "claude to start", on_fail=logs)
    time.sleep(1.5)
    os.kill(first.pid, signal.SIGKILL)
    first.wait(timeout=10)
    # Its pid is its sandbox's: look for it on the host by what it runs, its session.
    (_, sid) = session_flag(invocations(log)[0]["argv"]) or ("", "none")
    wait_for(
        lambda: not processes_with(str(FIXTURES / "stub_claude.py"), sid),
        10,
        "the killed worker's claude to die",
        on_fail=logs,
    )

    start_worker(procs, server.address, workspace, tmp_path / "worker-2.log", env)
    result = wait_finished(wid, server.address, env, tmp_path, 120, logs)

    calls = invocations(log)
    agent_calls = [c for c in calls if "plan" not in c["argv"]]
    review_calls = [c for c in calls if "plan" in c["argv"]]
    first_flag, second_flag = (
        session_flag(agent_calls[0]["argv"]),
        session_flag(agent_calls[1]["argv"]),
    )
    assert first_flag is not None and first_flag[0] == "--session-id"
    assert second_flag == ("--resume", first_flag[1]), agent_calls
    # killed run, its resumed retry, one fix round after the first review's finding (same session)
    assert [session_flag(c["argv"]) for c in agent_calls[1:]] == [
        ("--resume", first_flag[1])
    ] * 2, f"{result}\n{logs()}"
    assert len(agent_calls) == 3 and len(review_calls) == 2
    assert session_flag(review_calls[0]["argv"]) is None  # the reviewer has a session of its own
    # The resumed runs found the session the killed one saved, in the task's own HOME, and the
    # agent ran with every permission its sandbox gives it.
    modes = {c["argv"][c["argv"].index("--permission-mode") + 1] for c in agent_calls}
    assert modes == {"bypassPermissions"}
    assert {c["cwd"] for c in agent_calls} == {agent_calls[0]["cwd"]}

    (task,) = result["tasks"]
    assert result["status"] == "completed" and task["status"] == "merged", f"{result}\n{logs()}"
    # Three starts of the agent, the killed one among them (it ran, and may have cost).
    assert task["agent_runs"] == len(agent_calls) == 3
    assert task["attempts"] == 3 and task["review_rounds"] == 2
    assert task["verdict"]["approved"] is True
    # The killed attempt never reported a cost; two agent runs and two reviews did, exactly.
    assert task["cost_usd"] == pytest.approx(2 * 0.09495555 + 2 * 0.0231402, abs=1e-9)
    assert result["total_cost_usd"] == pytest.approx(task["cost_usd"], abs=1e-9)
    assert task["tokens_in"] > 0 and task["tokens_out"] > 0
    # Merged once (the stub's fix round rewrites the same file: no new commit); the file is there.
    assert trailers(repo, TARGET) == [f"Pipeline-Task: {run_key_of(wid)}/1.1"]
    assert git(repo, "show", f"refs/heads/{TARGET}:hello.py")
    fsck(repo)
    assert_workspace_clean(workspace, repo, run_key_of(wid))
    assert_untouched(before, repo_snapshot(repo, TARGET))
