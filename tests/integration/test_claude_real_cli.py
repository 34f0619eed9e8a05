"""The real Claude Code CLI (2.1.197) as the agent, against a local stand-in for the Messages API.

Nothing here is a recording: the CLI runs for real in the task's sandbox, reaches the stand-in
through the sandbox's `internet` network (the stand-in listens on a host outside this machine:
a network namespace of the test's own; this machine's addresses are out of reach by design), runs its Bash tool there, and reports its cost. In a
sandbox it runs with every permission; outside one (--no-isolation) it keeps acceptEdits, may
run only the task's own checks, and what it was refused is reported.

The CLI comes from npm (`.ci/run` installs it into .cache/claude-cli); without it the test skips,
and in CI it fails.
"""

from __future__ import annotations

import json
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import ROOT, md
from tests.images import missing
from tests.integration.helpers import (
    PYTHON,
    DevServer,
    Procs,
    git,
    make_dirty_user_repo,
    process_env,
    start_worker,
    starter,
    tail,
    wait_finished,
    wait_for,
)
from tests.outside import Outside, outside_host

pytestmark = pytest.mark.integration
CLI_VERSION = "2.1.197"
API = ROOT / "tests" / "fixtures" / "anthropic" / "messages_api.py"
COMMAND = "printf 'print(\"hello\")\\n' > hello.py && python3 hello.py"
PLAN = md(
    """
    # Real plan
    ## Batch 1: One
    ### Task 1.1: Say hello
    **Files:**
    - Create: `hello.py`
    **Verification:**
    - `python3 hello.py`
    """
)


def claude_binary() -> str:
    for candidate in (ROOT / ".cache" / "claude-cli" / "node_modules" / ".bin" / "claude",):
        if candidate.exists():
            return str(candidate)
    found = shutil.which("claude")
    if found:
        version = subprocess.run([found, "--version"], capture_output=True, text=True, check=False)
        if version.stdout.startswith(CLI_VERSION):
            return found
    missing(
        f"the claude CLI {CLI_VERSION} is not installed (npm install --prefix .cache/claude-cli "
        f"@anthropic-ai/claude-code@{CLI_VERSION})"
    )
    raise AssertionError("unreachable")


class Api:
    def __init__(self, procs: Procs, tmp: Path, far: Outside, command: str) -> None:
        self.log = tmp / "api.jsonl"
        out = tmp / "api.out"
        argv = far.argv(PYTHON, str(API), far.address, "0", str(self.log), command)
        self.proc = procs.spawn(argv, out, {}, tmp)
        wait_for(
            lambda: out.exists() and out.read_text().startswith("ready"),
            10,
            "the Messages API stand-in",
            on_fail=lambda: tail(out),
        )
        self.url = f"http://{far.address}:{out.read_text().split()[1]}"

    def requests(self) -> list[dict[str, Any]]:
        return (
            [json.loads(x) for x in self.log.read_text().splitlines()] if self.log.exists() else []
        )


@pytest.fixture
def far() -> Iterator[Outside]:
    """Where the API stand-in listens: a host outside this machine, as the real API is."""
    with outside_host() as host:
        yield host


def run_plan(
    tmp: Path,
    procs: Procs,
    far: Outside,
    *flags: str,
    worker_flags: tuple[str, ...] = (),
    command: str = COMMAND,
) -> tuple[dict[str, Any], Path, Api]:
    binary = claude_binary()
    api = Api(procs, tmp, far, command)
    env = process_env(tmp) | {
        "ANTHROPIC_API_KEY": "sk-test-not-a-real-key",
        "ANTHROPIC_BASE_URL": api.url,
    }
    server = DevServer(procs, tmp, env)
    server.start()
    workspace = tmp / "ws"
    start_worker(procs, server.address, workspace, tmp / "worker.log", env, *worker_flags)
    repo = make_dirty_user_repo(tmp / "repo")
    plan = tmp / "real-plan.md"
    plan.write_text(PLAN)
    args = [
        *("--plan", str(plan), "--repo", str(repo), "--address", server.address),
        *("--workspace", str(workspace), "--agent", "claude", "--claude-bin", binary),
        *("--reviewer", "none", "--detach", "--json", *flags),
    ]
    res = starter(args, env, tmp)
    assert res.returncode == 0, res.stdout + res.stderr
    wid = json.loads(res.stdout)["workflow_id"]

    def logs() -> str:
        return "\n".join(tail(p) for p in [*sorted(tmp.glob("*.log")), tmp / "api.out"])

    return wait_finished(wid, server.address, env, tmp, 180, logs), repo, api


def test_the_real_cli_does_the_task_in_its_sandbox(
    tmp_path: Path, procs: Procs, far: Outside
) -> None:
    result, repo, api = run_plan(tmp_path, procs, far)
    (task,) = result["tasks"]
    assert task["status"] == "merged", json.dumps(task)[:3000]
    assert git(repo, "show", "pipeline/real-plan:hello.py") == 'print("hello")'
    # Its Bash tool ran in the sandbox (no permission to ask for: the sandbox is the boundary).
    results = [
        part
        for r in api.requests()
        for m in r["request"].get("messages", [])
        if isinstance(m.get("content"), list)
        for part in m["content"]
        if isinstance(part, dict) and part.get("type") == "tool_result"
    ]
    assert results and "hello" in json.dumps(results[0])
    assert task["permission_denials"] == []
    assert task["cost_usd"] > 0 and task["tokens_in"] > 0  # what the CLI itself reported


def test_outside_a_sandbox_the_cli_runs_only_the_tasks_checks(
    tmp_path: Path, procs: Procs, far: Outside
) -> None:
    result, _repo, _api = run_plan(
        tmp_path,
        procs,
        far,
        "--no-isolation",
        worker_flags=("--allow-weakened-isolation",),
        command="npm install left-pad",
    )
    (task,) = result["tasks"]
    # acceptEdits, and Bash only for `python3` (the task's check): the install is refused, and
    # said; the agent changed nothing, so there is nothing to merge.
    assert task["permission_denials"] == ["Bash: npm install left-pad"], result
    assert task["status"] == "no_op", result
