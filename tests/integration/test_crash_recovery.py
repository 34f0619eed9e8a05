"""Crashes mid-run: a worker killed with SIGKILL while agents run, and the dev server restarted.

Each test has its own dev server (SQLite file, fixed port) and worker processes, started detached
runs as a user would (`starter.py --detach`, then `status`), and checks that the run still ends
with every task merged exactly once and nothing broken or left behind.
"""

from __future__ import annotations

import json
import os
import signal
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import md
from tests.integration.helpers import (
    DevServer,
    Procs,
    agent_command,
    agent_log_path,
    agent_runs,
    assert_merged_once,
    assert_no_agent_alive,
    assert_untouched,
    assert_workspace_clean,
    fsck,
    git,
    helpers,
    make_dirty_user_repo,
    process_env,
    repo_snapshot,
    run_key_of,
    runs_per_task,
    start_worker,
    starter,
    tail,
    wait_finished,
    wait_for,
    write_agent,
)

pytestmark = pytest.mark.integration

AGENT_SLEEP_S = 4.0
PLAN = md(
    """
    # Crash plan

    ## Batch 1: Three at once
    **Dependencies:** None

    ### Task 1.1: one
    **Files:**
    - Create: `out/1.1.txt`
    ### Task 1.2: two
    **Files:**
    - Create: `out/1.2.txt`
    ### Task 1.3: three
    **Files:**
    - Create: `out/1.3.txt`

    ## Batch 2: After the crash
    **Dependencies:** Batch 1

    ### Task 2.1: four
    **Files:**
    - Create: `out/2.1.txt`
    **Verification:**
    - `grep -qx 2.1 out/2.1.txt`
    """
)
IDS = ["1.1", "1.2", "1.3", "2.1"]
TARGET = "pipeline/crash-plan"


class Scene:
    """A user repository, a plan and a fake agent in one test's tmp dir."""

    def __init__(self, tmp: Path, procs: Procs, helper: bool = False) -> None:
        self.tmp, self.procs = tmp, procs
        self.env = process_env(tmp)
        self.server = DevServer(procs, tmp, self.env)
        self.workspace = tmp / "ws"
        self.repo = make_dirty_user_repo(tmp / "repo")
        self.plan = tmp / "crash-plan.md"
        self.plan.write_text(PLAN)
        self.log = agent_log_path(tmp)
        self.command = agent_command(write_agent(tmp), self.log, AGENT_SLEEP_S, helper=helper)
        self.before = repo_snapshot(self.repo, TARGET)

    def worker(self, name: str) -> Any:
        return start_worker(
            self.procs, self.server.address, self.workspace, self.tmp / f"{name}.log", self.env
        )

    def start_detached(self) -> str:
        args = [
            *("--plan", str(self.plan), "--repo", str(self.repo)),
            *("--address", self.server.address, "--workspace", str(self.workspace)),
            *("--agent", "command", "--agent-command", self.command),
            *("--max-concurrent", "3", "--heartbeat-timeout", "3", "--detach", "--json"),
        ]
        res = starter(args, self.env, self.tmp)
        assert res.returncode == 0, f"{res.stdout}\n{res.stderr}\n{self.logs()}"
        return str(json.loads(res.stdout)["workflow_id"])

    def logs(self) -> str:
        names = sorted(p.name for p in self.tmp.glob("*.log"))
        return (
            "\n".join(tail(self.tmp / n) for n in names) + f"\nagent runs: {agent_runs(self.log)}"
        )

    def wait_agents_started(self, n: int) -> None:
        wait_for(
            lambda: len(agent_runs(self.log)) >= n,
            30,
            f"{n} agents to start",
            on_fail=self.logs,
        )

    def wait_finished(self, wid: str, timeout: float = 90) -> dict[str, Any]:
        return wait_finished(wid, self.server.address, self.env, self.tmp, timeout, self.logs)

    def check_outcome(self, result: dict[str, Any], wid: str) -> None:
        """Every task merged exactly once; nothing corrupt, left behind or touched."""
        assert result["status"] == "completed", f"{result}\n{self.logs()}"
        assert {t["id"]: t["status"] for t in result["tasks"]} == dict.fromkeys(IDS, "merged")
        assert result["target_commit"] == git(self.repo, "rev-parse", f"refs/heads/{TARGET}")
        assert_merged_once(self.repo, TARGET, run_key_of(wid), IDS)
        fsck(self.repo)
        assert_workspace_clean(self.workspace, self.repo, run_key_of(wid))
        assert_untouched(self.before, repo_snapshot(self.repo, TARGET))


@pytest.fixture
def scene(tmp_path: Path, procs: Procs, agent_log: Path) -> Iterator[Scene]:
    # Teardown: `procs` stops the servers and workers (their agents die with them), then
    # `agent_log` kills any agent or helper still alive.
    s = Scene(tmp_path, procs, helper=True)
    assert s.log == agent_log
    yield s


def test_worker_killed_mid_agent_is_replaced_and_the_run_completes(scene: Scene) -> None:
    scene.server.start()
    first = scene.worker("worker-1")
    wid = scene.start_detached()

    # The three agents of batch 1 are running (they sleep 4 s): kill the worker outright, as the
    # OOM killer would. (Waiting for all three makes which tasks were hit deterministic.)
    scene.wait_agents_started(3)
    time.sleep(0.3)
    os.kill(first.pid, signal.SIGKILL)
    first.wait(timeout=10)
    killed = [r for r in agent_runs(scene.log) if r.end is None]
    killed_tasks = {r.task_id for r in killed}
    assert killed_tasks == {"1.1", "1.2", "1.3"}, f"running at the kill: {agent_runs(scene.log)}"

    # The agents die with their worker, without waiting for a new worker: and with them
    # everything they started (their helpers), since their sandbox's PID namespace dies too.
    orphans = [h for h in helpers(scene.log) if h.task_id in killed_tasks]
    assert len(orphans) == 3, orphans
    wait_for(
        lambda: not [r for r in [*killed, *orphans] if r.alive()],
        10,
        "the killed worker's agents and their helpers to die",
        on_fail=scene.logs,
    )

    scene.worker("worker-2")
    result = scene.wait_finished(wid)
    scene.check_outcome(result, wid)
    # Exactly once: one agent run per task, two for a task whose agent was killed mid-run.
    expected = {t: 2 if t in killed_tasks else 1 for t in IDS}
    assert runs_per_task(scene.log) == expected, scene.logs()
    attempts = {t["id"]: t["attempts"] for t in result["tasks"]}
    assert attempts == expected, result
    # The run's own count of agent starts says so too: the killed start ran, and may have cost.
    assert {t["id"]: t["agent_runs"] for t in result["tasks"]} == expected, result
    assert_no_agent_alive(scene.log)


def test_server_restart_mid_run_and_the_worker_carries_on(scene: Scene) -> None:
    scene.server.start()
    worker = scene.worker("worker")
    wid = scene.start_detached()

    scene.wait_agents_started(3)
    time.sleep(0.3)
    scene.server.stop(signal.SIGTERM)
    time.sleep(2)
    scene.server.start()  # same port, same database file

    result = scene.wait_finished(wid)
    scene.check_outcome(result, wid)
    assert worker.poll() is None, "the worker died with the server instead of reconnecting"
    # An agent whose heartbeats were lost while the server was down may have run again; none
    # ran more than twice, and each task's work landed once (checked above).
    runs = runs_per_task(scene.log)
    assert set(runs) == set(IDS) and all(1 <= n <= 2 for n in runs.values()), runs
    assert_no_agent_alive(scene.log)
    assert not [h for h in helpers(scene.log) if h.alive()]
