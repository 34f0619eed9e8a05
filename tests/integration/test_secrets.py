"""A planted secret reaches the agent that is given it, and no artifact of the run.

The worker has two secrets: DEPLOY_TOKEN (credential-looking by name) and SERVICE_DSN (named in
PIPELINE_SECRET_ENV), and a credential the run does not name (CLOUD_API_KEY). The agent prints
both secrets it is given, fails once with them in its error, and a verification command prints
them too. Afterwards every file of the run (workspace, transcripts, logs, the server's SQLite
database) and every payload and failure of every workflow history is searched for them.
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import json
from pathlib import Path
from typing import Any

import pytest
from temporalio.client import Client

from tests.conftest import md
from tests.integration.helpers import (
    DevServer,
    Procs,
    git,
    make_dirty_user_repo,
    process_env,
    start_worker,
    starter,
    wait_finished,
)

pytestmark = pytest.mark.integration

TOKEN = "dpl-9c1e5b7a3f20d846"
DSN = "postgres://svc:hunter2-77@db.internal/app"
CLOUD = "cloud-key-0a8b7c6d5e4f"
TARGET = "pipeline/secret-plan"
PLAN = md(
    """
    # Secret plan

    ## Batch 1: Uses a deploy token
    **Dependencies:** None

    ### Task 1.1: proves it has the token
    **Files:**
    - Create: `out/1.1.txt`
    **Verification:**
    - `sh -c 'echo "token in check: $DEPLOY_TOKEN dsn: $SERVICE_DSN"; test -s out/1.1.txt'`

    ### Task 1.2: fails loudly
    **Files:**
    - Create: `out/1.2.txt`
    """
)
# Prints its secrets, writes a digest of the token (proof it had it), and fails for task 1.2
# with the secrets as its last output: they land in the task's error.
AGENT = """\
import hashlib, os, sys
task = sys.argv[1]
token, dsn = os.environ.get("DEPLOY_TOKEN", ""), os.environ.get("SERVICE_DSN", "")
print(f"agent {task} has token={token} dsn={dsn} cloud={os.environ.get('CLOUD_API_KEY')}")
os.makedirs("out", exist_ok=True)
with open(f"out/{task}.txt", "w") as fh:
    fh.write(hashlib.sha256(token.encode()).hexdigest() + "\\n")
if task == "1.2":
    print(f"fatal: cannot deploy with {token} to {dsn}", file=sys.stderr)
    sys.exit(3)
print(f"done, token {token}")
"""


def hits(data: bytes) -> list[str]:
    return [s for s in (TOKEN, DSN, CLOUD) if s.encode() in data]


def walk_payloads(node: Any, found: list[str], where: str = "") -> None:
    """Every string in a history's JSON, with base64 payload data decoded."""
    if isinstance(node, dict):
        for key, value in node.items():
            if key == "data" and isinstance(value, str):
                found += [f"{where}.data: {h}" for h in hits(base64.b64decode(value))]
            walk_payloads(value, found, f"{where}.{key}")
    elif isinstance(node, list):
        for i, value in enumerate(node):
            walk_payloads(value, found, f"{where}[{i}]")
    elif isinstance(node, str):
        found += [f"{where}: {h}" for h in hits(node.encode())]


async def history_leaks(address: str) -> tuple[int, list[str]]:
    client = await Client.connect(address)
    found: list[str] = []
    count = 0
    async for wf in client.list_workflows():
        count += 1
        history = await client.get_workflow_handle(wf.id, run_id=wf.run_id).fetch_history()
        walk_payloads(json.loads(history.to_json()), found, wf.id)
    return count, found


def test_a_planted_secret_reaches_the_agent_and_no_artifact(tmp_path: Path) -> None:
    env = process_env(tmp_path) | {
        "DEPLOY_TOKEN": TOKEN,
        "SERVICE_DSN": DSN,
        "PIPELINE_SECRET_ENV": "SERVICE_DSN",
        "CLOUD_API_KEY": CLOUD,
    }
    procs = Procs()
    try:
        server = DevServer(procs, tmp_path, env)
        server.start()
        workspace = tmp_path / "ws"
        start_worker(procs, server.address, workspace, tmp_path / "worker.log", env)
        repo = make_dirty_user_repo(tmp_path / "repo")
        plan = tmp_path / "secret-plan.md"
        plan.write_text(PLAN)
        agent = tmp_path / "agent.py"
        agent.write_text(AGENT)
        res = starter(
            [
                *("--plan", str(plan), "--repo", str(repo), "--workspace", str(workspace)),
                *("--address", server.address, "--agent", "command"),
                *("--agent-command", f"python3 {agent} {{task_id}}"),
                *("--agent-env", "DEPLOY_TOKEN,SERVICE_DSN", "--detach", "--json"),
            ],
            env,
            tmp_path,
        )
        assert res.returncode == 0, res.stdout + res.stderr
        wid = json.loads(res.stdout)["workflow_id"]
        result = wait_finished(wid, server.address, env, tmp_path, 90)
        status = starter(["status", wid, "--address", server.address], env, tmp_path)
        leaks_in_output = hits((json.dumps(result) + status.stdout + status.stderr).encode())
        tasks = {t["id"]: t for t in result["tasks"]}
        assert tasks["1.1"]["status"] == "merged", result
        assert tasks["1.2"]["status"] == "failed"
        assert "fatal: cannot deploy with *** to ***" in tasks["1.2"]["error"]
        # The agent had the token it was given: its digest is in the merged file.
        digest = hashlib.sha256(TOKEN.encode()).hexdigest()
        assert git(repo, "show", f"{TARGET}:out/1.1.txt") == digest
        transcripts = "\n".join(p.read_text() for p in workspace.rglob("transcripts/**/*.log"))
        assert "has token=*** dsn=*** cloud=None" in transcripts

        count, leaks_in_history = asyncio.run(history_leaks(server.address))
        assert count >= 3  # the run and its two tasks
        server.stop()  # the database is complete once the server has closed it
    finally:
        procs.close()
    leaks_in_files = [
        f"{p}: {h}"
        for p in sorted(tmp_path.rglob("*"))
        if p.is_file()
        for h in hits(p.read_bytes())
    ]
    assert leaks_in_output == [] and leaks_in_history == [] and leaks_in_files == []
