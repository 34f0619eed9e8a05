"""--publish pr end to end: starter, a worker process and the dev server, against a local
stand-in for GitHub's REST API whose repository is a real bare one, the user's `origin`."""

from __future__ import annotations

import asyncio
import json
import re
import signal
import subprocess
import sys
import threading
import time
from dataclasses import dataclass
from pathlib import Path

import pytest
from temporalio.client import Client

from autonomous_pipeline.cli.redaction import data_converter
from tests.conftest import md
from tests.fixtures.github.server import FakeGitHub
from tests.integration.conftest import Procs
from tests.integration.helpers import (
    DevServer,
    git,
    kill_group,
    make_dirty_user_repo,
    process_env,
    repo_snapshot,
    start_worker,
    starter,
    wait_finished,
)

pytestmark = pytest.mark.integration

TOKEN = "ghp_" + "Zq9Kt3Wm" * 5
REPO = "acme/toolkit"
PLAN = md(
    """
    # PR plan
    ## Batch 1: one
    ### Task 1.1: first
    Write out/1.1.txt.
    ### Task 1.2: second
    **Depends on:** 1.1
    Write out/1.2.txt.
    """
)
# Each run adds a line, so a fix round changes something.
AGENT = """\
import os, sys
os.makedirs("out", exist_ok=True)
with open(os.path.join("out", sys.argv[1] + ".txt"), "a") as fh:
    fh.write("run\\n")
print("appended a line to out/" + sys.argv[1] + ".txt")
"""


@dataclass
class Setup:
    repo: Path
    bare: Path
    plan: Path
    env: dict[str, str]
    server: DevServer

    def args(self, hub: FakeGitHub, *extra: str) -> list[str]:
        agent = self.plan.with_name("agent.py")
        return [
            *("--plan", str(self.plan), "--repo", str(self.repo), "--target", "main"),
            *("--address", self.server.address, "--workspace", str(self.plan.parent / "ws")),
            *("--agent", "command", "--agent-command", f"{sys.executable} {agent} {{task_id}}"),
            *("--publish", "pr", "--forge-url", hub.url, "--forge-repo", REPO),
            *("--pr-poll", "1", "--heartbeat-timeout", "3", "--json", "--detach", *extra),
        ]

    def worker(self, procs: Procs) -> subprocess.Popen:
        tmp = self.plan.parent
        return start_worker(procs, self.server.address, tmp / "ws", tmp / "worker.log", self.env)


def setup(tmp_path: Path, procs: Procs, plan: str) -> Setup:
    """A dirty user repository whose `origin` is a bare one, a plan, the agent, a dev server."""
    repo = make_dirty_user_repo(tmp_path / "repo")
    bare = tmp_path / "remote.git"
    git(tmp_path, "clone", "-q", "--bare", str(repo), str(bare))
    git(repo, "remote", "add", "origin", str(bare))
    (tmp_path / "pr-plan.md").write_text(plan)
    (tmp_path / "agent.py").write_text(AGENT)
    env = process_env(tmp_path) | {"GITHUB_TOKEN": TOKEN}
    server = DevServer(procs, tmp_path, env)
    server.start()
    return Setup(repo, bare, tmp_path / "pr-plan.md", env, server)


def test_prs_are_opened_once_steered_by_a_fix_comment_and_squash_merged(
    tmp_path: Path, procs: Procs
) -> None:
    s = setup(tmp_path, procs, PLAN)
    repo, bare, env, server = s.repo, s.bare, s.env, s.server
    before = repo_snapshot(repo, "main")
    with FakeGitHub(TOKEN, {REPO: bare}, prefix="/api/v3") as hub:
        s.worker(procs)
        started = starter(s.args(hub, "--approval", "always"), env, tmp_path)
        assert started.returncode == 0, started.stdout + started.stderr
        workflow_id = json.loads(started.stdout)["workflow_id"]
        site = hub.site
        _until(lambda: REPO in site.pulls and len(site.reviews.get((REPO, 1), [])) == 1)
        site.comment(REPO, 1, "/fix also say which run this is")
        first_head = site.head_sha(REPO, site.pull(REPO, 1))
        _until(lambda: site.head_sha(REPO, site.pull(REPO, 1)) != first_head)
        site.comment(REPO, 1, "/approve")
        _until(lambda: len(site.pulls[REPO]) == 2)
        site.review(REPO, 2, "APPROVED", user="carol", association="MEMBER")
        data = wait_finished(workflow_id, server.address, env, tmp_path, 120)
        history = asyncio.run(_history(server.address, workflow_id))

    assert [t["status"] for t in data["tasks"]] == ["merged", "merged"], data
    pulls = site.pulls[REPO]
    assert [t["pull_request"] for t in data["tasks"]] == [
        f"https://github.example/{REPO}/pull/{n}" for n in (1, 2)
    ]
    # What a person reads on the PR: the task, the agent's own words, where the run is.
    body = pulls[0].body
    assert pulls[0].title == "Task 1.1: first"
    assert "Write out/1.1.txt." in body and "appended a line to out/1.1.txt" in body
    assert f"/workflows/{workflow_id}" in body
    assert [(p.number, p.head, p.merged) for p in pulls] == [
        (1, pulls[0].head, True),
        (2, pulls[1].head, True),
    ]  # one PR per task, though the fix round pushed 1.1's branch again
    # Squash: one commit per task on the remote's main, each carrying its trailer.
    log = git(bare, "log", "--format=%s%n%b%x00", "main").split("\0")
    messages = [m.strip() for m in log if "Pipeline-Task:" in m]
    assert len(messages) == 2
    assert messages[0].startswith("Task 1.2: second (#2)")
    assert messages[1].startswith("Task 1.1: first (#1)")
    assert git(bare, "show", "main:out/1.1.txt") == "run\nrun"  # the fix round's line too
    assert [t["commit"] for t in data["tasks"]] == [
        git(bare, "rev-parse", "main~1"),
        git(bare, "rev-parse", "main"),
    ]
    # The user's checkout is untouched; the token is nowhere a person or an agent reads.
    assert repo_snapshot(repo, "main") == before
    assert TOKEN not in history
    assert TOKEN not in (tmp_path / "worker.log").read_text()
    assert TOKEN not in started.stdout + started.stderr
    assert all(TOKEN not in path for _, path, _ in site.requests)


