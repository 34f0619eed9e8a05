"""--publish pr end to end: starter, a worker process and the dev server, against a local
stand-in for GitHub's REST API whose repository is a real bare one, the user's `origin`."""

from __future__ import annotations

import asyncio
import json
import sys
import time
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


def test_prs_are_opened_once_steered_by_a_fix_comment_and_squash_merged(
    tmp_path: Path, procs: Procs
) -> None:
    repo = make_dirty_user_repo(tmp_path / "repo")
    bare = tmp_path / "remote.git"
    git(tmp_path, "clone", "-q", "--bare", str(repo), str(bare))
    git(repo, "remote", "add", "origin", str(bare))
    before = repo_snapshot(repo, "main")
    plan, agent = tmp_path / "pr-plan.md", tmp_path / "agent.py"
    plan.write_text(PLAN)
    agent.write_text(AGENT)
    env = process_env(tmp_path) | {"GITHUB_TOKEN": TOKEN}
    server = DevServer(procs, tmp_path, env)
    server.start()
    with FakeGitHub(TOKEN, {REPO: bare}, prefix="/api/v3") as hub:
        start_worker(procs, server.address, tmp_path / "ws", tmp_path / "worker.log", env)
        args = [
            *("--plan", str(plan), "--repo", str(repo), "--target", "main"),
            *("--address", server.address, "--workspace", str(tmp_path / "ws")),
            *("--agent", "command", "--agent-command", f"{sys.executable} {agent} {{task_id}}"),
            *("--publish", "pr", "--forge-url", hub.url, "--forge-repo", REPO),
            *("--pr-poll", "1", "--approval", "always", "--json", "--detach"),
        ]
        started = starter(args, env, tmp_path)
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
