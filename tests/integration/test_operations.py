"""Operations on a real run: the worker's metrics endpoint, the search attributes through the
`temporal` CLI and `runs`, the notifications on a local receiver, and JSON log lines with their
context and no planted secret.

One run of three tasks (1.2's agent fails, printing the worker's secret) on a dev server that has
the search attributes registered, as the embedded server registers them."""

from __future__ import annotations

import json
import re
import subprocess
import sys
import urllib.request
from pathlib import Path

import pytest

from tests.conftest import md
from tests.fixtures.webhooks.receiver import Receiver
from tests.integration.helpers import (
    DevServer,
    Procs,
    free_port,
    make_dirty_user_repo,
    process_env,
    start_worker,
    starter,
    wait_finished,
    wait_for,
)
from tests.temporal_env import dev_server_path

pytestmark = pytest.mark.integration

TOKEN = "dpl-7f3a9c1e5b2d8e40"
PLAN = md(
    """
    # Operated plan
    ## Batch 1: Three
    ### Task 1.1: one
    ### Task 1.2: two
    ### Task 1.3: three
    """
)
# Fails for 1.2 with the worker's token in its last words (the agent is given it).
AGENT = """\
import os, sys
task = sys.argv[1]
os.makedirs("out", exist_ok=True)
open(f"out/{task}.txt", "w").write(task + "\\n")
if task == "1.2":
    print(f"fatal: deploy refused {os.environ.get('DEPLOY_TOKEN')}", file=sys.stderr)
    sys.exit(3)
"""


def scrape(port: int) -> dict[str, float]:
    """The endpoint's samples: `name{labels}` -> value."""
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as answer:
        text = answer.read().decode()
    samples = {}
    for line in text.splitlines():
        if line and not line.startswith("#"):
            name, _, value = line.rpartition(" ")
            samples[name] = float(value)
    return samples


def total(samples: dict[str, float], name: str, **labels: str) -> float:
    """The sum over every sample of `name` whose labels include `labels`."""
    found = 0.0
    for key, value in samples.items():
        base, _, rest = key.partition("{")
        got = dict(re.findall(r'(\w+)="([^"]*)"', rest))
        if base == name and all(got.get(k) == v for k, v in labels.items()):
            found += value
    return found


def test_metrics_search_notifications_and_logs_of_a_run(
    tmp_path: Path, procs: Procs, receiver: Receiver
) -> None:
    env = process_env(tmp_path) | {"DEPLOY_TOKEN": TOKEN, "TEAM_HOOK": receiver.url + "/env"}
    server = DevServer(procs, tmp_path, env)
    server.start()
    metrics_port = free_port()
    worker_log = tmp_path / "worker.log"
    start_worker(
        procs, server.address, tmp_path / "ws", worker_log, env,
        *("--metrics-port", str(metrics_port), "--log-format", "json"),
    )  # fmt: skip
    repo = make_dirty_user_repo(tmp_path / "repo")
    plan = tmp_path / "operated.md"
    plan.write_text(PLAN)
    agent = tmp_path / "agent.py"
    agent.write_text(AGENT)
    args = [
        *("--plan", str(plan), "--repo", str(repo), "--address", server.address),
        *("--workspace", str(tmp_path / "ws"), "--agent", "command"),
        *("--agent-command", f"{sys.executable} {agent} {{task_id}}"),
        *("--agent-env", "DEPLOY_TOKEN", "--max-concurrent", "1", "--max-fix-rounds", "0"),
        *("--notify", receiver.url + "/hook", "--notify", "env:TEAM_HOOK"),
        *("--detach", "--json", "--log-format", "json"),
    ]
    res = starter(args, env, tmp_path)
    assert res.returncode == 0, res.stdout + res.stderr
    wid = json.loads(res.stdout)["workflow_id"]
    result = wait_finished(wid, server.address, env, tmp_path, 120, lambda: worker_log.read_text())
    by_id = {t["id"]: t for t in result["tasks"]}
    assert {k: t["status"] for k, t in by_id.items()} == {
        "1.1": "merged", "1.2": "failed", "1.3": "merged",
    }  # fmt: skip

    # Metrics: the pipeline's counters, and the SDK's own worker metrics beside them.
    samples = scrape(metrics_port)
    assert total(samples, "pipeline_tasks_finished_total", status="merged") == 2
    assert total(samples, "pipeline_tasks_finished_total", status="failed") == 1
    assert total(samples, "pipeline_agent_seconds_count", backend="command") == 3
    assert total(samples, "pipeline_agent_cost_usd_sum") == pytest.approx(
        sum(t["cost_usd"] for t in result["tasks"])
    )
    assert any(k.startswith("temporal_") for k in samples), sorted(samples)[:20]

    # Search attributes: the temporal CLI finds the failed task by them, and `runs` too.
    query = f"PipelineRun='{wid}' AND PipelineStatus='failed'"
    listed = subprocess.run(
        [dev_server_path(), "workflow", "list", "--address", server.address, "--query", query,
         "--output", "json"],
        capture_output=True, text=True, env=env, timeout=30, check=True,
    )  # fmt: skip
    ids = [w["execution"]["workflowId"] for w in json.loads(listed.stdout)]
    assert f"{wid}/task-1.2" in ids and wid in ids, listed.stdout
    runs = starter(
        ["runs", "--tasks", "--status", "failed", "--address", server.address, "--json"],
        env, tmp_path,
    )  # fmt: skip
    assert runs.returncode == 0, runs.stderr
    assert [t["task"] for t in json.loads(runs.stdout)["tasks"]] == ["1.2"]

    # Notifications: the failure and the end, once each, to both receivers; no secret.
    wait_for(lambda: len(receiver.posts) >= 4, 30, "the notices")
    kinds = sorted((path, body["kind"]) for path, _, body in receiver.posts)
    assert kinds == [
        ("/env", "run_finished"), ("/env", "task_failed"),
        ("/hook", "run_finished"), ("/hook", "task_failed"),
    ]  # fmt: skip
    for _, headers, body in receiver.posts:
        assert headers["Idempotency-Key"] == body["id"] and body["text"]
        assert TOKEN not in json.dumps(body)
    end = next(b for _, _, b in receiver.posts if b["kind"] == "run_finished")
    assert end["counts"] == {"merged": 2, "failed": 1} and end["link"].endswith(wid)

    # Logs: JSON lines, each with its context; the token nowhere.
    raw = worker_log.read_text()
    assert TOKEN not in raw
    lines = [json.loads(line) for line in raw.splitlines() if line.startswith("{")]
    assert lines, raw[-2000:]
    of_the_run = [ln for ln in lines if ln.get("run") == wid]
    assert of_the_run, raw[-2000:]
    # The task's end, from workflow code, with its phase; the agent's, from its activity.
    failed = [ln for ln in of_the_run if ln.get("task") == "1.2" and ln.get("status") == "failed"]
    assert failed and failed[0]["phase"] == "agent" and "deploy refused ***" in failed[0]["event"]
    agent_lines = [ln for ln in of_the_run if ln.get("activity") == "run_agent"]
    assert {ln["task"] for ln in agent_lines} == {"1.1", "1.2", "1.3"}
    assert all(ln["phase"] == "agent" and ln["attempt"] == 1 for ln in agent_lines)
    # No webhook's URL in any line (the env: one is a secret the worker holds).
    assert receiver.url not in raw
    assert all({"time", "level", "event", "logger"} <= set(ln) for ln in lines)