THREE = md(
    """
    # PR plan
    ## Batch 1: three
    ### Task 1.1: checked
    ### Task 1.2: closed
    ### Task 1.3: limited
    """
)


def test_checks_a_person_closing_and_the_rate_limit(tmp_path: Path, procs: Procs) -> None:
    s = setup(tmp_path, procs, THREE)
    with FakeGitHub(TOKEN, {REPO: s.bare}, prefix="/api/v3") as hub:
        site = hub.site
        site.limit_reset_s = 2
        s.worker(procs)
        started = starter(s.args(hub, "--require-checks"), s.env, tmp_path)
        assert started.returncode == 0, started.stdout + started.stderr
        workflow_id = json.loads(started.stdout)["workflow_id"]
        heads: dict[str, list[str]] = {}

        def play() -> bool:
            """What CI and the people do, as each PR's head appears."""
            for pr in list(site.pulls.get(REPO, [])):
                task, head = pr.head.rsplit("task-", 1)[-1], site.head_sha(REPO, pr)
                if head in heads.setdefault(task, []) or pr.state != "open":
                    continue
                heads[task].append(head)
                if task == "1.1":  # CI fails the first head, passes the fix
                    site.check(head, "ci", "failure" if len(heads[task]) == 1 else "success")
                elif task == "1.2":
                    site.check(head, "ci", None)  # still running when a person closes it
                    site.close(REPO, pr.number, user="dana")
                else:
                    site.limited = 3  # the host's rate limit, with its reset 2 s away
                    site.check(head, "ci", "success")
            return len(heads) == 3 and len(heads["1.1"]) == 2

        _until(play)
        data = wait_finished(workflow_id, s.server.address, s.env, tmp_path, 120)
        history = asyncio.run(_history(s.server.address, workflow_id))
    # The limit was waited out on durable timers of its reset's length (the polls are 1 s).
    timers = [float(t) for t in re.findall(r'"startToFireTimeout":\s*"([\d.]+)s"', history)]
    assert any(t >= 2 for t in timers), timers
    by_id = {t["id"]: t for t in data["tasks"]}
    assert by_id["1.1"]["status"] == "merged" and by_id["1.1"]["agent_runs"] == 2
    assert by_id["1.2"]["status"] == "failed"
    (closed,) = [p.number for p in site.pulls[REPO] if p.closed_by]
    assert by_id["1.2"]["error"] == f"pull request #{closed} was closed by @dana without merging"
    assert by_id["1.3"]["status"] == "merged"
    assert site.limited == 0  # the limited answers were all given, and waited out
    limited = [p for m, p, _ in site.requests if m == "GET"]
    assert len(limited) > 3
    assert git(s.bare, "show", "main:out/1.1.txt") == "run\nrun"
    assert git(s.bare, "show", "main:out/1.3.txt") == "run"


def test_a_worker_killed_as_the_pr_is_made_leaves_one_pr(tmp_path: Path, procs: Procs) -> None:
    s = setup(tmp_path, procs, PLAN)
    with FakeGitHub(TOKEN, {REPO: s.bare}, prefix="/api/v3") as hub:
        first = s.worker(procs)
        killed = threading.Event()

        def kill() -> None:  # the host has the request; the worker never hears the answer
            kill_group(first, signal.SIGKILL)
            first.wait()
            killed.set()

        hub.site.before_create = kill
        started = starter(s.args(hub), s.env, tmp_path)
        assert started.returncode == 0, started.stdout + started.stderr
        workflow_id = json.loads(started.stdout)["workflow_id"]
        assert killed.wait(90), "the PR was never asked for"
        s.worker(procs)
        data = wait_finished(workflow_id, s.server.address, s.env, tmp_path, 120)
    assert [t["status"] for t in data["tasks"]] == ["merged", "merged"], data
    assert [p.number for p in hub.site.pulls[REPO]] == [1, 2]  # one each, the first found again
    assert all(p.merged for p in hub.site.pulls[REPO])
    runs = agent_runs_of(tmp_path)
    assert runs == {"1.1": 1, "1.2": 1}  # the agent was not run again for a lost answer


def agent_runs_of(tmp: Path) -> dict[str, int]:
    """How often the agent appended to each task's file, from the merged files."""
    return {
        t: len(git(tmp / "remote.git", "show", f"main:out/{t}.txt").splitlines())
        for t in ("1.1", "1.2")
    }


def _until(ready, timeout: float = 90) -> None:
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        if ready():
            return
        time.sleep(0.2)
    raise AssertionError("never happened")


async def _history(address: str, workflow_id: str) -> str:
    """Every event of the run and its tasks, as the server keeps them."""
    client = await Client.connect(address, data_converter=data_converter())
    text = []
    async for wf in client.list_workflows(f"WorkflowId STARTS_WITH '{workflow_id}'"):
        history = await client.get_workflow_handle(wf.id, run_id=wf.run_id).fetch_history()
        text.append(history.to_json())
    return "\n".join(text)
